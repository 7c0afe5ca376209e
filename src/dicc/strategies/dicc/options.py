"""The options of the ``dicc`` method (``method.options``), checked when they are built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ...clustering import BACKENDS

MERGES = ("logsumexp", "max")
FEATURE_SOURCES = ("clean", "train")
SAMPLERS = ("none", "balanced", "sqrt", "subclass")
HEADS = ("subclass", "parent")


@dataclass
class DICCOptions:
    """Options of the ``dicc`` method (``method.options`` in the config)."""

    #: target sub-class size ``s`` in ``k_c = clamp(floor(n_c / s), 1, k_max)``: ``"median"``
    #: (median class count), ``"min"`` (smallest class count, at least ``size_floor``), ``"sbcl"``
    #: (SBCL's rule: ``k_c = n_c // max(n_min, size_floor)``, tail-sized sub-classes, no
    #: ``k_max`` cap; SBCL uses ``size_floor`` 10-20) or a number
    size: Any = "median"
    #: the most sub-classes one class is split into
    k_max: int = 4
    #: with ``size="min"``, the smallest ``s`` allowed
    size_floor: int = 100
    #: epochs trained on parent labels before the first clustering: an integer number of epochs,
    #: or a fraction (< 1) of the run's epochs, rounded (the first split happens at the start of
    #: epoch ``warmup`` + 1, 1-based). Default 0.3: on FER2013 IF=100 validation (10 epochs,
    #: benchmarks/fer2013_lt/ablation_cpu, val MCA: 1 -> 42.9, 3 -> 45.4, 5 -> 45.6) 3 and 5 tie
    #: within the seed spread (+0.18 +- 0.85) and both beat 1; 3 splits earlier, so more epochs
    #: learn the sub-classes
    warmup_epochs: Any = 0.3
    #: re-cluster every this many epochs after the first split; 0 = cluster once, never again
    recluster_every: int = 1
    #: weight of the parent-level loss on the merged parent logits (0 turns it off); the total is
    #: ``(sub + parent_weight * parent) / (1 + parent_weight)``, so the loss has the base
    #: method's scale (with ``k_max=1`` and the same loss in both places it *is* the base loss)
    parent_weight: float = 1.0
    #: loss in sub-class space, built with the sub-class counts (any name of
    #: ``dicc.losses.create_loss`` but ldam: ce, weighted_ce, focal, balanced_softmax, logit_adjust)
    base_loss: str = "ce"
    #: keyword options of ``base_loss`` (e.g. ``{"tau": 1.0}``)
    base_loss_options: dict = field(default_factory=dict)
    #: loss on the merged parent logits, built with the class counts (e.g. ``"balanced_softmax"``)
    parent_loss: str = "ce"
    #: keyword options of ``parent_loss``
    parent_loss_options: dict = field(default_factory=dict)
    #: how sub-class logits become a parent logit: ``"logsumexp"`` (sum of the sub-class
    #: probabilities) or ``"max"`` (the most likely sub-class)
    merge: str = "logsumexp"
    #: k-means implementation: ``"torch"`` (on the training device) or ``"sklearn"`` (CPU)
    backend: str = "torch"
    #: every sub-class gets at least this many samples (when the class has enough); 0 = only
    #: non-empty
    min_cluster_size: int = 0
    #: run k-means on at most this many samples per class, then assign the rest to the nearest
    #: centroid; 0 = cluster all samples
    feature_sample: int = 0
    #: k-means++ restarts at the first clustering (later ones warm-start from the previous
    #: centroids)
    n_init: int = 3
    #: Lloyd iterations at most per k-means run
    max_iter: int = 100
    #: label-smoothing mass moved from the pseudo-label to its sibling sub-classes (spread
    #: evenly; same-class siblings only, unsplit classes keep all of it); 0 = hard targets.
    #: Default 0.3: the best splitting variant on FER2013 IF=100 validation (ablation_cpu)
    soft_sibling: float = 0.3
    #: seed of the clustering (k-means++ and sub-sampling; the epoch is added to it)
    seed: int = 0
    #: features clustered: ``"train"`` (the features the training forward passes of the
    #: previous epoch computed anyway: augmented images, train mode, no extra pass; indices not
    #: trained on yet fall back to clean features; a DICC epoch costs about a CE epoch) or
    #: ``"clean"`` (an extra pass over all training images in eval mode without augmentation at
    #: every clustering, 1.3-1.6x a CE epoch; benchmarks/dicc_overhead.md)
    feature_source: str = "train"
    #: training order: ``"none"`` (a shuffle), ``"balanced"`` / ``"sqrt"`` (class-aware
    #: re-sampling with replacement, as the ``resample`` method) or ``"subclass"`` (every
    #: sub-class drawn equally often once the classes are split; every class during warm-up)
    sampler: str = "none"
    #: what the classifier head predicts: ``"subclass"`` (one output per sub-class, merged for
    #: evaluation: DICC as specified) or ``"parent"`` (one output per class trained with
    #: ``parent_loss`` alone, e.g. balanced softmax; the sub-classes then only shape the
    #: representation through the ``contrastive`` term, as in SBCL)
    head: str = "subclass"
    #: weight of the sub-class supervised contrastive term (SBCL, :mod:`dicc.contrastive`) on a
    #: projection of the features of two augmented views of every image; 0 = off (one view)
    contrastive: float = 0.0
    #: temperature of the contrastive term (SBCL: 0.1)
    con_temperature: float = 0.1
    #: its base temperature: the sub-class term is scaled by ``con_temperature / con_base_temperature`` (SBCL: 0.07)
    con_base_temperature: float = 0.07
    #: weight of the class-level positives beside the sub-class ones (SBCL: 0.25)
    con_class_weight: float = 0.25
    #: output size of the two-layer projection head the contrastive term uses (SBCL: 128)
    projection_dim: int = 128

    def __post_init__(self) -> None:
        """Checked when the options are built, so a grid fails before anything trains."""
        from ...losses import available_losses

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
        # LDAM needs a cosine head whose bias is unused, so the split could not keep the parent
        # predictions (DESIGN 2.4) and the merge would see unscaled cosines: not offered here
        valid = [n for n in available_losses() if n != "ldam"]
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
