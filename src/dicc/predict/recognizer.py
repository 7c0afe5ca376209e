"""The inference API: images and videos in, faces with their boxes and emotion probabilities out.

>>> from dicc.predict import Recognizer
>>> rec = Recognizer.load("runs/dicc-seed0")                      # a run directory, .pt or .onnx
>>> rec("photo.jpg")                                              # a path, PIL image or numpy array
[{'box': [177, 66, 95, 95], 'score': 0.99, 'landmarks': None, 'emotions': {'angry': 0.01, ..., 'neutral': 0.05},
  'dominant': 'happy'}]
>>> rec(face_48x48, detect=False)                                 # already cropped: one face
>>> rec.predict_batch([img1, img2])                               # one list of faces per image
>>> video = rec.predict_video("clip.mp4", every=2, smooth=0.5)    # records with face ids
>>> for frame in video: ...
>>> video.summary()                                               # per face: dominant emotion over time

The steps: a detector (:mod:`dicc.faces.detect`, ``haar`` or ``mtcnn``) finds the faces; each is
cropped (with landmarks: framed like FER2013's faces and rotated so the eyes are level,
:mod:`dicc.faces.align`; else the box grown by ``margin``), converted to the model's input
exactly as training images are (grayscale, bilinear resize, ``(x / 255 - mean) / std`` from the
checkpoint, in NumPy; an ONNX graph exported with ``input="pixels"`` takes the pixels and
normalises them itself), and all faces of a batch of images go through the backend
(:mod:`dicc.predict.backends`) together, with their test-time views (if any) in the same call.
``Recognizer.load()`` with no model: the default path, :func:`default_model_file`. The
probabilities are over the parent classes: a strategy's sub-classes (DICC) are merged by its
``parent_logits``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..faces import (
    LANDMARK_NAMES,
    Detections,
    Detector,
    as_image_array,
    create_detector,
    expand_box,
    face_pixels,
    landmark_crop,
    load_image,
    normalize_batch,
    tta_pixels,
)
from .backends import INPUT_KINDS, OnnxBackend, TorchBackend, auto_device
from .backends import input_kind as _input_kind
from .video import DEFAULT_MAX_SPEED, DEFAULT_TRACK_GAP_S

# how a face is cut out of the photo (see Recognizer); "rotate" is the default, measured in
# benchmarks/alignment.md
ALIGN_MODES = ("rotate", "frame", "box")
DEFAULT_ALIGN = "rotate"


def onnxruntime_available() -> bool:
    """Whether onnxruntime can be imported here (it is a dependency, but a build for this
    platform may be missing)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_model_file(device=None) -> Path:
    """The file ``"default"`` means for prediction: the bundled ONNX graph
    (``dicc/assets/default_model.onnx``, :data:`dicc.checkpoint.DEFAULT_ONNX`) where it exists
    and onnxruntime is importable, else the bundled checkpoint (``default_model.pt``). A torch
    ``device`` other than the CPU (``"cuda"``, ...) asks for the checkpoint: the graph runs on the
    CPU. Both paths are read when called, so a test can point them elsewhere."""
    from .. import checkpoint

    onnx_file = Path(checkpoint.DEFAULT_ONNX)
    on_cpu = device in (None, "auto", "cpu") or str(device) == "cpu"
    if on_cpu and onnx_file.is_file() and onnxruntime_available():
        return onnx_file
    return checkpoint.resolve_checkpoint("default")  # the .pt (or one line: missing from this installation)


def _align_mode(align) -> str:
    if align is True or align is None:
        return DEFAULT_ALIGN if align is None else "rotate"
    if align is False:
        return "box"
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {', '.join(ALIGN_MODES)} (or True / False), got {align!r}")
    return align


