"""Per-class weights and margins from the sample counts: inverse frequency, effective number
(Cui et al. 2019), LDAM margins (Cao et al. 2019). Counts of zero are treated as one."""

from __future__ import annotations

import math
from typing import Any

import torch

WEIGHT_SCHEMES = ("inverse", "effective")


def _as_counts(counts: Any) -> torch.Tensor:
    c = (
        torch.as_tensor(counts if isinstance(counts, torch.Tensor) else list(counts), dtype=torch.float64)
        .detach()
        .cpu()
        .flatten()
    )
    if c.numel() == 0:
        raise ValueError("counts is empty: need one sample count per output column")
    if not torch.isfinite(c).all() or (c < 0).any():
        raise ValueError(f"counts must be finite and non-negative, got {c.tolist()}")
    return c.clamp_min(1.0)


def inverse_frequency_weights(counts: Any) -> torch.Tensor:
    """``w_c = 1 / n_c``, normalised so that ``sum_c w_c = C`` (float64)."""
    n = _as_counts(counts)
    w = 1.0 / n
    return w * (len(n) / w.sum())


def effective_number_weights(counts: Any, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights of Cui et al., "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019: ``w_c = (1 - beta) / (1 - beta^{n_c})``, normalised to sum to ``C``.

    ``beta = 0`` gives uniform weights, ``beta -> 1`` inverse-frequency weights (``beta = 1``
    is taken as that limit). Computed with ``expm1``/``log1p`` so betas close to 1 are exact.
    """
    beta = _check_beta(beta)
    n = _as_counts(counts)
    if beta == 0.0:
        w = torch.ones_like(n)
    elif beta == 1.0:
        w = 1.0 / n
    else:
        log_beta = math.log1p(beta - 1.0)  # < 0
        w = math.expm1(log_beta) / torch.expm1(n * log_beta)  # (1 - beta) / (1 - beta^n)
    return w * (len(n) / w.sum())


def class_weights(counts: Any, scheme: str, beta: float = 0.9999) -> torch.Tensor:
    """Per-class weights by scheme name (``"inverse"`` or ``"effective"``), summing to ``C``."""
    if scheme == "inverse":
        return inverse_frequency_weights(counts)
    if scheme == "effective":
        return effective_number_weights(counts, beta)
    raise ValueError(f"unknown weight scheme {scheme!r}; valid: {', '.join(WEIGHT_SCHEMES)}")


def ldam_margins(counts: Any, max_m: float = 0.5) -> torch.Tensor:
    """LDAM margins (Cao et al. 2019): ``m_c = K / n_c^{1/4}`` with ``K`` such that the largest
    margin (the rarest class's) equals ``max_m``."""
    n = _as_counts(counts)
    m = n.pow(-0.25)
    return m * (float(max_m) / m.max())


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    return beta


__all__ = ["WEIGHT_SCHEMES", "class_weights", "effective_number_weights", "inverse_frequency_weights", "ldam_margins"]
