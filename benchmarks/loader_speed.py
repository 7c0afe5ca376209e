"""Streaming loader throughput: images per second that ``dicc.data.loader.iterate_batches``
decodes from JPEG files on disk, with 0, 1, 2, ... worker processes.

Without ``--data`` it writes ``--n`` JPEG files (``--size`` x ``--size`` RGB, quality 90; the
built-in synthetic faces, upscaled and tinted, so they compress like photos rather than noise)
as a flat class-folder dataset in a temporary folder, and reads them back. With ``--data PATH``
it reads any dataset dicc can load (``--format``, ``--split``; e.g. AffectNet's training set).
Each pass reads every image once, in a seeded random order (as a training epoch does), through
``load_split(..., in_memory=False)`` then ``iterate_batches(..., workers=W)``; passes with
different worker counts are interleaved (round 1: W=0, 1, 2; round 2: ...), so they share the
machine's load, and the median pass is reported. The first pass of every worker count is a
warm-up (file cache, worker start) and is not counted.

``--step-ms T`` makes the main process sleep T ms after each batch: a training step on a GPU,
which leaves the CPU free. Without workers a pass then costs decoding + steps; with workers the
decoding of the next batches overlaps the steps, which is what workers are for.

``--listing-rows N`` times something else: reading the labels of an AffectNet-style
``training.csv`` of N rows (136 landmark values per row, as AffectNet's; no image files), which
every ``load_split`` and ``dicc data info`` of AffectNet does before any image is read.

    python benchmarks/loader_speed.py --n 2000 --size 224 --workers 0 1 2 --out benchmarks/loader_speed.md
    python benchmarks/loader_speed.py --listing-rows 287651
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_jpegs(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` RGB JPEGs of ``size`` x ``size`` under ``root/<class>/``, from the synthetic faces."""
    from PIL import Image

    from dicc.data.classes import EMOTIONS
    from dicc.data.synthetic import make_synthetic

    per_class = [n // len(EMOTIONS) + (1 if c < n % len(EMOTIONS) else 0) for c in range(len(EMOTIONS))]
    ds = make_synthetic("train", seed=seed, counts=per_class, image_size=min(size, 96))
    rng = np.random.default_rng(seed)
    for i in range(len(ds)):
        gray = Image.fromarray(ds.images[i, 0].numpy()).resize((size, size), Image.Resampling.BILINEAR)
        tint = rng.uniform(0.8, 1.2, 3)
        rgb = np.clip(np.asarray(gray, dtype=np.float32)[..., None] * tint, 0, 255).astype(np.uint8)
        folder = root / EMOTIONS[int(ds.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / f"img_{i:06d}.jpg", quality=90)


def time_affectnet_listing(rows: int, seed: int = 0) -> str:
    """Seconds to read the labels of a generated AffectNet ``training.csv`` of ``rows`` rows."""
    from dicc.data.formats import split_summary

    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix="dicc-affectnet-"))
    try:
        with open(tmp / "training.csv", "w") as f:
            f.write(
                "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                "expression,valence,arousal\n"
            )
            codes = rng.integers(0, 11, rows)
            for i in range(rows):
                marks = ";".join(f"{v:.2f}" for v in rng.uniform(0, 400, 136))
                f.write(f"{i % 1000}/{rng.bytes(20).hex()}.jpg,33,33,300,300,{marks},{codes[i]},0.1,-0.2\n")
        mb = (tmp / "training.csv").stat().st_size / 1e6
        t0 = time.perf_counter()
        kept = len(split_summary(tmp, "train", fmt="affectnet").labels)
        took = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (
        f"AffectNet-style training.csv, {rows:,} rows ({mb:.0f} MB): labels read in {took:.2f} s "
        f"({kept:,} kept in emotions7)"
    )


