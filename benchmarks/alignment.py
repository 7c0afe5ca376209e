"""Does aligning faces by their landmarks change accuracy? Rotated FER2013 faces, detected, cropped, classified.

Two commands (the data path is an argument; nothing here reads a fixed location):

``template DATA``: where MTCNN puts the eyes and mouth in FER2013 training faces (each 48x48 face
upscaled 4x to 192 px and padded by 64 px of repeated border so the detector sees the whole
face); the medians are :data:`dicc.faces.align.TEMPLATE`.

``measure DATA RUN``: FER2013 PublicTest faces (``DATA/test/<class>/PublicTest_*.jpg``, a seeded
sample), each upscaled 3x to 144 px, padded by repeating its border to a 256x256 canvas, and
rotated about the canvas centre by each angle (border repeated); then each detector + crop
mode: ``haar`` (box + margin 0.1), ``mtcnn`` with ``box`` (box + margin 0.1), ``frame``
(landmark square, not rotated) and ``rotate`` (landmark square, eyes levelled). When a detector
finds several faces the one nearest the canvas centre is used. Reported per angle: detection
rate, accuracy over all faces (a missed face counts as wrong) and accuracy over the detected
ones; plus the accuracy on the original 48x48 faces (no detection), the ceiling.

    python benchmarks/alignment.py template PATH/fer2013 --n 2000
    python benchmarks/alignment.py measure PATH/fer2013 RUN_DIR --n 1000 --out alignment_tables.md

Results and the model's training command: ``benchmarks/alignment.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _files(root: Path, split: str, prefix: str, n: int, seed: int) -> list[tuple[Path, int]]:
    files = []
    for c, name in enumerate(CLASSES):
        folder = root / split / name
        if not folder.is_dir():
            sys.exit(f"{folder}: no such folder (expected FER2013 folders: {split}/<class>/*.jpg)")
        files += [(p, c) for p in sorted(folder.glob(f"{prefix}*.jpg"))]
    if not files:
        sys.exit(f"{root / split}: no {prefix}*.jpg files")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(files))[:n] if n and n < len(files) else np.arange(len(files))
    return [files[i] for i in sorted(idx)]


def _gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def _upscale(face: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(face).resize((size, size), Image.Resampling.BICUBIC))


def template(args) -> None:
    import torch

    from dicc.faces import MtcnnDetector

    torch.set_num_threads(args.threads)
    files = _files(Path(args.data), "train", "", args.n, args.seed)
    det = MtcnnDetector(min_size=40)
    scale, pad = 4, 64
    side = 48 * scale
    eye_y, eye_d, eye_m, cx = [], [], [], []
    images = [np.pad(_upscale(_gray(p), side), pad, mode="edge") for p, _ in files]
    t0 = time.perf_counter()
    for at in range(0, len(images), 32):
        for found in det.detect_many(images[at : at + 32]):
            if not len(found):
                continue
            centre = found.boxes[:, :2] + found.boxes[:, 2:] / 2
            k = int(np.argmin(np.hypot(*(centre - (pad + side / 2)).T)))
            lm = (found.landmarks[k] - pad) / side
            mid = (lm[0] + lm[1]) / 2
            mouth = (lm[3] + lm[4]) / 2
            eye_y.append(mid[1])
            cx.append(mid[0])
            eye_d.append(np.hypot(*(lm[1] - lm[0])))
            eye_m.append(np.hypot(*(mouth - mid)))
    n = len(eye_y)
    print(f"{len(files)} FER2013 training faces, MTCNN found {n} ({time.perf_counter() - t0:.0f} s)")
    for name, v in (("eye_y", eye_y), ("eye_distance", eye_d), ("eye_mouth", eye_m), ("eye midpoint x", cx)):
        q = np.percentile(v, [10, 50, 90])
        print(f"{name:>15}: median {q[1]:.3f}  (10%-90%: {q[0]:.3f}-{q[2]:.3f})")


def _canvas(face: np.ndarray, size: int, canvas: int, angle: float) -> np.ndarray:
    import cv2

    up = _upscale(face, size)
    pad = (canvas - size) // 2
    img = np.pad(up, ((pad, canvas - size - pad), (pad, canvas - size - pad)), mode="edge")
    if angle:
        m = cv2.getRotationMatrix2D((canvas / 2 - 0.5, canvas / 2 - 0.5), angle, 1.0)
        img = cv2.warpAffine(img, m, (canvas, canvas), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(img)


def measure(args) -> None:
    import torch

    from dicc.faces import Detections, HaarDetector, MtcnnDetector
    from dicc.predict import Recognizer

    torch.set_num_threads(args.threads)
    files = _files(Path(args.data), "test", "PublicTest_", args.n, args.seed)
    labels = np.array([c for _, c in files])
    faces = [_gray(p) for p, _ in files]
    rec = Recognizer.load(args.run, device="cpu", batch_size=256)
    if tuple(rec.class_names) != CLASSES:
        sys.exit(f"{args.run}: class names {rec.class_names} are not FER2013's")
    base = rec.classify(np.stack([f[None] for f in faces])).argmax(1)
    ceiling = float((base == labels).mean())
    angles = [float(a) for a in args.angles.split(",")]
    haar, mtcnn = HaarDetector(), MtcnnDetector()
    modes = [("haar", haar, "box"), ("mtcnn", mtcnn, "box"), ("mtcnn", mtcnn, "frame"), ("mtcnn", mtcnn, "rotate")]
    centre = args.canvas / 2
    rows, t0 = [], time.perf_counter()
    for angle in angles:
        images = [_canvas(f, args.size, args.canvas, angle) for f in faces]
        found: dict[str, list[Detections]] = {}
        for name, det in (("haar", haar), ("mtcnn", mtcnn)):
            found[name] = []
            for at in range(0, len(images), 32):
                found[name] += det.detect_many(images[at : at + 32])
        for name, _, mode in modes:
            rec.align = mode
            pixels, hit = [], []
            for i, (img, f) in enumerate(zip(images, found[name])):
                if not len(f):
                    continue
                c = f.boxes[:, :2] + f.boxes[:, 2:] / 2
                k = int(np.argmin(np.hypot(*(c - centre).T)))
                one = Detections(
                    f.boxes[k : k + 1],
                    None if f.scores is None else f.scores[k : k + 1],
                    None if f.landmarks is None else f.landmarks[k : k + 1],
                )
                pixels.append(rec.crop(img, one)[0])
                hit.append(i)
            hit = np.array(hit, dtype=np.int64)
            pred = rec.classify(np.stack(pixels)).argmax(1) if len(pixels) else np.zeros(0, np.int64)
            correct = int((pred == labels[hit]).sum())
            same = float((base[hit] == labels[hit]).mean()) if len(hit) else 0.0  # the 48x48 originals of these faces
            rows.append(
                (angle, f"{name} {mode}", len(hit) / len(files), correct / len(files), correct / max(len(hit), 1), same)
            )
            print(
                f"angle {angle:+5.0f}  {name:>5} {mode:<6}  detected {len(hit) / len(files):6.1%}  "
                f"accuracy {correct / len(files):6.1%} (of detected {correct / max(len(hit), 1):6.1%}; their "
                f"48x48 originals {same:6.1%})  [{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )
    lines = [
        f"FER2013 PublicTest sample: {len(files)} faces (seed {args.seed}); model {args.run} "
        f"(accuracy on the original 48x48 faces, no detection: {ceiling:.1%}); {args.threads} thread(s).",
        "",
        "| angle | detector + crop | detected | accuracy (all faces) | accuracy (detected) | "
        "the detected faces' 48x48 originals |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {a:+.0f}° | {m} | {d:.1%} | {acc:.1%} | {accd:.1%} | {same:.1%} |" for a, m, d, acc, accd, same in rows
    ]
    means: dict[str, list] = {}
    for a, m, *v in rows:
        means.setdefault(m, []).append(v)
    lines += [
        "",
        "Mean over the angles:",
        "",
        "| detector + crop | detected | accuracy (all faces) | "
        "accuracy (detected) | the detected faces' 48x48 originals |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {m} | " + " | ".join(f"{np.mean([v[j] for v in vs]):.1%}" for j in range(4)) + " |"
        for m, vs in means.items()
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("template", help="measure where MTCNN puts the eyes and mouth in FER2013 faces")
    t.add_argument("data", help="FER2013 folders (train/<class>/*.jpg)")
    t.add_argument("--n", type=int, default=2000)
    m = sub.add_parser("measure", help="accuracy with and without alignment on rotated PublicTest faces")
    m.add_argument("data", help="FER2013 folders (test/<class>/PublicTest_*.jpg)")
    m.add_argument("run", help="a run directory, checkpoint or .onnx model trained on FER2013")
    m.add_argument("--n", type=int, default=1000, help="faces sampled from PublicTest (0: all)")
    m.add_argument("--angles", default="0,15,-15,30,-30")
    m.add_argument("--size", type=int, default=144, help="the face's side after upscaling")
    m.add_argument("--canvas", type=int, default=256)
    m.add_argument("--out", help="also write the Markdown table to this file")
    for q in (t, m):
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    template(args) if args.command == "template" else measure(args)


if __name__ == "__main__":
    main()
