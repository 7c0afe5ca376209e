"""Decode one image file into the uint8 ``[C, size, size]`` tensor every reader works with.

All image decoding in ``dicc`` goes through :func:`decode_image` (streamed datasets, the
on-disk cache, prediction), so an image gives the same pixels whichever path loads it. (An
array already in memory, e.g. a face cropped from a photo, is resized by PIL in the same way,
except that a JPEG file at least twice the model's size decodes at a reduced DCT scale first:
a mean difference of about 0.1 grey level.)
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image, ImageOps

#: File name endings treated as images when scanning folders (compared lower-case).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".pgm",
    ".ppm",
)


#: Decode JPEGs at least twice the requested size at a reduced DCT scale (see decode_array);
#: ``False`` decodes every image at full size first (the benchmark's ``--full-decode``).
JPEG_DRAFT = True


def is_image_file(name: str | os.PathLike) -> bool:
    """True when the file name has one of :data:`IMAGE_EXTENSIONS` (and is not hidden)."""
    base = os.fspath(name)
    if os.sep in base or (os.altsep and os.altsep in base):
        base = os.path.basename(base)
    return base[:1] != "." and base.lower().endswith(IMAGE_EXTENSIONS)


def eight_bit(im: Image.Image) -> Image.Image:
    """``im`` with 8-bit samples, its values scaled rather than clipped.

    16-bit grayscale (PIL's ``I;16`` modes, e.g. a 16-bit PNG) is scaled from 0..65535 to
    0..255 (PIL's ``convert("L")`` would clip every value above 255: nearly all of a 16-bit
    photo would be white). 32-bit integer images (``I``) are scaled the same way when they hold
    values above 255 (16-bit data in a 32-bit container) and kept otherwise; float images
    (``F``) in [0, 1] are scaled by 255, others clipped to [0, 255]. Other modes (8-bit gray,
    RGB, ..., 16-bit RGB, which PIL already reads as 8-bit) are returned as they are."""
    mode = im.mode
    if not (mode.startswith("I;16") or mode in ("I", "F")):
        return im
    arr = np.asarray(im, dtype=np.float64)
    if mode == "F":
        arr = arr * 255.0 if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0 else arr
    elif mode.startswith("I;16") or (arr.size and arr.max() > 255):
        arr = np.clip(arr, 0, 65535) / 257.0
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def decode_array(path: str | os.PathLike, size: int, channels: int) -> np.ndarray:
    """Like :func:`decode_image` but returns a numpy uint8 array ``[C, size, size]``.

    The image is converted to grayscale (``channels=1``) or RGB (``channels=3``) (16-bit images
    scaled to 8 bits, :func:`eight_bit`) and, when it is not already ``size x size``, resized
    with bilinear filtering (PIL antialiases when shrinking). Non-square images are stretched,
    as FER face crops are square already. A JPEG at least twice ``size`` on both sides is first
    decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, PIL's ``draft``; never below
    ``size``): 2.6x faster for 448 -> 224 px (``benchmarks/loader_speed.md``), which is what
    streaming large photos (AffectNet) costs.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as im:
            if JPEG_DRAFT and im.format == "JPEG" and min(im.size) >= 2 * size:
                im.draft(im.mode, (size, size))  # same mode, reduced size; before any load
            im = eight_bit(ImageOps.exif_transpose(im)).convert(mode)  # as prediction loads photos
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.array(im, dtype=np.uint8)  # a writable copy
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot decode image: {e}") from e
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def decode_image(path: str | os.PathLike, size: int, channels: int) -> torch.Tensor:
    """Decode an image file into a uint8 tensor ``[channels, size, size]``.

    Raises ``ValueError("<path>: cannot decode image: ...")`` for a missing, unreadable or
    corrupt file.
    """
    return torch.from_numpy(decode_array(path, size, channels))
