"""The options of the ``dicc`` method (``method.options``), checked when they are built."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...clustering import BACKENDS
from ..base import option

MERGES = ("logsumexp", "max")
FEATURE_SOURCES = ("clean", "train")
SAMPLERS = ("none", "balanced", "sqrt", "subclass")
HEADS = ("subclass", "parent")


@dataclass
class DICCOptions:
    """Options of the ``dicc`` method (``method.options`` in the config)."""

    # Each option's one-line help is what `dicc methods -v` prints; the comments above an option
    # say more (where its default was measured).

    # k_c = clamp(floor(n_c / s), 1, k_max); "min": the smallest class count, at least size_floor;
    # "sbcl": SBCL's rule, k_c = n_c // max(n_min, size_floor) with no k_max cap (SBCL: floor 10-20)
    size: Any = option(
        "median", help="target sub-class size s: median or min (of the class counts), sbcl (SBCL's rule) or a number"
    )
    k_max: int = option(4, help="the most sub-classes one class is split into")
    size_floor: int = option(100, help="with size=min or sbcl, the smallest s allowed")
    # the first split happens at the start of epoch warmup + 1 (1-based). Default 0.3: on FER2013
    # IF=100 validation (10 epochs on the CPU, val MCA: 1 -> 42.9, 3 -> 45.4, 5 -> 45.6) 3 and 5
    # tie within the seed spread (+0.18 +- 0.85) and both beat 1; 3 splits earlier, so more epochs
    # learn the sub-classes
    warmup_epochs: Any = option(
        0.3, help="epochs on parent labels before the first clustering: a number, or a fraction (< 1) of the epochs"
    )
    recluster_every: int = option(1, help="re-cluster every this many epochs after the first split; 0 = only once")
    # the total is (sub + parent_weight * parent) / (1 + parent_weight), so the loss has the base
    # method's scale (with k_max=1 and the same loss in both places it *is* the base loss)
    parent_weight: float = option(1.0, help="weight of the loss on the merged parent logits (0 turns it off)")
    base_loss: str = option(
        "ce", help="loss in sub-class space, with the sub-class counts: ce, weighted_ce, focal, balanced_softmax, ..."
    )
    base_loss_options: dict = option(default_factory=dict, help='keyword options of base_loss (e.g. {"tau": 1.0})')
    parent_loss: str = option(
        "ce", help="loss on the merged parent logits, with the class counts: ce, balanced_softmax, ..."
    )
    parent_loss_options: dict = option(default_factory=dict, help="keyword options of parent_loss")
    merge: str = option(
        "logsumexp", help="sub-class logits -> parent logit: logsumexp (sum of probabilities) or max (likeliest)"
    )
    backend: str = option("torch", help="k-means implementation: torch (on the training device) or sklearn (CPU)")
    min_cluster_size: int = option(0, help="every sub-class gets at least this many samples when it can; 0 = non-empty")
    feature_sample: int = option(
        0, help="k-means on at most this many samples per class, the rest to the nearest centroid; 0 = all"
    )
    n_init: int = option(3, help="k-means++ restarts at the first clustering (later ones warm-start)")
    max_iter: int = option(100, help="Lloyd iterations at most per k-means run")
    # spread evenly over same-class siblings; unsplit classes keep all of it. Default 0.3: the best
    # splitting variant on FER2013 IF=100 validation (the same 10-epoch CPU ablation)
    soft_sibling: float = option(
        0.3, help="label-smoothing mass moved from the pseudo-label to its sibling sub-classes; 0 = hard targets"
    )
    seed: int = option(0, help="seed of the clustering (k-means++ and sub-sampling; the epoch is added)")
    # train: augmented images in train mode, no extra pass (indices not trained on yet fall back to
    # clean features; a DICC epoch costs about a CE epoch); clean: an extra eval-mode pass without
    # augmentation at every clustering, 1.3-1.6x a CE epoch (benchmarks/dicc_overhead.md)
    feature_source: str = option(
        "train", help="features clustered: train (the last epoch's training features) or clean (an extra pass)"
    )
    # balanced / sqrt: class-aware re-sampling with replacement, as the resample method
    sampler: str = option(
        "none", help="training order: none (shuffle), balanced or sqrt (over classes), subclass (over sub-classes)"
    )

    # head=parent: a C-way head trained with parent_loss alone (e.g. balanced softmax); the
    # sub-classes then only shape the representation through the contrastive term, as in SBCL
    head: str = option("subclass", help="what the head predicts: subclass (merged for evaluation) or parent (classes)")
    # SBCL (Hou et al. 2023), dicc.contrastive: a projection of two augmented views per image
    contrastive: float = option(0.0, help="weight of the sub-class supervised contrastive term; 0 = off (one view)")
    con_temperature: float = option(0.1, help="temperature of the contrastive term (SBCL: 0.1)")
    con_base_temperature: float = option(
        0.07, help="the sub-class term is scaled by con_temperature / con_base_temperature (SBCL: 0.07)"
    )
    con_class_weight: float = option(0.25, help="weight of the class-level positives beside the sub-class ones")
    projection_dim: int = option(128, help="output size of the two-layer projection head (SBCL: 128)")

    def __post_init__(self) -> None:
        """Checked when the options are built, so a grid fails before anything trains."""
        from ...losses import available_losses, needs_cosine_logits

        if self.merge not in MERGES:
            raise ValueError(f"dicc: unknown merge {self.merge!r}; valid: {', '.join(MERGES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"dicc: unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"dicc: unknown sampler {self.sampler!r}; valid: {', '.join(SAMPLERS)}")
        if self.feature_source not in FEATURE_SOURCES:
            raise ValueError(
                f"dicc: unknown feature_source {self.feature_source!r}; valid: {', '.join(FEATURE_SOURCES)}"
            )
        # a loss on cosine logits (LDAM) needs a cosine head whose bias is unused, so the split
        # could not keep the parent predictions (the log k_c bias shift of the first split, see
        # dicc/__init__.py) and the merge would see unscaled cosines: not offered here
        valid = [n for n in available_losses() if not needs_cosine_logits(n)]
        for key in ("base_loss", "parent_loss"):
            if getattr(self, key) not in valid:
                raise ValueError(f"dicc: unknown {key} {getattr(self, key)!r}; valid: {', '.join(valid)}")
        w = self.warmup_epochs
        if (
            isinstance(w, bool)
            or not isinstance(w, (int, float))
            or w < 0
            or (isinstance(w, float) and w >= 1 and not w.is_integer())
        ):
            raise ValueError(
                f"dicc: warmup_epochs must be a number of epochs (an integer >= 0) or a fraction of "
                f"the epochs in [0, 1), got {w!r}"
            )
        if isinstance(self.recluster_every, bool) or int(self.recluster_every) < 0:
            raise ValueError("dicc: recluster_every must be an integer >= 0")
        if not 0.0 <= float(self.soft_sibling) < 1.0:
            raise ValueError(f"dicc: soft_sibling must lie in [0, 1), got {self.soft_sibling}")
        if self.head not in HEADS:
            raise ValueError(f"dicc: unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        for key in ("contrastive", "con_class_weight"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"dicc: {key} must be a number >= 0, got {v!r}")
        for key in ("con_temperature", "con_base_temperature"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"dicc: {key} must be a number > 0, got {v!r}")
        if isinstance(self.projection_dim, bool) or not isinstance(self.projection_dim, int) or self.projection_dim < 1:
            raise ValueError(f"dicc: projection_dim must be an integer >= 1, got {self.projection_dim!r}")
        if float(self.parent_weight) < 0:
            raise ValueError(f"dicc: parent_weight must be >= 0, got {self.parent_weight}")


__all__ = ["DICCOptions", "FEATURE_SOURCES", "HEADS", "MERGES", "SAMPLERS"]
