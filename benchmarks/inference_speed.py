"""Inference throughput on the CPU: the Recognizer API vs the bare network, PyTorch vs onnxruntime.

Pre-cropped 48x48 grayscale faces (random pixels: speed does not depend on the weights), at
batch 1 and batch 64, through

- ``torch (prepared tensor)``: the network + ``parent_logits`` + softmax on an already
  normalised float tensor (the floor for PyTorch);
- ``onnxruntime (prepared array)``: the exported model on an already normalised float array;
- ``Recognizer(.pt)`` / ``Recognizer(.onnx)``: ``rec(face, detect=False)`` per image for batch 1,
  ``rec.predict_batch(faces, detect=False)`` for batch 64, from a list of uint8 numpy arrays,
  i.e. including input checks, normalisation and building the result dicts;
- ``Recognizer with a null network``: the same calls with a backend that returns constant
  probabilities: what the API itself costs (input checks, normalisation, result dicts);
- with ``--detect``, also the full pipeline on a 512x512 photo with one face (Haar detection,
  crop, classify).

    python benchmarks/inference_speed.py --out benchmarks/inference_speed.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _throughput(fn, n_images: int, repeats: int) -> tuple[float, float]:
    """Median images per second and per CPU-second over ``repeats`` timed runs of ``fn``."""
    return _interleaved([(fn, n_images)], repeats)[0]


def _interleaved(tasks, repeats: int) -> list[tuple[float, float]]:
    """For each ``(fn, n_images)``: the median images per wall-clock second and per CPU-second
    of this process. The tasks take turns in every round, so a change in the machine's load
    affects all of them alike; the CPU-time rate hardly depends on the load at all with one
    thread (with more, threads waiting for each other also burn CPU time)."""
    for fn, _ in tasks:
        fn()  # warm-up (allocations, oneDNN / onnxruntime kernel selection)
    wall = [[] for _ in tasks]
    cpu = [[] for _ in tasks]
    for _ in range(repeats):
        for i, (fn, n) in enumerate(tasks):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[i].append(n / (t1 - t0))
            cpu[i].append(n / max(c1 - c0, 1e-9))
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def _measure(args, threads, model, strategy, session, rec_pt, rec_ox, faces, prepared, rows, detect_rows) -> None:
    """Append ``(name, threads, batch-1 rate, batch-64 rate)`` rows (and detection rows)."""
    from dicc.predict import Recognizer

    prepared_t = torch.from_numpy(prepared)
    n64, n1 = args.images, args.images_b1
    rec_null = Recognizer(
        lambda x: np.full((len(x), 7), 1 / 7, np.float32),
        rec_pt.class_names,
        mean=0.5,
        std=0.25,
        image_size=48,
        channels=1,
    )  # everything but the network

    def torch_direct(batch: int, n: int):
        def run():
            with torch.inference_mode():
                for i in range(0, n, batch):
                    torch.softmax(strategy.parent_logits(model(prepared_t[i : i + batch])), 1)

        return run

    def ort_direct(batch: int, n: int):
        def run():
            for i in range(0, n, batch):
                session.run(None, {"input": prepared[i : i + batch]})

        return run

    def recognizer(rec, batch: int, n: int):
        if batch == 1:

            def run():
                for f in faces[:n]:
                    rec(f, detect=False)
        else:

            def run():
                for i in range(0, n, batch):
                    rec.predict_batch(faces[i : i + batch], detect=False)

        return run

    variants = (
        ("torch, prepared tensor", torch_direct),
        ("onnxruntime, prepared array", ort_direct),
        ("Recognizer (.pt, torch), numpy faces", lambda b, n: recognizer(rec_pt, b, n)),
        ("Recognizer (.onnx, onnxruntime), numpy faces", lambda b, n: recognizer(rec_ox, b, n)),
        ("Recognizer with a null network (API overhead alone)", lambda b, n: recognizer(rec_null, b, n)),
    )
    tasks = [(name, b, make(b, n), n) for name, make in variants for b, n in ((1, n1), (64, n64))]
    rates = _interleaved([(fn, n) for _, _, fn, n in tasks], args.repeats)
    for name, _ in variants:
        (r1, c1), (r64, c64) = (rates[i] for i, t in enumerate(tasks) if t[0] == name)
        rows.append((name, threads, r1, c1, r64, c64))
        print(
            f"{name:<52} threads {threads}  batch 1: {r1:8.0f} img/s ({c1:8.0f} per CPU-s)   "
            f"batch 64: {r64:8.0f} img/s ({c64:8.0f} per CPU-s)",
            file=sys.stderr,
        )

    if args.detect:
        from skimage.data import astronaut

        photo = astronaut()
        for label, rec in (
            ("Recognizer (.pt), 512x512 photo, Haar detection", rec_pt),
            ("Recognizer (.onnx), 512x512 photo, Haar detection", rec_ox),
        ):
            assert len(rec(photo)) == 1
            rate, cpu_rate = _throughput(lambda: rec(photo), 1, max(args.repeats, 5))
            detect_rows.append((label, threads, rate, cpu_rate))
            print(f"{label:<52} threads {threads}  {rate:8.1f} photos/s ({cpu_rate:.1f} per CPU-s)", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=32, help="vgg_fer width (default 32, the default model)")
    parser.add_argument("--images", type=int, default=1024, help="faces per timed run at batch 64 (default 1024)")
    parser.add_argument("--images-b1", type=int, default=256, help="faces per timed run at batch 1 (default 256)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement; the median is kept")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="torch and onnxruntime intra-op "
        "threads; several values give one set of rows each (default: torch's default)",
    )
    parser.add_argument(
        "--detect", action="store_true", help="also time the full pipeline on a photo (needs scikit-image)"
    )
    parser.add_argument("--out", help="also write the results as Markdown to this file")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from dicc import EMOTIONS
    from dicc.checkpoint import FORMAT, VERSION, save_atomic
    from dicc.export import export_onnx
    from dicc.models import create_model
    from dicc.predict import Recognizer
    from dicc.strategies import create_strategy

    thread_counts = args.threads or [torch.get_num_threads()]
    load0 = os.getloadavg()[0]
    torch.manual_seed(0)
    strategy = create_strategy("ce", [100] * 7)
    model = create_model("vgg_fer", 7, width=args.width).eval()
    n_params = sum(p.numel() for p in model.parameters())
    tmp = Path(tempfile.mkdtemp(prefix="dicc-bench-"))
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "class_names": list(EMOTIONS),
        "class_counts": [100] * 7,
        "model": model.state_dict(),
        "config": {},
        "epoch": 0,
        "model_spec": {
            "name": "vgg_fer",
            "width": args.width,
            "num_outputs": 7,
            "head_type": "linear",
            "in_channels": 1,
            "image_size": 48,
            "dropout": 0.0,
        },
        "normalization": {"mean": 0.5, "std": 0.25, "image_size": 48, "channels": 1},
        "strategy": {"name": "ce", "options": {}, "state": {}},
    }
    save_atomic(ckpt, tmp / "model.pt")
    export_onnx(tmp / "model.pt", tmp / "model.onnx")
    rec_pt = Recognizer.from_checkpoint(tmp / "model.pt", device="cpu", batch_size=64)

    rng = np.random.default_rng(0)
    n64, n1 = args.images, args.images_b1
    faces = [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(max(n64, n1))]
    prepared = ((np.stack(faces)[:, None].astype(np.float32) / 255) - 0.5) / 0.25
    rows, detect_rows = [], []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        cv2 = sys.modules.get("cv2")
        if cv2 is not None or args.detect:
            import cv2

            cv2.setNumThreads(threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        session = ort.InferenceSession(str(tmp / "model.onnx"), so, providers=["CPUExecutionProvider"])
        rec_ox = Recognizer.from_onnx(tmp / "model.onnx", threads=threads, batch_size=64)
        _measure(args, threads, model, strategy, session, rec_pt, rec_ox, faces, prepared, rows, detect_rows)

    argv = list(argv if argv is not None else sys.argv[1:])
    cmd = " ".join([".venv/bin/python", os.path.relpath(__file__, Path.cwd()), *argv])
    lines = [
        "# Inference speed (CPU)",
        "",
        "Pre-cropped 48x48 grayscale faces through the default model (`vgg_fer`, width "
        f"{args.width}, {n_params:,} parameters, 7 outputs, random weights). Median of {args.repeats} timed runs "
        f"after a warm-up; batch 64 over {n64} faces, batch 1 over {n1} faces.",
        "",
        f"Command (from the repository root, with the project's virtual environment): `{cmd}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; torch "
        f"{torch.__version__} and onnxruntime {ort.__version__} with the same number of intra-op threads "
        f"(column `threads`); Python {platform.python_version()}. Load average (1 min) at the start "
        f"{load0:.1f}, at the end {os.getloadavg()[0]:.1f}: rows are measured in turns (one timed run of each "
        f"per round), so they share whatever else the machine was doing.",
        "",
        "Images per second of wall-clock time, and in brackets per CPU-second of the benchmark process "
        "(`time.process_time`), which is what to compare when the machine is shared.",
        "",
        "| path | threads | batch 1: img/s (img/CPU-s) | batch 64: img/s (img/CPU-s) |",
        "|---|---:|---:|---:|",
        *[
            f"| {name} | {th} | {r1:,.0f} ({c1:,.0f}) | {r64:,.0f} ({c64:,.0f}) |"
            for name, th, r1, c1, r64, c64 in rows
        ],
    ]
    if detect_rows:
        lines += [
            "",
            "Full pipeline on `skimage.data.astronaut()` (512x512 RGB, one face): Haar detection, crop, classify.",
            "",
            "| path | threads | photos/s (photos/CPU-s) |",
            "|---|---:|---:|",
            *[f"| {label} | {th} | {rate:,.1f} ({cpu:,.1f}) |" for label, th, rate, cpu in detect_rows],
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