class Recognizer:
    """Faces and their emotion probabilities from images and videos.

    Build one with :meth:`load` (picks by the file name), :meth:`from_checkpoint` (a ``.pt``
    checkpoint or a run directory) or :meth:`from_onnx` (a file from ``dicc export``). Options
    (keywords of all three):

    - ``detector``: ``"haar"`` (default), ``"mtcnn"``, or a :class:`dicc.faces.Detector`;
    - ``align``: how a face is cut out when the detector gives landmarks (``mtcnn``):
      ``"rotate"`` (default): the square that frames the eyes and mouth as in FER2013's faces,
      turned so the eyes are level; ``"frame"``: the same square, not turned; ``"box"``: the
      detector's box grown by ``margin`` (always the case for ``haar``). True = "rotate",
      False = "box";
    - ``margin``: a detected box is grown by this fraction of its size on every side before
      cropping (clipped to the image; default 0.1). Reported boxes are the detector's;
    - ``batch_size``: faces per forward pass (default 64);
    - ``tta``: test-time augmentation, ``"none"``, ``"flip"`` (each face and its mirror image)
      or ``"crops"`` (10 shifted and mirrored views); the probabilities are the mean over the
      views, nothing else changes. Default: a checkpoint's own ``eval.tta`` (the bundled
      model's was chosen on validation), else none.

    ``input_kind`` (set by the constructors, not an option): what the backend takes,
    ``"normalized"`` (``(x / 255 - mean) / std``, a checkpoint's model and older ONNX files) or
    ``"pixels"`` (0..255 as float: an ONNX graph with the normalisation folded in, its
    metadata's ``input``); :meth:`preprocess` gives that form.
    """

    def __init__(
        self,
        backend,
        class_names: Sequence[str],
        *,
        mean,
        std,
        image_size: int,
        channels: int,
        detector: str | Detector | None = None,
        align: str | bool | None = None,
        margin: float = 0.1,
        batch_size: int = 64,
        source: str = "",
        tta: str | None = None,
        input_kind: str = "normalized",
    ) -> None:
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.class_names = tuple(class_names)
        from ..data.transforms import TTA_MODES

        tta = tta or "none"
        if tta not in TTA_MODES:
            raise ValueError(f"tta: unknown test-time augmentation {tta!r}; valid: {', '.join(TTA_MODES)}")
        self.tta = tta
        self.mean = [float(v) for v in mean] if isinstance(mean, (list, tuple)) else float(mean)
        self.std = [float(v) for v in std] if isinstance(std, (list, tuple)) else float(std)
        self.image_size, self.channels = int(image_size), int(channels)
        self.detector = create_detector(detector)
        self.align = _align_mode(align)
        self.margin = float(margin)
        self.batch_size = int(batch_size)
        self.source = source
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {input_kind!r}")
        self.input_kind = input_kind

    def __repr__(self) -> str:
        return (
            f"Recognizer({self.source!r}, classes={len(self.class_names)}, input={self.channels}x"
            f"{self.image_size}x{self.image_size}, align={self.align!r}, margin={self.margin}, "
            f"{self.detector!r})"
        )

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path="default", *, device=None, amp: str = "auto", **options) -> "Recognizer":
        """From a checkpoint file, a run directory, ``"default"`` (the model dicc ships), or an
        already loaded checkpoint dict. ``device``: "cpu", "cuda", ... (default: CUDA when
        available). ``amp``: as ``train.amp`` ("auto": bf16 where the hardware computes it
        natively; "off": fp32, the numbers an ONNX export of the same model gives)."""
        from ..checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = path if isinstance(path, dict) else load_checkpoint(path)
        model, strategy = model_from_checkpoint(ckpt)
        norm = ckpt["normalization"]
        if options.get("tta") is None:  # the test-time augmentation the checkpoint was chosen with
            options["tta"] = ((ckpt.get("config") or {}).get("eval") or {}).get("tta", "none")
        backend = TorchBackend(model, strategy, auto_device(device), amp=amp)
        return cls(
            backend,
            ckpt["class_names"],
            mean=norm["mean"],
            std=norm["std"],
            image_size=norm["image_size"],
            channels=norm["channels"],
            source=str(ckpt.get("_path", "")),
            **options,
        )

    @classmethod
    def from_onnx(
        cls, path, *, providers: Sequence[str] | None = None, threads: int | None = None, **options
    ) -> "Recognizer":
        """From an ONNX file exported by ``dicc export`` (runs with onnxruntime; class names and
        normalisation come from the file's metadata, and ``tta`` defaults to the one it records).
        ``threads`` sets onnxruntime's intra-op threads (default: its own choice)."""
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(
                f"running an ONNX model needs onnxruntime (a dependency of dicc): pip install onnxruntime ({err})"
            ) from None
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
            raise ValueError(
                f"{path}: the ONNX metadata lacks {', '.join(missing)}; export the model with "
                f"`dicc export CHECKPOINT --onnx FILE`"
            )
        if options.get("tta") is None:  # the test-time augmentation the exported checkpoint had
            options["tta"] = meta.get("tta", "none")
        try:
            kind = _input_kind(meta)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        return cls(
            OnnxBackend(session),
            json.loads(meta["class_names"]),
            mean=json.loads(meta["mean"]),
            std=json.loads(meta["std"]),
            image_size=int(meta["image_size"]),
            channels=int(meta["channels"]),
            source=str(path),
            input_kind=kind,
            **options,
        )

    @classmethod
    def load(cls, path="default", **options) -> "Recognizer":
        """:meth:`from_onnx` for a ``.onnx`` file, :meth:`from_checkpoint` otherwise (``device``
        and ``amp`` only apply to checkpoints); no path, or ``"default"``: the model dicc ships,
        its ONNX graph where the installation has one and onnxruntime is importable (with a
        torch ``device`` other than the CPU: its checkpoint), else its checkpoint; see
        :func:`default_model_file`. Either way the test-time augmentation is the model's own
        (``eval.tta``, recorded in the graph's metadata) unless ``tta`` is given."""
        if isinstance(path, (str, os.PathLike)) and str(path) == "default":
            path = default_model_file(options.get("device"))
        if str(path).lower().endswith(".onnx"):
            options.pop("device", None)
            options.pop("amp", None)
            return cls.from_onnx(path, **options)
        return cls.from_checkpoint(path, **options)

    # -- the steps ----------------------------------------------------------------------------------
    def crop(self, image: np.ndarray, found: Detections) -> np.ndarray:
        """Model pixels ``uint8 [N, C, S, S]`` of the faces ``found`` in ``image`` (an array from
        :func:`dicc.faces.as_image_array`), cut out as ``align`` says."""
        s, c = self.image_size, self.channels
        if not len(found):
            return np.zeros((0, c, s, s), dtype=np.uint8)
        ih, iw = image.shape[:2]
        crops = []
        for k, box in enumerate(found.boxes):
            if found.landmarks is not None and self.align != "box":
                face = landmark_crop(image, found.landmarks[k], rotate=self.align == "rotate")
            else:
                x, y, w, h = expand_box(box, self.margin, iw, ih)
                face = image[y : y + h, x : x + w]
            crops.append(face_pixels(face, s, c))
        return np.stack(crops)

    def detect_many(
        self, images: Iterable, *, detect: bool = True, bgr: bool = False
    ) -> list[tuple[Detections, np.ndarray]]:
        """``(Detections, model pixels uint8 [N, C, S, S])`` of each image's faces (boxes,
        the detector's scores and, with ``mtcnn``, landmarks); the detector sees all the images
        at once (MTCNN batches those of one size). ``detect=False``: one face, the whole image,
        without score or landmarks."""
        images = list(images)
        if not detect:
            return [self._whole(im, bgr) for im in images]
        arrays = [
            load_image(im) if isinstance(im, (str, os.PathLike)) else as_image_array(im, bgr=bgr) for im in images
        ]
        found = self.detector.detect_many(arrays) if arrays else []
        return [(f, self.crop(arr, f)) for arr, f in zip(arrays, found)]

    def extract_many(
        self, images: Iterable, *, detect: bool = True, bgr: bool = False
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(boxes int64 [N, 4], model pixels uint8 [N, C, S, S])`` of each image's faces
        (:meth:`detect_many` without the scores and landmarks)."""
        return [(f.boxes, pixels) for f, pixels in self.detect_many(images, detect=detect, bgr=bgr)]

    def extract_faces(self, image, *, detect: bool = True, bgr: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``int64 [N, 4]`` (x, y, w, h) and model pixels ``uint8 [N, C, S, S]`` of the faces
        in ``image``. With ``detect=False`` the whole image is one face (a file is then decoded
        exactly as training decodes it, :func:`dicc.data.decode.decode_array`)."""
        return self.extract_many([image], detect=detect, bgr=bgr)[0]

    def _whole(self, image, bgr: bool) -> tuple[Detections, np.ndarray]:
        s, c = self.image_size, self.channels
        if isinstance(image, (str, os.PathLike)):
            from PIL import Image

            from ..data.decode import decode_array

            pixels = decode_array(image, s, c)
            with Image.open(image) as im:
                w, h = im.size
            return Detections(np.array([[0, 0, w, h]], dtype=np.int64)), pixels[None]
        arr = as_image_array(image, bgr=bgr)
        h, w = arr.shape[:2]
        return Detections(np.array([[0, 0, w, h]], dtype=np.int64)), face_pixels(arr, s, c)[None]

    def preprocess(self, pixels: np.ndarray) -> np.ndarray:
        """``uint8 [N, C, S, S]`` -> the backend's ``float32`` input: normalised
        (``(x / 255 - mean) / std``), or the pixels as floats for a graph that normalises itself
        (``input_kind == "pixels"``)."""
        if self.input_kind == "pixels":
            return np.asarray(pixels, dtype=np.float32)
        return normalize_batch(pixels, self.mean, self.std)

    def predict_proba(self, x: np.ndarray, *, chunk: int | None = None) -> np.ndarray:
        """Class probabilities ``[N, num_classes]`` of a ``float32 [N, C, S, S]`` batch in the
        form the backend takes (:meth:`preprocess`), forwarded ``chunk`` rows at a time (default
        ``batch_size``; a batch that fits is one backend call)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"expected input [N, {self.channels}, {self.image_size}, {self.image_size}], got {list(x.shape)}"
            )
        n, step = len(x), int(chunk or self.batch_size)
        if not n:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        if n <= step:
            return np.asarray(self.backend(x), dtype=np.float32)
        outs = [self.backend(x[i : i + step]) for i in range(0, n, step)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def classify(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of model-sized ``uint8 [N, C, S, S]`` faces (the one place every
        face goes through on its way to the backend); with ``tta`` the mean over the views, all
        of which go through the backend in one batch (``batch_size`` faces' views per call)."""
        pixels = np.asarray(pixels)
        n = len(pixels)
        if self.tta == "none" or not n:
            return self.predict_proba(self.preprocess(pixels))
        views = tta_pixels(pixels, self.tta)  # [V, N, C, S, S]
        v = len(views)
        probs = self.predict_proba(self.preprocess(views.reshape(v * n, *pixels.shape[1:])), chunk=self.batch_size * v)
        return probs.reshape(v, n, -1).mean(axis=0).astype(np.float32, copy=False)

    def analyze_detections(
        self, images: Iterable, *, detect: bool = True, bgr: bool = False
    ) -> list[tuple[Detections, np.ndarray]]:
        """``(Detections, probabilities [N, num_classes])`` per image, with one batched
        classification over all their faces (an image without a face: ``[0, num_classes]``)."""
        found = self.detect_many(images, detect=detect, bgr=bgr)
        if not found:
            return []
        probs = self.classify(np.concatenate([p for _, p in found]))
        out, start = [], 0
        for faces, pixels in found:
            out.append((faces, probs[start : start + len(pixels)]))
            start += len(pixels)
        return out

    def analyze(
        self, images: Iterable, *, detect: bool = True, bgr: bool = False
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(boxes [N, 4], probabilities [N, num_classes])`` per image (:meth:`analyze_detections`
        without the scores and landmarks)."""
        return [(f.boxes, p) for f, p in self.analyze_detections(images, detect=detect, bgr=bgr)]

    def faces(self, found, probs: np.ndarray) -> list[dict]:
        """``[{"box", "score", "landmarks", "emotions", "dominant"}, ...]`` of one image's faces:
        ``found`` its :class:`dicc.faces.Detections` (or boxes ``[N, 4]``: no score, no
        landmarks) and ``probs`` their probabilities. ``score``: the detector's confidence (None
        without a detector); ``landmarks``: ``{"left_eye": [x, y], "right_eye", "nose",
        "mouth_left", "mouth_right"}`` (left and right as seen in the image) where the detector
        gives them (``mtcnn``), else None."""
        if not isinstance(found, Detections):
            found = Detections(np.asarray(found, dtype=np.int64).reshape(-1, 4))
        names = self.class_names
        probs = np.asarray(probs)
        n = len(found.boxes)
        # whole arrays to Python numbers at once (not element by element)
        boxes = np.asarray(found.boxes).reshape(-1, 4).astype(np.int64).tolist()
        scores = [None] * n if found.scores is None else np.asarray(found.scores, np.float64).tolist()
        marks = None if found.landmarks is None else np.asarray(found.landmarks, np.float64).tolist()
        top = probs.reshape(len(probs), -1).argmax(1).tolist() if len(probs) else []
        rows = probs.astype(np.float64).tolist()
        out = []
        for k, (box, p) in enumerate(zip(boxes, rows)):
            out.append(
                {
                    "box": box,
                    "score": scores[k],
                    "landmarks": None if marks is None else dict(zip(LANDMARK_NAMES, marks[k])),
                    "emotions": dict(zip(names, p)),
                    "dominant": names[top[k]],
                }
            )
        return out

    # -- the API --------------------------------------------------------------------------------------
    def __call__(self, image, *, detect: bool = True, bgr: bool = False) -> list[dict]:
        """The faces of one image: ``[{"box": [x, y, w, h], "score": detector confidence,
        "landmarks": {name: [x, y]} or None, "emotions": {name: prob}, "dominant": name}, ...]``
        ordered left to right (see :meth:`faces`); ``[]`` when no face is found.

        ``image``: a file path, a PIL image, or a numpy array (``HxW`` gray, ``HxWx3`` RGB, or
        BGR with ``bgr=True``; uint8, or floats in [0, 1]). ``detect=False``: the image is
        already a face crop (box = the whole image)."""
        return self.predict_batch([image], detect=detect, bgr=bgr)[0]

    def predict_batch(self, images: Iterable, *, detect: bool = True, bgr: bool = False) -> list[list[dict]]:
        """:meth:`__call__` for several images, with one batched forward over all their faces."""
        return [self.faces(f, p) for f, p in self.analyze_detections(images, detect=detect, bgr=bgr)]

    def predict_video(
        self,
        source,
        *,
        every: int = 1,
        smooth: float = 1.0,
        iou: float = 0.3,
        track_gap: float | None = DEFAULT_TRACK_GAP_S,
        max_missed: int | None = None,
        max_shift: float = 1.0,
        max_speed: float = DEFAULT_MAX_SPEED,
        detect: bool = True,
        chunk: int = 32,
        should_stop=None,
        with_images: bool = False,
    ):
        """A :class:`dicc.predict.video.VideoPrediction` of a video file (a path) or a camera (an
        int index): iterate it for ``{"frame", "time_s", "faces": [{"face_id", "box", "score",
        "landmarks", "emotions", "dominant"}]}`` per processed frame (every ``every``-th; a frame
        without a face has ``"faces": []`` and the video goes on); afterwards ``.summary()`` (per
        face: dominant emotion over time, share of frames per emotion) and ``.bad_frames``.

        ``smooth``: weight of the newest frame in each face's moving average of probabilities
        (1: none; a face that comes back after missing frames starts a new average). ``iou``,
        ``max_shift``, ``max_speed``, ``track_gap``: a face keeps its id while its box overlaps
        its last one by at least ``iou`` (or, failing that, its centre moved at most
        ``max_shift`` box widths, or ``max_speed`` box widths per second of the time between
        processed frames, at a similar size), also when it was missing for up to ``track_gap``
        seconds (``max_missed``: up to that many processed frames instead). For a file the times
        are the frames' (index / fps), so ``track_gap`` covers ``track_gap * fps / every``
        processed frames; for a camera they are the clock's. ``chunk``: frames per batch (use 1
        for a camera). ``should_stop``: polled before each frame; True ends the video cleanly.
        ``with_images``: each record also holds the frame's RGB array under "image"."""
        from .inputs import VideoReader
        from .video import VideoPrediction

        reader = VideoReader(source, every, should_stop=should_stop)
        return VideoPrediction(
            self,
            reader,
            smooth=smooth,
            iou=iou,
            track_gap=track_gap,
            max_missed=max_missed,
            max_shift=max_shift,
            max_speed=max_speed,
            chunk=chunk,
            detect=detect,
            with_images=with_images,
        )
