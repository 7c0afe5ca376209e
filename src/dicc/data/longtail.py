"""Long-tailed training subsets: count profiles, the DICC paper's presets, seeded draws.

Counts are always lists in the dataset's label-space order (``class_names``; by default the
seven ``EMOTIONS``: angry, disgust, fear, happy, sad, surprise, neutral). The profiles and
explicit counts work for any number of classes; the presets are tables of the seven FER
emotions and refuse any other label space.

Profiles (:func:`longtail_counts`), for ``C`` classes and imbalance factor ``IF``:

* ``exp``: ``n_i = floor(n_max * IF ** (-i / (C - 1)))`` for the class of rank ``i``
  (``i = 0`` the largest), the profile of the CIFAR-LT benchmarks (Cao et al. 2019);
* ``step``: the larger half of the classes (``ceil(C / 2)``; 4 of 7) keep ``n_max``, the
  others get ``floor(n_max / IF)`` (Buda et al. 2018).

Classes are ranked by their available count, largest first (ties: canonical order), so the
subset keeps the dataset's natural ordering of frequent and rare emotions, unless an explicit
``order`` is given. ``n_max`` defaults to the largest available count.

Presets (``PRESETS``) are the per-class training counts of the DICC paper (Li et al. 2025),
which are hand-chosen per class rather than one of the profiles above.

:mod:`dicc.data.build` draws the long-tailed subset from the whole training split
(:func:`parse_longtail` + :func:`longtail_subset`) and the validation split from the images it
leaves out; without a subset, :func:`stratified_holdout` splits off the validation images.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from .classes import EMOTIONS, class_index

__all__ = ["PRESETS", "PROFILES", "longtail_counts", "longtail_subset", "parse_longtail", "stratified_holdout"]

PROFILES: tuple[str, ...] = ("exp", "step")


def _canonical(d: Mapping[str, int]) -> dict[str, int]:
    return {c: int(d[c]) for c in EMOTIONS}


# The DICC paper's long-tailed training sets (per-class counts), in canonical class order.
PRESETS: dict[str, dict[str, int]] = {
    "fer2013-if100": _canonical(
        dict(happy=4300, neutral=2997, sad=1796, fear=1077, angry=387, surprise=139, disgust=43)
    ),
    "fer2013-if10": _canonical(
        dict(happy=4300, neutral=3488, sad=2612, fear=1744, angry=1308, surprise=872, disgust=430)
    ),
    "mmafedb-if100": _canonical(
        dict(happy=15529, neutral=29300, sad=8497, fear=644, angry=1992, surprise=4395, disgust=293)
    ),
    "mmafedb-if10": _canonical(
        dict(happy=21275, neutral=29300, sad=12223, fear=4859, angry=6566, surprise=8113, disgust=2930)
    ),
    "emotion-domestic-if100": _canonical(
        dict(happy=20000, neutral=9080, sad=329, fear=200, angry=1650, surprise=3260, disgust=802)
    ),
    "emotion-domestic-if20": _canonical(
        dict(happy=20000, neutral=10490, sad=1660, fear=1000, angry=2810, surprise=3460, disgust=1812)
    ),
}


def _names(n: int, class_names: Sequence[str] | None) -> tuple[str, ...] | None:
    """The class names for ``n`` classes: ``class_names``, else the seven emotions when
    ``n == 7``, else None (classes are then only numbered)."""
    if class_names is not None:
        names = tuple(class_names)
        if len(names) != n:
            raise ValueError(f"{n} class counts for {len(names)} classes ({', '.join(names)})")
        return names
    return EMOTIONS if n == len(EMOTIONS) else None


def _index(name: str, names: tuple[str, ...] | None, where: str) -> int:
    if names is None:
        raise ValueError(f"{where}: class {name!r} given by name, but the classes have no names; give indices")
    return class_index(name, where=where, classes=names)


def _rank_order(class_counts: Sequence[int], order, names: tuple[str, ...] | None = None) -> list[int]:
    n = len(class_counts)
    if order is None:
        return sorted(range(n), key=lambda c: (-int(class_counts[c]), c))
    names = [_index(o, _names(n, names), "long-tail order") if isinstance(o, str) else int(o) for o in order]
    if sorted(names) != list(range(n)):
        raise ValueError(f"order must list each of the {n} classes exactly once, got {list(order)}")
    return names


def longtail_counts(
    profile: str,
    class_counts: Sequence[int],
    imbalance_factor: float,
    n_max: int | None = None,
    order: Sequence[int | str] | None = None,
    class_names: Sequence[str] | None = None,
) -> list[int]:
    """Per-class target counts (label-space order) of a long-tail ``profile``.

    Args:
        profile: ``exp`` or ``step`` (see the module docstring).
        class_counts: available samples per class; ranks the classes and bounds ``n_max``.
        imbalance_factor: ratio of the largest to the smallest target count (>= 1).
        n_max: count of the largest class; default ``max(class_counts)``.
        order: classes (indices or names) from largest to smallest target; default: ranked by
            ``class_counts``, largest first.
        class_names: the label space, for names in ``order`` (default: the seven emotions
            when there are seven counts).

    The result is not checked against ``class_counts`` (:func:`longtail_subset` does that).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown long-tail profile {profile!r}; expected one of {', '.join(PROFILES)}")
    counts = [int(c) for c in class_counts]
    if not counts:
        raise ValueError("class_counts is empty")
    imbalance_factor = float(imbalance_factor)
    if not imbalance_factor >= 1.0:
        raise ValueError(f"imbalance factor must be >= 1, got {imbalance_factor:g}")
    top = max(counts) if n_max is None else int(n_max)
    if top < 1:
        raise ValueError(f"n_max must be >= 1, got {top}")
    ranked = _rank_order(counts, order, class_names)
    c = len(counts)
    out = [0] * c
    for i, cls in enumerate(ranked):
        if profile == "exp":
            n = top * imbalance_factor ** (-i / (c - 1)) if c > 1 else top
        else:
            n = top if i < math.ceil(c / 2) else top / imbalance_factor
        out[cls] = max(1, int(math.floor(n + 1e-9)))
    return out


