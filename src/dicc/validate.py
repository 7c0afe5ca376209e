"""Check a whole run config before any data is read or any file is written.

Every problem is a ``ValueError`` whose message names the key and says what is valid, so the
CLI prints it as one line and exits 2, and a grid fails before anything trains. What needs the
data (class counts: the sub-class plan, a long-tail profile) is checked by the strategies and
the data builder as soon as the labels are known, still before the run directory is written.
"""

from __future__ import annotations

import math
from pathlib import Path

from .config import Config
from .schedule import SCHEDULES

OPTIMIZERS = ("sgd", "adamw")


def _positive_int(value, key: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}: expected an integer >= {minimum}, got {value!r}")


def _number(
    value, key: str, lo: float | None = None, hi: float | None = None, *, open_lo: bool = False, open_hi: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if open_lo else value >= lo
    if ok and hi is not None:
        ok = value < hi if open_hi else value <= hi
    if not ok:
        lo_s = "" if lo is None else f"{'>' if open_lo else '>='} {lo:g}"
        hi_s = "" if hi is None else f"{'<' if open_hi else '<='} {hi:g}"
        rng = " and ".join(x for x in (lo_s, hi_s) if x)
        raise ValueError(f"{key}: expected a number{' ' + rng if rng else ''}, got {value!r}")


def _check_distill(k) -> None:
    from .data.transforms import TTA_MODES

    if k.teacher is not None:
        if not isinstance(k.teacher, list) or not all(isinstance(t, str) and t for t in k.teacher):
            raise ValueError(f"distill.teacher: expected a checkpoint path or a list of them, got {k.teacher!r}")
        for t in k.teacher:
            if t != "default" and not Path(t).exists():
                raise ValueError(f"distill.teacher: {t}: no such checkpoint or run directory")
    if k.tta not in TTA_MODES:
        raise ValueError(f"distill.tta: unknown test-time augmentation {k.tta!r}; valid: {', '.join(TTA_MODES)}")
    if k.targets not in ("images", "augmented"):
        raise ValueError(f"distill.targets: expected images or augmented, got {k.targets!r}")
    _number(k.temperature, "distill.temperature", 0.0, open_lo=True)
    _number(k.weight, "distill.weight", 0.0, 1.0)


def _check_controls(cfg: Config) -> None:
    """``train.ema``, ``train.grad_clip``, ``train.accumulate``, ``train.early_stop``."""
    t = cfg.train
    if t.ema is not None:
        _number(t.ema, "train.ema", 0.0, 1.0, open_lo=True, open_hi=True)
    if t.grad_clip is not None:
        _number(t.grad_clip, "train.grad_clip", 0.0, open_lo=True)
    _positive_int(t.accumulate, "train.accumulate")
    if t.early_stop is not None:
        _positive_int(t.early_stop, "train.early_stop")
        if cfg.data.val is None:
            raise ValueError(
                "train.early_stop: needs a validation split to watch (data.val is null); set data.val=holdout "
                "or a split name, or train.early_stop=null"
            )


def _check_schedule(o) -> None:
    """``optim.milestones`` / ``optim.gamma`` (schedule step) and ``optim.nesterov``."""
    if o.name == "sgd" and o.nesterov and o.momentum == 0:
        raise ValueError("optim.nesterov=true needs optim.momentum > 0; set optim.nesterov=false for plain SGD")
    _number(o.gamma, "optim.gamma", 0.0, 1.0, open_lo=True)
    ms = o.milestones
    if o.schedule != "step":
        if ms not in (None, []):
            raise ValueError(f"optim.milestones={ms!r} is only used by optim.schedule=step (now {o.schedule!r})")
        return
    ok = isinstance(ms, (list, tuple)) and len(ms) > 0
    ok = ok and all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in ms)
    if not ok or any(b <= a for a, b in zip(ms, ms[1:])):
        raise ValueError(f"optim.milestones: schedule step needs increasing epochs >= 1, e.g. [30, 40], got {ms!r}")


