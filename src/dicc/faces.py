"""Face detection and face crops: image in, model input out.

Detection uses OpenCV's bundled Haar cascade (``haarcascade_frontalface_default.xml``); OpenCV
is imported only when a face is actually detected, so the rest of ``dicc`` (and prediction on
pre-cropped faces) works without it. OpenCV 5 dropped the cascade files and
``CascadeClassifier``: install ``opencv-python-headless<5``.

Everything here works on plain numpy ``uint8`` arrays: ``HxW`` grayscale or ``HxWx3`` RGB.
Crops are converted to the model's input the same way training images are decoded
(:func:`dicc.data.decode.decode_array`: PIL's grayscale conversion and bilinear resize), so a
face gives the same pixels whichever path loads it.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"
_INSTALL_HINT = "pip install 'opencv-python-headless<5'"


def require_cv2():
    """Import OpenCV or fail with the command that installs a version that has what we use."""
    try:
        import cv2
    except ImportError as err:
        raise ImportError(f"face detection, video input and annotation need OpenCV 4: {_INSTALL_HINT} "
                          f"({err})") from None
    return cv2


# -- images as arrays -------------------------------------------------------------------------
def to_uint8(image: np.ndarray) -> np.ndarray:
    """Any numeric array to ``uint8``: floats with values in [0, 1] are scaled by 255, other
    floats and integers are clipped to [0, 255]."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError("image array contains NaN or infinite values")
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            arr = arr * 255.0
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported image array dtype {arr.dtype}")


def as_image_array(image, *, bgr: bool = False) -> np.ndarray:
    """Normalise an image to a ``uint8`` array, ``HxW`` (grayscale) or ``HxWx3`` (RGB).

    ``image`` is a PIL image or a numpy array: ``HxW`` gray, ``HxWx1``, ``HxWx3`` RGB (or BGR
    with ``bgr=True``, as OpenCV reads images and video frames), ``HxWx4`` RGBA/BGRA (alpha is
    dropped). File paths are read by :func:`load_image`.
    """
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        mode = image.mode
        image = np.asarray(image.convert("L" if mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"))
        bgr = False
    arr = to_uint8(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        pass
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3]
        if bgr:
            arr = arr[:, :, ::-1]
    else:
        raise ValueError(f"expected an image array of shape HxW, HxWx1, HxWx3 or HxWx4, got {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"empty image of shape {arr.shape}")
    return np.ascontiguousarray(arr)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into a ``uint8`` array (``HxW`` for grayscale files, else ``HxWx3``
    RGB), honouring the EXIF orientation of photos. Raises ``ValueError`` naming the file."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return as_image_array(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: cannot decode image: {err}") from None


def to_gray(image: np.ndarray) -> np.ndarray:
    """``HxW`` uint8 grayscale of an array from :func:`as_image_array` (ITU-R 601 luma, as PIL)."""
    if image.ndim == 2:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image, "RGB").convert("L"))


