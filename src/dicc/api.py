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

import torch

from .config import Config, apply_overrides, from_dict, load_config
from .data.user import as_dataset, as_images
from .metrics import DEFAULT_SHOT_THRESHOLDS

__all__ = ["as_dataset", "as_images", "evaluate", "fit", "methods"]


def methods() -> dict[str, str]:
    """The registered imbalance methods: ``{name: one-line summary}``."""
    from .strategies import available_strategies

    return {name: cls.summary for name, cls in available_strategies().items()}


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


def _shortcuts(cfg: Config, *, method, method_options, epochs, out, seed) -> Config:
    """``cfg`` with the keyword shortcuts of :func:`fit` that are given (the method and its
    options checked again when either changed)."""
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
    cfg = _shortcuts(cfg, method=method, method_options=method_options, epochs=epochs, out=out, seed=seed)
    data = None
    if train is not None:
        cfg.data.path, cfg.data.format = None, "user"
        data = _run_data(cfg, train, val, test, class_names)
    elif val is not None or test is not None:
        raise ValueError("val/test given without train: pass your training data too (or none of them)")
    return engine_fit(cfg, resume=resume, log=log, data=data, model=model)


def _check_input_shape(model, ds) -> None:
    """Refuse images of another size or channel count than ``model`` was trained on."""
    want = getattr(model, "input_shape", None)
    got = tuple(ds.images.shape[1:]) if ds.images is not None else (ds.channels, ds.image_size, ds.image_size)
    if want is not None and got != (want[0], want[1], want[1]):
        raise ValueError(
            f"data: images of {got[1]}x{got[2]} pixels with {got[0]} channel(s), but the model takes "
            f"{want[1]}x{want[1]} with {want[0]}: resize the images to the model's size"
        )


def _unpack_result(model, strategy):
    """``(module, strategy, normalisation or None)``: a RunResult's own, as its test saw them
    (``eval.logit_adjust``; a ``strategy`` given wins); anything else as given."""
    from .engine import RunResult

    if not isinstance(model, RunResult):
        return model, strategy, None
    return model.model, strategy or model.judged or model.strategy, model.normalization


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
    from .engine import evaluate as engine_evaluate
    from .models import FERModel

    model, strategy, norm = _unpack_result(model, strategy)
    names = class_names or (strategy.class_names if strategy is not None else None)
    ds = as_dataset(data, class_names=names, name="data")
    if mean is None or std is None:
        mean, std = norm if norm is not None else (0.5, 0.25)
    # the many / medium / few-shot accuracies need the training counts: a run's strategy has them
    counts = [int(c) for c in strategy.class_counts.tolist()] if strategy is not None else None
    _check_input_shape(model, ds)
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
