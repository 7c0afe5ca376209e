"""End-to-end frames/s of ``Recognizer.predict_video`` on a 640x480 video, one thread (issue 24).

The script makes two videos from ``dicc/assets/sample_face.jpg`` (written with OpenCV, MJPG, into
a temporary folder): one face in the middle of the frame, and four copies of it at different
places; each face drifts a few pixels from frame to frame. Each is run through
``Recognizer.predict_video`` (detection, crops, classification, tracking, the records: what
``dicc predict clip.mp4`` does, ``--chunk`` frames at a time as it does) with the Haar detector
and with MTCNN (when facenet-pytorch is installed; else a row says it is not). Beside the
end-to-end figure: the classifier alone from the same run (the time spent in
``Recognizer.classify`` over the faces it classified, in the run's batches), and the same faces
classified one at a time (batch 1). One thread for torch, onnxruntime and OpenCV.

    python benchmarks/video_speed.py --frames 300 --out benchmarks/video_speed.md
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify_overhead import cpu_description  # noqa: E402

SIZE = (640, 480)  # width, height
FPS = 25
# top-left corners of the 200x200 face photo: one face, and four at different places
LAYOUTS = {1: [(220, 140)], 4: [(20, 15), (410, 30), (70, 265), (395, 250)]}


def make_video(path: Path, photo: np.ndarray, corners, frames: int) -> Path:
    """A ``SIZE`` MJPG video of ``frames`` frames with ``photo`` (BGR) at ``corners``, each copy
    drifting up to 8 pixels (its own phase)."""
    import cv2

    h, w = photo.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for t in range(frames):
        frame = np.full((SIZE[1], SIZE[0], 3), 96, np.uint8)
        for k, (x, y) in enumerate(corners):
            dx = int(round(8 * math.sin(2 * math.pi * t / 50 + k)))
            dy = int(round(6 * math.cos(2 * math.pi * t / 70 + k)))
            x0 = min(max(0, x + dx), SIZE[0] - w)
            y0 = min(max(0, y + dy), SIZE[1] - h)
            frame[y0 : y0 + h, x0 : x0 + w] = photo
        writer.write(frame)
    writer.release()
    return path


class _TimedClassify:
    """Wraps a Recognizer's ``classify``: the time spent in it, the faces it got, and their pixels."""

    def __init__(self, rec) -> None:
        self.inner, self.seconds, self.faces, self.pixels = rec.classify, 0.0, 0, []
        rec.classify = self

    def __call__(self, pixels):
        t = time.perf_counter()
        out = self.inner(pixels)
        self.seconds += time.perf_counter() - t
        self.faces += len(pixels)
        self.pixels.append(np.asarray(pixels))
        return out


def run(model: str, detector: str, video: Path, chunk: int) -> dict:
    from dicc.predict import Recognizer
    from dicc.predict.recognizer import default_model_file

    path = default_model_file("cpu") if model == "default" else Path(model)
    opts = {"threads": 1} if str(path).endswith(".onnx") else {"device": "cpu"}
    rec = Recognizer.load(path, detector=detector, **opts)
    rec.detector.load()
    import cv2

    ok, first = cv2.VideoCapture(str(video)).read()
    if ok:  # warm-up, untimed: the detector's and the backend's first calls (allocations, kernel choice)
        for _ in range(2):
            rec.analyze_detections([first], bgr=True)
    timed = _TimedClassify(rec)
    t = time.perf_counter()
    records = list(rec.predict_video(str(video), chunk=chunk))
    seconds = time.perf_counter() - t
    faces = sum(len(r["faces"]) for r in records)
    crops = np.concatenate(timed.pixels) if timed.pixels else np.zeros((0, rec.channels, 48, 48), np.uint8)
    t = time.perf_counter()
    for i in range(len(crops)):
        timed.inner(crops[i : i + 1])
    b1 = time.perf_counter() - t
    return {
        "frames": len(records),
        "faces_per_frame": faces / max(len(records), 1),
        "fps": len(records) / seconds,
        "classify_share": timed.seconds / seconds,
        "classify_faces_s": timed.faces / timed.seconds if timed.seconds else float("nan"),
        "classify_b1_faces_s": len(crops) / b1 if b1 else float("nan"),
        "rec": rec,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="the model (default: the bundled one, its default path)")
    ap.add_argument("--frames", type=int, default=300, help="frames per video (default 300)")
    ap.add_argument("--chunk", type=int, default=16, help="frames per batch (default 16, as dicc predict clip.mp4)")
    ap.add_argument("--detectors", default="haar,mtcnn", help="comma-separated (default haar,mtcnn)")
    ap.add_argument("--out", default="benchmarks/video_speed.md", help="write the markdown here")
    args = ap.parse_args(argv)
    from dicc.faces import DETECTORS

    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        ap.error(f"--detectors: unknown {', '.join(unknown)}; valid: {', '.join(DETECTORS)}")

    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from dicc.checkpoint import ASSETS

    photo = cv2.imread(str(ASSETS / "sample_face.jpg"))
    rows, described = [], None
    with tempfile.TemporaryDirectory() as tmp:
        videos = {n: make_video(Path(tmp) / f"faces{n}.avi", photo, c, args.frames) for n, c in LAYOUTS.items()}
        for detector in detectors:
            if detector == "mtcnn":
                try:
                    import facenet_pytorch  # noqa: F401
                except ImportError:
                    rows.append("| mtcnn | - | not installed (pip install 'dicc[detect]') | | | | |")
                    continue
            for n, video in videos.items():
                r = run(args.model, detector, video, args.chunk)
                rec = r.pop("rec")
                described = described or f"{rec.source} ({rec.backend!r}, input {rec.input_kind}, tta {rec.tta})"
                rows.append(
                    f"| {detector} | {n} | {r['faces_per_frame']:.2f} | {r['fps']:,.1f} | "
                    f"{100 * r['classify_share']:.0f} % | {r['classify_faces_s']:,.0f} | "
                    f"{r['classify_b1_faces_s']:,.0f} |"
                )
                print(rows[-1], file=sys.stderr, flush=True)

    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    text = "\n".join(
        [
            "# End-to-end video speed: Recognizer.predict_video on 640x480, one thread",
            "",
            f"Command: `{cmd}`",
            "",
            f"CPU: {cpu_description()}. One thread (torch, onnxruntime, OpenCV). Model: {described}. "
            f"Videos: {args.frames} frames of {SIZE[0]}x{SIZE[1]} (MJPG, made from dicc/assets/sample_face.jpg), "
            f"{args.chunk} frames per batch. End-to-end: decoding, detection, crops, classification, "
            "tracking and the records. Classifier: the time in Recognizer.classify over the faces it "
            "got in this run (in the run's batches), and the same faces one at a time.",
            "",
            "| detector | faces placed | faces found per frame | end-to-end frames/s | classifier's share "
            "of the time | classifier faces/s (run's batches) | classifier faces/s (batch 1) |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
