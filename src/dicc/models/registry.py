"""``create_model(name, ...)``: the backbones by name, each wrapped in a :class:`FERModel`.

Names: ``vgg_fer`` and ``resnet18`` (compact CNNs for 48x48 grayscale, from scratch,
:mod:`.fer_cnn`), ``timm/<name>`` and ``torchvision/resnet18|resnet50`` (:mod:`.external`,
optionally with pretrained weights). ``model.width`` applies to ``vgg_fer`` only (null = its
default 32); ``resnet18`` is fixed at 64.

Both kinds are registered with specs: a compact backbone as a :class:`BackboneSpec` (builder,
widths, input size, normalisation; :func:`register_backbone`), a library of backbones as an
:class:`ExternalFamily` (name check, builder, its weights' normalisation and input size;
:func:`register_family`). Adding a compact backbone touches its module and this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .base import FERModel
from .fer_cnn import resnet18, vgg_fer

#: the normalisation ``augment.mean/std: auto`` gives the compact CNNs: (x / 255 - 0.5) / 0.25
FER_NORMALIZATION = {"mean": 0.5, "std": 0.25}


@dataclass(frozen=True)
class BackboneSpec:
    """A compact backbone dicc builds itself (as timm's ``_cfg``): ``build(in_channels=,
    width=) -> (body, feature dim)``, the widths it accepts (None: any positive integer;
    ``model.width: null`` = its default), its input size and normalisation."""

    name: str
    build: Callable[..., tuple[nn.Module, int]]
    widths: tuple[int, ...] | None = None
    input_size: int = 48
    mean: float = FER_NORMALIZATION["mean"]
    std: float = FER_NORMALIZATION["std"]


@dataclass(frozen=True)
class ExternalFamily:
    """Backbones of another library, named ``PREFIX/<name>``: ``check(full name, name)`` raises
    for a name the family does not have (without importing it), ``build(name, pretrained,
    image_size) -> (body, feature dim)``, ``normalization(name)`` and ``input_size(name)`` are
    those of its pretrained weights."""

    name: str
    check: Callable[[str, str], None]
    build: Callable[[str, str | None, int | None], tuple[nn.Module, int]]
    normalization: Callable[[str], dict]
    input_size: Callable[[str], int]
    #: the names listed in messages (``<name>``: any the library has)
    listed: Callable[[], list[str]] = lambda: ["<name>"]

    @property
    def prefix(self) -> str:
        return self.name + "/"


_BACKBONES: dict[str, BackboneSpec] = {}
_FAMILIES: dict[str, ExternalFamily] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a compact backbone (``model.name = spec.name``)."""
    _BACKBONES[spec.name] = spec
    return spec


def register_family(family: ExternalFamily) -> ExternalFamily:
    """Add a family of external backbones (``model.name = family.name + "/<name>"``)."""
    _FAMILIES[family.name] = family
    return family


def _imagenet(name: str) -> dict:
    from .external import IMAGENET_MEAN, IMAGENET_STD

    return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def _timm_normalization(name: str) -> dict:
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name) if hasattr(timm.models, "get_pretrained_cfg") else None
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else (cfg or {})
        if cfg.get("mean") and cfg.get("std"):
            return {"mean": list(cfg["mean"]), "std": list(cfg["std"])}
    except Exception:  # noqa: BLE001 - no timm, or no config: ImageNet's, as most timm weights
        pass
    return _imagenet(name)


def _timm_input_size(name: str) -> int:
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is not None and getattr(cfg, "input_size", None):
            return int(cfg.input_size[-1])
    except Exception:  # noqa: BLE001 - no timm or no config: ImageNet's usual size
        pass
    return 224


def _timm_build(name: str, pretrained: str | None, image_size: int | None):
    from .external import timm_backbone

    body, dim, _ = timm_backbone(name, pretrained, image_size)
    return body, dim


def _torchvision_check(full: str, name: str) -> None:
    from .external import TORCHVISION

    if name not in TORCHVISION:
        raise ValueError(
            f"model.name={full!r}: valid torchvision models: {', '.join('torchvision/' + n for n in TORCHVISION)}"
        )