def longtail_subset(
    labels: torch.Tensor | Sequence[int],
    counts: Sequence[int] | Mapping[str, int],
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Indices (int64, ascending) of a subset with exactly ``counts[c]`` samples of class ``c``,
    drawn per class without replacement; the same seed gives the same subset.

    Raises ``ValueError`` naming the class (from ``class_names``, default the seven emotions)
    when it has fewer samples than requested.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if isinstance(counts, Mapping):
        names = tuple(class_names) if class_names is not None else EMOTIONS
        counts = _from_mapping(counts, names)
    counts = [int(n) for n in counts]
    names = _names(len(counts), class_names)
    have = torch.bincount(labels, minlength=len(counts)).tolist() if len(labels) else [0] * len(counts)
    if len(have) > len(counts):
        raise ValueError(f"labels contain class {len(have) - 1} but only {len(counts)} counts were given")
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    picked = []
    for c, want in enumerate(counts):
        if want < 0:
            raise ValueError(f"negative count {want} for class {_name(c, names)}")
        if want > have[c]:
            raise ValueError(f"class {_name(c, names)} has {have[c]} samples but the long-tail subset asks for {want}")
        idx = (labels == c).nonzero().flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:want]])
    return torch.cat(picked).sort().values if picked else torch.zeros(0, dtype=torch.long)


def _name(c: int, names: Sequence[str] | None = EMOTIONS) -> str:
    return f"{names[c]!r} ({c})" if names is not None and c < len(names) else str(c)


def _from_mapping(d: Mapping, names: tuple[str, ...] | None = EMOTIONS) -> list[int]:
    if names is None:
        raise ValueError("long-tail counts given by class name, but the classes have no names")
    out = [0] * len(names)
    for k, v in d.items():
        out[class_index(k, where="long-tail counts", classes=names) if isinstance(k, str) else int(k)] = int(v)
    return out