# -- detection --------------------------------------------------------------------------------
class FaceDetector:
    """Frontal faces with OpenCV's Haar cascade.

    Parameters (stored as given; the cascade is loaded on the first :meth:`detect`):
        scale_factor: image pyramid step (> 1; smaller finds more faces, slower).
        min_neighbors: overlapping detections needed to keep a face (higher: fewer false
            positives, more misses).
        min_size: smallest face in pixels (an int for a square, or ``(w, h)``).
        max_size: largest face in pixels, or None.
        cascade: path of another cascade XML file (default: OpenCV's bundled frontal-face one).
    """

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int | Sequence[int] = 30,
                 max_size: int | Sequence[int] | None = None, cascade: str | os.PathLike | None = None) -> None:
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_size = max_size
        self.cascade = cascade
        self._classifier = None

    def __repr__(self) -> str:
        return (f"FaceDetector(scale_factor={self.scale_factor}, min_neighbors={self.min_neighbors}, "
                f"min_size={self.min_size}, max_size={self.max_size})")

    @staticmethod
    def _size(value) -> tuple[int, int]:
        if value is None:
            return (0, 0)
        if isinstance(value, (int, np.integer)):
            return (int(value), int(value))
        w, h = value
        return (int(w), int(h))

    def load(self):
        """Load the cascade now (it is otherwise loaded by the first :meth:`detect`); raises a
        clear error when OpenCV or the cascade file is missing."""
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
                raise ImportError(f"OpenCV {cv2.__version__} has no bundled Haar cascades (OpenCV 5 removed "
                                  f"them): {_INSTALL_HINT}")
            path = os.path.join(base, CASCADE_FILE)
        if not os.path.isfile(path):
            hint = "" if self.cascade is not None else f"; reinstall OpenCV 4: {_INSTALL_HINT}"
            raise FileNotFoundError(f"Haar cascade file not found: {path}{hint}")
        classifier = cv2.CascadeClassifier(path)
        if classifier.empty():
            raise ValueError(f"{path}: not a readable Haar cascade")
        self._classifier = classifier
        return classifier

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Face boxes ``int64 [N, 4]`` as ``(x, y, w, h)`` in pixels, ordered left to right
        (then top to bottom). ``image`` is an array from :func:`as_image_array`."""
        classifier = self.load()
        gray = to_gray(as_image_array(image))
        found = classifier.detectMultiScale(gray, scaleFactor=float(self.scale_factor),
                                            minNeighbors=int(self.min_neighbors),
                                            minSize=self._size(self.min_size), maxSize=self._size(self.max_size))
        boxes = np.asarray(found, dtype=np.int64).reshape(-1, 4)
        if len(boxes):
            boxes = boxes[np.lexsort((boxes[:, 1], boxes[:, 0]))]
        return boxes


# -- crops and model input --------------------------------------------------------------------
def expand_box(box: Sequence[int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` grown by ``margin`` times its width/height on every side, clipped to a
    ``width x height`` image (so a face near the border gives a narrower crop)."""
    x, y, w, h = (int(v) for v in box)
    dx, dy = int(round(margin * w)), int(round(margin * h))
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {list(box)} lies outside the {width}x{height} image")
    return x0, y0, x1 - x0, y1 - y0


def crop_faces(image: np.ndarray, boxes, margin: float = 0.1) -> list[np.ndarray]:
    """The face crops of ``image`` for ``boxes`` (each grown by ``margin``, clipped)."""
    h, w = image.shape[:2]
    crops = []
    for box in np.asarray(boxes).reshape(-1, 4):
        x, y, cw, ch = expand_box(box, margin, w, h)
        crops.append(image[y:y + ch, x:x + cw])
    return crops


def face_pixels(face: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """One face crop (any size, gray or RGB uint8) as the model's ``uint8 [C, S, S]`` pixels:
    grayscale (``channels=1``) or RGB, bilinear resize to ``image_size``; the same operations
    as :func:`dicc.data.decode.decode_array`."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    face = as_image_array(face)
    want_gray = channels == 1
    if face.shape[0] == image_size and face.shape[1] == image_size and (face.ndim == 2) == want_gray:
        arr = face  # already model-sized: no copy through PIL
    else:
        from PIL import Image

        im = Image.fromarray(face, "L" if face.ndim == 2 else "RGB").convert("L" if want_gray else "RGB")
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def normalize_batch(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``uint8 [N, C, S, S]`` -> ``float32 (x / 255 - mean) / std`` (as training's normalise)."""
    x = pixels.astype(np.float32) / np.float32(255.0)
    return (x - np.float32(mean)) / np.float32(std)


def prepare_faces(faces: Sequence[np.ndarray], image_size: int, channels: int, mean: float,
                  std: float) -> np.ndarray:
    """Face crops -> the model's normalised ``float32 [N, C, S, S]`` input."""
    if not len(faces):
        return np.zeros((0, channels, image_size, image_size), dtype=np.float32)
    pixels = np.stack([face_pixels(f, image_size, channels) for f in faces])
    return normalize_batch(pixels, mean, std)
