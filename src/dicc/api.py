"""The public Python API: ``dicc.fit``, ``dicc.evaluate``, ``dicc.methods``, ``dicc.Recognizer``.

>>> import dicc
>>> result = dicc.fit(train=train_ds, val=val_ds, test=test_ds, model=net, method="dicc", epochs=20,
...                   out="runs/x", **{"optim.lr": 0.05})
>>> result.model, result.final["mean_class_accuracy"], result.run_dir
>>> dicc.evaluate(result, test_ds)["per_class"]["fear"]["recall"]

Data: a torch ``Dataset`` whose items are ``(image, label)`` (the image a PIL image, a numpy
array ``HxW``/``HxWxC`` or a tensor ``CxHxW``/``HxW``, uint8 or floats in [0, 1]; the label an
integer class index), a pair ``(images, labels)`` of tensors or arrays, or a
:class:`~dicc.data.base.FERDataset`. Every image must have the first one's shape; images are
held in memory as uint8 and augmented in batches, as dicc's own readers do (16-bit images are
scaled to 8 bits). The class counts the methods use come from the training labels; the class
names from ``class_names``, else the dataset's ``classes`` attribute (torchvision's
``ImageFolder``), else the labels are the seven emotions (0..6); a label outside the class list,
or one that is not a whole number, is an error. Without ``val`` a stratified hold-out of
``data.val_fraction`` of the training data selects the checkpoint; without ``test`` there is no
final test (``result.final`` is None).

Model: any ``nn.Module`` with features and a head (:func:`dicc.models.adapt_model`: a timm
model, or a final ``nn.Linear`` named ``head``/``fc``/``classifier``/``linear``); a copy of it is
trained, its head given the method's outputs, and the module passed in is left as it was. Or
none, and ``model.name`` builds one.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .config import Config, apply_overrides, from_dict, load_config
from .metrics import DEFAULT_SHOT_THRESHOLDS

__all__ = ["as_dataset", "as_images", "evaluate", "fit", "methods"]


def methods() -> dict[str, str]:
    """The registered imbalance methods: ``{name: one-line summary}``."""
    from .strategies import available_strategies

    return {name: cls.summary for name, cls in available_strategies().items()}


# -- user data ----------------------------------------------------------------------------------
def _to_uint8_chw(image, where: str) -> torch.Tensor:
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        from .data.decode import eight_bit

        image = eight_bit(image)  # 16-bit scaled, not clipped
        arr = np.asarray(image.convert("L" if image.mode in ("1", "L", "LA") else "RGB"))
        t = torch.from_numpy(arr.copy())
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    else:
        if not isinstance(image, torch.Tensor) and np.asarray(image).dtype == np.uint16:  # 16-bit: scaled
            image = np.rint(np.asarray(image, dtype=np.float64) / 257.0).astype(np.uint8)
        t = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
        if t.dim() == 2:
            t = t[None]
        elif t.dim() == 3 and t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3):  # HxWxC
            t = t.permute(2, 0, 1)
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(
            f"{where}: expected an image of shape [C, H, W] (C = 1 or 3), [H, W] or [H, W, C], got {tuple(t.shape)}"
        )
    if t.dtype != torch.uint8:
        t = t.float()
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: the image holds NaN or infinite values")
        t = (t * 255.0 if float(t.max()) <= 1.0 else t).round().clamp(0, 255).to(torch.uint8)
    return t.contiguous()


def _class_index(label, where: str) -> int:
    """An integer class index from a label (an int, a numpy or torch integer, or a float that is
    a whole number); anything else (0.5, "3", True) is a ValueError."""
    size = label.numel() if hasattr(label, "numel") else getattr(label, "size", 1)
    raw = label.item() if hasattr(label, "item") and size == 1 else label
    if isinstance(raw, (bool, np.bool_)) or not (
        isinstance(raw, (int, np.integer)) or (isinstance(raw, (float, np.floating)) and float(raw).is_integer())
    ):
        raise ValueError(f"{where}: the label must be an integer class index, got {label!r}")
    return int(raw)


def as_dataset(data, *, class_names: Sequence[str] | None = None, name: str = "train"):
    """A :class:`~dicc.data.base.FERDataset` from user data (see the module docstring); a bad item
    is a ``ValueError`` naming the split, the item and what was expected."""
    from .data.base import FERDataset
    from .data.classes import EMOTIONS

    if isinstance(data, FERDataset):
        return data
    if (
        isinstance(data, tuple)
        and len(data) == 2
        and hasattr(data[0], "shape")
        and len(data[0].shape) >= 3
        and hasattr(data[1], "__len__")
        and len(data[1]) == data[0].shape[0]
    ):  # (images, labels)
        images, labels = data
        items = ((images[i], labels[i]) for i in range(len(labels)))
        n = len(labels)
    else:
        if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
            raise ValueError(
                f"{name}: expected a torch Dataset of (image, label), a pair (images, labels) or a "
                f"FERDataset, got {type(data).__name__}"
            )
        n = len(data)
        items = (data[i] for i in range(n))
    if n == 0:
        raise ValueError(f"{name}: the dataset is empty")
    imgs, labs, shape = [], [], None
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError(f"{name}[{i}]: expected an (image, label) pair, got {type(item).__name__}")
        t = _to_uint8_chw(item[0], f"{name}[{i}]")
        if shape is None:
            shape = tuple(t.shape)
        elif tuple(t.shape) != shape:
            raise ValueError(
                f"{name}[{i}]: image of shape {tuple(t.shape)}, but the first one is {shape} (every "
                "image must have the same size; resize them in the dataset)"
            )
        imgs.append(t)
        labs.append(_class_index(item[1], f"{name}[{i}]"))
    labels = torch.tensor(labs, dtype=torch.long)
    names = list(class_names) if class_names is not None else getattr(data, "classes", None)
    named = names is not None
    names = [str(c) for c in (names if named else EMOTIONS)]
    bad = ((labels < 0) | (labels >= len(names))).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        hint = "" if named else "; unnamed labels are the seven emotions: pass class_names for another label space"
        raise ValueError(
            f"{name}[{i}]: label {labs[i]} is outside the class list ({len(names)} classes: {', '.join(names)}){hint}"
        )
    return FERDataset(
        labels=labels, images=torch.stack(imgs), class_names=tuple(names), source=f"{name} ({type(data).__name__})"
    )


def as_images(images, *, name: str = "images") -> torch.Tensor:
    """uint8 images ``[N, C, H, W]`` from the image forms :func:`fit` takes: a batch (a tensor or
    array ``[N, C, H, W]``, ``[N, H, W, C]`` or ``[N, H, W]``: N grayscale images), a sequence of
    images (PIL images, arrays or tensors ``CxHxW``/``HxW``/``HxWxC``), or one PIL image; uint8
    or floats in [0, 1] (scaled by 255), each of the first one's shape. A bad item is a
    ``ValueError`` naming it."""
    if hasattr(images, "convert") and hasattr(images, "mode"):  # one PIL image
        images = [images]
    elif isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim not in (3, 4):
        raise ValueError(
            f"{name}: expected a batch [N, C, H, W], [N, H, W, C] or [N, H, W], got shape {tuple(images.shape)} "
            "(one image: pass [image])"
        )
    out, shape = [], None
    for i in range(len(images)):
        t = _to_uint8_chw(images[i], f"{name}[{i}]")
        if shape is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name}[{i}]: image of shape {tuple(t.shape)}, but the first one is {shape}")
        shape = tuple(t.shape)
        out.append(t)
    if not out:
        raise ValueError(f"{name}: no images")
    return torch.stack(out)


def _run_data(cfg: Config, train, val, test, class_names):
    from .data.build import RunData
    from .data.longtail import stratified_holdout

    tr = as_dataset(train, class_names=class_names, name="train")
    names = list(tr.class_names)
    va = as_dataset(val, class_names=names, name="val") if val is not None else None
    te = as_dataset(test, class_names=names, name="test") if test is not None else None
    for ds, what in ((va, "val"), (te, "test")):
        if ds is not None and tuple(ds.images.shape[1:]) != tuple(tr.images.shape[1:]):
            raise ValueError(
                f"{what}: images of shape {tuple(ds.images.shape[1:])}, but the training images are "
                f"{tuple(tr.images.shape[1:])}"
            )
    if va is None and cfg.data.val == "holdout":
        keep, hold = stratified_holdout(tr.labels, cfg.data.val_fraction, cfg.data.subset_seed)
        va, tr = tr.subset(hold), tr.subset(keep)
        va.source = f"{tr.source} (hold-out {cfg.data.val_fraction:g})"
    return RunData(tr, va, te)


# -- fit / evaluate -------------------------------------------------------------------------------
def _config(config, overrides: list[str], dotted: dict) -> Config:
    if isinstance(config, Config):
        raw = config.to_dict()
        cfg = from_dict(Config, apply_overrides(raw, list(overrides)))
    elif isinstance(config, dict):
        cfg = from_dict(Config, apply_overrides(dict(config), list(overrides)))
    else:
        cfg = load_config(config, list(overrides))
    if dotted:
        raw = cfg.to_dict()
        for key, value in dotted.items():
            parts = key.split(".")
            node = raw
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ValueError(f"unknown config key {key!r} (sections: {', '.join(sorted(raw))})")
                node = node[p]
            node[parts[-1]] = value
        cfg = from_dict(Config, raw)
    return cfg


def fit(
    config: Any = None,
    *,
    train=None,
    val=None,
    test=None,
    model=None,
    method: str | None = None,
    method_options: dict | None = None,
    epochs: int | None = None,
    out: str | None = None,
    seed: int | None = None,
    class_names: Sequence[str] | None = None,
    resume: bool = False,
    log=None,
    overrides: Sequence[str] = (),
    **dotted,
):
    """Train and return a :class:`~dicc.engine.RunResult`: the trained model (eval mode, the
    checkpoint selected on validation), its strategy, the test metrics (``final``) and the run
    directory; ``result.predict(images)`` / ``result.predict_proba(images)`` give the classes
    and class probabilities of the label space for every method (DICC's sub-classes merged).

    ``model`` is copied before training (``copy.deepcopy``): your module keeps its weights and
    its head, and ``result.model`` is the trained copy (its head resized to the method's outputs,
    e.g. DICC's sub-classes, so call ``result.predict`` rather than ``result.model(x)``).

    ``config``: a YAML file, a :class:`~dicc.config.Config`, a dict, or None (the defaults);
    ``overrides`` (``["optim.lr=0.1"]``) and dotted keyword arguments (``**{"optim.lr": 0.1}``)
    on top, then the shortcuts ``method``, ``method_options``, ``epochs``, ``out``, ``seed``.
    ``train`` / ``val`` / ``test`` / ``model``: your own data and network (module docstring);
    without ``train`` the configured dataset (``data.path``) is read as ``dicc train`` does.
    """
    from .engine import fit as engine_fit

    cfg = _config(config, list(overrides), dotted)
    for section, key, value in (
        ("method", "name", method),
        ("train", "epochs", epochs),
        ("train", "out", out),
        ("train", "seed", seed),
    ):
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    if method_options is not None:
        cfg.method.options = dict(method_options)
    if method is not None or method_options is not None:  # re-check the method and its options
        cfg = from_dict(Config, cfg.to_dict())
    data = None
    if train is not None:
        cfg.data.path, cfg.data.format = None, "user"
        data = _run_data(cfg, train, val, test, class_names)
    elif val is not None or test is not None:
        raise ValueError("val/test given without train: pass your training data too (or none of them)")
    return engine_fit(cfg, resume=resume, log=log, data=data, model=model)


def evaluate(
    model,
    data,
    *,
    strategy=None,
    batch_size: int = 512,
    tta: str = "none",
    mean=None,
    std=None,
    class_names: Sequence[str] | None = None,
    shot_thresholds: Sequence[float] = DEFAULT_SHOT_THRESHOLDS,
) -> dict:
    """Metrics (accuracy, mean class accuracy, macro-F1, per-class recall, confusion matrix,
    top-2 accuracy, expected calibration error; with a strategy, i.e. a run's training counts, the
    many / medium / few-shot accuracies by ``shot_thresholds``) of ``model`` on ``data`` (any
    form :func:`fit` takes), from one pass over it (:func:`dicc.metrics.metrics_from_logits`).

    ``model``: a :class:`~dicc.engine.RunResult` (its model, strategy and normalisation), a
    :class:`~dicc.models.FERModel` or any module giving class logits (with ``strategy`` its
    sub-class merge, e.g. DICC's). The model's train/eval mode is left as it was. Images of
    another size or channel count than the model was trained on (``FERModel.input_shape``) are
    refused."""
    from .engine import RunResult
    from .engine import evaluate as engine_evaluate
    from .models import FERModel

    norm = None
    if isinstance(model, RunResult):
        strategy = strategy or model.judged or model.strategy  # as the run's test saw it (eval.logit_adjust)
        norm = model.normalization
        class_names = class_names or (strategy.class_names if strategy is not None else None)
        model = model.model
    names = class_names or (strategy.class_names if strategy is not None else None)
    ds = as_dataset(data, class_names=names, name="data")
    if mean is None or std is None:
        mean, std = norm if norm is not None else (0.5, 0.25)
    # the many / medium / few-shot accuracies need the training counts: a run's strategy has them
    counts = [int(c) for c in strategy.class_counts.tolist()] if strategy is not None else None
    want = getattr(model, "input_shape", None)
    got = tuple(ds.images.shape[1:]) if ds.images is not None else (ds.channels, ds.image_size, ds.image_size)
    if want is not None and got != (want[0], want[1], want[1]):
        raise ValueError(
            f"data: images of {got[1]}x{got[2]} pixels with {got[0]} channel(s), but the model takes "
            f"{want[1]}x{want[1]} with {want[0]}: resize the images to the model's size"
        )
    if strategy is None:
        from .strategies import create_strategy

        strategy = create_strategy("ce", [1] * ds.num_classes, class_names=list(ds.class_names))
    if not isinstance(model, FERModel):
        model = _LogitsOnly(model)
    return engine_evaluate(
        model,
        strategy,
        ds,
        batch_size=batch_size,
        mean=mean,
        std=std,
        tta=tta,
        train_counts=counts,
        shot_thresholds=shot_thresholds,
    )


class _LogitsOnly(torch.nn.Module):
    """Any module as a model the engine evaluates (its output taken as the logits)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)
