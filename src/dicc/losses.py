"""Base losses for class-imbalanced classification, and the class weights they use.

Every loss is an ``nn.Module`` built from the per-output-column sample counts (the class
counts, or DICC's sub-class counts when applied in sub-class space) and called as
``loss(logits, targets) -> scalar``. Build them by name::

    loss = create_loss("balanced_softmax", counts)
    loss = create_loss("ldam", counts, {"max_m": 0.5, "s": 30.0})

Options shared by every loss:

``weight``
    per-class weights ``w_c``: ``None`` (all ones), ``"inverse"`` (``1/n_c``), ``"effective"``
    (class-balanced, Cui et al. 2019, with ``beta``), or a sequence of ``C`` numbers used as
    given. The named schemes are normalised to sum to ``C``. A strategy can switch them
    later with :meth:`ImbalanceLoss.set_weight` (LDAM's deferred re-weighting does); the
    current weights are the ``weight`` buffer (``None`` when unweighted).
``beta``
    the effective-number hyper-parameter (default 0.9999), used only by ``"effective"``.
``reduction``
    ``"mean"`` (default): ``(1/B) sum_i w_{y_i} l_i``, the papers' formulas;
    ``"weighted_mean"``: ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (PyTorch's ``cross_entropy``
    convention, which keeps the loss scale independent of the weights).

Counts of zero are treated as one (a column without samples gets the largest weight and the
smallest prior instead of an infinity). Logits are promoted to float32 (safe under AMP), and
the loss's buffers follow ``logits.device``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .class_weights import (  # noqa: F401 (part of this module's API)
    WEIGHT_SCHEMES,
    _as_counts,
    _check_beta,
    class_weights,
    effective_number_weights,
    inverse_frequency_weights,
    ldam_margins,
)

REDUCTIONS = ("mean", "weighted_mean")


# -- losses ----------------------------------------------------------------------------------
class ImbalanceLoss(nn.Module):
    """Base class: per-sample losses from :meth:`per_sample`, class weights, reduction.

    Subclasses implement ``per_sample(logits, targets) -> [B]`` (unweighted) and may override
    ``_update_from_counts`` to derive buffers (log prior, margins) from ``self.counts``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default_weight: ClassVar[Any] = None
    #: the logits must be cosines of a normalised head without bias (LDAM): a loss a head whose
    #: rows are copied and biases shifted (DICC's split) cannot use
    cosine_logits: ClassVar[bool] = False

    def __init__(self, counts: Any, *, weight: Any = None, beta: float = 0.9999, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"{self.name}: unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
        self.beta = _check_beta(beta)
        self.reduction = reduction
        self.register_buffer("counts", _as_counts(counts))
        self.register_buffer("log_prior", torch.empty(0))
        self.register_buffer("weight", None)
        self._weight_spec: Any = None
        #: label smoothing (Szegedy et al. 2016): ``(1 - eps) l(z, y) + eps * mean_j l(z, j)``,
        #: which for cross-entropy is CE with targets ``(1 - eps) e_y + eps / C``; set by strategies
        self.label_smoothing = 0.0
        self._update_from_counts()
        self.set_weight(weight)

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    # -- configuration that strategies change during training --------------------------------
    def set_counts(self, counts: Any) -> None:
        """Replace the per-column counts (DICC after re-clustering); derived buffers and named
        weight schemes are recomputed, explicit weights are kept."""
        c = _as_counts(counts)
        if len(c) != self.num_classes:
            raise ValueError(f"{self.name}: expected {self.num_classes} counts, got {len(c)}")
        self.counts = c
        self._update_from_counts()
        if isinstance(self._weight_spec, str):
            self.set_weight(self._weight_spec)

    def set_weight(self, weight: Any) -> None:
        """``None``, ``"inverse"``, ``"effective"`` (with ``self.beta``) or ``C`` numbers."""
        if weight is None:
            self.weight = None
        elif isinstance(weight, str):
            self.weight = class_weights(self.counts, weight, self.beta).float()
        else:
            w = (
                torch.as_tensor(weight if isinstance(weight, torch.Tensor) else list(weight), dtype=torch.float32)
                .detach()
                .cpu()
                .flatten()
            )
            if len(w) != self.num_classes:
                raise ValueError(f"{self.name}: weight has {len(w)} entries, expected {self.num_classes}")
            if not torch.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"{self.name}: weights must be finite and non-negative")
            self.weight = w.clone()
        self._weight_spec = weight if (weight is None or isinstance(weight, str)) else self.weight

    def _update_from_counts(self) -> None:
        self.log_prior = (self.counts / self.counts.sum()).log().float()

    # -- computation --------------------------------------------------------------------------
    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{self.name}: expected logits of shape [B, {self.num_classes}], got {tuple(logits.shape)}"
            )
        logits = logits.float()
        targets = targets.to(logits.device).long()
        return self.reduce(self.smoothed_per_sample(logits, targets), targets)

    def smoothed_per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """:meth:`per_sample` with ``label_smoothing`` applied (the class weights and the
        reduction still follow the true ``targets``)."""
        per = self.per_sample(logits, targets)
        eps = float(self.label_smoothing)
        if eps == 0.0:
            return per
        every = torch.stack([self.per_sample(logits, torch.full_like(targets, j)) for j in range(self.num_classes)])
        return (1.0 - eps) * per + eps * every.mean(0)

    def reduce(self, losses: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample losses -> the batch loss: their mean, class-weighted by ``targets`` when
        the loss has weights (``weighted_mean``: divided by the sum of the weights)."""
        if self.weight is None:
            return losses.mean()
        w = self.weight.to(losses.device)[targets]
        if self.reduction == "weighted_mean":
            return (w * losses).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
        return (w * losses).mean()

    def extra_repr(self) -> str:
        spec = self._weight_spec if isinstance(self._weight_spec, (str, type(None))) else "custom"
        return f"classes={self.num_classes}, weight={spec}, reduction={self.reduction}"


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets, reduction="none")


class CELoss(ImbalanceLoss):
    """Softmax cross-entropy ``-log softmax(z)_y`` (optionally class-weighted)."""

    name = "ce"
    summary = "softmax cross-entropy (optionally class-weighted)"

    def per_sample(self, logits, targets):
        return _nll(logits, targets)


class WeightedCELoss(CELoss):
    """Class-weighted cross-entropy, ``w_y * CE``: ``weight="effective"`` is the class-balanced
    softmax loss of Cui et al., "Class-Balanced Loss Based on Effective Number of Samples",
    CVPR 2019 (``w_c = (1 - beta) / (1 - beta^{n_c})``); ``"inverse"`` uses ``1/n_c``. Both are
    normalised to sum to ``C``."""

    name = "weighted_ce"
    summary = "class-weighted cross-entropy: effective-number (Cui 2019) or inverse-frequency weights"

    def __init__(
        self, counts: Any, *, weight: Any = "effective", beta: float = 0.9999, reduction: str = "mean"
    ) -> None:
        super().__init__(counts, weight=weight, beta=beta, reduction=reduction)


class FocalLoss(ImbalanceLoss):
    """Focal loss of Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, in its
    softmax form: ``FL = -alpha_y (1 - p_y)^gamma log p_y``, ``p = softmax(z)``.

    ``gamma = 0`` is cross-entropy; the class weights ``alpha_c`` are the ``weight`` option.
    """

    name = "focal"
    summary = "focal loss -(1-p_y)^gamma log p_y (Lin 2017), optional alpha class weights"

    def __init__(
        self, counts: Any, *, gamma: float = 2.0, weight: Any = None, beta: float = 0.9999, reduction: str = "mean"
    ) -> None:
        gamma = float(gamma)
        if not (gamma >= 0.0 and math.isfinite(gamma)):
            raise ValueError(f"focal: gamma must be a finite number >= 0, got {gamma}")
        self.gamma = gamma
        super().__init__(counts, weight=weight, beta=beta, reduction=reduction)

    def per_sample(self, logits, targets):
        log_p = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
        if self.gamma == 0.0:
            return -log_p
        one_minus_p = (-torch.expm1(log_p)).clamp_min(1e-30)
        return -one_minus_p.pow(self.gamma) * log_p

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, " + super().extra_repr()


class LDAMLoss(ImbalanceLoss):
    """Label-distribution-aware margin loss of Cao et al., "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss", NeurIPS 2019:
    ``L = CE(s * (z - m_y e_y), y)`` with ``m_c = K / n_c^{1/4}`` and ``K`` chosen so that
    ``max_c m_c = max_m``. The margin is subtracted from the true class's logit only; the
    logits are meant to be cosines (a normalised head), hence the scale ``s``. The paper's
    deferred re-weighting (DRW) sets ``weight`` late in training.
    """

    name = "ldam"
    summary = "LDAM margin loss CE(s*(z - m_y e_y)), m_c ~ n_c^-1/4 (Cao 2019); weights for DRW"
    cosine_logits = True

    def __init__(
        self,
        counts: Any,
        *,
        max_m: float = 0.5,
        s: float = 30.0,
        weight: Any = None,
        beta: float = 0.9999,
        reduction: str = "mean",
    ) -> None:
        max_m, s = float(max_m), float(s)
        if not (max_m >= 0.0 and math.isfinite(max_m)):
            raise ValueError(f"ldam: max_m must be a finite number >= 0, got {max_m}")
        if not (s > 0.0 and math.isfinite(s)):
            raise ValueError(f"ldam: s must be a finite number > 0, got {s}")
        self.max_m, self.s = max_m, s
        super().__init__(counts, weight=weight, beta=beta, reduction=reduction)

    def _update_from_counts(self) -> None:
        super()._update_from_counts()
        self.register_buffer("margins", ldam_margins(self.counts, self.max_m).float())

    def per_sample(self, logits, targets):
        m = self.margins.to(logits.device)[targets]
        onehot = F.one_hot(targets, self.num_classes).to(logits.dtype)
        return _nll(self.s * (logits - m[:, None] * onehot), targets)

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, " + super().extra_repr()


class BalancedSoftmaxLoss(ImbalanceLoss):
    """Balanced softmax of Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual
    Recognition", NeurIPS 2020: ``CE(z + log n, y)``, i.e. ``-log(n_y e^{z_y} / sum_j n_j e^{z_j})``.
    Adding ``log n_c`` or ``log pi_c`` is the same loss (the softmax ignores a common shift)."""

    name = "balanced_softmax"
    summary = "balanced softmax CE(z + log n_c) (Ren 2020)"

    def per_sample(self, logits, targets):
        return _nll(logits + self.log_prior.to(logits.device), targets)


class LogitAdjustedLoss(ImbalanceLoss):
    """Logit-adjusted loss of Menon et al., "Long-Tail Learning via Logit Adjustment", ICLR
    2021: ``CE(z + tau * log pi, y)`` with the class prior ``pi_c = n_c / N``. ``tau = 1`` is
    balanced softmax, ``tau = 0`` cross-entropy."""

    name = "logit_adjust"
    summary = "logit-adjusted CE(z + tau log pi_c) (Menon 2021)"

    def __init__(
        self, counts: Any, *, tau: float = 1.0, weight: Any = None, beta: float = 0.9999, reduction: str = "mean"
    ) -> None:
        tau = float(tau)
        if not math.isfinite(tau):
            raise ValueError(f"logit_adjust: tau must be finite, got {tau}")
        self.tau = tau
        super().__init__(counts, weight=weight, beta=beta, reduction=reduction)

    def per_sample(self, logits, targets):
        return _nll(logits + self.tau * self.log_prior.to(logits.device), targets)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, " + super().extra_repr()


# -- registry --------------------------------------------------------------------------------
_LOSSES: dict[str, type[ImbalanceLoss]] = {
    cls.name: cls for cls in (CELoss, WeightedCELoss, FocalLoss, LDAMLoss, BalancedSoftmaxLoss, LogitAdjustedLoss)
}


def register_loss(cls: type[ImbalanceLoss]) -> type[ImbalanceLoss]:
    """Class decorator adding a loss to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _LOSSES[cls.name] = cls
    return cls


def available_losses() -> dict[str, str]:
    """Registered base losses: ``{name: one-line summary}``."""
    return {name: _LOSSES[name].summary for name in sorted(_LOSSES)}


def needs_cosine_logits(name: str) -> bool:
    """Whether the loss ``name`` needs cosine logits (``ImbalanceLoss.cosine_logits``: LDAM)."""
    return _get(name).cosine_logits


def loss_options(name: str) -> dict[str, Any]:
    """The options a loss accepts, with their defaults."""
    cls = _get(name)
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def _get(name: str) -> type[ImbalanceLoss]:
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(sorted(_LOSSES))}")
    return _LOSSES[name]


def create_loss(name: str, counts: Any, options: dict | None = None, *, label_smoothing: float = 0.0) -> ImbalanceLoss:
    """Build the loss ``name`` for columns with sample counts ``counts``.

    ``options`` are keyword arguments (see :func:`loss_options`); an unknown name or option is
    a ``ValueError`` that lists the valid ones. ``label_smoothing`` sets the loss's
    :attr:`ImbalanceLoss.label_smoothing`.
    """
    cls = _get(name)
    options = dict(options or {})
    valid = loss_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"loss {name!r}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    loss = cls(counts, **options)
    loss.label_smoothing = float(label_smoothing)
    return loss


__all__ = [
    "BalancedSoftmaxLoss",
    "CELoss",
    "FocalLoss",
    "ImbalanceLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "REDUCTIONS",
    "WEIGHT_SCHEMES",
    "WeightedCELoss",
    "available_losses",
    "class_weights",
    "create_loss",
    "effective_number_weights",
    "inverse_frequency_weights",
    "ldam_margins",
    "loss_options",
    "needs_cosine_logits",
    "register_loss",
]
