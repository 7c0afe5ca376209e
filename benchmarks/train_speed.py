"""Training images/s of dicc's engine against a minimal hand-written PyTorch loop, side by side.

Both train the same model (``vgg_fer`` at several widths, ``resnet18``) on the same uint8 images
(the built-in data, or ``--data`` FER2013 with ``--longtail``), with the same batch size,
augmentation (random crop after 4-pixel edge padding + horizontal flip), optimizer (SGD,
Nesterov momentum 0.9, weight decay 5e-4, one-cycle learning rate) and loss (cross-entropy), in
each precision mode:

* ``fp32``: fp32, contiguous tensors (``train.amp=off train.channels_last=off``);
* ``fp32-cl``: fp32, channels_last (``train.amp=off train.channels_last=on``);
* ``auto``: what ``train.amp=auto train.channels_last=auto`` resolves to on this machine;
* ``bf16-cl``: bf16 autocast + channels_last, forced (``DICC_CPU_BF16=1``) even on a CPU without
  native bf16, to show what emulated bf16 costs there.

The hand loop is what a competent user writes: a shuffled permutation, ``images[idx]``, a
vectorised crop (pad, gather) and flip, ``autocast`` when asked, ``loss.backward()``,
``opt.step()``. dicc's engine runs ``dicc.engine.fit`` with no validation and no test split;
its rate comes from ``metrics.jsonl``'s ``time_train`` (the training pass only). Both skip the
first epoch (warm-up) and time ``--epochs - 1`` epochs. Every (model, mode) pair runs hand and
engine back to back, alternating which goes first, ``--repeats`` times; the table reports the
median rate over repeats and ``engine/hand`` as the median of the per-repeat ratios.

    python benchmarks/train_speed.py --out /tmp/speed --threads 2 --repeats 2 \\
        --models vgg_fer:8,vgg_fer:24,vgg_fer:48,resnet18 --modes fp32,fp32-cl,auto,bf16-cl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dicc.config import load_config
from dicc.engine import learning_rate

MODES = {
    "fp32": ("off", "off"),
    "fp32-cl": ("off", "on"),
    "auto": ("auto", "auto"),
    "bf16-cl": ("on", "on"),
}


def _resolve(mode: str, model) -> "object":
    from dicc.precision import cpu_has_native_bf16, resolve_precision

    if mode == "bf16-cl":
        os.environ["DICC_CPU_BF16"] = "1"
        cpu_has_native_bf16.cache_clear()
    try:
        amp, cl = MODES[mode]
        return resolve_precision(amp, cl, "cpu", model.convolutional)
    finally:
        os.environ.pop("DICC_CPU_BF16", None)
        cpu_has_native_bf16.cache_clear()


def hand_loop(
    images: torch.Tensor, labels: torch.Tensor, name: str, width, mode: str, epochs: int, batch: int, seed: int
) -> float:
    """Images/s of a minimal training loop over ``images`` (epochs after the first)."""
    from dicc.config import OptimConfig
    from dicc.models import create_model

    torch.manual_seed(seed)
    model = create_model(name, 7, width=width)
    prec = _resolve(mode, model)
    if prec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    ocfg = OptimConfig()
    n = len(labels)
    steps = n // batch
    total = steps * epochs
    g = torch.Generator().manual_seed(seed)
    step, timed, t_start = 0, 0, None
    model.train()
    for epoch in range(epochs):
        if epoch == 1:
            t_start = time.perf_counter()
        perm = torch.randperm(n, generator=g)
        for s in range(steps):
            idx = perm[s * batch : (s + 1) * batch]
            x = images[idx]
            b, c, h, w = x.shape
            padded = F.pad(x, (4, 4, 4, 4), mode="replicate")
            oy = torch.randint(0, 9, (b,), generator=g)
            ox = torch.randint(0, 9, (b,), generator=g)
            rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
            x = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
            flip = torch.rand(b, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            x = (x.float() / 255.0 - 0.5) / 0.25
            if prec.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = learning_rate(ocfg, step, total)
            with prec.autocast():
                out = model(x)
            loss = F.cross_entropy(out.float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if epoch >= 1:
                timed += b
    return timed / (time.perf_counter() - t_start)


def engine_run(out: Path, base: list[str], name: str, width, mode: str, epochs: int, batch: int, seed: int) -> float:
    """Images/s of ``dicc.engine.fit``'s training pass (``time_train``, epochs after the first)."""
    from dicc.engine import fit

    amp, cl = MODES[mode]
    cfg = load_config(
        None,
        [
            *base,
            f"model.name={name}",
            f"model.width={'null' if width is None else width}",
            f"train.amp={amp}",
            f"train.channels_last={cl}",
            f"train.epochs={epochs}",
            f"train.batch_size={batch}",
            f"train.seed={seed}",
            "train.progress=false",
            "data.val=null",
            "data.test_split=null",
            "method.name=ce",
            f"train.out={out}",
        ],
    )
    if mode == "bf16-cl":
        from dicc.precision import cpu_has_native_bf16

        os.environ["DICC_CPU_BF16"] = "1"
        cpu_has_native_bf16.cache_clear()
    try:
        fit(cfg, log=lambda *a, **k: None)
    finally:
        os.environ.pop("DICC_CPU_BF16", None)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "time_train" in r][1:]
    from dicc.data.build import build_run_data

    images = len(build_run_data(cfg.data, need_test=False).train) // batch * batch
    return images * len(recs) / sum(r["time_train"] for r in recs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="scratch folder for the engine's run directories")
    ap.add_argument("--data", help="FER2013 root (default: the built-in synthetic data)")
    ap.add_argument(
        "--longtail",
        default="[280,40,360,800,500,200,620]",
        help="training subset (default 2,800 images of the built-in data)",
    )
    ap.add_argument("--models", default="vgg_fer:8,vgg_fer:24,vgg_fer:48,resnet18")
    ap.add_argument("--modes", default="fp32,fp32-cl,auto,bf16-cl")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is not timed")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="also write the raw measurements here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = [f"data.longtail={args.longtail}", f"train.threads={args.threads}"]
    if args.data:
        base.append(f"data.path={args.data}")
    from dicc.data.build import build_run_data

    cfg = load_config(None, [*base, "data.val=null", "data.test_split=null"])
    train = build_run_data(cfg.data, need_test=False).train
    images, labels = train.images, train.labels
    out = Path(args.out)
    rows, raw = [], []
    models = []
    for spec in args.models.split(","):
        name, _, w = spec.partition(":")
        models.append((name, int(w) if w else None))
    from dicc.models import create_model

    for name, width in models:
        modes = args.modes.split(",")
        auto = _resolve("auto", create_model(name, 7, width=width))
        print(f"{name} w{width}: auto resolves to {auto.describe()} on this machine", flush=True)
        if "auto" in modes:  # measured once: the mode it resolves to (or as its own when it is another)
            same = {"fp32": (None, False), "fp32-cl": (None, True)}
            twin = next((m for m in modes if m in same and same[m] == (auto.dtype, auto.channels_last)), None)
            if twin is not None:
                modes = [m for m in modes if m != "auto"]
                print(f"  (auto = {twin}: reported under {twin})", flush=True)
        for mode in modes:
            hands, engines, ratios = [], [], []
            for r in range(args.repeats):
                order = ("hand", "engine") if r % 2 == 0 else ("engine", "hand")
                got = {}
                for which in order:
                    if which == "hand":
                        got["hand"] = hand_loop(images, labels, name, width, mode, args.epochs, args.batch, r)
                    else:
                        run_dir = out / f"{name}{width or ''}-{mode}-r{r}"
                        if run_dir.exists():
                            import shutil

                            shutil.rmtree(run_dir)
                        got["engine"] = engine_run(run_dir, base, name, width, mode, args.epochs, args.batch, r)
                hands.append(got["hand"])
                engines.append(got["engine"])
                ratios.append(got["engine"] / got["hand"])
                raw.append({"model": name, "width": width, "mode": mode, "repeat": r, **got})
                print(json.dumps(raw[-1]), flush=True)
            rows.append(
                (
                    name,
                    width,
                    mode,
                    statistics.median(hands),
                    statistics.median(engines),
                    statistics.median(ratios),
                    min(ratios),
                    max(ratios),
                )
            )
    print()
    print("| model | mode | hand img/s | engine img/s | engine/hand (range) |")
    print("|---|---|---:|---:|---:|")
    for name, width, mode, h, e, r, lo, hi in rows:
        label = f"{name} w{width}" if width else name
        print(f"| {label} | {mode} | {h:.0f} | {e:.0f} | {r:.3f} ({lo:.2f}-{hi:.2f}) |")
    fp32 = {(n, w): e for n, w, m, h, e, *_ in rows if m == "fp32"}
    print()
    print("| model | mode | engine img/s / engine fp32 img/s |")
    print("|---|---|---:|")
    for name, width, mode, h, e, *_ in rows:
        if mode != "fp32" and (name, width) in fp32:
            label = f"{name} w{width}" if width else name
            print(f"| {label} | {mode} | {e / fp32[(name, width)]:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
