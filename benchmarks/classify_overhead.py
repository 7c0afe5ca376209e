"""Per-call overhead of ``Recognizer.classify`` at batch 1, one thread (issue 24).

One model-sized face at a time (uint8 ``[1, C, S, S]``, random pixels: speed does not depend on
them), through

- ``classify``: ``rec.classify(face)``, everything a user's call costs (test-time views,
  normalisation or the cast to float, input checks, the backend, the mean over the views);
- ``backend``: ``rec.backend(x)`` on the already prepared input ``x = rec.preprocess(views)``
  (for ``.pt``: the precision's autocast, the strategy's class merge and softmax included);
- ``bare``: the network alone on the same prepared input: onnxruntime's ``session.run``, or
  ``model(x)`` under ``torch.inference_mode()`` (and the precision's autocast) for ``.pt``;

for the checkpoint (``.pt``, PyTorch), its ONNX export with each input kind (``pixels``: the
normalisation in the graph; ``normalized``), and any ``--onnx`` files (e.g. the packaged int8
graph). ``overhead`` = bare faces/s / classify faces/s (1.00: classify costs nothing beyond the
network). The variants take turns in every round (the median over ``--repeats`` rounds is
reported), so a change in the machine's load affects all of them alike.

    python benchmarks/classify_overhead.py --model default --repeats 7 --out benchmarks/classify_overhead.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def cpu_description() -> str:
    """The CPU's model name and which of avx512f / avx512_bf16 / amx it has (from /proc/cpuinfo)."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    have = [f for f in ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8") if f in flags]
    return f"{name}; {', '.join(have) if have else 'no avx512f / avx512_bf16 / amx'}"


def _rates(tasks: list, faces: int, repeats: int) -> list[float]:
    """Median faces per second of each ``fn(i)`` (called for i in range(faces)), interleaved."""
    for fn in tasks:  # warm-up (allocations, kernel selection)
        for i in range(min(faces, 20)):
            fn(i)
    out = [[] for _ in tasks]
    for r in range(repeats):
        order = list(range(len(tasks)))
        for k in order if r % 2 == 0 else order[::-1]:
            fn = tasks[k]
            t0 = time.perf_counter()
            for i in range(faces):
                fn(i)
            out[k].append(faces / (time.perf_counter() - t0))
    return [statistics.median(v) for v in out]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="checkpoint .pt, run directory or 'default' (default)")
    ap.add_argument("--onnx", action="append", default=[], metavar="FILE", help="also measure this .onnx file")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is reported (default 5)")
    ap.add_argument("--faces", type=int, default=500, help="faces per timed round (default 500)")
    ap.add_argument("--tta", default=None, help="test-time augmentation (default: the checkpoint's own eval.tta)")
    ap.add_argument("--amp", default="auto", help="precision of the .pt path, as train.amp (default auto)")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    import onnxruntime as ort

    from dicc.checkpoint import load_checkpoint
    from dicc.export import export_onnx
    from dicc.faces import tta_pixels
    from dicc.predict import Recognizer

    ckpt = load_checkpoint(args.model)
    norm = ckpt["normalization"]
    c, s = int(norm["channels"]), int(norm["image_size"])
    faces = np.random.default_rng(0).integers(0, 256, (args.faces, 1, c, s, s), dtype=np.uint8)
    opts = {"batch_size": 1, "tta": args.tta}
    recs = {}
    with tempfile.TemporaryDirectory() as tmp:
        recs[f".pt (PyTorch, {args.amp})"] = Recognizer.from_checkpoint(ckpt, device="cpu", amp=args.amp, **opts)
        for kind in ("pixels", "normalized"):
            path = Path(tmp) / f"{kind}.onnx"
            export_onnx(ckpt, path, input=kind)
            recs[f".onnx, input {kind} (exported here)"] = Recognizer.from_onnx(path, threads=1, **opts)
        for f in args.onnx:
            rec = Recognizer.from_onnx(f, threads=1, **opts)
            recs[f"{Path(f).name} (input {rec.input_kind})"] = rec

        names, tasks = [], []
        for name, rec in recs.items():
            views = [tta_pixels(f, rec.tta).reshape(-1, c, s, s) for f in faces]
            prepared = [np.ascontiguousarray(rec.preprocess(v)) for v in views]
            backend = rec.backend
            if hasattr(backend, "session"):
                sess, feed, outs = backend.session, backend.input_name, backend.output_names
                bare = lambda i, sess=sess, feed=feed, outs=outs, x=prepared: sess.run(outs, {feed: x[i]})  # noqa: E731
            else:
                prec, model = backend.precision, backend.model
                xt = [prec.prepare_input(torch.from_numpy(x)) for x in prepared]

                def bare(i, prec=prec, model=model, xt=xt):
                    with torch.inference_mode(), prec.autocast():
                        return model(xt[i])

            names.append(name)
            tasks += [
                lambda i, rec=rec: rec.classify(faces[i]),
                lambda i, backend=backend, x=prepared: backend(x[i]),
                bare,
            ]
        rates = _rates(tasks, args.faces, args.repeats)

    tta = {r.tta for r in recs.values()}
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    lines = [
        "# Recognizer.classify overhead at batch 1, one thread",
        "",
        f"Command: `{cmd}`",
        "",
        f"CPU: {cpu_description()}; torch {torch.__version__} ({torch.get_num_threads()} thread), "
        f"onnxruntime {ort.__version__} (1 intra-op thread); model {ckpt.get('_path', args.model)}; "
        f"test-time augmentation {', '.join(sorted(tta))}; {args.faces} faces per round, median of "
        f"{args.repeats} rounds.",
        "",
        "| path | backend | classify faces/s | backend call faces/s | bare network faces/s "
        "| overhead (bare / classify) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for k, name in enumerate(names):
        r_cls, r_backend, r_bare = rates[3 * k : 3 * k + 3]
        lines.append(
            f"| {name} | {recs[name].backend!r} | {r_cls:,.0f} | {r_backend:,.0f} | {r_bare:,.0f} "
            f"| {r_bare / r_cls:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
