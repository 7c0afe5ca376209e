"""Backbones from timm and torchvision behind the ``features`` + ``head`` seam, with their weights.

``model.name``: ``timm/<any timm model>`` (timm is the optional extra ``dicc[timm]``) or
``torchvision/resnet18`` / ``torchvision/resnet50`` (their standard ImageNet stem). The library's
own classifier is removed (timm: ``num_classes=0``; torchvision: ``fc`` replaced by an identity)
and dicc's head (sized for the method) sits on the pooled features.

``model.pretrained``: ``imagenet`` goes through the library's own download and cache (timm: the
Hugging Face hub cache; torchvision: ``torch.hub.get_dir()/checkpoints``) and, offline, fails in
one line saying where to put the file; or a local file in either library's format (a state dict
of the whole model, e.g. ``torch.save(timm.create_model("resnet18").state_dict(), FILE)``): every
tensor but the classifier's is loaded, and a file that fits nothing is an error.

The weights' input configuration decides the normalisation (``augment.mean/std: auto``: the
weights' per-channel mean and std; their averages for grayscale data, which the model then
replicates to three channels, :attr:`dicc.models.FERModel.expand_channels`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION = ("resnet18", "resnet50")
_CLASSIFIER_KEYS = ("fc.", "head.fc.", "head.", "classifier.", "last_linear.")


def _load_file(net: nn.Module, path: str | Path, what: str, classifier: tuple[str, ...] = _CLASSIFIER_KEYS) -> None:
    """Load a local state dict into ``net`` leaving out the classifier; an error names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained: weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable state dict ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor)")
    own = net.state_dict()
    keep = {k: v for k, v in state.items() if not k.startswith(classifier) and k in own}
    if not keep:
        raise ValueError(f"{path}: no tensor of this file matches {what} (is it a state dict of that model?)")
    bad = [k for k, v in keep.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(
            f"{path}: {len(bad)} tensors do not fit {what}, e.g. {bad[0]}: "
            f"{tuple(keep[bad[0]].shape)} vs {tuple(own[bad[0]].shape)}"
        )
    missing = [
        k for k in own if k not in keep and not k.endswith("num_batches_tracked") and not k.startswith(classifier)
    ]
    if missing:
        raise ValueError(f"{path}: lacks {len(missing)} tensors of {what}, e.g. {missing[0]}")
    net.load_state_dict(keep, strict=False)


def timm_backbone(name: str, pretrained: str | None, image_size: int | None = None) -> tuple[nn.Module, int, dict]:
    """``(body, feature_dim, {"mean", "std"})`` of timm's ``name`` without its classifier."""
    try:
        import timm
    except ImportError as err:
        raise ValueError(
            f"model.name=timm/{name} needs timm: pip install 'dicc[timm]' (or pip install timm) ({err})"
        ) from None
    kwargs = {"num_classes": 0}
    if pretrained == "imagenet":
        try:
            body = _timm_create(timm, name, True, image_size, kwargs)
        except Exception as err:  # noqa: BLE001 - offline, or no such weights
            raise ValueError(
                f"model.pretrained=imagenet: could not get timm's {name} weights "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); timm downloads "
                "them into the Hugging Face cache (~/.cache/huggingface/hub); without a network, save "
                f"them where one is online (torch.save(timm.create_model('{name}', pretrained=True)"
                ".state_dict(), FILE)) and pass model.pretrained=FILE"
            ) from None
    else:
        try:
            body = _timm_create(timm, name, False, image_size, kwargs)
        except RuntimeError as err:
            raise ValueError(f"model.name=timm/{name}: {err}") from None
        if pretrained:
            _load_file(body, pretrained, f"timm's {name}")
    cfg = getattr(body, "pretrained_cfg", None) or {}
    info = {"mean": tuple(cfg.get("mean", IMAGENET_MEAN)), "std": tuple(cfg.get("std", IMAGENET_STD))}
    return body, int(body.num_features), info


def _timm_create(timm, name, pretrained, image_size, kwargs):
    if not timm.is_model(name):
        raise ValueError(f"model.name=timm/{name}: timm has no model {name!r} (timm.list_models() lists them)")
    if image_size:
        try:  # transformers need their input size when built; CNNs take any size and refuse the keyword
            return timm.create_model(name, pretrained=pretrained, img_size=image_size, **kwargs)
        except TypeError:
            pass
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def torchvision_backbone(name: str, pretrained: str | None) -> tuple[nn.Module, int, dict]:
    """``(body, feature_dim, {"mean", "std"})`` of torchvision's ``name`` with ``fc`` removed."""
    from torchvision import models

    if name not in TORCHVISION:
        raise ValueError(f"model.name=torchvision/{name}: valid: {', '.join('torchvision/' + n for n in TORCHVISION)}")
    if pretrained == "imagenet":
        weights = models.get_model_weights(name).DEFAULT
        try:
            net = models.get_model(name, weights=weights)
        except Exception as err:  # noqa: BLE001 - offline
            target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            raise ValueError(
                f"model.pretrained=imagenet: could not download torchvision's {name} weights "
                f"({type(err).__name__}); put {Path(weights.url).name} (from {weights.url}) at {target}, "
                "or pass model.pretrained=FILE (a state dict of torchvision.models."
                f"{name}())"
            ) from None
    else:
        net = models.get_model(name, weights=None)
        if pretrained:
            _load_file(net, pretrained, f"torchvision's {name}", classifier=("fc.",))
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim, {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TORCHVISION", "timm_backbone", "torchvision_backbone"]
