"""Your own data as dicc's: a torch ``Dataset`` of ``(image, label)``, a pair ``(images,
labels)`` or a :class:`~dicc.data.base.FERDataset` -> a FERDataset of uint8 images
(:func:`as_dataset`); a batch, a sequence of images or one PIL image -> a uint8 batch
(:func:`as_images`). What ``dicc.fit``, ``dicc.evaluate`` and ``RunResult.predict`` take (the
forms are described in :mod:`dicc.api`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def _to_uint8_chw(image, where: str) -> torch.Tensor:
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        from .decode import eight_bit

        image = eight_bit(image)  # 16-bit scaled, not clipped
        arr = np.asarray(image.convert("L" if image.mode in ("1", "L", "LA") else "RGB"))
        t = torch.from_numpy(arr.copy())
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    else:
        if not isinstance(image, torch.Tensor) and np.asarray(image).dtype == np.uint16:  # 16-bit: scaled
            image = np.rint(np.asarray(image, dtype=np.float64) / 257.0).astype(np.uint8)
        t = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
        if t.dim() == 2:
            t = t[None]
        elif t.dim() == 3 and t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3):  # HxWxC
            t = t.permute(2, 0, 1)
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"{where}: expected an image of shape [C, H, W] (C = 1 or 3), [H, W] or [H, W, C], got {tuple(t.shape)}"
        )
    if t.dtype != torch.uint8:
        t = t.float()
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: the image holds NaN or infinite values")
        t = (t * 255.0 if float(t.max()) <= 1.0 else t).round().clamp(0, 255).to(torch.uint8)
    return t.contiguous()


def _class_index(label, where: str) -> int:
    """An integer class index from a label (an int, a numpy or torch integer, or a float that is
    a whole number); anything else (0.5, "3", True) is a ValueError."""
    size = label.numel() if hasattr(label, "numel") else getattr(label, "size", 1)
    raw = label.item() if hasattr(label, "item") and size == 1 else label
    if isinstance(raw, (bool, np.bool_)) or not (
        isinstance(raw, (int, np.integer)) or (isinstance(raw, (float, np.floating)) and float(raw).is_integer())
    ):
        raise ValueError(f"{where}: the label must be an integer class index, got {label!r}")
    return int(raw)


def _items(data, name: str):
    """The ``(image, label)`` items of a pair ``(images, labels)`` or of a Dataset; ValueError
    for anything else or for no items."""
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and hasattr(data[0], "shape")
        and len(data[0].shape) >= 3
        and hasattr(data[1], "__len__")
        and len(data[1]) == data[0].shape[0]
    ):  # (images, labels)
        images, labels = data
        items = ((images[i], labels[i]) for i in range(len(labels)))
        n = len(labels)
    else:
        if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
            raise ValueError(
                f"{name}: expected a torch Dataset of (image, label), a pair (images, labels) or a "
                f"FERDataset, got {type(data).__name__}"
            )
        n = len(data)
        items = (data[i] for i in range(n))
    if n == 0:
        raise ValueError(f"{name}: the dataset is empty")
    return items


def as_dataset(data, *, class_names: Sequence[str] | None = None, name: str = "train"):
    """A :class:`~dicc.data.base.FERDataset` from user data (see the module docstring); a bad item
    is a ``ValueError`` naming the split, the item and what was expected."""
    from .base import FERDataset
    from .classes import EMOTIONS

    if isinstance(data, FERDataset):
        return data
    items = _items(data, name)
    imgs, labs, shape = [], [], None
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"{name}[{i}]: expected an (image, label) pair, got {type(item).__name__}")
        t = _to_uint8_chw(item[0], f"{name}[{i}]")
        if shape is None:
            shape = tuple(t.shape)
        elif tuple(t.shape) != shape:
            raise ValueError(
                f"{name}[{i}]: image of shape {tuple(t.shape)}, but the first one is {shape} (every "
                "image must have the same size; resize them in the dataset)"
            )
        imgs.append(t)
        labs.append(_class_index(item[1], f"{name}[{i}]"))
    labels = torch.tensor(labs, dtype=torch.long)
    names = list(class_names) if class_names is not None else getattr(data, "classes", None)
    named = names is not None
    names = [str(c) for c in (names if named else EMOTIONS)]
    bad = ((labels < 0) | (labels >= len(names))).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        hint = "" if named else "; unnamed labels are the seven emotions: pass class_names for another label space"
        raise ValueError(
            f"{name}[{i}]: label {labs[i]} is outside the class list ({len(names)} classes: {', '.join(names)}){hint}"
        )
    return FERDataset(
        labels=labels, images=torch.stack(imgs), class_names=tuple(names), source=f"{name} ({type(data).__name__})"
    )


def as_images(images, *, name: str = "images") -> torch.Tensor:
    """uint8 images ``[N, C, H, W]`` from the image forms :func:`fit` takes: a batch (a tensor or
    array ``[N, C, H, W]``, ``[N, H, W, C]`` or ``[N, H, W]``: N grayscale images), a sequence of
    images (PIL images, arrays or tensors ``CxHxW``/``HxW``/``HxWxC``), or one PIL image; uint8
    or floats in [0, 1] (scaled by 255), each of the first one's shape. A bad item is a
    ``ValueError`` naming it."""
    if hasattr(images, "convert") and hasattr(images, "mode"):  # one PIL image
        images = [images]
    elif isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim not in (3, 4):
        raise ValueError(
            f"{name}: expected a batch [N, C, H, W], [N, H, W, C] or [N, H, W], got shape {tuple(images.shape)} "
            "(one image: pass [image])"
        )
    out, shape = [], None
    for i in range(len(images)):
        t = _to_uint8_chw(images[i], f"{name}[{i}]")
        if shape is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name}[{i}]: image of shape {tuple(t.shape)}, but the first one is {shape}")
        shape = tuple(t.shape)
        out.append(t)
    if not out:
        raise ValueError(f"{name}: no images")
    return torch.stack(out)


__all__ = ["as_dataset", "as_images"]
