"""Images as arrays: any photo, PIL image or numpy array -> ``uint8`` ``HxW`` gray or ``HxWx3`` RGB."""

from __future__ import annotations

import os
import numpy as np

_INSTALL_HINT = "pip install 'opencv-python-headless<5'"


def require_cv2():
    """Import OpenCV or fail with the command that installs a version that has what we use."""
    try:
        import cv2
    except ImportError as err:
        raise ImportError(
            f"face detection, video input and annotation need OpenCV 4: {_INSTALL_HINT} ({err})"
        ) from None
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

    from ..data.decode import eight_bit

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return as_image_array(eight_bit(im))  # 16-bit files scaled, not clipped
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
