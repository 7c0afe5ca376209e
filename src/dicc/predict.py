"""Inference on new images and videos: faces found, each with its box and emotion probabilities.

>>> from dicc.predict import Recognizer
>>> rec = Recognizer.from_checkpoint("runs/dicc-seed0")          # or Recognizer.from_onnx("m.onnx")
>>> rec("photo.jpg")                                              # a path, PIL image or numpy array
[{'box': [177, 66, 95, 95], 'emotions': {'angry': 0.01, ..., 'neutral': 0.05}, 'dominant': 'happy'}]
>>> rec(face_48x48, detect=False)                                 # already cropped: one face
>>> rec.predict_batch([img1, img2])                               # one list of faces per image

Faces are found with OpenCV's Haar cascade (:mod:`dicc.faces`), cropped with a margin,
converted to the model's input exactly as training images are (grayscale, bilinear resize,
``(x / 255 - mean) / std`` from the checkpoint) and classified in batches. The probabilities are
over the parent classes: a strategy's sub-classes (DICC) are merged by its ``parent_logits``.

The ``dicc predict`` command (:func:`run_predict`) runs this over images, folders and videos.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .faces import (FaceDetector, as_image_array, expand_box, face_pixels, load_image, normalize_batch,
                    require_cv2)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm")

__all__ = ["Recognizer", "VIDEO_EXTENSIONS", "iter_video_frames", "annotate", "is_video_file",
           "add_predict_parser", "run_predict"]


def is_video_file(name: str | os.PathLike) -> bool:
    base = os.path.basename(os.fspath(name))
    return not base.startswith(".") and base.lower().endswith(VIDEO_EXTENSIONS)


# -- backends: normalised float32 [N, C, S, S] -> probabilities [N, num_classes] ----------------
class _TorchBackend:
    def __init__(self, model, strategy, device) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.strategy = strategy

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            # the merge runs on the CPU: [N, outputs] is tiny, and strategies keep their tensors there
            logits = self.model(torch.from_numpy(x).to(self.device)).float().cpu()
            return torch.softmax(self.strategy.parent_logits(logits), dim=1).numpy()


class _OnnxBackend:
    def __init__(self, session) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def _auto_device(device):
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class Recognizer:
    """Faces and their emotion probabilities from images.

    Build one with :meth:`from_checkpoint` (a ``.pt`` checkpoint or a run directory) or
    :meth:`from_onnx` (a file written by :func:`dicc.export.export_onnx`); :meth:`load`
    picks by the file name. Options (keywords of both):

    - ``detector``: a :class:`dicc.faces.FaceDetector` (default: Haar cascade with
      ``scale_factor=1.1, min_neighbors=5, min_size=30``);
    - ``margin``: each detected box is grown by this fraction of its size on every side
      before cropping (clipped to the image; default 0.1). Reported boxes are the detector's;
    - ``batch_size``: faces per forward pass (default 64).
    """

    def __init__(self, backend, class_names: Sequence[str], *, mean: float, std: float, image_size: int,
                 channels: int, detector: FaceDetector | None = None, margin: float = 0.1, batch_size: int = 64,
                 source: str = "") -> None:
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.class_names = tuple(class_names)
        self.mean, self.std = float(mean), float(std)
        self.image_size, self.channels = int(image_size), int(channels)
        self.detector = detector if detector is not None else FaceDetector()
        self.margin = float(margin)
        self.batch_size = int(batch_size)
        self.source = source

    def __repr__(self) -> str:
        return (f"Recognizer({self.source!r}, classes={len(self.class_names)}, input={self.channels}x"
                f"{self.image_size}x{self.image_size}, margin={self.margin}, {self.detector!r})")

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path, *, device=None, **options) -> "Recognizer":
        """From a checkpoint file, a run directory, or an already loaded checkpoint dict.
        ``device``: "cpu", "cuda", ... (default: CUDA when available)."""
        from .checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = path if isinstance(path, dict) else load_checkpoint(path)
        model, strategy = model_from_checkpoint(ckpt)
        norm = ckpt["normalization"]
        backend = _TorchBackend(model, strategy, _auto_device(device))
        return cls(backend, ckpt["class_names"], mean=norm["mean"], std=norm["std"], image_size=norm["image_size"],
                   channels=norm["channels"], source=str(ckpt.get("_path", "")), **options)

    @classmethod
    def from_onnx(cls, path, *, providers: Sequence[str] | None = None, threads: int | None = None,
                  **options) -> "Recognizer":
        """From an ONNX file exported by ``dicc export`` (runs with onnxruntime; class names and
        normalisation come from the file's metadata). ``threads`` sets onnxruntime's intra-op
        threads (default: its own choice)."""
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(f"running an ONNX model needs onnxruntime: pip install onnxruntime ({err})") from None
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        try:
            session = ort.InferenceSession(str(path), so, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ValueError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from None
        meta = session.get_modelmeta().custom_metadata_map
        missing = [k for k in ("class_names", "mean", "std", "image_size", "channels") if k not in meta]
        if missing:
            raise ValueError(f"{path}: the ONNX metadata lacks {', '.join(missing)}; export the model with "
                             f"`dicc export CHECKPOINT --onnx FILE`")
        return cls(_OnnxBackend(session), json.loads(meta["class_names"]), mean=float(meta["mean"]),
                   std=float(meta["std"]), image_size=int(meta["image_size"]), channels=int(meta["channels"]),
                   source=str(path), **options)

    @classmethod
    def load(cls, path, **options) -> "Recognizer":
        """:meth:`from_onnx` for a ``.onnx`` file, :meth:`from_checkpoint` otherwise (``device``
        only applies to checkpoints)."""
        if str(path).lower().endswith(".onnx"):
            options.pop("device", None)
            return cls.from_onnx(path, **options)
        return cls.from_checkpoint(path, **options)

    # -- the steps ----------------------------------------------------------------------------------
    def extract_faces(self, image, *, detect: bool = True, bgr: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``int64 [N, 4]`` (x, y, w, h) and model pixels ``uint8 [N, C, S, S]`` of the faces
        in ``image``. With ``detect=False`` the whole image is one face (a file is then decoded
        exactly as training decodes it, :func:`dicc.data.decode.decode_array`)."""
        s, c = self.image_size, self.channels
        if isinstance(image, (str, os.PathLike)):
            if not detect:
                from PIL import Image

                from .data.decode import decode_array

                pixels = decode_array(image, s, c)
                with Image.open(image) as im:
                    w, h = im.size
                return np.array([[0, 0, w, h]], dtype=np.int64), pixels[None]
            image = load_image(image)
            bgr = False
        arr = as_image_array(image, bgr=bgr)
        if not detect:
            h, w = arr.shape[:2]
            return np.array([[0, 0, w, h]], dtype=np.int64), face_pixels(arr, s, c)[None]
        boxes = self.detector.detect(arr)
        if not len(boxes):
            return boxes, np.zeros((0, c, s, s), dtype=np.uint8)
        ih, iw = arr.shape[:2]
        crops = []
        for box in boxes:
            x, y, w, h = expand_box(box, self.margin, iw, ih)
            crops.append(face_pixels(arr[y:y + h, x:x + w], s, c))
        return boxes, np.stack(crops)

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [N, C, S, S]`` -> the model's normalised ``float32`` input."""
        return normalize_batch(pixels, self.mean, self.std)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, num_classes]`` of a normalised ``float32 [N, C, S, S]`` batch
        (forwarded in chunks of ``batch_size``)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(f"expected input [N, {self.channels}, {self.image_size}, {self.image_size}], "
                             f"got {list(x.shape)}")
        if not len(x):
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        outs = [self.backend(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of model-sized ``uint8 [N, C, S, S]`` faces."""
        return self.predict_proba(self.preprocess(pixels))

    def _faces(self, boxes: np.ndarray, probs: np.ndarray) -> list[dict]:
        names = self.class_names
        out = []
        for box, p in zip(boxes, probs):
            out.append({"box": [int(v) for v in box], "emotions": {n: float(v) for n, v in zip(names, p)},
                        "dominant": names[int(np.argmax(p))]})
        return out

    # -- the API --------------------------------------------------------------------------------------
    def __call__(self, image, *, detect: bool = True, bgr: bool = False) -> list[dict]:
        """The faces of one image: ``[{"box": [x, y, w, h], "emotions": {name: prob},
        "dominant": name}, ...]`` ordered left to right; ``[]`` when no face is found.

        ``image``: a file path, a PIL image, or a numpy array (``HxW`` gray, ``HxWx3`` RGB, or
        BGR with ``bgr=True``; uint8, or floats in [0, 1]). ``detect=False``: the image is
        already a face crop (box = the whole image)."""
        return self.predict_batch([image], detect=detect, bgr=bgr)[0]

    def predict_batch(self, images: Iterable, *, detect: bool = True, bgr: bool = False) -> list[list[dict]]:
        """:meth:`__call__` for several images, with one batched forward over all their faces."""
        found = [self.extract_faces(im, detect=detect, bgr=bgr) for im in images]
        if not found:
            return []
        probs = self.classify(np.concatenate([p for _, p in found]))
        out, start = [], 0
        for boxes, pixels in found:
            out.append(self._faces(boxes, probs[start:start + len(pixels)]))
            start += len(pixels)
        return out

    def predict_video(self, path, *, every: int = 1, detect: bool = True, chunk: int = 32) -> Iterator[dict]:
        """For every ``every``-th frame of a video: ``{"frame": index, "time": seconds, "faces":
        [...]}`` (frames are classified ``chunk`` at a time)."""
        frames = iter_video_frames(path, every)
        while True:
            block = [f for _, f in zip(range(chunk), frames)]
            if not block:
                return
            results = self.predict_batch([img for _, _, img in block], detect=detect)
            for (index, t, _), faces in zip(block, results):
                yield {"frame": index, "time": t, "faces": faces}


# -- video -------------------------------------------------------------------------------------
def iter_video_frames(path, every: int = 1) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame index, time in seconds, RGB uint8 frame)`` for frames 0, every, 2*every, ...

    Raises ``ValueError`` naming the file when it cannot be opened or yields no frame."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    cv2 = require_cv2()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    cap = cv2.VideoCapture(os.fspath(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path}: cannot open video")
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and math.isfinite(fps) and fps > 0 else None
        index, read = 0, 0
        while True:
            if index % every == 0:
                ok, frame = cap.read()
                if not ok:
                    break
                t = index / fps if fps else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                read += 1
                yield index, round(float(t), 6), np.ascontiguousarray(frame[:, :, ::-1]) if frame.ndim == 3 else frame
            elif not cap.grab():
                break
            index += 1
        if read == 0:
            raise ValueError(f"{path}: no frame could be read (not a video, or an unsupported codec)")
    finally:
        cap.release()


def video_frame_count(path) -> int:
    """The container's frame count (0 when unknown)."""
    cv2 = require_cv2()
    cap = cv2.VideoCapture(os.fspath(path))
    try:
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT) if cap.isOpened() else 0
    finally:
        cap.release()
    return int(n) if n and math.isfinite(n) and n > 0 else 0


# -- annotation ----------------------------------------------------------------------------------
def annotate(image, faces: Sequence[dict], *, bgr: bool = False) -> np.ndarray:
    """A BGR copy of ``image`` (for ``cv2.imwrite``) with each face's box and "label prob"."""
    cv2 = require_cv2()
    arr = as_image_array(image, bgr=bgr)
    out = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR) if arr.ndim == 2 else np.ascontiguousarray(arr[:, :, ::-1])
    h, w = out.shape[:2]
    scale = max(0.4, min(w, h) / 600)
    thick = max(1, int(round(scale * 2)))
    color = (0, 255, 0)
    if not faces:
        cv2.putText(out, "no face found", (5, int(20 * scale) + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 255),
                    thick, cv2.LINE_AA)
    for face in faces:
        x, y, bw, bh = face["box"]
        cv2.rectangle(out, (x, y), (x + bw, y + bh), color, thick)
        label = f"{face['dominant']} {face['emotions'][face['dominant']]:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - 4 if y - th - base - 4 >= 0 else min(h - base, y + bh + th + 4)
        cv2.rectangle(out, (x, ty - th - base), (x + tw, ty + base), color, cv2.FILLED)
        cv2.putText(out, label, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


# -- command line ----------------------------------------------------------------------------------
EPILOG = """\
CHECKPOINT is a .pt checkpoint, a run directory, or a .onnx file from `dicc export`.
INPUT is any mix of image files, video files (.mp4 .avi .mov .mkv .webm) and folders
(searched recursively, in sorted order). Output: one line/record/row per face; an image or
frame without a face gives one with face = null ("no face found"). Records (--json) have the
keys file, frame, time, face, box, dominant, emotions; frame and time (seconds) are null for
images. An unreadable input is reported on stderr and skipped; the others are still output.
Exit status: 0 when every input was processed, 1 when some were skipped, 2 when none could be
processed (or on a usage error)."""


def add_predict_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="faces and emotion probabilities in images, folders and videos",
                              description="Detect faces and predict their emotion probabilities.", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint .pt, run directory, or exported .onnx model")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, video files or folders")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of records instead of a table")
    out.add_argument("--csv", metavar="FILE", help="write one CSV row per face to FILE instead of a table")
    p.add_argument("--annotate", metavar="OUT_DIR", help="write copies of the images (and sampled video frames) "
                   "with boxes and 'label prob' here")
    p.add_argument("--no-detect", action="store_true", help="inputs are already face crops: the whole image is "
                   "one face")
    p.add_argument("--every", type=int, default=1, metavar="N", help="video: classify every N-th frame (default 1)")
    p.add_argument("--batch-size", type=int, default=64, help="faces per forward pass (default 64)")
    p.add_argument("--margin", type=float, default=0.1, help="grow each detected box by this fraction on every "
                   "side before cropping (default 0.1)")
    p.add_argument("--scale-factor", type=float, default=1.1, help="face detector pyramid step (default 1.1)")
    p.add_argument("--min-neighbors", type=int, default=5, help="face detector strictness (default 5)")
    p.add_argument("--min-face", type=int, default=30, help="smallest face in pixels (default 30)")
    p.add_argument("--device", default="auto", help="torch device for a .pt checkpoint (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def collect_inputs(paths: Sequence[str]) -> tuple[list[tuple[Path, str, Path]], list[str]]:
    """Expand files and folders into ``(path, kind, name for outputs)`` with kind "image" or
    "video", plus error messages for paths that do not exist or folders with nothing usable."""
    from .data.decode import is_image_file

    items, errors = [], []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    kind = "video" if is_video_file(f) else "image" if is_image_file(f) else None
                    if kind:
                        full = Path(root) / f
                        found.append((full, kind, Path(p.resolve().name or "input") / full.relative_to(p)))
            found.sort(key=lambda t: t[0].as_posix())
            if not found:
                errors.append(f"{p}: no images or videos in this folder")
            items.extend(found)
        elif p.is_file():
            items.append((p, "video" if is_video_file(p) else "image", Path(p.name)))
        else:
            errors.append(f"{p}: no such file or folder")
    return items, errors


def _records(file: str, frame, time, faces: list[dict]) -> list[dict]:
    if not faces:
        return [{"file": file, "frame": frame, "time": time, "face": None, "box": None, "dominant": None,
                 "emotions": None}]
    return [{"file": file, "frame": frame, "time": time, "face": i, "box": f["box"], "dominant": f["dominant"],
             "emotions": {k: round(v, 6) for k, v in f["emotions"].items()}} for i, f in enumerate(faces)]


class _Output:
    """Text table (streamed), JSON list (at the end) or CSV file (streamed)."""

    def __init__(self, args, class_names: Sequence[str], file_width: int, write) -> None:
        self.mode = "json" if args.json else "csv" if args.csv else "text"
        self.names = list(class_names)
        self.write = write
        self.records: list[dict] = []
        self.rows = 0
        self.fw = max(4, min(file_width, 60))
        self.cw = [max(5, len(n)) for n in self.names]
        if self.mode == "csv":
            Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(args.csv, "w", newline="")
            self.csv = csv.writer(self.fh)
            self.csv.writerow(["file", "frame", "time", "face", "x", "y", "w", "h", "dominant", *self.names])
            self.path = args.csv
        elif self.mode == "text":
            head = (f"{'file':<{self.fw}}  {'frame':>6}  {'time':>8}  {'face':>4}  {'box (x, y, w, h)':<20}  "
                    f"{'dominant':<14}  " + "  ".join(f"{n:>{w}}" for n, w in zip(self.names, self.cw)))
            self.write(head)

    def add(self, records: list[dict]) -> None:
        self.rows += len(records)
        if self.mode == "json":
            self.records.extend(records)
        elif self.mode == "csv":
            for r in records:
                box = r["box"] or [None] * 4
                probs = [None] * len(self.names) if r["emotions"] is None else [r["emotions"][n] for n in self.names]
                self.csv.writerow(["" if v is None else v for v in
                                   [r["file"], r["frame"], r["time"], r["face"], *box, r["dominant"], *probs]])
            self.fh.flush()
        else:
            for r in records:
                frame = "-" if r["frame"] is None else str(r["frame"])
                t = "-" if r["time"] is None else f"{r['time']:.3f}"
                line = f"{r['file']:<{self.fw}}  {frame:>6}  {t:>8}  "
                if r["face"] is None:
                    line += f"{'-':>4}  no face found"
                else:
                    box = ", ".join(str(v) for v in r["box"])
                    dom = f"{r['dominant']} {r['emotions'][r['dominant']]:.2f}"
                    line += (f"{r['face']:>4}  {box:<20}  {dom:<14}  "
                             + "  ".join(f"{r['emotions'][n]:>{w}.2f}" for n, w in zip(self.names, self.cw)))
                self.write(line)

    def close(self) -> None:
        if self.mode == "json":
            self.write(json.dumps(self.records, indent=2))
        elif self.mode == "csv":
            self.fh.close()
            print(f"wrote {self.rows} rows to {self.path}", file=sys.stderr)


class _Annotator:
    IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

    def __init__(self, out_dir) -> None:
        self.cv2 = require_cv2()
        self.out_dir = Path(out_dir)
        self.used: set[Path] = set()

    def _target(self, rel: Path) -> Path:
        path = self.out_dir / rel
        stem, n = path.with_suffix(""), 2
        while path in self.used:
            path = Path(f"{stem}_{n}{path.suffix}")
            n += 1
        self.used.add(path)
        return path

    def image(self, rel: Path, image, faces) -> None:
        suffix = rel.suffix.lower() if rel.suffix.lower() in self.IMAGE_SUFFIXES else ".png"
        self._write(self._target(rel.with_suffix(suffix)), image, faces)

    def frame(self, rel: Path, index: int, image, faces) -> None:
        self._write(self._target(rel.with_name(f"{rel.stem}_frame{index:06d}.jpg")), image, faces)

    def _write(self, path: Path, image, faces) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.cv2.imwrite(str(path), annotate(image, faces)):
            raise ValueError(f"{path}: could not write the annotated image")


def _runs(items, size: int):
    """Consecutive images in groups of at most ``size``; each video on its own."""
    group: list = []
    for item in items:
        if item[1] == "video":
            if group:
                yield "image", group
                group = []
            yield "video", [item]
        else:
            group.append(item)
            if len(group) == size:
                yield "image", group
                group = []
    if group:
        yield "image", group


class _Runner:
    """One ``dicc predict`` invocation: inputs in, records out, failures counted."""

    def __init__(self, rec: Recognizer, args, out: _Output, annotator: _Annotator | None, progress) -> None:
        self.rec, self.args, self.out, self.annotator = rec, args, out, annotator
        self.detect = not args.no_detect
        self.progress = progress  # tqdm class
        self.succeeded = self.failed = 0

    def report(self, path, err) -> None:
        msg = str(err) if str(path) in str(err) else f"{path}: {err}"
        self.progress.write(f"dicc predict: {msg}; skipped", file=sys.stderr)

    def images(self, group) -> None:
        rec, chunk, found = self.rec, [], []
        for path, _, rel in group:
            try:
                if self.detect:
                    arr = load_image(path)
                    found.append(rec.extract_faces(arr, detect=True))
                else:  # decoded as training decodes; the full image is only read for --annotate
                    arr = None
                    found.append(rec.extract_faces(path, detect=False))
                chunk.append((path, rel, arr))
            except (ValueError, OSError) as err:
                self.report(path, err)
                self.failed += 1
        if not chunk:
            return
        probs = rec.classify(np.concatenate([pixels for _, pixels in found]))
        at = 0
        for (path, rel, arr), (boxes, pixels) in zip(chunk, found):
            faces = rec._faces(boxes, probs[at:at + len(pixels)])
            at += len(pixels)
            self.out.add(_records(str(path), None, None, faces))
            self.succeeded += 1
            if self.annotator:
                try:
                    self.annotator.image(rel, arr if arr is not None else load_image(path), faces)
                except (ValueError, OSError) as err:
                    self.report(path, err)

    def video(self, path: Path, rel: Path, no_bar) -> None:
        every, bs = self.args.every, self.args.batch_size
        try:
            total = video_frame_count(path)
            frames = iter_video_frames(path, every)
            with self.progress(total=-(-total // every) if total else None, unit="frame", desc=path.name,
                               disable=no_bar, file=sys.stderr, leave=False) as bar:
                while True:
                    block = [f for _, f in zip(range(bs), frames)]
                    if not block:
                        break
                    results = self.rec.predict_batch([img for _, _, img in block], detect=self.detect)
                    for (index, t, img), faces in zip(block, results):
                        self.out.add(_records(str(path), index, round(t, 3), faces))
                        if self.annotator:
                            self.annotator.frame(rel, index, img, faces)
                    bar.update(len(block))
            self.succeeded += 1
        except (ValueError, OSError, ImportError) as err:  # ImportError: no OpenCV to read videos
            self.report(path, err)
            self.failed += 1


def run_predict(args) -> int:
    """``dicc predict``; see :data:`EPILOG` for the outputs and the exit status."""
    for name, value in (("--every", args.every), ("--batch-size", args.batch_size), ("--min-face", args.min_face)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if args.margin < 0:
        raise ValueError(f"--margin must be >= 0, got {args.margin}")
    from tqdm import tqdm

    detector = FaceDetector(scale_factor=args.scale_factor, min_neighbors=args.min_neighbors, min_size=args.min_face)
    try:
        rec = Recognizer.load(args.checkpoint, device=args.device, detector=detector, margin=args.margin,
                              batch_size=args.batch_size)
        if not args.no_detect:
            detector.load()  # fail now (missing OpenCV or cascade), not once per file
        annotator = _Annotator(args.annotate) if args.annotate else None
    except ImportError as err:
        print(f"dicc predict: error: {err}", file=sys.stderr)
        return 2
    items, errors = collect_inputs(args.inputs)
    out = _Output(args, rec.class_names, max((len(str(p)) for p, _, _ in items), default=4),
                  lambda line: tqdm.write(line, file=sys.stdout))
    run = _Runner(rec, args, out, annotator, tqdm)
    for msg in errors:
        tqdm.write(f"dicc predict: {msg}; skipped", file=sys.stderr)
    run.failed += len(errors)
    no_bar = True if args.no_progress else None  # None: tqdm draws only on a terminal
    try:
        with tqdm(total=len(items), unit="file", desc="predict", disable=True if len(items) < 2 else no_bar,
                  file=sys.stderr, leave=False) as bar:
            for kind, group in _runs(items, args.batch_size):
                if kind == "image":
                    run.images(group)
                else:
                    run.video(group[0][0], group[0][2], no_bar)
                bar.update(len(group))
    finally:
        out.close()
    if run.succeeded == 0:
        print(f"dicc predict: error: none of the {run.failed} input(s) could be processed", file=sys.stderr)
        return 2
    return 1 if run.failed else 0