def _preset(spec: str, key: str, names, n_cls: int) -> list[int]:
    """The preset ``key``'s counts; refused outside the seven emotions' label space."""
    if names != EMOTIONS:
        space = ", ".join(names) if names is not None else f"{n_cls} unnamed classes"
        raise ValueError(
            f"long-tail preset {spec!r} is a table of the seven FER emotions "
            f"({', '.join(EMOTIONS)}) but this label space is {space}; use "
            f"exp:IF, step:IF or {n_cls} explicit counts"
        )
    return [PRESETS[key][c] for c in EMOTIONS]


def _profile(spec, s: str, class_counts: Sequence[int], names) -> list[int] | None:
    """The counts of ``exp:IF`` / ``step:IF`` (``:N_MAX``), or None when ``s`` is not of that form."""
    parts = s.split(":")
    profile = parts[0].strip().lower()
    if profile not in PROFILES or len(parts) not in (2, 3):
        return None
    try:
        factor = float(parts[1])
        n_max = int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise ValueError(
            f"cannot read long-tail spec {spec!r}: expected {profile}:IF or {profile}:IF:N_MAX with numbers"
        ) from None
    return longtail_counts(profile, class_counts, factor, n_max=n_max, class_names=names)


def parse_longtail(spec, class_counts: Sequence[int], class_names: Sequence[str] | None = None) -> list[int]:
    """Target counts (label-space order) from a user's long-tail specification.

    Accepted forms:

    * a preset name from ``PRESETS`` (e.g. ``fer2013-if100``; the seven emotions only);
    * ``exp:IF`` or ``step:IF`` (``n_max`` = largest available count), or ``exp:IF:N_MAX``;
    * one count per class, comma-separated ``"4300,43,..."`` in label-space order (or a list);
    * a dict ``{class name: count}`` (missing classes get 0).

    ``class_counts`` are the available samples per class (used by the profiles);
    ``class_names`` the label space (default: the seven emotions when there are seven classes).
    """
    n_cls = len(class_counts)
    names = _names(n_cls, class_names)
    listing = f" ({', '.join(names)})" if names is not None else ""
    if isinstance(spec, Mapping):
        return _from_mapping(spec, names)
    if isinstance(spec, (list, tuple)):
        out = [int(x) for x in spec]
        if len(out) != n_cls:
            raise ValueError(f"long-tail counts need {n_cls} entries{listing}, got {len(out)}")
        return out
    if not isinstance(spec, str):
        raise TypeError(f"long-tail spec must be a string, list or dict, got {type(spec).__name__}")
    s = spec.strip()
    key = s.lower()
    if key in PRESETS:
        return _preset(spec, key, names, n_cls)
    if "," in s:
        try:
            values = [int(x) for x in s.split(",")]
        except ValueError:
            raise ValueError(f"cannot read long-tail counts {spec!r}: expected {n_cls} integers") from None
        return parse_longtail(values, class_counts, names)
    if ":" in s:
        counts = _profile(spec, s, class_counts, names)
        if counts is not None:
            return counts
    raise ValueError(
        f"unknown long-tail spec {spec!r}; expected a preset ({', '.join(PRESETS)}), "
        f"'exp:IF', 'step:IF', 'exp:IF:N_MAX', {n_cls} comma-separated counts, or a dict of counts"
    )


def stratified_holdout(
    labels: torch.Tensor | Sequence[int], fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into ``(keep, holdout)`` (both int64, ascending), class by class.

    Each class holds out ``round(fraction * n_c)`` samples, at least 1 when the class has 2 or
    more samples and never all of them; the draw is seeded.
    """
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"hold-out fraction must be between 0 and 1, got {fraction:g}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    keep, hold = [], []
    n_cls = int(labels.max()) + 1 if len(labels) else 0
    for c in range(n_cls):
        idx = (labels == c).nonzero().flatten()
        n = len(idx)
        if n == 0:
            continue
        k = min(max(int(round(fraction * n)), 1 if n >= 2 else 0), n - 1)
        idx = idx[torch.randperm(n, generator=g)]
        hold.append(idx[:k])
        keep.append(idx[k:])
    empty = torch.zeros(0, dtype=torch.long)
    keep_t = torch.cat(keep).sort().values if keep else empty
    hold_t = torch.cat(hold).sort().values if hold else empty
    return keep_t, hold_t
