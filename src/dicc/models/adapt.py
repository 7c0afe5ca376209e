"""A user's own ``nn.Module`` behind the ``features`` + ``head`` seam (``dicc.fit(model=...)``).

:func:`adapt_model` accepts

* a :class:`~dicc.models.FERModel` (used as it is when its head has the outputs the method
  needs, otherwise given a new head of that size);
* a timm model (``forward_features`` + ``forward_head(..., pre_logits=True)`` and
  ``get_classifier()``);
* any module whose last layer is an ``nn.Linear`` attribute named ``head``, ``fc``,
  ``classifier`` or ``linear`` (torchvision's ResNets, most hand-written CNNs): that layer is the
  head, everything before it the features.

The head is given the method's number of outputs (DICC's sub-classes): it is kept when it has
them, otherwise a new ``nn.Linear`` from the same features replaces it, before training starts
(so DDP and DICC's in-place head split see the final parameters). A module without a usable head
is a ``ValueError`` saying what is expected.
"""

from __future__ import annotations


import torch
from torch import nn

from .base import CosineHead, FERModel

HEAD_NAMES = ("head", "fc", "classifier", "linear")


class _Without(nn.Module):
    """The user's module with its classifier attribute replaced by an identity: its features."""

    def __init__(self, module: nn.Module, attr: str) -> None:
        super().__init__()
        self.module = module
        setattr(self.module, attr, nn.Identity())

    def forward(self, x):
        return self.module(x)


class _TimmFeatures(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module.forward_head(self.module.forward_features(x), pre_logits=True)


def _new_head(in_features: int, num_outputs: int, head_type: str) -> nn.Module:
    return nn.Linear(in_features, num_outputs) if head_type == "linear" else CosineHead(in_features, num_outputs)


def adapt_model(module: nn.Module, num_outputs: int, head_type: str = "linear") -> FERModel:
    """``module`` as a :class:`FERModel` with a head of ``num_outputs`` (see the module doc)."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"model: expected a torch nn.Module, got {type(module).__name__}")
    if isinstance(module, FERModel):
        head = module.head
        if getattr(head, "out_features", None) != num_outputs or (head_type == "cosine") != isinstance(
            head, CosineHead
        ):
            module.head = _new_head(module.feature_dim, num_outputs, head_type)
        return module
    name = type(module).__name__
    if hasattr(module, "forward_features") and hasattr(module, "get_classifier") and hasattr(module, "forward_head"):
        clf = module.get_classifier()
        dim = getattr(module, "num_features", None) or getattr(clf, "in_features", None)
        if not dim:
            raise ValueError(f"model: {name} looks like a timm model but tells no feature size (num_features)")
        body, head = _TimmFeatures(module), clf if isinstance(clf, nn.Linear) else None
    else:
        attr = next((a for a in HEAD_NAMES if isinstance(getattr(module, a, None), nn.Linear)), None)
        if attr is None:
            raise ValueError(
                f"model: {name} has no usable head: expected a timm model or a module whose final "
                f"nn.Linear is an attribute named {', '.join(HEAD_NAMES)} (the features are its input)"
            )
        head = getattr(module, attr)
        dim = head.in_features
        body = _Without(module, attr)
    model = FERModel(body, int(dim), num_outputs, head_type=head_type)
    if isinstance(head, nn.Linear) and head.out_features == num_outputs and head_type == "linear":
        model.head = head  # the user's own head already has the right size: kept
    model.convolutional = any(isinstance(m, nn.Conv2d) for m in module.modules())
    model.user_class = name
    return model


def check_forward(model: FERModel, example: torch.Tensor) -> None:
    """Run one batch through ``model`` before training, so a model that does not take the data
    (or gives features of another size) fails in one line now rather than mid-epoch."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = model.features(example)
    except Exception as err:  # noqa: BLE001 - any failure of the user's forward
        raise ValueError(
            f"model: {getattr(model, 'user_class', type(model).__name__)} does not take the training "
            f"images [B, {example.shape[1]}, {example.shape[2]}, {example.shape[3]}] "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    finally:
        model.train(was)
    if feats.dim() != 2 or feats.shape[1] != model.feature_dim:
        raise ValueError(
            f"model: its features have shape {tuple(feats.shape)}, expected [B, {model.feature_dim}] "
            "(the input of its head)"
        )


__all__ = ["HEAD_NAMES", "adapt_model", "check_forward"]
