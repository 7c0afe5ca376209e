"""DICC's sub-class plan: how many sub-classes each class gets, from the training class counts.

:func:`plan_subclasses` turns the counts into a :class:`SubclassPlan`: ``k_c = clamp(floor(n_c /
s), 1, k_max)`` sub-classes per class, with contiguous global ids.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Sequence

import torch

SIZE_RULES = ("median", "min", "sbcl")


# -- the sub-class plan ---------------------------------------------------------------------
@dataclass
class SubclassPlan:
    """How many sub-classes each class gets, and where their ids lie.

    ``counts[c]`` training samples of class ``c`` are split into ``k[c]`` sub-classes whose
    global ids are ``offsets[c] .. offsets[c] + k[c] - 1``; ``sub_to_parent[j]`` is the class
    of sub-class ``j``. ``size`` is the target sub-class size ``s`` the rule ``size_rule``
    produced.
    """

    counts: list[int]
    k: list[int]
    size: float
    size_rule: str = "median"
    k_max: int = 4
    offsets: torch.Tensor = field(init=False, repr=False)
    sub_to_parent: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.counts = [int(c) for c in self.counts]
        self.k = [int(k) for k in self.k]
        if len(self.counts) != len(self.k):
            raise ValueError(f"plan: {len(self.counts)} counts but {len(self.k)} sub-class numbers")
        if any(k < 1 for k in self.k):
            raise ValueError(f"plan: every class needs at least one sub-class, got k={self.k}")
        ks = torch.tensor(self.k, dtype=torch.long)
        self.offsets = torch.cumsum(ks, 0) - ks
        self.sub_to_parent = torch.repeat_interleave(torch.arange(len(self.k)), ks)

    @property
    def S(self) -> int:
        """Total number of sub-classes (the head size)."""
        return int(sum(self.k))

    @property
    def num_classes(self) -> int:
        return len(self.k)

    @property
    def split_classes(self) -> list[int]:
        """Classes with more than one sub-class."""
        return [c for c, k in enumerate(self.k) if k > 1]

    def subclass_range(self, c: int) -> range:
        o = int(self.offsets[c])
        return range(o, o + self.k[c])

    def even_subclass_counts(self) -> torch.Tensor:
        """Sub-class counts ``n_c / k_c`` before any clustering (float64, ``[S]``)."""
        return torch.tensor([n / k for n, k in zip(self.counts, self.k) for _ in range(k)], dtype=torch.float64)

    # -- presentation ------------------------------------------------------------------
    def table(self, class_names: Sequence[str] | None = None) -> list[dict]:
        """One dict per class: ``class``, ``count``, ``k``, ``subclass_size`` (``n_c / k_c``),
        ``subclasses`` (its global ids)."""
        names = list(class_names) if class_names is not None else [str(c) for c in range(self.num_classes)]
        return [
            {
                "class": names[c],
                "count": n,
                "k": k,
                "subclass_size": round(n / k, 1),
                "subclasses": list(self.subclass_range(c)),
            }
            for c, (n, k) in enumerate(zip(self.counts, self.k))
        ]

    def format_table(self, class_names: Sequence[str] | None = None) -> str:
        rows = self.table(class_names)
        w = max([5] + [len(str(r["class"])) for r in rows])
        lines = [
            f"DICC sub-class plan: s = {self.size:g} ({self.size_rule}), k_max = {self.k_max}, "
            f"S = {self.S} sub-classes",
            f"  {'class':<{w}}  {'count':>7}  {'k':>2}  {'sub-class size':>14}  ids",
        ]
        for r in rows:
            ids = r["subclasses"]
            span = f"{ids[0]}" if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"
            lines.append(f"  {r['class']:<{w}}  {r['count']:>7}  {r['k']:>2}  {r['subclass_size']:>14.1f}  {span}")
        return "\n".join(lines)

    # -- serialisation (plain values, safe for torch.load(weights_only=True) and JSON) --
    def to_dict(self) -> dict:
        return {
            "counts": list(self.counts),
            "k": list(self.k),
            "size": float(self.size),
            "size_rule": str(self.size_rule),
            "k_max": int(self.k_max),
            "S": self.S,
            "offsets": self.offsets.tolist(),
            "sub_to_parent": self.sub_to_parent.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SubclassPlan":
        plan = cls(
            counts=list(d["counts"]),
            k=list(d["k"]),
            size=float(d["size"]),
            size_rule=str(d.get("size_rule", "median")),
            k_max=int(d.get("k_max", max(d["k"]))),
        )
        if "S" in d and int(d["S"]) != plan.S:
            raise ValueError(f"plan: S={d['S']} does not match k={plan.k}")
        return plan


def plan_subclasses(
    class_counts: Sequence[int] | torch.Tensor,
    size: str | int | float = "median",
    k_max: int = 4,
    min_size_floor: int = 100,
) -> SubclassPlan:
    """``k_c = clamp(floor(n_c / s), 1, k_max)`` for every class.

    ``size`` chooses the target sub-class size ``s``: ``"median"`` (the median class count,
    the mean of the two middle counts when the number of classes is even), ``"min"`` (the
    smallest class count, but at least ``min_size_floor`` so one tiny class does not shatter
    the others), ``"sbcl"`` (the same ``s``, with ``k_c = n_c // s`` and no ``k_max`` cap: SBCL's
    tail-sized sub-classes) or a positive number used as given.
    """
    counts = [int(c) for c in (class_counts.tolist() if isinstance(class_counts, torch.Tensor) else class_counts)]
    if not counts or any(c <= 0 for c in counts):
        raise ValueError(f"plan: class counts must be positive, got {counts}")
    if isinstance(k_max, bool) or int(k_max) != k_max or int(k_max) < 1:
        raise ValueError(f"plan: k_max must be an integer >= 1, got {k_max!r}")
    k_max = int(k_max)
    if isinstance(size, str) and size.strip().replace(".", "", 1).isdigit():
        size = float(size)
    if isinstance(size, str):
        rule = size.strip().lower()
        if rule == "median":
            s = float(statistics.median(counts))
        elif rule in ("min", "sbcl"):
            s = float(max(min(counts), int(min_size_floor)))
        else:
            raise ValueError(f"plan: unknown size {size!r}; valid: {', '.join(SIZE_RULES)} or a positive number")
    elif isinstance(size, (int, float)) and not isinstance(size, bool) and size > 0 and math.isfinite(size):
        rule, s = "fixed", float(size)
    else:
        raise ValueError(f"plan: size must be {' or '.join(SIZE_RULES)} or a positive number, got {size!r}")
    if rule == "sbcl":  # SBCL (Hou et al. 2023): n_c // max(n_min, floor) sub-classes, no cap
        k = [max(n // int(s), 1) for n in counts]
        return SubclassPlan(counts=counts, k=k, size=s, size_rule=rule, k_max=max(k))
    k = [min(max(math.floor(n / s), 1), k_max) for n in counts]
    return SubclassPlan(counts=counts, k=k, size=s, size_rule=rule, k_max=k_max)


__all__ = ["SIZE_RULES", "SubclassPlan", "plan_subclasses"]
