"""Group mapping: parent (class) logits from sub-class logits, exportable as a module."""

from __future__ import annotations

import torch
from torch import nn

from ...clustering import SubclassPlan


class Merge(nn.Module):
    """Parent logits from sub-class logits: a fixed ``[C, k_max]`` gather of each class's rows,
    masked to its live rows, reduced by ``logsumexp`` or ``max`` (exportable as is)."""

    def __init__(self, plan: SubclassPlan, merge: str, split: bool) -> None:
        super().__init__()
        kmax = max(plan.k)
        index = torch.zeros(plan.num_classes, kmax, dtype=torch.long)
        live = torch.zeros(plan.num_classes, kmax, dtype=torch.bool)
        for c in range(plan.num_classes):
            r = plan.subclass_range(c)
            n = len(r) if split else 1
            index[c, :] = r.start
            index[c, :n] = torch.arange(r.start, r.start + n)
            live[c, :n] = True
        self.merge = merge
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("dead", ~live, persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.index.device != logits.device:  # follow the logits (kept there after the first call)
            self.index, self.dead = self.index.to(logits.device), self.dead.to(logits.device)
        z = logits[:, self.index.flatten()].view(logits.shape[0], *self.index.shape)
        z = z.masked_fill(self.dead, float("-inf"))
        return z.logsumexp(2) if self.merge == "logsumexp" else z.amax(2)


__all__ = ["Merge"]
