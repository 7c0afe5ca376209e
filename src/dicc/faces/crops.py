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


def normalize_batch(pixels: np.ndarray, mean, std) -> np.ndarray:
    """``uint8 [N, C, S, S]`` -> ``float32 (x / 255 - mean) / std``: training's own
    :func:`dicc.data.transforms.normalize` (``mean``/``std`` numbers or one per channel)."""
    import torch

    from ..data.transforms import normalize

    # torch.from_numpy warns about a read-only array (np.asarray of a PIL image, a memory map):
    # such an array is copied, any other is used as it is
    return normalize(torch.from_numpy(np.require(pixels, requirements=("C", "W"))), mean, std).numpy()


def prepare_faces(faces: Sequence[np.ndarray], image_size: int, channels: int, mean: float, std: float) -> np.ndarray:
    """Face crops -> the model's normalised ``float32 [N, C, S, S]`` input."""
    if not len(faces):
        return np.zeros((0, channels, image_size, image_size), dtype=np.float32)
    pixels = np.stack([face_pixels(f, image_size, channels) for f in faces])
    return normalize_batch(pixels, mean, std)
