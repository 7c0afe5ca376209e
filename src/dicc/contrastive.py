"""Sub-class supervised contrastive learning (SBCL, Hou et al., ICCV 2023), DICC's
``contrastive`` option.

A projection head (two layers, L2-normalised output) maps the backbone's features to an
embedding; every training image is seen in two augmented views, and :func:`subclass_supcon`
pulls together embeddings of the same *sub-class* (DICC's clusters; an image's other view is
always one) and, with weight ``class_weight``, of the same *class*, against all other
embeddings of the batch (the SupCon form of Khosla et al. 2020):

    log p_ij = s_ij / T - log sum_{k != i} exp(s_ik / T)            (s: cosine similarity)
    L_i = -(T / T_b) mean_{j in P_sub(i)} log p_ij - class_weight * mean_{j in P_cls(i)} log p_ij

averaged over the anchors ``i``, where ``P(i)`` are the other embeddings of ``i``'s sub-class
(class). SBCL's values are the defaults: ``T = 0.1``, ``T_b = 0.07``, ``class_weight = 0.25``.
With one sub-class per class the two positive sets coincide and the loss is
``(T / T_b + class_weight)`` times plain supervised contrastive loss. An anchor with no positive
(one view of a singleton group) adds nothing to that term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """``Linear(d, d) -> ReLU -> Linear(d, dim)``, L2-normalised (SimCLR/SBCL's projection)."""

    def __init__(self, in_features: int, dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, in_features), nn.ReLU(inplace=True), nn.Linear(in_features, dim)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(feats), dim=1)


def _mean_log_prob(log_prob: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    n = positives.sum(1)
    return (positives * log_prob).sum(1) / n.clamp_min(1)


def subclass_supcon(
    z: torch.Tensor,
    sub: torch.Tensor,
    cls: torch.Tensor,
    *,
    temperature: float = 0.1,
    base_temperature: float = 0.07,
    class_weight: float = 0.25,
    contrast: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """The loss of the module docstring for anchors ``z [M, D]`` (L2-normalised) with sub-class
    ids ``sub [M]`` and class ids ``cls [M]`` (both views of an image are two rows with the same
    ids). ``contrast``: ``(z, sub, cls)`` of every embedding the anchors are compared with (under
    DDP all ranks' rows), in which the anchors themselves are rows ``offset .. offset + M - 1``;
    default: the anchors alone."""
    cz, csub, ccls = contrast if contrast is not None else (z, sub, cls)
    m = len(z)
    sim = (z.float() @ cz.float().t()) / float(temperature)
    self_mask = torch.zeros_like(sim, dtype=torch.bool)
    rows = torch.arange(m, device=z.device)
    self_mask[rows, rows + offset] = True
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    log_prob = log_prob.masked_fill(self_mask, 0.0)  # -inf * 0 would be NaN below
    pos_sub = (sub.view(-1, 1) == csub.view(1, -1)) & ~self_mask
    pos_cls = (cls.view(-1, 1) == ccls.view(1, -1)) & ~self_mask
    loss = -(float(temperature) / float(base_temperature)) * _mean_log_prob(log_prob, pos_sub.float())
    if class_weight:
        loss = loss - float(class_weight) * _mean_log_prob(log_prob, pos_cls.float())
    return loss.mean()


__all__ = ["ProjectionHead", "subclass_supcon"]
