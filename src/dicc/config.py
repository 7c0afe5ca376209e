"""Run configuration: nested dataclasses, loaded from YAML and dotted ``key=value`` overrides.

Unknown keys are errors that list the valid ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

#: test-time augmentations (``eval.tta``, ``--tta``): the image alone, with its mirror, or 10 crops
TTA_MODES = ("none", "flip", "crops")


@dataclass
class DataConfig:
    path: str | None = None  # dataset root or CSV; None = the built-in synthetic data
    format: str = "auto"  # fer2013_csv, fer2013_folders, imagefolder, rafdb, auto
    classes: Any = None  # label space: None/"emotions7" (canonical 7), "emotions8" (+ contempt),
    # or a list of class names
    train_split: str = "train"
    val: str | None = "holdout"  # "holdout" (drawn from train), a split name, or None
    val_fraction: float = 0.1  # share of each training class held out when val=holdout
    test_split: str | None = "test"  # evaluated once at the end (final.json); None to skip
    longtail: Any = None  # preset name, "exp:IF", "step:IF", list/dict of counts
    subset_seed: int = 0  # seed of the hold-out and long-tail draws
    image_size: Any = 48  # pixels, or "auto": the pretrained weights' input size (else 48)
    channels: int = 1
    cache_dir: str | None = None
    workers: int = 0  # loader processes for streamed (large-image) datasets


@dataclass
class AugmentConfig:
    crop_padding: int = 4  # random crop after edge padding (pixels)
    flip: bool = True  # random horizontal flip
    brightness: float = 0.0  # +- relative brightness jitter
    contrast: float = 0.0  # +- relative contrast jitter
    erase: float = 0.0  # probability of random erasing (one rectangle)
    rotate: float = 0.0  # random rotation, uniform in +- degrees
    scale: float = 0.0  # random zoom, uniform in 1 +- scale
    mixup: float = 0.0  # mixup alpha (Zhang et al. 2018): lambda ~ Beta(alpha, alpha); 0 = off
    mean: Any = "auto"  # normalisation (x/255 - mean) / std: a number, one per channel, or auto
    std: Any = "auto"  # (auto: 0.5 / 0.25 for the compact CNNs, the weights' own for timm/torchvision)


@dataclass
class ModelConfig:
    name: str = "vgg_fer"
    width: int | None = None  # channel width (vgg_fer: 32 when null; resnet18: 64 only)
    dropout: float = 0.0
    pretrained: str | None = None  # "imagenet" (timm/torchvision, downloaded and cached) or a local weights file


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd or adamw
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle, cosine, step or constant (dicc.schedule)
    warmup_fraction: float = 0.15  # one-cycle rise / cosine and step linear warm-up share
    milestones: Any = None  # schedule step: epochs at which the lr is multiplied by gamma, e.g. [30, 40]
    gamma: float = 0.1  # schedule step: the factor at each milestone
    nesterov: bool = True  # sgd: Nesterov momentum


@dataclass
class MethodConfig:
    name: str = "ce"
    options: dict = field(default_factory=dict)  # validated by the strategy's Options


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 512
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    amp: str = "auto"  # auto, on, off: bf16 (fp16 + scaler on GPUs without bf16) where it pays
    channels_last: str = "auto"  # auto, on, off: NHWC tensors for convolutional models (dicc.precision)
    threads: int | None = None  # torch CPU threads (None: library default)
    label_smoothing: float = 0.0  # mass spread over all classes in every loss (Szegedy et al. 2016)
    ema: float | None = None  # decay of an exponential moving average of the weights (None: off), e.g. 0.999
    grad_clip: float | None = None  # maximum gradient norm (clip_grad_norm_; None: no clipping)
    accumulate: int = 1  # micro-batches per optimiser step (effective batch: batch_size x accumulate x processes)
    early_stop: int | None = None  # patience: stop after this many epochs without a better val mean class acc
    progress: bool = True
    log: str = "none"  # none, tensorboard, mlflow or wandb (dicc.loggers; RUN/<name>; extra dicc[track])
    out: str = "runs/default"

    def __post_init__(self) -> None:
        from .precision import normalize_choice

        self.amp = normalize_choice(self.amp, "train.amp")
        self.channels_last = normalize_choice(self.channels_last, "train.channels_last")


@dataclass
class EvalConfig:
    logit_adjust: float | None = None  # post-hoc logit adjustment of any method: parent logits - tau log prior
    tta: str = "none"  # test-time augmentation: none, flip (2 views) or crops (10 views)
    # [many, few]: many-shot classes have more than `many` training images, few-shot fewer than
    # `few`, medium-shot the rest (dicc.metrics.shot_groups; the default splits FER2013-LT 3/2/2)
    shot_thresholds: Any = field(default_factory=lambda: [1500, 200])


@dataclass
class DistillConfig:
    teacher: Any = None  # checkpoints / run directories (or "default") to distil from; None = off
    tta: str = "crops"  # the teachers' test-time views on each training image (none, flip, crops)
    temperature: float = 2.0  # softening of teacher and student probabilities (Hinton et al. 2015)
    weight: float = 0.7  # share of the distillation term; 1 - weight goes to the method's own loss
    # where the teachers' targets come from: "images" (each training image once, with the views
    # of tta, before training; cached) or "augmented" (the teachers score every training batch as
    # the student sees it, augmented and mixed: one teacher forward per step, tta ignored)
    targets: str = "images"

    def __post_init__(self) -> None:
        if isinstance(self.teacher, str):  # one teacher
            self.teacher = [self.teacher]


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: keys that cannot change a run's numbers: a resumed run may set them anew (all others must
#: equal the run's own ``config.yaml``)
INCIDENTAL_KEYS = frozenset(
    {
        "train.out",
        "train.progress",
        "train.threads",
        "train.eval_batch_size",
        "train.log",
        "data.workers",
        "data.cache_dir",
    }
)


def resolve_paths(cfg: "Config") -> "Config":
    """``data.path`` (and a local ``model.pretrained`` file) made absolute and resolved, in place,
    so that a run records where its data is: ``dicc evaluate``, ``rebalance``, ``subclasses`` and
    ``--resume`` then find it from any working directory. Returns ``cfg``."""
    if cfg.data.path is not None:
        cfg.data.path = str(Path(cfg.data.path).expanduser().resolve())
    weights = cfg.model.pretrained
    if weights and weights != "imagenet" and Path(weights).expanduser().exists():
        cfg.model.pretrained = str(Path(weights).expanduser().resolve())
    return cfg


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; ``method.options`` stays one value (a dict)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not (prefix + k).startswith("method.options"):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_differences(saved: "Config", new: "Config", ignore=INCIDENTAL_KEYS) -> list[str]:
    """Dotted keys whose values differ between two configs (``ignore``-d keys left out)."""
    a, b = flatten(saved.to_dict()), flatten(new.to_dict())
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _scalar_type(tp: Any) -> type | None:
    """``int`` for ``int`` and ``int | None``; None for anything that is not a plain scalar."""
    args = [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
    tp = args[0] if len(args) == 1 else tp
    return tp if tp in (bool, int, float, str) else None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce YAML/CLI values to the field's declared scalar type."""
    base = _scalar_type(tp)
    if value is None or base is None:
        return value
    if isinstance(value, (dict, list)):
        raise ValueError(f"{key}: expected {base.__name__}, got {value!r} (quote values that hold ': ' or '[')")
    if base is bool:
        if isinstance(value, bool):
            return value
        low = str(value).lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: expected a boolean, got {value!r}")
    try:
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected {base.__name__}, got {value!r}") from None
    return str(value) if base is str else value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = prefix.rstrip(".") or "config"
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if _is_dataclass_type(tp):
            kwargs[name] = from_dict(tp, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def yaml_error_line(err: yaml.YAMLError) -> str:
    """A YAML parser error in one line: where (1-based line and column) and what, e.g. ``line 4,
    column 1: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence from
    line 3, column 8)``."""
    problem = getattr(err, "problem", None)
    if not problem:
        return " ".join(str(err).split())
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and cmark is not None:
        context = f"{context} from line {cmark.line + 1}, column {cmark.column + 1}"
    return f"{where}{problem}" + (f" ({context})" if context else "")


def _parse_value(text: str) -> Any:
    """A YAML value; numbers YAML 1.1 leaves as strings (``5e-1``, ``1e3``) become floats."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity") else value
        except ValueError:
            return value
    return value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {p} is not a section")
        node[parts[-1]] = _parse_value(value)
    return raw


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options" else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None) -> Config:
    """Defaults <- ``base`` (e.g. a run's saved config) <- YAML file <- dotted overrides,
    validated into a :class:`Config`."""
    raw: dict = copy.deepcopy(base) if base else {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {yaml_error_line(err)}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        raw = _merge(raw, loaded)
    raw = apply_overrides(raw, overrides or [])
    return from_dict(Config, raw)


def config_yaml(cfg: Config) -> str:
    """The config as the YAML a run directory's ``config.yaml`` holds."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``config_yaml(cfg)`` to ``path`` atomically."""
    from .atomic import write_text_atomic

    write_text_atomic(path, config_yaml(cfg))
