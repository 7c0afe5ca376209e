"""Face detectors behind one interface: image(s) in, boxes (and, where the detector has them, eye landmarks) out.

- ``haar`` (:class:`HaarDetector`, alias :class:`FaceDetector`, the default): OpenCV's bundled
  Haar cascade ``haarcascade_frontalface_default.xml``; needs only OpenCV 4 (OpenCV 5 dropped the
  cascade files and ``CascadeClassifier``: install ``opencv-python-headless<5``). Boxes only.
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
# facenet-pytorch 2.6.0 pins torch < 2.3: an unpinned install would replace a newer torch
MTCNN_INSTALL_HINT = "pip install 'facenet-pytorch>=2.5.3,<2.6' (or pip install 'dicc[detect]')"


@dataclass
class Detections:
    """The faces found in one image, ordered left to right (then top to bottom).

    boxes: ``int64 [N, 4]`` as ``(x, y, w, h)`` in pixels, inside the image.
    scores: ``float32 [N]`` detector confidence, or None (the Haar cascade has none).
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
            np.zeros(0, np.float32) if with_landmarks else None,
            np.zeros((0, 5, 2), np.float32) if with_landmarks else None,
        )

    def sorted(self) -> "Detections":
        """Left to right, then top to bottom."""
        if len(self.boxes) < 2:
            return self
        order = np.lexsort((self.boxes[:, 1], self.boxes[:, 0]))
        return Detections(
            self.boxes[order],
            None if self.scores is None else self.scores[order],
            None if self.landmarks is None else self.landmarks[order],
        )


class Detector:
    """The interface: :meth:`detect_many` (required), :meth:`detect_faces`, :meth:`detect` and
    :meth:`load`. Subclasses set ``name`` and ``has_landmarks``."""

    name = "?"
    has_landmarks = False

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


def _size(value) -> tuple[int, int]:
    if value is None:
        return (0, 0)
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    w, h = value
    return (int(w), int(h))


class HaarDetector(Detector):
    """Frontal faces with OpenCV's Haar cascade.

    Parameters (stored as given; the cascade is loaded on the first detection):
        scale_factor: image pyramid step (> 1; smaller finds more faces, slower).
        min_neighbors: overlapping detections needed to keep a face (higher: fewer false
            positives, more misses).
        min_size: smallest face in pixels (an int for a square, or ``(w, h)``).
        max_size: largest face in pixels, or None.
        cascade: path of another cascade XML file (default: OpenCV's bundled frontal-face one).
    """

    name = "haar"

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int | Sequence[int] = 30,
        max_size: int | Sequence[int] | None = None,
        cascade: str | os.PathLike | None = None,
    ) -> None:
        self.scale_factor = scale_factor
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
            found = classifier.detectMultiScale(
                to_gray(as_image_array(image)),
                scaleFactor=float(self.scale_factor),
                minNeighbors=int(self.min_neighbors),
                minSize=_size(self.min_size),
                maxSize=_size(self.max_size),
            )
            out.append(Detections(np.asarray(found, dtype=np.int64).reshape(-1, 4)).sorted())
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
        return Detections(xywh[keep], probs[keep], points[keep]).sorted()


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