def check_shot_thresholds(value) -> None:
    """``eval.shot_thresholds``: ``[many, few]``, numbers with ``many >= few >= 0``."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or not value[0] >= value[1] >= 0:
        raise ValueError(
            "eval.shot_thresholds: expected [many, few] with many >= few >= 0 (many-shot: more than `many` "
            f"training images, few-shot: fewer than `few`), e.g. [1500, 200], got {value!r}"
        )


def _check_train(cfg: Config) -> None:
    t = cfg.train
    _positive_int(t.epochs, "train.epochs")
    _positive_int(t.batch_size, "train.batch_size")
    _positive_int(t.eval_batch_size, "train.eval_batch_size")
    if t.threads is not None:
        _positive_int(t.threads, "train.threads")
    from .loggers import check_logger

    check_logger(t.log)
    _check_controls(cfg)


def _check_optim(o) -> None:
    if o.name not in OPTIMIZERS:
        raise ValueError(f"optim.name: unknown optimizer {o.name!r}; valid: {', '.join(OPTIMIZERS)}")
    if o.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule: unknown schedule {o.schedule!r}; valid: {', '.join(SCHEDULES)}")
    _number(o.lr, "optim.lr", 0.0, open_lo=True)
    _number(o.weight_decay, "optim.weight_decay", 0.0)
    _number(o.momentum, "optim.momentum", 0.0, 1.0, open_hi=True)
    _number(o.warmup_fraction, "optim.warmup_fraction", 0.0, 1.0, open_hi=True)
    _check_schedule(o)


def _check_data(d) -> None:
    _positive_int(d.workers, "data.workers", 0)
    if d.image_size != "auto":
        _positive_int(d.image_size, "data.image_size", 8)
    if d.format != "user" and d.channels not in (1, 3):
        raise ValueError(f"data.channels: expected 1 (grayscale) or 3 (RGB), got {d.channels!r}")
    _number(d.val_fraction, "data.val_fraction", 0.0, 1.0, open_lo=True, open_hi=True)
    if d.val is not None and d.test_split is not None and d.val == d.test_split:
        raise ValueError(
            f"data.val={d.val!r} is the test split (data.test_split={d.test_split!r}): the checkpoint "
            "would be chosen on the images it is then tested on; use data.val=holdout (drawn from "
            "the training split) or another split"
        )


def _check_augment(a) -> None:
    for key in ("mean", "std"):
        v = getattr(a, key)
        vals = v if isinstance(v, (list, tuple)) else ([] if v == "auto" else [v])
        for u in vals:
            _number(u, f"augment.{key}", 0.0 if key == "std" else None, open_lo=key == "std")
    _number(a.erase, "augment.erase", 0.0, 1.0)
    _number(a.rotate, "augment.rotate", 0.0, 180.0)
    _number(a.scale, "augment.scale", 0.0, 1.0, open_hi=True)
    _number(a.mixup, "augment.mixup", 0.0)


def _check_eval(e) -> None:
    """``eval.tta`` and ``eval.logit_adjust`` (the shot thresholds: :func:`check_shot_thresholds`)."""
    from .data.transforms import TTA_MODES

    if e.tta not in TTA_MODES:
        raise ValueError(f"eval.tta: unknown test-time augmentation {e.tta!r}; valid: {', '.join(TTA_MODES)}")
    if e.logit_adjust is not None:
        _number(e.logit_adjust, "eval.logit_adjust")


def _check_method(cfg: Config) -> None:
    """``method.name`` and ``method.options`` (the options built as the strategy builds them)."""
    from .strategies.base import available_strategies, build_options

    strategies = available_strategies()
    if cfg.method.name not in strategies:
        raise ValueError(f"method.name: unknown method {cfg.method.name!r}; valid: {', '.join(strategies)}")
    build_options(strategies[cfg.method.name], cfg.method.options)


def check_config(cfg: Config, device=None, *, user_model: bool = False) -> None:
    """Raise ``ValueError`` for the first problem found in ``cfg`` (see the module docstring).

    ``device`` is the resolved torch device when the caller has one (else ``train.device`` is
    resolved here, which also checks that CUDA exists when it is asked for)."""
    _check_train(cfg)
    _check_optim(cfg.optim)
    _check_data(cfg.data)
    _check_augment(cfg.augment)
    _number(cfg.train.label_smoothing, "train.label_smoothing", 0.0, 1.0, open_hi=True)
    _check_eval(cfg.eval)
    _check_distill(cfg.distill)
    check_shot_thresholds(cfg.eval.shot_thresholds)
    from .strategies.base import available_strategies

    strategy = available_strategies().get(cfg.method.name)
    if strategy is not None:  # the method's own rules across sections (DICC with mixup); unknown: below
        strategy.check_config(cfg)
    from .models import check_model_spec

    if not user_model:  # a user's own module is checked when it meets the data (dicc.models.check_forward)
        check_model_spec(cfg.model.name, cfg.model.width, cfg.model.pretrained)
    _number(cfg.model.dropout, "model.dropout", 0.0, 1.0, open_hi=True)
    _check_method(cfg)
    from .distributed import resolve_device
    from .precision import resolve_precision

    dev = device if device is not None else resolve_device(cfg.train.device)
    resolve_precision(cfg.train.amp, cfg.train.channels_last, dev)


__all__ = ["OPTIMIZERS", "SCHEDULES", "check_config", "check_shot_thresholds"]
