"""Post-hoc logit adjustment of any strategy (Menon et al., ICLR 2021), ``eval.logit_adjust``.

``PostHocAdjusted(strategy, tau)`` evaluates ``strategy.parent_logits(z) - tau * log pi`` with
the training class prior ``pi``: training is untouched, evaluation, prediction and export see
the adjusted parent logits. So "DICC + post-hoc logit adjustment" is ``method.name=dicc`` with
``eval.logit_adjust=1.0``, no strategy of its own.
"""

from __future__ import annotations

import math

import torch


class PostHocAdjusted:
    """A read-only view of ``strategy`` whose :meth:`parent_logits` are prior-adjusted."""

    def __init__(self, strategy, tau: float) -> None:
        tau = float(tau)
        if not math.isfinite(tau):
            raise ValueError(f"eval.logit_adjust must be a finite number, got {tau}")
        self.inner = strategy
        self.tau = tau
        counts = strategy.class_counts.double()
        self.log_prior = (counts / counts.sum()).log().float()

    def parent_logits(self, logits: torch.Tensor) -> torch.Tensor:
        z = self.inner.parent_logits(logits)
        return z - self.tau * self.log_prior.to(device=z.device, dtype=z.dtype)

    def __getattr__(self, name):  # everything else is the wrapped strategy's
        return getattr(self.inner, name)


def with_posthoc(strategy, tau: float | None):
    """``strategy`` itself when ``tau`` is None (or 0), else :class:`PostHocAdjusted`."""
    if tau is None or float(tau) == 0.0:
        return strategy
    return PostHocAdjusted(strategy, tau)


__all__ = ["PostHocAdjusted", "with_posthoc"]
