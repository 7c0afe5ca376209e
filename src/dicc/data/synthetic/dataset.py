"""``make_synthetic``: the synthetic dataset's split sizes, styles per class and random stream,
and the batched rendering of a split into a :class:`~dicc.data.base.FERDataset`."""

from __future__ import annotations

import hashlib
import math
from typing import Mapping, Sequence

import torch

from ..base import FERDataset
from ..classes import EMOTIONS
from .draw import render
from .params import sample_params
from .styles import STYLE_SPECS

_DEFAULT_COUNTS: dict[str, dict[str, int]] = {
    "train": dict(angry=280, disgust=40, fear=360, happy=1200, sad=600, surprise=200, neutral=900),
    "val": {c: 50 for c in EMOTIONS},
    "test": {c: 100 for c in EMOTIONS},
}
SYNTHETIC_SPLITS: tuple[str, ...] = tuple(_DEFAULT_COUNTS)

_CHUNK = 1024  # images rendered at once (bounds memory, not results)


def synthetic_counts(split: str = "train") -> list[int]:
    """Default number of images per class (canonical order) of a synthetic split."""
    if split not in _DEFAULT_COUNTS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {', '.join(SYNTHETIC_SPLITS)}")
    return [_DEFAULT_COUNTS[split][c] for c in EMOTIONS]


def _resolve_counts(split: str, counts) -> list[int]:
    if counts is None:
        return synthetic_counts(split)
    if isinstance(counts, Mapping):
        unknown = sorted(set(counts) - set(EMOTIONS))
        if unknown:
            raise ValueError(f"unknown class names in counts: {unknown}; expected {', '.join(EMOTIONS)}")
        out = [int(counts.get(c, 0)) for c in EMOTIONS]
    else:
        out = [int(n) for n in counts]
        if len(out) != len(EMOTIONS):
            raise ValueError(f"counts needs {len(EMOTIONS)} entries ({', '.join(EMOTIONS)}), got {len(out)}")
    if any(n < 0 for n in out):
        raise ValueError(f"counts must be non-negative, got {out}")
    return out


def _resolve_styles(styles_per_class) -> list[int]:
    """Number of styles used per class (the first k of each class's list)."""
    avail = [len(STYLE_SPECS[c]) for c in EMOTIONS]
    if styles_per_class is None:
        return avail
    if isinstance(styles_per_class, Mapping):
        unknown = sorted(set(styles_per_class) - set(EMOTIONS))
        if unknown:
            raise ValueError(f"unknown class names in styles_per_class: {unknown}")
        want = [int(styles_per_class.get(c, a)) for c, a in zip(EMOTIONS, avail)]
    else:
        want = [int(styles_per_class)] * len(EMOTIONS)
    if any(k < 1 for k in want):
        raise ValueError(f"styles_per_class must be >= 1, got {want}")
    return [min(k, a) for k, a in zip(want, avail)]


def _split_seed(split: str, seed: int) -> int:
    digest = hashlib.sha256(f"dicc.synthetic/{split}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _largest_remainder(n: int, weights: Sequence[float]) -> list[int]:
    total = sum(weights)
    raw = [n * w / total for w in weights]
    out = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[: n - sum(out)]:
        out[i] += 1
    return out


def _shuffled_labels(n_per_class: list[int], n_styles: list[int], g: torch.Generator):
    """``(labels, styles)`` of every image, the styles of a class in proportion to their
    weights, in an order drawn from ``g``."""
    labels, styles = [], []
    for c, (name, n) in enumerate(zip(EMOTIONS, n_per_class)):
        weights = [spec[1] for spec in STYLE_SPECS[name][: n_styles[c]]]
        for s, k in enumerate(_largest_remainder(n, weights)):
            labels += [c] * k
            styles += [s] * k
    perm = torch.randperm(len(labels), generator=g)
    labels_t = torch.tensor(labels, dtype=torch.long)[perm] if labels else torch.zeros(0, dtype=torch.long)
    styles_t = torch.tensor(styles, dtype=torch.long)[perm] if styles else torch.zeros(0, dtype=torch.long)
    return labels_t, styles_t


def _render_all(params: dict[str, torch.Tensor], image_size: int, g: torch.Generator) -> torch.Tensor:
    """uint8 images ``[N, S, S]`` of the faces ``params`` (noise drawn from ``g``), in chunks."""
    n = len(params["skin"])
    noise = torch.randn(n, image_size, image_size, generator=g)
    chunks = [
        render({k: v[i : i + _CHUNK] for k, v in params.items()}, image_size, noise[i : i + _CHUNK])
        for i in range(0, n, _CHUNK)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, image_size, image_size, dtype=torch.uint8)


def make_synthetic(
    split: str = "train",
    seed: int = 0,
    counts: Sequence[int] | Mapping[str, int] | None = None,
    image_size: int = 48,
    styles_per_class: int | Mapping[str, int] | None = None,
) -> FERDataset:
    """Draw the synthetic FER dataset's ``split`` (``train``, ``val`` or ``test``).

    Args:
        split: which split; selects the default counts and, with ``seed``, the random stream.
        seed: same (split, seed) gives identical tensors.
        counts: images per class, a list in canonical order or a ``{class: n}`` dict
            (missing classes get 0); default :func:`synthetic_counts` of ``split``.
        image_size: side of the square images (the faces scale with it).
        styles_per_class: use only the first k styles of each class (an int, or a dict by
            class name); ``1`` removes the hidden sub-classes. Default: all styles.

    Returns a :class:`FERDataset` with uint8 images ``[N, 1, S, S]`` in random order and
    ``extras["style"]`` (int64, the style index within the class, see ``SYNTHETIC_STYLES``).
    """
    if split not in _DEFAULT_COUNTS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {', '.join(SYNTHETIC_SPLITS)}")
    if int(image_size) < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    n_per_class = _resolve_counts(split, counts)
    n_styles = _resolve_styles(styles_per_class)

    g = torch.Generator(device="cpu").manual_seed(_split_seed(split, seed))
    labels_t, styles_t = _shuffled_labels(n_per_class, n_styles, g)
    images = _render_all(sample_params(labels_t, styles_t, g), image_size, g)
    return FERDataset(
        labels=labels_t,
        images=images[:, None].contiguous(),
        source=f"synthetic:{split}(seed={seed})",
        extras={"style": styles_t},
        ids=[f"synthetic:{seed}:{split}:{i}" for i in range(len(labels_t))],  # sample identities
    )
