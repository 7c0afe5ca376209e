"""Face detectors behind one interface: image(s) in, boxes (and, where the detector has them, eye landmarks) out.

- ``haar`` (:class:`HaarDetector`, alias :class:`FaceDetector`, the default): OpenCV's bundled
  Haar cascade ``haarcascade_frontalface_default.xml``; needs only OpenCV 4 (OpenCV 5 dropped the
  cascade files and ``CascadeClassifier``: install ``opencv-python-headless<5``). Boxes and a
  score derived from the cascade's last stage (see :class:`HaarDetector`); overlapping boxes of
  one face are merged by :func:`non_max_suppression`.
- ``mtcnn`` (:class:`MtcnnDetector`): MTCNN from ``facenet-pytorch`` 2.5.x, whose wheel ships the
  weights (pnet/rnet/onet, about 2 MB), so it runs offline. Boxes, scores and five landmarks
  (eyes, nose, mouth corners), which :mod:`dicc.faces.align` uses to level the eyes. Detects
  rotated and smaller faces that the cascade misses; frames of one size go through it as a batch.

Every detector is imported and loaded lazily (the first :meth:`Detector.detect_many`, or
:meth:`Detector.load` to fail early), so the rest of ``dicc`` works without either package.
``create_detector(name, **options)`` builds one by name; :data:`DETECTORS` lists the names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .images import _INSTALL_HINT, as_image_array, require_cv2, to_gray

CASCADE_FILE = "haarcascade_frontalface_default.xml"
# the five landmarks of Detections.landmarks, in order; left and right as seen in the image
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# facenet-pytorch 2.6.0 pins torch < 2.3: an unpinned install would replace a newer torch
MTCNN_INSTALL_HINT = "pip install 'facenet-pytorch>=2.5.3,<2.6' (or pip install 'dicc[detect]')"


@dataclass
class Detections:
    """The faces found in one image, ordered left to right (then top to bottom).

    boxes: ``int64 [N, 4]`` as ``(x, y, w, h)`` in pixels, inside the image.
    scores: ``float32 [N]`` detector confidence in [0, 1] (MTCNN's face probability; the Haar
        cascade's last-stage score, see :class:`HaarDetector`), or None (no detector ran).
    landmarks: ``float32 [N, 5, 2]`` ``(x, y)`` of the eye on the image's left, the eye on its
        right, the nose tip, the mouth's left and right corners; or None.
    """

    boxes: np.ndarray
    scores: np.ndarray | None = None
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, with_landmarks: bool = False) -> "Detections":
        return cls(
            np.zeros((0, 4), np.int64),
            np.zeros(0, np.float32),
            np.zeros((0, 5, 2), np.float32) if with_landmarks else None,
        )

    def take(self, index) -> "Detections":
        """The detections at ``index`` (an index array or a boolean mask)."""
        return Detections(
            self.boxes[index],
            None if self.scores is None else self.scores[index],
            None if self.landmarks is None else self.landmarks[index],
        )

    def sorted(self) -> "Detections":
        """Left to right, then top to bottom."""
        if len(self.boxes) < 2:
            return self
        return self.take(np.lexsort((self.boxes[:, 1], self.boxes[:, 0])))


@dataclass(frozen=True)
class CliOption:
    """A detector option as ``dicc predict`` offers it: ``flag`` sets the keyword ``keyword`` of
    the detector's constructor (its ``type`` and ``default``; ``help`` for ``--help``)."""

    flag: str
    keyword: str
    type: type
    default: object
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


class Detector:
    """The interface: :meth:`detect_many` (required), :meth:`detect_faces`, :meth:`detect` and
    :meth:`load`. Subclasses set ``name`` and ``has_landmarks``; ``cli_options`` (the options
    ``dicc predict`` offers for it, beside the shared ``--min-face``) and ``takes_device`` (the
    torch device goes to its constructor) make it a complete entry of :data:`DETECTORS`: a new
    detector is a class here and its line there."""

    name = "?"
    has_landmarks = False
    cli_options: tuple[CliOption, ...] = ()
    takes_device = False

    def load(self):
        """Import and load the model now; raises ``ImportError`` (one line with the pip command)
        when its package is missing, ``ValueError`` for bad options."""
        return self

    def detect_many(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """:class:`Detections` of each image (arrays from :func:`as_image_array`)."""
        raise NotImplementedError

    def detect_faces(self, image) -> Detections:
        return self.detect_many([as_image_array(image)])[0]

    def detect(self, image) -> np.ndarray:
        """Face boxes ``int64 [N, 4]`` ``(x, y, w, h)``, ordered left to right."""
        return self.detect_faces(image).boxes


def non_max_suppression(boxes, scores, iou: float = 0.3, cover: float | None = 0.6) -> np.ndarray:
    """Indices of the boxes kept (best score first) when each box, in order of decreasing score,
    suppresses every later box that overlaps it by more than ``iou`` (intersection over union)
    or, with ``cover``, that lies inside it by more than ``cover`` of the smaller box's area (a
    box nested in another, whose IoU is small). ``(x, y, w, h)`` boxes."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    area = b[:, 2] * b[:, 3]
    keep: list[int] = []
    alive = np.ones(len(b), bool)
    for i in order:
        if not alive[i]:
            continue
        keep.append(int(i))
        alive[i] = False
        inter = np.clip(np.minimum(x1[i], x1) - np.maximum(x0[i], x0), 0, None) * np.clip(
            np.minimum(y1[i], y1) - np.maximum(y0[i], y0), 0, None
        )
        over = inter / np.maximum(area[i] + area - inter, 1e-12) > iou
        if cover is not None:
            over |= inter / np.maximum(np.minimum(area[i], area), 1e-12) > cover
        alive &= ~over
    return np.array(keep, dtype=np.int64)


def _size(value) -> tuple[int, int]:
    if value is None:
        return (0, 0)
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    w, h = value
    return (int(w), int(h))


class HaarDetector(Detector):
    """Frontal faces with OpenCV's Haar cascade.

    Each face's ``score`` is ``1 / (1 + exp(-2 F))`` of ``F``, the boosted sum of the cascade's
    last stage (OpenCV's ``levelWeights``; of the grouped windows, the largest): the probability
    a boosted classifier's sum stands for (Friedman, Hastie & Tibshirani 2000). It ranks a
    detector's faces (the bundled cascade's last stage passes windows with ``F`` >= -2.99;
    clear frontal faces have ``F`` of about 3.5-9: scores > 0.999) but is not calibrated, nor
    comparable with MTCNN's probability. Boxes that overlap (one face found twice, at two
    scales) are merged by :func:`non_max_suppression`, the best-scored one kept.

    Parameters (stored as given; the cascade is loaded on the first detection):
        scale_factor: image pyramid step (> 1; smaller finds more faces, slower).
        min_neighbors: overlapping detections needed to keep a face (higher: fewer false
            positives, more misses).
        min_size: smallest face in pixels (an int for a square, or ``(w, h)``).
        max_size: largest face in pixels, or None.
        cascade: path of another cascade XML file (default: OpenCV's bundled frontal-face one).
        nms_iou, nms_cover: :func:`non_max_suppression`'s ``iou`` and ``cover`` (``nms_iou``
            None: no merging, every box the cascade's grouping gives).
    """

    name = "haar"
    cli_options = (
        CliOption("--scale-factor", "scale_factor", float, 1.1, "haar: pyramid step (default 1.1)"),
        CliOption("--min-neighbors", "min_neighbors", int, 5, "haar: strictness (default 5)"),
    )

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int | Sequence[int] = 30,
        max_size: int | Sequence[int] | None = None,
        cascade: str | os.PathLike | None = None,
        nms_iou: float | None = 0.3,
        nms_cover: float | None = 0.6,
    ) -> None:
        self.scale_factor = scale_factor
        self.nms_iou, self.nms_cover = nms_iou, nms_cover
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_size = max_size
        self.cascade = cascade
        self._classifier = None

    def __repr__(self) -> str:
        return (
            f"FaceDetector(scale_factor={self.scale_factor}, min_neighbors={self.min_neighbors}, "
            f"min_size={self.min_size}, max_size={self.max_size})"
        )

    def load(self):
        """Load the cascade now; raises a clear error when OpenCV or the cascade file is missing."""
        if self._classifier is not None:
            return self._classifier
        if not self.scale_factor > 1.0:
            raise ValueError(f"scale_factor must be > 1, got {self.scale_factor}")
        if int(self.min_neighbors) < 0:
            raise ValueError(f"min_neighbors must be >= 0, got {self.min_neighbors}")
        cv2 = require_cv2()
        if self.cascade is not None:
            path = os.fspath(self.cascade)
        else:
            base = getattr(getattr(cv2, "data", None), "haarcascades", None)
            if base is None or not hasattr(cv2, "CascadeClassifier"):
                raise ImportError(
                    f"OpenCV {cv2.__version__} has no bundled Haar cascades (OpenCV 5 removed them): {_INSTALL_HINT}"
                )
            path = os.path.join(base, CASCADE_FILE)
        if not os.path.isfile(path):
            hint = "" if self.cascade is not None else f"; reinstall OpenCV 4: {_INSTALL_HINT}"
            raise FileNotFoundError(f"Haar cascade file not found: {path}{hint}")
        classifier = cv2.CascadeClassifier(path)
        if classifier.empty():
            raise ValueError(f"{path}: not a readable Haar cascade")
        self._classifier = classifier
        return classifier

    def detect_many(self, images: Sequence[np.ndarray]) -> list[Detections]:
        classifier = self.load()
        out = []
        for image in images:
            # detectMultiScale3 with outputRejectLevels: the same boxes as detectMultiScale, and
            # each one's last-stage sum
            found, _, weights = classifier.detectMultiScale3(
                to_gray(as_image_array(image)),
                scaleFactor=float(self.scale_factor),
                minNeighbors=int(self.min_neighbors),
                minSize=_size(self.min_size),
                maxSize=_size(self.max_size),
                outputRejectLevels=True,
            )
            boxes = np.asarray(found, dtype=np.int64).reshape(-1, 4)
            weights = np.asarray(weights, dtype=np.float64).reshape(-1)
            faces = Detections(boxes, (1.0 / (1.0 + np.exp(-2.0 * weights))).astype(np.float32))
            if self.nms_iou is not None and len(boxes) > 1:
                faces = faces.take(non_max_suppression(boxes, weights, self.nms_iou, self.nms_cover))
            out.append(faces.sorted())
        return out


FaceDetector = HaarDetector  # the name of dicc <= 0.1's only detector


class MtcnnDetector(Detector):
    """MTCNN (Zhang et al. 2016) with the weights that ship in ``facenet-pytorch`` 2.5.x.

    Parameters:
        min_size: smallest face in pixels (MTCNN's ``min_face_size``; default 20).
        min_score: keep faces whose final-stage probability is at least this (default 0.9).
        thresholds: the three stages' thresholds (default MTCNN's 0.6, 0.7, 0.7).
        factor: image pyramid step (default 0.709).
        device: torch device (default None: "cuda" when available, else "cpu").
        batch_size: images of one size per forward pass (default 16).
    """

    name = "mtcnn"
    has_landmarks = True
    cli_options = (
        CliOption("--min-score", "min_score", float, 0.9, "mtcnn: smallest face probability kept (default 0.9)"),
    )
    takes_device = True

    def __init__(
        self,
        min_size: int = 20,
        min_score: float = 0.9,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        device: str | None = None,
        batch_size: int = 16,
    ) -> None:
        self.min_size = min_size
        self.min_score = min_score
        self.thresholds = tuple(thresholds)
        self.factor = factor
        self.device = device
        self.batch_size = batch_size
        self._mtcnn = None

    def __repr__(self) -> str:
        return (
            f"MtcnnDetector(min_size={self.min_size}, min_score={self.min_score}, "
            f"thresholds={self.thresholds}, factor={self.factor}, device={self.device!r})"
        )

    def load(self):
        if self._mtcnn is not None:
            return self._mtcnn
        if int(self.min_size) < 1:
            raise ValueError(f"min_size must be >= 1, got {self.min_size}")
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {self.factor}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from facenet_pytorch import MTCNN
        except ImportError as err:
            raise ImportError(
                f"the mtcnn face detector needs facenet-pytorch 2.5: {MTCNN_INSTALL_HINT} ({err})"
            ) from None
        import torch

        if self.device in (None, "auto"):
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._mtcnn = MTCNN(
            keep_all=True,
            select_largest=False,
            min_face_size=int(self.min_size),
            thresholds=list(self.thresholds),
            factor=float(self.factor),
            device=self.device,
        )
        return self._mtcnn

    def detect_many(self, images: Sequence[np.ndarray]) -> list[Detections]:
        mtcnn = self.load()
        rgb = [_as_rgb(im) for im in images]
        out: list[Detections | None] = [None] * len(rgb)
        by_shape: dict[tuple, list[int]] = {}
        for i, im in enumerate(rgb):
            by_shape.setdefault(im.shape, []).append(i)
        for shape, idx in by_shape.items():
            for at in range(0, len(idx), int(self.batch_size)):
                chunk = idx[at : at + int(self.batch_size)]
                boxes, probs, points = mtcnn.detect(np.stack([rgb[i] for i in chunk]), landmarks=True)
                for i, b, p, pt in zip(chunk, boxes, probs, points):
                    out[i] = self._detections(b, p, pt, shape[1], shape[0])
        return out  # type: ignore[return-value]

    def _detections(self, boxes, probs, points, width: int, height: int) -> Detections:
        if boxes is None or not len(boxes):
            return Detections.empty(with_landmarks=True)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        probs = np.asarray(probs, np.float32).reshape(-1)
        points = np.asarray(points, np.float32).reshape(-1, 5, 2)
        x0 = np.clip(np.floor(boxes[:, 0]), 0, width - 1)
        y0 = np.clip(np.floor(boxes[:, 1]), 0, height - 1)
        x1 = np.clip(np.ceil(boxes[:, 2]), 1, width)
        y1 = np.clip(np.ceil(boxes[:, 3]), 1, height)
        keep = (probs >= self.min_score) & (x1 > x0) & (y1 > y0)
        xywh = np.stack([x0, y0, x1 - x0, y1 - y0], 1).astype(np.int64)
        return Detections(xywh[keep], probs[keep], points[keep]).sorted()  # MTCNN ran its own NMS


def _as_rgb(image: np.ndarray) -> np.ndarray:
    arr = as_image_array(image)
    return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr


DETECTORS: dict[str, type[Detector]] = {"haar": HaarDetector, "mtcnn": MtcnnDetector}


def create_detector(detector: str | Detector | None = "haar", **options) -> Detector:
    """A detector by name (``"haar"``, ``"mtcnn"``) with its options, or ``detector`` itself
    when it already is one. An unknown name is an error that lists the valid ones."""
    if detector is None:
        detector = "haar"
    if not isinstance(detector, str):
        if options:
            raise ValueError("detector options apply only when the detector is given by name")
        return detector
    key = detector.lower()
    if key not in DETECTORS:
        raise ValueError(f"unknown face detector {detector!r}; choose one of: {', '.join(DETECTORS)}")
    return DETECTORS[key](**options)
