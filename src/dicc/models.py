"""Backbone registry. Every model is ``features(x) -> [B, D]`` followed by ``head``.

``head`` is an ``nn.Linear`` (or :class:`CosineHead` for LDAM); strategies that re-plan the
head (DICC) rewrite its parameters in place, never replace it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

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
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).t()


class FERModel(nn.Module):
    """A backbone (``body``: image -> feature vector) followed by a classification head."""

    def __init__(self, body: nn.Module, feature_dim: int, num_outputs: int, head_type: str = "linear",
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.body = body
        #: whether the body is a CNN (channels_last pays off; dicc.precision)
        self.convolutional = any(isinstance(m, nn.Conv2d) for m in body.modules())
        self.feature_dim = feature_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if head_type == "linear":
            self.head = nn.Linear(feature_dim, num_outputs)
        elif head_type == "cosine":
            self.head = CosineHead(feature_dim, num_outputs)
        else:
            raise ValueError(f"unknown head_type {head_type!r}; valid: linear, cosine")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (before dropout and the head)."""
        return self.body(x)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(feats))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits; with ``return_features`` also the penultimate features ``(logits, feats)``
        (the engine hands them to strategies that keep them, e.g. DICC)."""
        feats = self.features(x)
        logits = self.forward_head(feats)
        return (logits, feats) if return_features else logits


@torch.no_grad()
def copy_head_rows(head: nn.Module, pairs, bias_add: dict[int, float] | None = None,
                   optimizer: torch.optim.Optimizer | None = None) -> None:
    """In place: for every ``(src, dst)`` in ``pairs`` copy row ``src`` of the head's weight and
    bias into row ``dst``, then add ``bias_add[j]`` to bias row ``j``. With ``optimizer``, every
    per-row state tensor of those parameters (SGD's momentum, Adam's moments: the state shaped
    like the parameter) is copied the same way, so a copied row continues its source's
    optimisation. The parameters stay the same objects (DDP keeps hooks on them)."""
    weight, bias = head.weight, getattr(head, "bias", None)
    params = [p for p in (weight, bias) if p is not None]
    states = [[t for t in optimizer.state.get(p, {}).values() if torch.is_tensor(t) and t.shape == p.shape]
              if optimizer is not None else [] for p in params]
    for src, dst in pairs:
        for p, tensors in zip(params, states):
            p[dst].copy_(p[src])
            for t in tensors:
                t[dst].copy_(t[src])
    if bias is not None:
        for j, v in (bias_add or {}).items():
            if v:
                bias[j] += v


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def vgg_fer(in_channels: int = 1, width: int = 32) -> tuple[nn.Module, int]:
    """Compact VGG-style CNN for 48x48 faces: 4 double-conv blocks (w, 2w, 4w, 8w), global
    average pooling; the feature dimension is ``8 * width``."""
    w = int(width)
    body = nn.Sequential(
        _conv_block(in_channels, w), _conv_block(w, 2 * w), _conv_block(2 * w, 4 * w),
        _conv_block(4 * w, 8 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return body, 8 * w


def resnet18(in_channels: int = 1, width: int = 64) -> tuple[nn.Module, int]:
    """torchvision's ResNet-18 adapted to small inputs: 3x3 stride-1 stem, no max-pool."""
    from torchvision.models import resnet18 as tv_resnet18

    check_model_spec("resnet18", width)
    net = tv_resnet18(weights=None, num_classes=1000)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


_BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {"vgg_fer": vgg_fer, "resnet18": resnet18}


#: widths a backbone accepts (None: any positive integer); ``model.width: null`` = its default
_WIDTHS: dict[str, tuple[int, ...] | None] = {"vgg_fer": None, "resnet18": (64,)}


def available_models() -> list[str]:
    return sorted(_BACKBONES)


def check_model_spec(name: str, width: int | None) -> None:
    """``ValueError`` naming ``model.name`` / ``model.width`` when they do not describe a model."""
    if name not in _BACKBONES:
        raise ValueError(f"model.name: unknown model {name!r}; valid: {', '.join(available_models())}")
    if width is None:
        return
    allowed = _WIDTHS.get(name)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"model.width: expected a positive integer or null (the model's default), got {width!r}")
    if allowed is not None and width not in allowed:
        raise ValueError(f"model.width={width}: {name} has a fixed width of {', '.join(map(str, allowed))} "
                         f"(set model.width=null or {allowed[0]})")


def create_model(name: str, num_outputs: int, in_channels: int = 1, width: int | None = None,
                 head_type: str = "linear", dropout: float = 0.0,
                 pretrained: str | Path | None = None) -> FERModel:
    """Build a registered backbone with a head of ``num_outputs``.

    ``pretrained`` is a local path to a state dict (of a whole :class:`FERModel` or of the
    body alone); the head is never loaded from it, since its size depends on the method.
    """
    check_model_spec(name, width)
    kwargs = {"in_channels": in_channels}
    if width is not None:
        kwargs["width"] = width
    body, dim = _BACKBONES[name](**kwargs)
    model = FERModel(body, dim, num_outputs, head_type=head_type, dropout=dropout)
    if pretrained:
        load_pretrained_body(model, pretrained)
    return model


def load_pretrained_body(model: FERModel, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    body = {k[len("body."):]: v for k, v in state.items() if k.startswith("body.")} or {
        k: v for k, v in state.items() if not k.startswith(("head.", "fc."))}
    if not set(body) & set(model.body.state_dict()):
        raise ValueError(f"{path}: no tensor matches the {type(model.body).__name__} backbone")
    try:
        model.body.load_state_dict(body, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit this backbone: {err}") from None
