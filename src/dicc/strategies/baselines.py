"""The standard long-tail baselines DICC is compared with, each from its paper's formula.

=================  ==========================================================================
``reweight``       class-weighted CE, effective-number or inverse-frequency (Cui et al. 2019)
``resample``       class-balanced or square-root-frequency sampling, plain CE
``focal``          focal loss (Lin et al. 2017), optional class-balanced alpha
``ldam_drw``       LDAM margins on a cosine head + deferred re-weighting (Cao et al. 2019)
``balanced_softmax``  CE on ``z + log n`` (Ren et al. 2020)
``logit_adjust``   logit adjustment (Menon et al. 2021): post-hoc (CE training) or in the loss
=================  ==========================================================================

The losses themselves live in :mod:`dicc.losses`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ..losses import REDUCTIONS, WEIGHT_SCHEMES, create_loss
from ..samplers import group_sampling_weights, weighted_indices
from .base import EpochContext, NoOptions, Strategy, option, register_strategy


def _choice(method: str, option: str, value: Any, valid: Sequence[Any]) -> None:
    if value not in valid:
        shown = ", ".join("none" if v is None else str(v) for v in valid)
        raise ValueError(f"method {method!r}: {option}={value!r} is not valid; valid: {shown}")


def _beta(method: str, beta: float) -> None:
    if not (isinstance(beta, (int, float)) and 0.0 <= float(beta) <= 1.0):
        raise ValueError(f"method {method!r}: beta must lie in [0, 1], got {beta!r}")


class _LossStrategy(Strategy):
    """A strategy whose training loss is one :mod:`dicc.losses` module (``self.criterion``)."""

    def __init__(
        self, class_counts: Sequence[int], options: Any = None, class_names: Sequence[str] | None = None
    ) -> None:
        super().__init__(class_counts, options, class_names)
        self.criterion = self.build_criterion()

    def build_criterion(self):
        return create_loss("ce", self.class_counts)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits, targets)

    def loss_modules(self) -> list:
        return [self.criterion]


# -- re-weighting ------------------------------------------------------------------------------
@register_strategy
class Reweight(_LossStrategy):
    """Class-balanced re-weighting: cross-entropy with per-class weights ``w_y``.

    ``scheme="effective"``: Cui et al., "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019, ``w_c = (1 - beta) / (1 - beta^{n_c})``; ``scheme="inverse"``:
    ``w_c = 1 / n_c``. Both normalised so that ``sum_c w_c = C``.
    """

    name = "reweight"
    summary = "class-weighted CE: effective-number (Cui 2019) or inverse-frequency weights"

    @dataclass
    class Options:
        scheme: str = option(
            "effective", help="class weights: effective (effective number, Cui et al. 2019) or inverse (1 / n_c)"
        )
        beta: float = option(0.9999, help="effective-number beta in [0, 1] (the paper's CIFAR-LT default)")
        reduction: str = option(
            "mean", help="mean: (1/B) sum w_y loss; weighted_mean: divided by the batch's sum of w_y instead"
        )

        def __post_init__(self) -> None:
            _choice("reweight", "scheme", self.scheme, WEIGHT_SCHEMES)
            _beta("reweight", self.beta)
            _choice("reweight", "reduction", self.reduction, REDUCTIONS)

    def build_criterion(self):
        o = self.options
        return create_loss(
            "weighted_ce", self.class_counts, {"weight": o.scheme, "beta": o.beta, "reduction": o.reduction}
        )


# -- re-sampling -------------------------------------------------------------------------------
@register_strategy
class Resample(_LossStrategy):
    """Class-aware re-sampling with plain cross-entropy.

    Each epoch draws ``N`` (the dataset size) indices with replacement, a sample of class
    ``c`` with probability proportional to ``n_c^{-1}`` (``"balanced"``: every class equally
    often, Shen et al. 2016's class-aware sampling) or to ``n_c^{-1/2}`` (``"sqrt"``: class
    frequencies proportional to ``sqrt(n_c)``, Mahajan et al. 2018). The draw is seeded by
    ``(seed, epoch)``, identical on every rank, then sharded.
    """

    name = "resample"
    summary = "class-balanced or square-root-frequency re-sampling with CE"

    @dataclass
    class Options:
        scheme: str = option(
            "balanced", help="balanced: every class drawn equally often; sqrt: class frequencies ~ sqrt(n_c)"
        )

        def __post_init__(self) -> None:
            _choice("resample", "scheme", self.scheme, ("balanced", "sqrt"))

    def sampling_weights(self, labels: torch.Tensor) -> torch.Tensor:
        """Per-class weight of one *sample* (the class's total probability is ``n_c`` times it)."""
        return group_sampling_weights(labels, self.num_classes, 1.0 if self.options.scheme == "balanced" else 0.5)

    def epoch_indices(
        self, labels: torch.Tensor, epoch: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> torch.Tensor:
        labels = torch.as_tensor(labels).long().cpu()
        return weighted_indices(labels, self.sampling_weights(labels), epoch, seed, rank, world_size)


# -- focal -------------------------------------------------------------------------------------
@register_strategy
class Focal(_LossStrategy):
    """Focal loss of Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017:
    ``-alpha_y (1 - p_y)^gamma log p_y``; ``alpha`` may be class-balanced (Cui et al. 2019)."""

    name = "focal"
    summary = "focal loss (Lin 2017), gamma=2, optional class-balanced alpha"

    @dataclass
    class Options:
        gamma: float = option(2.0, help="focusing parameter: down-weights easy samples by (1 - p_y)^gamma")
        alpha: Optional[str] = option(None, help="class weights alpha: none, effective (Cui et al. 2019) or inverse")
        beta: float = option(0.9999, help="effective-number beta, used when alpha=effective")
        reduction: str = option("mean", help="mean or weighted_mean (divided by the batch's alphas; only with alpha)")

        def __post_init__(self) -> None:
            if not (isinstance(self.gamma, (int, float)) and self.gamma >= 0 and math.isfinite(self.gamma)):
                raise ValueError(f"method 'focal': gamma must be a number >= 0, got {self.gamma!r}")
            _choice("focal", "alpha", self.alpha, (None,) + WEIGHT_SCHEMES)
            _beta("focal", self.beta)
            _choice("focal", "reduction", self.reduction, REDUCTIONS)

    def build_criterion(self):
        o = self.options
        return create_loss(
            "focal", self.class_counts, {"gamma": o.gamma, "weight": o.alpha, "beta": o.beta, "reduction": o.reduction}
        )


# -- LDAM-DRW ----------------------------------------------------------------------------------
@register_strategy
class LDAMDRW(_LossStrategy):
    """LDAM with deferred re-weighting of Cao et al., "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss", NeurIPS 2019.

    Cosine head; loss ``CE(s * (z - m_y e_y))`` with ``m_c ~ n_c^{-1/4}`` (largest ``max_m``).
    From the DRW epoch on, the loss is re-weighted with class-balanced weights (``beta``
    0.9999) and, as in the authors' code (``F.cross_entropy(..., weight=w)``), normalised by the
    weights of the batch (``reduction="weighted_mean"``), so re-weighting changes the balance of
    the gradient, not its size. Evaluation sees ``s * cos`` (no margin), so probabilities are
    scaled as in training.

    When DRW starts (``drw_start``): the paper defers re-weighting "until after the first
    learning-rate decay"; its code switches at epoch 160 of 200, where its step schedule drops
    the learning rate to 0.1 of its peak (and to 0.01 at 180). ``"auto"`` (default) follows that
    rule on this run's schedule: the first epoch at whose start the scheduled learning rate is at
    most ``drw_lr_ratio`` (0.1) of its peak and that lies in the second half of training
    (one-cycle, 20 epochs: epoch 17 of 20 at 0.09 of the peak); a schedule that never decays
    that far (``constant``) switches at 0.8 of the epochs, the paper's 160/200. A number in
    [0, 1] is a fraction of the epochs (``floor(drw_start * epochs)``); ``drw_epoch`` an
    explicit 0-based epoch index.
    """

    name = "ldam_drw"
    summary = "LDAM margin loss on a cosine head + deferred class-balanced re-weighting (Cao 2019)"
    head_type = "cosine"

    @dataclass
    class Options:
        max_m: float = option(0.5, help="largest margin, the rarest class's (margins ~ n_c^-1/4)")
        s: float = option(30.0, help="scale applied to the cosine logits")
        drw_start: Any = option(
            "auto", help="when re-weighting starts: auto (first lr decay to drw_lr_ratio) or a fraction of the epochs"
        )
        drw_lr_ratio: float = option(0.1, help="with drw_start=auto: start once the lr is at most this share of peak")
        drw_epoch: Optional[int] = option(
            None, help="an explicit 0-based epoch to start re-weighting (wins over drw_start)"
        )
        beta: float = option(0.9999, help="effective-number beta of the deferred class weights")
        reduction: str = option(
            "weighted_mean", help="weighted_mean: sum w loss / sum w (the authors' code); mean: (1/B) sum w loss"
        )

        def __post_init__(self) -> None:
            if not (isinstance(self.max_m, (int, float)) and self.max_m >= 0):
                raise ValueError(f"method 'ldam_drw': max_m must be a number >= 0, got {self.max_m!r}")
            if not (isinstance(self.s, (int, float)) and self.s > 0):
                raise ValueError(f"method 'ldam_drw': s must be a number > 0, got {self.s!r}")
            if self.drw_start != "auto" and not (
                isinstance(self.drw_start, (int, float))
                and not isinstance(self.drw_start, bool)
                and 0.0 <= self.drw_start <= 1.0
            ):
                raise ValueError(
                    "method 'ldam_drw': drw_start is 'auto' or a fraction of the epochs in "
                    f"[0, 1], got {self.drw_start!r} (use drw_epoch for an epoch index)"
                )
            if not (isinstance(self.drw_lr_ratio, (int, float)) and 0.0 < self.drw_lr_ratio < 1.0):
                raise ValueError(f"method 'ldam_drw': drw_lr_ratio must lie in (0, 1), got {self.drw_lr_ratio!r}")
            if self.drw_epoch is not None and (
                isinstance(self.drw_epoch, bool) or not isinstance(self.drw_epoch, int) or self.drw_epoch < 0
            ):
                raise ValueError(
                    f"method 'ldam_drw': drw_epoch must be an epoch index >= 0 or none, got {self.drw_epoch!r}"
                )
            _beta("ldam_drw", self.beta)
            _choice("ldam_drw", "reduction", self.reduction, REDUCTIONS)

    def __init__(
        self, class_counts: Sequence[int], options: Any = None, class_names: Sequence[str] | None = None
    ) -> None:
        super().__init__(class_counts, options, class_names)
        self.drw_active = False
        self.resolved_drw_epoch: Optional[int] = self.options.drw_epoch

    def build_criterion(self):
        o = self.options
        return create_loss(
            "ldam", self.class_counts, {"max_m": o.max_m, "s": o.s, "beta": o.beta, "reduction": o.reduction}
        )

    def drw_epoch_for(self, epochs: int, lr=None) -> int:
        """The 0-based epoch at which re-weighting starts in a run of ``epochs`` epochs, whose
        scheduled learning rate at the start of epoch ``e`` is ``lr(e)`` (see the class doc)."""
        o = self.options
        if o.drw_epoch is not None:
            return int(o.drw_epoch)
        if o.drw_start != "auto":
            return int(math.floor(round(o.drw_start * epochs, 9)))
        fallback = int(math.floor(round(0.8 * epochs, 9)))
        rates = [float(lr(e)) for e in range(epochs)] if lr is not None else []
        if not rates or not all(math.isfinite(r) for r in rates):
            return fallback
        peak = max(rates)
        for e in range(epochs // 2, epochs):
            if rates[e] <= o.drw_lr_ratio * peak:
                return e
        return fallback

    def _set_drw(self, active: bool) -> None:
        self.drw_active = bool(active)
        self.criterion.set_weight("effective" if self.drw_active else None)

    def on_epoch_start(self, ctx: EpochContext) -> None:
        self.resolved_drw_epoch = self.drw_epoch_for(ctx.epochs, ctx.lr)
        active = ctx.epoch >= self.resolved_drw_epoch
        if active != self.drw_active:
            self._set_drw(active)
            if active:
                ctx.log(
                    {
                        "event": "drw_on",
                        "epoch": ctx.epoch + 1,
                        "lr": ctx.lr(ctx.epoch),
                        "drw_weights": [round(float(w), 6) for w in self.criterion.weight],
                    }
                )

    def parent_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.options.s

    def state_dict(self) -> dict:
        return {
            "drw_active": bool(self.drw_active),
            "drw_epoch": -1 if self.resolved_drw_epoch is None else int(self.resolved_drw_epoch),
        }

    def load_state_dict(self, state: dict) -> None:
        epoch = int(state.get("drw_epoch", -1))
        self.resolved_drw_epoch = None if epoch < 0 else epoch
        self._set_drw(bool(state.get("drw_active", False)))


# -- balanced softmax --------------------------------------------------------------------------
@register_strategy
class BalancedSoftmax(_LossStrategy):
    """Balanced softmax of Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual
    Recognition", NeurIPS 2020: train with ``CE(z + log n_c)``, evaluate the raw logits."""

    name = "balanced_softmax"
    summary = "balanced softmax: CE on z + log n_c, raw logits at test time (Ren 2020)"
    Options = NoOptions

    def build_criterion(self):
        return create_loss("balanced_softmax", self.class_counts)


# -- logit adjustment --------------------------------------------------------------------------
@register_strategy
class LogitAdjust(_LossStrategy):
    """Logit adjustment of Menon et al., "Long-Tail Learning via Logit Adjustment", ICLR 2021.

    ``mode="posthoc"``: train with plain CE, evaluate ``z - tau * log pi``.
    ``mode="loss"``: train with ``CE(z + tau * log pi)``, evaluate the raw logits.
    """

    name = "logit_adjust"
    summary = "logit adjustment (Menon 2021): post-hoc z - tau log pi, or the adjusted loss"

    @dataclass
    class Options:
        mode: str = option("posthoc", help="posthoc: CE training, z - tau log pi at evaluation; loss: adjusted loss")
        # tau = 1 is Bayes-optimal for the balanced error under the paper's assumptions
        tau: float = option(1.0, help="strength of the adjustment (1 = the paper's default)")

        def __post_init__(self) -> None:
            _choice("logit_adjust", "mode", self.mode, ("posthoc", "loss"))
            if not (isinstance(self.tau, (int, float)) and math.isfinite(self.tau)):
                raise ValueError(f"method 'logit_adjust': tau must be a finite number, got {self.tau!r}")

    def build_criterion(self):
        if self.options.mode == "loss":
            return create_loss("logit_adjust", self.class_counts, {"tau": self.options.tau})
        return create_loss("ce", self.class_counts)

    def parent_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.options.mode == "posthoc":
            return logits - self.options.tau * self.log_prior.to(device=logits.device, dtype=logits.dtype)
        return logits
