"""The optimizer and the learning-rate schedule of a run (``optim.*``): a pure function of the
optimiser step, so resuming needs no scheduler state.

Schedules (``optim.schedule``), over the run's optimiser steps (with ``train.accumulate`` one
step is several batches):

- ``onecycle``: as torch's OneCycleLR, cosine up from lr/25 over ``warmup_fraction`` of the
  steps, then cosine down to lr/25e4;
- ``cosine``: linear warm-up over ``warmup_fraction``, then cosine to zero;
- ``step``: linear warm-up over ``warmup_fraction``, then ``lr * gamma**k`` where ``k`` is the
  number of ``milestones`` (epochs, as torch's MultiStepLR stepped once per epoch) at or below
  the 0-based epoch: ``milestones: [30, 40]`` trains epochs 0-29 at lr, 30-39 at lr * gamma,
  40 on at lr * gamma**2 (LDAM-DRW's own schedule is ``[160, 180]`` of 200 epochs);
- ``constant``.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("onecycle", "cosine", "step", "constant")


def learning_rate(cfg, step: int, total: int, epochs: int | None = None) -> float:
    """The learning rate at optimiser step ``step`` of ``total`` (``epochs`` epochs of equally
    many steps; the ``step`` schedule needs it to know the epoch of a step)."""
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
    if cfg.schedule == "step":  # linear warm-up, then lr * gamma^(milestones passed)
        if epochs is None:
            raise ValueError("optim.schedule=step: learning_rate needs the run's number of epochs")
        if frac < warm:
            return lr * frac / warm
        epoch = min(max(step, 0) * epochs // max(total, 1), epochs - 1)
        return lr * cfg.gamma ** sum(1 for m in (cfg.milestones or ()) if m <= epoch)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    """SGD with momentum (Nesterov unless ``optim.nesterov`` is false) or AdamW (torch's
    default betas (0.9, 0.999); ``weight_decay`` decoupled from the gradient, as AdamW does)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=bool(cfg.nesterov)
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; valid: sgd, adamw")


__all__ = ["SCHEDULES", "learning_rate", "make_optimizer"]
