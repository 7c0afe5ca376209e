"""Face crops -> model input: a box grown by a margin, resized and normalised as training images are.

Crops are converted the same way training images are decoded (:func:`dicc.data.decode.decode_array`:
PIL's grayscale conversion and bilinear resize), so a face gives the same pixels whichever path
loads it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .images import as_image_array


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
        crops.append(image[y : y + ch, x : x + cw])
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


def _per_channel(v, channels: int) -> np.ndarray:
    """``mean``/``std`` (a number or one per channel) as float32 that broadcasts over ``[N, C, S, S]``."""
    if isinstance(v, (list, tuple, np.ndarray)):
        arr = np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1)
        if arr.shape[1] not in (1, channels):
            raise ValueError(f"{arr.shape[1]} normalisation values for {channels}-channel pixels")
        return arr
    return np.float32(v)


def normalize_batch(pixels: np.ndarray, mean, std) -> np.ndarray:
    """``uint8 [N, C, S, S]`` -> ``float32 (x / 255 - mean) / std``, in NumPy: the same float32
    operations, in the same order, as training's :func:`dicc.data.transforms.normalize` (so the
    same numbers, bit for bit; ``mean``/``std`` numbers or one per channel). A read-only input
    (np.asarray of a PIL image, a memory map) is fine: the result is a new array."""
    pixels = np.asarray(pixels)
    channels = pixels.shape[1] if pixels.ndim == 4 else 1
    x = pixels.astype(np.float32)
    x /= np.float32(255.0)
    x -= _per_channel(mean, channels)
    x /= _per_channel(std, channels)
    return x


TTA_SHIFT = 2  # the corner shift of the "crops" views: training's padded crops' (dicc.data.transforms.tta_views)


def tta_pixels(pixels: np.ndarray, mode: str, shift: int = TTA_SHIFT) -> np.ndarray:
    """The test-time views of ``[N, C, S, S]`` pixels stacked as ``[V, N, C, S, S]`` (any dtype),
    in NumPy: the views of :func:`dicc.data.transforms.tta_views`, in its order (``"none"``: the
    batch itself, V = 1; ``"flip"``: it and its mirror image; ``"crops"``: the centre and the four
    corner shifts by ``shift`` pixels of the edge-replicated batch, each followed by its mirror)."""
    pixels = np.asarray(pixels)
    if mode in (None, "none"):
        return pixels[None]
    if mode == "flip":
        return np.stack([pixels, pixels[..., ::-1]])
    if mode == "crops":
        h, w = pixels.shape[-2:]
        p = np.pad(pixels, [(0, 0)] * (pixels.ndim - 2) + [(shift, shift)] * 2, mode="edge") if shift > 0 else pixels
        out = np.empty((10, *pixels.shape), dtype=pixels.dtype)
        for k, (dy, dx) in enumerate(((shift, shift), (0, 0), (0, 2 * shift), (2 * shift, 0), (2 * shift, 2 * shift))):
            v = p[..., dy : dy + h, dx : dx + w]
            out[2 * k], out[2 * k + 1] = v, v[..., ::-1]
        return out
    from ..config import TTA_MODES

    raise ValueError(f"unknown test-time augmentation {mode!r}; valid: {', '.join(TTA_MODES)}")


def prepare_faces(faces: Sequence[np.ndarray], image_size: int, channels: int, mean: float, std: float) -> np.ndarray:
    """Face crops -> the model's normalised ``float32 [N, C, S, S]`` input."""
    if not len(faces):
        return np.zeros((0, channels, image_size, image_size), dtype=np.float32)
    pixels = np.stack([face_pixels(f, image_size, channels) for f in faces])
    return normalize_batch(pixels, mean, std)