def _torchvision_listed() -> list[str]:
    from .external import TORCHVISION

    return list(TORCHVISION)


def _torchvision_build(name: str, pretrained: str | None, image_size: int | None):
    from .external import torchvision_backbone

    body, dim, _ = torchvision_backbone(name, pretrained)
    return body, dim


register_backbone(BackboneSpec("vgg_fer", vgg_fer))
register_backbone(BackboneSpec("resnet18", resnet18, widths=(64,)))
register_family(ExternalFamily("timm", lambda full, name: None, _timm_build, _timm_normalization, _timm_input_size))
register_family(
    ExternalFamily(
        "torchvision", _torchvision_check, _torchvision_build, _imagenet, lambda name: 224, _torchvision_listed
    )
)


def available_models() -> list[str]:
    return sorted(_BACKBONES) + [f.prefix + n for f in _FAMILIES.values() for n in f.listed()]


def _lookup(name: str) -> tuple[ExternalFamily | None, str]:
    """The family a model name belongs to (None: a compact backbone) and its name within it."""
    for family in _FAMILIES.values():
        if name.startswith(family.prefix):
            return family, name[len(family.prefix) :]
    return None, name


def check_model_spec(name: str, width: int | None, pretrained: str | None = None) -> None:
    """``ValueError`` naming ``model.name`` / ``model.width`` / ``model.pretrained`` when they do
    not describe a model (no import of timm, no download)."""
    family, base = _lookup(str(name))
    if family is None and base not in _BACKBONES:
        raise ValueError(f"model.name: unknown model {name!r}; valid: {', '.join(available_models())}")
    if family is not None and not base:
        raise ValueError(f"model.name={name!r}: name the model after the slash, e.g. {family.name}/resnet18")
    if family is not None:
        family.check(name, base)
    if width is not None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"model.width: expected a positive integer or null (the model's default), got {width!r}")
        if family is not None:
            raise ValueError(f"model.width={width}: {name} has its own architecture; set model.width=null")
        allowed = _BACKBONES[base].widths
        if allowed is not None and width not in allowed:
            raise ValueError(
                f"model.width={width}: {name} has a fixed width of {', '.join(map(str, allowed))} "
                f"(set model.width=null or {allowed[0]})"
            )
    if pretrained == "imagenet" and family is None:
        raise ValueError(
            f"model.pretrained=imagenet: {name} has no ImageNet weights (it is trained from scratch); "
            "use torchvision/resnet18 or a timm/ model, or give a file"
        )


def default_normalization(name: str, pretrained: str | None = None) -> dict:
    """What ``augment.mean/std: auto`` means for this model: the weights' mean and std for the
    external backbones (ImageNet's for torchvision), 0.5 / 0.25 for the compact CNNs."""
    family, base = _lookup(name)
    if family is not None:
        return family.normalization(base)
    spec = _BACKBONES.get(base)
    return {"mean": spec.mean, "std": spec.std} if spec is not None else dict(FER_NORMALIZATION)


def default_input_size(name: str, pretrained: str | None = None) -> int:
    """What ``data.image_size: auto`` means for this model: the input size its pretrained
    weights were trained at (timm's ``pretrained_cfg``; 224 for torchvision's ImageNet weights),
    and 48 (FER2013's size) for the compact CNNs and for any model trained from scratch."""
    family, base = _lookup(name)
    if family is None:
        spec = _BACKBONES.get(base)
        return spec.input_size if spec is not None else 48
    return family.input_size(base) if pretrained else 48


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
    family, base = _lookup(name)
    if family is None:
        kwargs = {"in_channels": in_channels}
        if width is not None:
            kwargs["width"] = width
        body, dim = _BACKBONES[base].build(**kwargs)
        model = FERModel(body, dim, num_outputs, head_type=head_type, dropout=dropout)
        if pretrained:
            load_pretrained_body(model, pretrained)
    else:
        body, dim = family.build(base, pretrained, image_size)
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
    "BackboneSpec",
    "ExternalFamily",
    "FER_NORMALIZATION",
    "available_models",
    "check_model_spec",
    "create_model",
    "default_input_size",
    "default_normalization",
    "load_pretrained_body",
    "register_backbone",
    "register_family",
]
