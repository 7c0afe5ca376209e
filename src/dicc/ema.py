"""An exponential moving average of a model's weights (``train.ema``).

After every optimiser step each floating-point parameter ``e`` of the average moves towards the
trained one ``p``: ``e <- decay * e + (1 - decay) * p`` (computed as ``e.lerp_(p, 1 - decay)``),
starting from the model's initial weights. Buffers (BatchNorm's running statistics and counters)
are *copied* from the trained model, not averaged: they are statistics of the activations, which
the training forwards measure with the trained weights (so the average's BatchNorm uses the
latest statistics; a model without BatchNorm has no buffers to copy).

The average is a second module of the same class (a deep copy made before training), never
trained and never wrapped in DDP: every rank updates its own copy from the same (all-reduced)
weights, so all copies stay identical. It is what validation selects ``best.pt`` by, what the
final test, ``dicc.fit``'s returned model and every checkpoint's ``model`` hold (the trained
weights are the checkpoint's ``raw_model``, for resuming); DICC re-clusters with the trained
model's features, and its in-place head split is applied to both (``EpochContext.copy_head_rows``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """The moving average of ``model``'s weights (``decay`` in (0, 1)); ``module`` is the average."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"train.ema: the decay must lie in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.module.eval()
        self._pairs: tuple | None = None  # (model, its parameters, the average's), paired by name

    def _lists(self, model: nn.Module) -> tuple[list, list]:
        if self._pairs is None or self._pairs[0] is not model:
            own, theirs = dict(self.module.named_parameters()), dict(model.named_parameters())
            if own.keys() != theirs.keys():
                raise ValueError("train.ema: the averaged model does not have the trained model's parameters")
            keys = [k for k in own if own[k].is_floating_point()]
            self._pairs = (model, [theirs[k] for k in keys], [own[k] for k in keys])
        return self._pairs[1], self._pairs[2]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s weights, and its buffers copied."""
        theirs, own = self._lists(model)
        if own:
            torch._foreach_lerp_(own, [p.detach() for p in theirs], 1.0 - self.decay)
        self.copy_buffers(model)

    @torch.no_grad()
    def copy_buffers(self, model: nn.Module) -> None:
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)


__all__ = ["ModelEMA"]