def one_pass(ds, order: torch.Tensor, batch_size: int, workers: int, step_s: float = 0.0) -> tuple[float, float]:
    """(seconds for the whole pass, seconds to the first batch)."""
    from dicc.data.loader import iterate_batches

    t0 = time.perf_counter()
    first = None
    seen = 0
    for x, _, _ in iterate_batches(ds, order, batch_size, workers=workers):
        if first is None:
            first = time.perf_counter() - t0
        seen += len(x)
        if step_s:
            time.sleep(step_s)
    assert seen == len(order)
    return time.perf_counter() - t0, first or 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a dataset to read (default: generate JPEG files in a temp folder)")
    p.add_argument("--format", default="auto")
    p.add_argument("--split", default="all", help="split of --data (default all; e.g. train)")
    p.add_argument("--classes", default=None, help="label space of --data (emotions7, emotions8, a,b,c)")
    p.add_argument("--n", type=int, default=2000, help="generated images (without --data)")
    p.add_argument("--size", type=int, default=224, help="side of the generated JPEGs")
    p.add_argument("--image-size", type=int, default=None, help="decoded size (default --size)")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="read only this many images of --data per pass")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=3, help="timed passes per worker count")
    p.add_argument(
        "--step-ms", type=float, default=0.0, help="simulated GPU training step per batch (the main process sleeps)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument(
        "--full-decode",
        action="store_true",
        help="decode JPEGs at full size before resizing (dicc.data.decode.JPEG_DRAFT = False)",
    )
    p.add_argument(
        "--listing-rows",
        type=int,
        default=None,
        help="only time reading the labels of a generated AffectNet CSV of this many rows",
    )
    p.add_argument("--out", help="also write the results as Markdown to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.listing_rows:
        print(time_affectnet_listing(args.listing_rows))
        return 0

    from dicc.data import decode
    from dicc.data.formats import load_split

    decode.JPEG_DRAFT = not args.full_decode  # the worker processes fork with it
    tmp = None
    try:
        if args.data is None:
            tmp = Path(tempfile.mkdtemp(prefix="dicc-loader-"))
            t0 = time.perf_counter()
            make_jpegs(tmp, args.n, args.size)
            made = time.perf_counter() - t0
            data, split, fmt = tmp, "all", "imagefolder"
            total_bytes = sum(f.stat().st_size for f in tmp.rglob("*.jpg"))
            what = (
                f"{args.n} generated {args.size}x{args.size} RGB JPEGs (quality 90, mean "
                f"{total_bytes / args.n / 1024:.1f} KiB; written in {made:.1f} s)"
            )
        else:
            data, split, fmt = Path(args.data), args.split, args.format
            what = f"`{args.data}` ({args.format}, split {args.split})"
        size = args.image_size or args.size
        t0 = time.perf_counter()
        ds = load_split(
            data, split, fmt=fmt, image_size=size, channels=args.channels, in_memory=False, classes=args.classes
        )
        listing = time.perf_counter() - t0
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
        if args.limit:
            order = order[: args.limit]
        n = len(order)
        load0 = os.getloadavg()[0]
        times: dict[int, list[float]] = {w: [] for w in args.workers}
        firsts: dict[int, list[float]] = {w: [] for w in args.workers}
        for r in range(args.repeats + 1):  # round 0 is the warm-up
            for w in args.workers:
                t, first = one_pass(ds, order, args.batch_size, w, args.step_ms / 1000)
                if r > 0:
                    times[w].append(t)
                    firsts[w].append(first)
                print(
                    f"round {r} workers={w}: {n / t:,.0f} images/s ({t:.2f} s, first batch {first:.2f} s)"
                    + (" [warm-up]" if r == 0 else ""),
                    file=sys.stderr,
                )
        load1 = os.getloadavg()[0]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    command = "python benchmarks/loader_speed.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [
        "| workers | images/s (median) | min - max | s per pass | first batch (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for w in args.workers:
        rates = [n / t for t in times[w]]
        lines.append(
            f"| {w} | {statistics.median(rates):,.0f} | {min(rates):,.0f} - {max(rates):,.0f} | "
            f"{statistics.median(times[w]):.2f} | {statistics.median(firsts[w]):.2f} |"
        )
    report = "\n".join(
        [
            f"Data: {what}; {n} images per pass decoded to {args.channels}x{size}x{size} uint8, batch "
            f"{args.batch_size}"
            + ("; JPEGs decoded at full size, then resized (`--full-decode`)" if args.full_decode else "")
            + f"; `load_split` (listing the files, no decoding) took {listing:.2f} s."
            + (
                f" A simulated GPU step of {args.step_ms:g} ms per batch (the main process sleeps) is "
                f"included: {-(-n // args.batch_size)} steps, {-(-n // args.batch_size) * args.step_ms / 1000:.2f} s "
                "of every pass."
                if args.step_ms
                else ""
            ),
            "",
            f"Command: `{command}`",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, Pillow {__import__('PIL').__version__}; load average (1 min) "
            f"{load0:.1f} at the start, {load1:.1f} at the end. Median of {args.repeats} timed passes "
            "after one warm-up pass per worker count, interleaved.",
            "",
            *lines,
        ]
    )
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
