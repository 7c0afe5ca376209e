"""``create_model(name, ...)``: the backbones by name, each wrapped in a :class:`FERModel`.

Names: ``vgg_fer`` and ``resnet18`` (compact CNNs for 48x48 grayscale, from scratch,
:mod:`.fer_cnn`), ``timm/<name>`` and ``torchvision/resnet18|resnet50`` (:mod:`.external`,
optionally with pretrained weights). ``model.width`` applies to ``vgg_fer`` only (null = its
default 32); ``resnet18`` is fixed at 64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .base import FERModel
from .fer_cnn import resnet18, vgg_fer

_BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {"vgg_fer": vgg_fer, "resnet18": resnet18}
#: widths a backbone accepts (None: any positive integer); ``model.width: null`` = its default
_WIDTHS: dict[str, tuple[int, ...] | None] = {"vgg_fer": None, "resnet18": (64,)}
#: the normalisation ``augment.mean/std: auto`` gives the compact CNNs: (x / 255 - 0.5) / 0.25
FER_NORMALIZATION = {"mean": 0.5, "std": 0.25}


def available_models() -> list[str]:
    return sorted(_BACKBONES) + ["timm/<name>", "torchvision/resnet18", "torchvision/resnet50"]


def _family(name: str) -> tuple[str, str]:
    if name.startswith("timm/"):
        return "timm", name[len("timm/") :]
    if name.startswith("torchvision/"):
        return "torchvision", name[len("torchvision/") :]
    return "dicc", name


def check_model_spec(name: str, width: int | None, pretrained: str | None = None) -> None:
    """``ValueError`` naming ``model.name`` / ``model.width`` / ``model.pretrained`` when they do
    not describe a model (no import of timm, no download)."""
    family, base = _family(str(name))
    if family == "dicc" and base not in _BACKBONES:
        raise ValueError(f"model.name: unknown model {name!r}; valid: {', '.join(available_models())}")
    if family != "dicc" and not base:
        raise ValueError(f"model.name={name!r}: name the model after the slash, e.g. {family}/resnet18")
    if family == "torchvision":
        from .external import TORCHVISION

        if base not in TORCHVISION:
            raise ValueError(
                f"model.name={name!r}: valid torchvision models: {', '.join('torchvision/' + n for n in TORCHVISION)}"
            )
    if width is not None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"model.width: expected a positive integer or null (the model's default), got {width!r}")
        if family != "dicc":
            raise ValueError(f"model.width={width}: {name} has its own architecture; set model.width=null")
        allowed = _WIDTHS.get(base)
        if allowed is not None and width not in allowed:
            raise ValueError(
                f"model.width={width}: {name} has a fixed width of {', '.join(map(str, allowed))} "
                f"(set model.width=null or {allowed[0]})"
            )
    if pretrained == "imagenet" and family == "dicc":
        raise ValueError(
            f"model.pretrained=imagenet: {name} has no ImageNet weights (it is trained from scratch); "
            "use torchvision/resnet18 or a timm/ model, or give a file"
        )


def default_normalization(name: str, pretrained: str | None = None) -> dict:
    """What ``augment.mean/std: auto`` means for this model: the weights' mean and std for the
    external backbones (ImageNet's for torchvision), 0.5 / 0.25 for the compact CNNs."""
    family, base = _family(name)
    if family == "torchvision":
        from .external import IMAGENET_MEAN, IMAGENET_STD

        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if family == "timm":
        try:
            import timm

            cfg = timm.models.get_pretrained_cfg(base) if hasattr(timm.models, "get_pretrained_cfg") else None
            cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else (cfg or {})
            if cfg.get("mean") and cfg.get("std"):
                return {"mean": list(cfg["mean"]), "std": list(cfg["std"])}
        except Exception:  # noqa: BLE001 - no timm, or no config: ImageNet's, as most timm weights
            pass
        from .external import IMAGENET_MEAN, IMAGENET_STD

        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return dict(FER_NORMALIZATION)


def default_input_size(name: str, pretrained: str | None = None) -> int:
    """What ``data.image_size: auto`` means for this model: the input size its pretrained
    weights were trained at (timm's ``pretrained_cfg``; 224 for torchvision's ImageNet weights),
    and 48 (FER2013's size) for the compact CNNs and for any model trained from scratch."""
    family, base = _family(name)
    if not pretrained or family not in ("timm", "torchvision"):
        return 48
    if family == "timm":
        try:
            import timm

            cfg = timm.models.get_pretrained_cfg(base)
            if cfg is not None and getattr(cfg, "input_size", None):
                return int(cfg.input_size[-1])
        except Exception:  # noqa: BLE001 - no timm or no config: ImageNet's usual size
            pass
    return 224


def create_model(
    name: str,
    num_outputs: int,
    in_channels: int = 1,
    width: int | None = None,
    head_type: str = "linear",
    dropout: float = 0.0,
    pretrained: str | Path | None = None,
    image_size: int | None = None,
) -> FERModel:
    """Build the backbone ``name`` with a head of ``num_outputs`` (see the module docstring).

    ``pretrained``: for ``vgg_fer``/``resnet18`` a local state dict (of a whole
    :class:`FERModel` or of the body alone); for the external backbones ``imagenet`` or a local
    file (:mod:`.external`). The head is never loaded: its size depends on the method.
    """
    pretrained = str(pretrained) if pretrained else None
    check_model_spec(name, width, pretrained)
    family, base = _family(name)
    if family == "dicc":
        kwargs = {"in_channels": in_channels}
        if width is not None:
            kwargs["width"] = width
        body, dim = _BACKBONES[base](**kwargs)
        model = FERModel(body, dim, num_outputs, head_type=head_type, dropout=dropout)
        if pretrained:
            load_pretrained_body(model, pretrained)
    else:
        from .external import timm_backbone, torchvision_backbone

        if family == "timm":
            body, dim, _ = timm_backbone(base, pretrained, image_size)
        else:
            body, dim, _ = torchvision_backbone(base, pretrained)
        model = FERModel(
            body,
            dim,
            num_outputs,
            head_type=head_type,
            dropout=dropout,
            expand_channels=3 if in_channels == 1 else None,
        )
    if image_size is not None:
        model.input_shape = (int(in_channels), int(image_size))
    return model


def model_from_spec(spec: dict) -> FERModel:
    """The architecture a checkpoint's ``model_spec`` describes (randomly initialised; no
    pretrained weights are fetched: the checkpoint holds the trained ones)."""
    model = create_model(
        spec["name"],
        spec["num_outputs"],
        in_channels=spec["in_channels"],
        width=spec["width"],
        head_type=spec["head_type"],
        dropout=spec.get("dropout", 0.0),
        image_size=spec.get("image_size"),
    )
    model.set_projection(spec.get("projection_dim"))
    return model


def load_pretrained_body(model: FERModel, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    body = {k[len("body.") :]: v for k, v in state.items() if k.startswith("body.")} or {
        k: v for k, v in state.items() if not k.startswith(("head.", "fc."))
    }
    if not set(body) & set(model.body.state_dict()):
        raise ValueError(f"{path}: no tensor matches the {type(model.body).__name__} backbone")
    try:
        model.body.load_state_dict(body, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit this backbone: {err}") from None


__all__ = [
    "default_input_size",
    "FER_NORMALIZATION",
    "available_models",
    "check_model_spec",
    "create_model",
    "default_normalization",
    "load_pretrained_body",
]
