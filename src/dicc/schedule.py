"""The optimizer and the learning-rate schedule of a run (``optim.*``): a pure function of the
step, so resuming needs no scheduler state."""

from __future__ import annotations

import math

import torch


def learning_rate(cfg, step: int, total: int) -> float:
    """The learning rate at optimiser step ``step`` of ``total`` (a pure function of the step,
    so resuming needs no scheduler state)."""
    lr, frac = cfg.lr, min(max(step / max(total, 1), 0.0), 1.0)
    if cfg.schedule == "constant":
        return lr
    warm = cfg.warmup_fraction
    if cfg.schedule == "onecycle":  # as torch's OneCycleLR: cos up from lr/25, cos down to lr/25e4
        lo, end = lr / 25, lr / 25e4
        if frac < warm:
            return lo + (lr - lo) * (1 - math.cos(math.pi * frac / warm)) / 2
        t = (frac - warm) / max(1 - warm, 1e-8)
        return end + (lr - end) * (1 + math.cos(math.pi * t)) / 2
    if cfg.schedule == "cosine":  # linear warm-up, then cosine to zero
        if frac < warm:
            return lr * frac / warm
        t = (frac - warm) / max(1 - warm, 1e-8)
        return lr * (1 + math.cos(math.pi * t)) / 2
    raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: onecycle, cosine, constant")


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; valid: sgd, adamw")


__all__ = ["learning_rate", "make_optimizer"]
