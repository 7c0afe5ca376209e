"""The seam every model has: ``features(x) -> [B, D]`` followed by ``head``.

``head`` is an ``nn.Linear`` (or :class:`CosineHead` for LDAM); strategies that re-plan the
head (DICC) rewrite its rows in place (:func:`copy_head_rows`), never replace it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineHead(nn.Module):
    """Linear head on L2-normalised features and weights (cosine logits), as LDAM uses."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False)
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()


class FERModel(nn.Module):
    """A backbone (``body``: image -> feature vector) followed by a classification head."""

    def __init__(
        self,
        body: nn.Module,
        feature_dim: int,
        num_outputs: int,
        head_type: str = "linear",
        dropout: float = 0.0,
        expand_channels: int | None = None,
    ) -> None:
        super().__init__()
        #: grayscale input replicated to this many channels before the body (an RGB backbone)
        self.expand_channels = expand_channels
        self.body = body
        #: whether the body is a CNN (channels_last pays off; dicc.precision)
        self.convolutional = any(isinstance(m, nn.Conv2d) for m in body.modules())
        self.feature_dim = feature_dim
        #: (channels, size) of the square images it was built or trained for, when known
        self.input_shape: tuple[int, int] | None = None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if head_type == "linear":
            self.head = nn.Linear(feature_dim, num_outputs)
        elif head_type == "cosine":
            self.head = CosineHead(feature_dim, num_outputs)
        else:
            raise ValueError(f"unknown head_type {head_type!r}; valid: linear, cosine")
        self.projector: nn.Module | None = None  # set_projection

    def set_projection(self, dim: int | None) -> None:
        """Give the model a projection head ``features -> dim`` (L2-normalised; a strategy's
        contrastive term trains it, :mod:`dicc.contrastive`), or none (``dim`` None). Call
        before the optimizer is built; prediction and export never use it."""
        if dim is None:
            self.projector = None
            return
        from ..contrastive import ProjectionHead

        self.projector = ProjectionHead(self.feature_dim, int(dim))

    @property
    def projection_dim(self) -> int | None:
        proj = getattr(self, "projector", None)
        return None if proj is None else int(proj.net[-1].out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (before dropout and the head)."""
        if self.expand_channels and x.shape[1] == 1:
            x = x.expand(-1, self.expand_channels, -1, -1)
        return self.body(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(feats))

    def forward(self, x: torch.Tensor, return_features: bool = False, return_projection: bool = False):
        """Logits; with ``return_features`` also the penultimate features ``(logits, feats)``
        (the engine hands them to strategies that keep them, e.g. DICC); with
        ``return_projection`` also their projection ``(logits, feats, z)`` (:meth:`set_projection`)."""
        feats = self.features(x)
        logits = self.forward_head(feats)
        if return_projection:
            return logits, feats, self.projector(feats)
        return (logits, feats) if return_features else logits


@torch.no_grad()
def copy_head_rows(
    head: nn.Module, pairs, bias_add: dict[int, float] | None = None, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """In place: for every ``(src, dst)`` in ``pairs`` copy row ``src`` of the head's weight and
    bias into row ``dst``, then add ``bias_add[j]`` to bias row ``j``. With ``optimizer``, every
    per-row state tensor of those parameters (SGD's momentum, Adam's moments: the state shaped
    like the parameter) is copied the same way, so a copied row continues its source's
    optimisation. The parameters stay the same objects (DDP keeps hooks on them)."""
    weight, bias = head.weight, getattr(head, "bias", None)
    params = [p for p in (weight, bias) if p is not None]
    states = [
        [t for t in optimizer.state.get(p, {}).values() if torch.is_tensor(t) and t.shape == p.shape]
        if optimizer is not None
        else []
        for p in params
    ]
    for src, dst in pairs:
        for p, tensors in zip(params, states):
            p[dst].copy_(p[src])
            for t in tensors:
                t[dst].copy_(t[src])
    if bias is not None:
        for j, v in (bias_add or {}).items():
            if v:
                bias[j] += v


__all__ = ["CosineHead", "FERModel", "copy_head_rows"]
