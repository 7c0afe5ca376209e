"""Face detectors compared: faces found in real photos, and frames/s and faces/s on a video built from real photos.

Photos (all ship in scikit-image's wheel; faces counted by hand):
- ``lfw_subset.npy``: 100 LFW face crops and 100 non-face patches (25x25 gray), each upscaled 4x
  (bicubic) and padded by 50 px of repeated border to 200x200, upright and turned by 25 degrees;
- ``astronaut.png`` (1 face), ``camera.png`` (1 face: the cameraman), and ``coffee``, ``chelsea``
  (a cat), ``rocket``, ``motorcycle_left``, ``hubble_deep_field``, ``coins`` (no face).

Video (no package ships one; built here, deterministic): 640x480, 25 fps, ``--frames`` frames,
MJPG in AVI. Background: scikit-image's ``coffee`` photo resized to 640x480. On it, three real
faces move: the astronaut's head (150 px, left to right), LFW face 0 (120 px, right to left) and
LFW face 1 (120 px, top to bottom, swinging between -20 and +20 degrees). 3 faces per frame.
Timed: reading + detection only, and the full ``Recognizer.predict_video`` pipeline (detection,
alignment, a vgg_fer width-8 model with random weights: speed does not depend on the weights),
with 1 and 2 threads (``torch.set_num_threads`` and ``cv2.setNumThreads``).

    python benchmarks/detectors.py --threads 1 2 --out benchmarks/detectors.md
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE, FPS = (640, 480), 25.0


def _lfw() -> np.ndarray:
    import skimage

    return np.load(os.path.join(os.path.dirname(skimage.__file__), "data", "lfw_subset.npy"))


def _up(gray01: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(
        Image.fromarray((gray01 * 255).round().astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    )


def _rotate(image: np.ndarray, angle: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def photo_sets() -> dict[str, tuple[list[np.ndarray], int]]:
    """name -> (images, faces in them, counted by hand)."""
    from skimage import data

    lfw = _lfw()
    faces = [np.pad(_up(f, 100), 50, mode="edge") for f in lfw[:100]]
    others = [np.pad(_up(f, 100), 50, mode="edge") for f in lfw[100:]]
    no_face = [
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.stereo_motorcycle()[0],
        data.hubble_deep_field(),
        data.coins(),
    ]
    return {
        "LFW faces, upright (100 images)": (faces, 100),
        "LFW faces, turned 25° (100 images)": ([_rotate(f, 25) for f in faces], 100),
        "LFW non-faces (100 patches)": (others, 0),
        "astronaut": ([data.astronaut()], 1),
        "camera (cameraman)": ([data.camera()], 1),
        "6 photos without faces": (no_face, 0),
    }


def make_video(path: Path, frames: int) -> Path:
    """The clip described in the module docstring."""
    import cv2
    from PIL import Image
    from skimage import data

    w = SIZE[0]
    background = np.asarray(Image.fromarray(data.coffee()).resize(SIZE, Image.Resampling.BILINEAR))
    head = np.asarray(Image.fromarray(data.astronaut()[6:221, 117:332]).resize((150, 150)))
    lfw = _lfw()
    faces = [np.repeat(np.pad(_up(lfw[i], 80), 20, mode="edge")[:, :, None], 3, 2) for i in (0, 1)]  # 120 px
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    if not writer.isOpened():
        raise SystemExit(f"{path}: OpenCV cannot write MJPG video here")
    for i in range(frames):
        u = i / max(frames - 1, 1)
        f = background.copy()
        ax, ay = int(10 + u * (w - 170)), 20
        f[ay : ay + 150, ax : ax + 150] = head
        bx, by = int(w - 130 - u * (w - 300)), 300
        f[by : by + 120, bx : bx + 120] = faces[0]
        cx, cy = 470, int(10 + u * 150)
        f[cy : cy + 120, cx : cx + 120] = _rotate(faces[1], 20 * np.sin(2 * np.pi * u))
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()
    return path


def count_faces(threads: int) -> list[tuple[str, int, int, int, int]]:
    """(set, faces by hand, images, found by haar, found by mtcnn), found = detections."""
    from dicc.faces import HaarDetector, MtcnnDetector

    _threads(threads)
    rows = []
    dets = [HaarDetector(), MtcnnDetector()]
    for name, (images, truth) in photo_sets().items():
        found = [sum(len(f) for f in d.detect_many(images)) for d in dets]
        rows.append((name, truth, len(images), *found))
    return rows


def _threads(n: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def time_video(video: Path, ckpt: Path, detector: str, threads: int, repeats: int) -> dict:
    from dicc.predict import Recognizer, VideoReader

    _threads(threads)
    rec = Recognizer.from_checkpoint(ckpt, device="cpu", detector=detector)
    rec.detector.load()
    list(rec.predict_video(video, chunk=8))  # warm-up
    best_det = best_all = cpu_det = cpu_all = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        frames = [f.image for f in VideoReader(video)]
        found = []
        for at in range(0, len(frames), 8):
            found += rec.detector.detect_many(frames[at : at + 8])
        best_det, cpu_det = min(best_det, time.perf_counter() - t0), min(cpu_det, time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        records = list(rec.predict_video(video, chunk=8))
        best_all, cpu_all = min(best_all, time.perf_counter() - t0), min(cpu_all, time.process_time() - c0)
        faces = sum(len(r["faces"]) for r in records)
        ids = {f["face_id"] for r in records for f in r["faces"]}
    n = len(records)
    return {
        "detector": detector,
        "threads": threads,
        "frames": n,
        "faces": faces,
        "ids": len(ids),
        "det_fps": n / best_det,
        "fps": n / best_all,
        "faces_s": faces / best_all,
        "det_cpu": n / cpu_det,
        "cpu": n / cpu_all,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2, help="timed passes over the video (best is reported)")
    p.add_argument("--keep-video", metavar="FILE", help="also keep the generated clip here")
    p.add_argument("--out", help="also write the Markdown tables to this file")
    args = p.parse_args(argv)
    import torch

    from dicc import EMOTIONS
    from dicc.checkpoint import FORMAT, VERSION, save_atomic
    from dicc.models import create_model

    tmp = Path(tempfile.mkdtemp(prefix="dicc-detectors-"))
    video = make_video(Path(args.keep_video) if args.keep_video else tmp / "faces.avi", args.frames)
    torch.manual_seed(0)
    model = create_model("vgg_fer", 7, width=8)
    ckpt = save_atomic(
        {
            "format": FORMAT,
            "version": VERSION,
            "class_names": list(EMOTIONS),
            "class_counts": [1] * 7,
            "model": model.state_dict(),
            "config": {},
            "epoch": 0,
            "model_spec": {
                "name": "vgg_fer",
                "width": 8,
                "num_outputs": 7,
                "head_type": "linear",
                "in_channels": 1,
                "image_size": 48,
                "dropout": 0.0,
            },
            "normalization": {"mean": 0.5, "std": 0.25, "image_size": 48, "channels": 1},
            "strategy": {"name": "ce", "options": {}, "state": {}},
        },
        tmp / "w8.pt",
    )
    load = os.getloadavg()[0]
    counts = count_faces(1)
    lines = [
        f"Machine: {os.cpu_count()} CPU cores, load average {load:.2f} at the start; torch {torch.__version__}.",
        "",
        "### Faces found in real photos (scikit-image's)",
        "",
        "| photos | faces (by hand) | images | haar found | mtcnn found |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {t} | {k} | {a} | {b} |" for n, t, k, a, b in counts]
    print("\n".join(lines), flush=True)
    rows = [time_video(video, ckpt, d, t, args.repeats) for t in args.threads for d in ("haar", "mtcnn")]
    lines += [
        "",
        f"### Speed on the generated video ({args.frames} frames of 640x480, 3 real faces per frame)",
        "",
        "Wall-clock rates are the best of the timed passes; CPU rates are frames per CPU-second of this "
        "process (all its threads), which a busy machine disturbs less.",
        "",
        "| detector | threads | faces found (of {}) | face ids | detection only, frames/s | full pipeline, "
        "frames/s | full pipeline, faces/s | detection only, frames per CPU-s | full pipeline, frames per CPU-s "
        "|".format(3 * args.frames),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['detector']} | {r['threads']} | {r['faces']} | {r['ids']} | {r['det_fps']:.1f} | "
        f"{r['fps']:.1f} | {r['faces_s']:.1f} | {r['det_cpu']:.1f} | {r['cpu']:.1f} |"
        for r in rows
    ]
    load1 = os.getloadavg()[0]
    lines += ["", f"Load average at the end: {load1:.2f} (other jobs shared the 2 cores)."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
