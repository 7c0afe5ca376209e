"""The Strategy interface: everything that differs between imbalance methods.

The engine never branches on a method's name. It asks the strategy for
- ``num_outputs`` (the head size; DICC's is the number of sub-classes) and ``head_type``,
- ``epoch_indices`` (the training order for one epoch on one rank: shuffle or resampling),
- ``on_epoch_start(ctx)`` (DRW's switch, DICC's re-clustering),
- ``loss(logits, targets, indices)`` (``indices`` are dataset indices, for pseudo-labels), and
  with ``views`` / ``projection_dim`` / ``embedding_loss`` a representation term on several
  augmented views (DICC's contrastive option),
- ``parent_logits(logits)`` (what evaluation, prediction and export see: always one column per
  class), and
- ``state_dict()`` / ``load_state_dict()`` (checkpoints; plain tensors and numbers only).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from ..data.classes import EMOTIONS
from ..distributed import gather_by_index


def _raise_own(err: BaseException | None) -> None:
    if err is not None:
        raise err


@dataclass
class EpochContext:
    """What the engine hands a strategy at the start of each epoch."""

    epoch: int  # 0-based index of the epoch about to run
    epochs: int  # total number of epochs
    model: nn.Module  # the unwrapped model: .features(x), .head
    device: torch.device
    # L2-normalised penultimate features of *all* training images (eval mode, no
    # augmentation), ordered by dataset index and identical on every rank, with their labels;
    # called with a tensor of dataset indices: only those images, in that order (collective)
    extract_features: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    log: Callable[[dict], None] = lambda record: None  # adds a record to metrics.jsonl
    rank: int = 0
    world_size: int = 1
    broadcast: Callable[[torch.Tensor, int], torch.Tensor] = lambda t, src=0: t  # in-place, returns t
    # ``gather(values [m, ...], indices [m], n) -> [n, ...]``: the rows every rank holds for its
    # dataset indices, assembled into one tensor identical on every rank (zeros where no rank
    # has a row); the engine passes dicc.distributed.gather_by_index (collective under DDP)
    gather: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] = gather_by_index
    # ``check(err)``: collective error check (every rank passes what it hit, or None; all raise
    # if any did), so that a rank failing alone (e.g. rank 0's clustering) leaves none waiting
    check: Callable[[BaseException | None], None] = _raise_own
    # the training optimizer (a strategy that rewrites parameters in place keeps its per-parameter
    # state consistent, e.g. DICC's head split); None outside training
    optimizer: torch.optim.Optimizer | None = None
    # ``lr(e)``: the scheduled learning rate at the start of 0-based epoch ``e`` (e.g. for a
    # strategy that switches phase when the schedule has annealed)
    lr: Callable[[int], float] = lambda epoch: float("nan")
    # the moving average of the weights (``train.ema``; None without): a copy of ``model`` that is
    # evaluated instead of it and never trained, so an in-place rewrite of the model applies to it too
    averaged: nn.Module | None = None

    def copy_head_rows(self, pairs, bias_add: dict | None = None) -> None:
        """Rewrite the head in place: row ``src`` copied to ``dst`` for each pair (with the
        optimizer's per-row state), ``bias_add[j]`` added to bias ``j`` (dicc.models.copy_head_rows);
        the same rewrite of the moving average's head, if there is one."""
        from ..models import copy_head_rows

        copy_head_rows(self.model.head, pairs, bias_add, self.optimizer)
        if self.averaged is not None:
            copy_head_rows(self.averaged.head, pairs, bias_add)


def option(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING):
    """A field of a strategy's ``Options`` dataclass with its one-line ``help`` (what ``dicc
    methods -v`` prints for it, from ``field.metadata["help"]``)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


def option_help(options_cls: type) -> dict[str, str]:
    """``{option: one-line help}`` of a strategy's ``Options`` dataclass ("" where none is given)."""
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(options_cls)}


@dataclass
class NoOptions:
    pass


class Strategy:
    """Base class; the default behaviour is plain cross-entropy on shuffled data."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(
        self, class_counts: Sequence[int], options: Any = None, class_names: Sequence[str] | None = None
    ) -> None:
        self.class_counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
        if class_names is None and len(self.class_counts) == len(EMOTIONS):
            class_names = EMOTIONS
        #: class names for messages and logs (defaults: the canonical emotions for 7 classes)
        self.class_names: list[str] | None = list(class_names) if class_names is not None else None
        if self.class_names is not None and len(self.class_names) != len(self.class_counts):
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {len(self.class_counts)} counts")
        if (self.class_counts <= 0).any():
            empty = [self.class_name(i) for i, c in enumerate(self.class_counts.tolist()) if c <= 0]
            raise ValueError(
                f"{self.name}: the training data has no samples of {', '.join(empty)} (every class of "
                f"the label space needs some; counts: {self.format_counts()})"
            )
        self.options = options if options is not None else self.Options()
        #: label smoothing of every training loss (``train.label_smoothing``; set_label_smoothing)
        self.label_smoothing = 0.0

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise ``ValueError`` where this method's options (``cfg.method.options``, the plain
        mapping) clash with the rest of the run config ``cfg`` (called by
        :func:`dicc.validate.check_config`); the default has no such rule."""

    def set_label_smoothing(self, eps: float) -> None:
        """Spread ``eps`` of each target's mass over all classes in every training loss."""
        eps = float(eps)
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"train.label_smoothing must lie in [0, 1), got {eps}")
        self.label_smoothing = eps
        for loss in self.loss_modules():
            loss.label_smoothing = eps

    def loss_modules(self) -> list:
        """The :class:`dicc.losses.ImbalanceLoss` modules the training loss uses (for options
        that apply to all of them, such as label smoothing)."""
        return []

    def class_name(self, c: int) -> str:
        return self.class_names[c] if self.class_names is not None else f"class {c}"

    def format_counts(self) -> str:
        return ", ".join(f"{self.class_name(i)}={int(n)}" for i, n in enumerate(self.class_counts.tolist()))

    # -- shape of the model -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    head_type: ClassVar[str] = "linear"  # "linear" or "cosine" (normalised, LDAM)

    @property
    def log_prior(self) -> torch.Tensor:
        return (self.class_counts / self.class_counts.sum()).log().float()

    # -- training ------------------------------------------------------------------------
    def epoch_indices(
        self, labels: torch.Tensor, epoch: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> torch.Tensor:
        """Dataset indices this rank visits in ``epoch`` (seeded, disjoint across ranks)."""
        from ..samplers import shuffled_indices

        return shuffled_indices(len(labels), epoch, seed, rank, world_size)

    def on_epoch_start(self, ctx: EpochContext) -> None:
        pass

    @property
    def wants_features(self) -> bool:
        """Whether the engine should hand this batch's penultimate features to
        :meth:`observe_features` (asked before every training forward)."""
        return False

    def observe_features(self, features: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        """The penultimate features of a training batch (its dataset ``indices``), detached."""

    def observe_inputs(self, x: torch.Tensor, mean, std) -> None:
        """The training batch as the model gets it (augmented, mixed, normalised with ``mean`` /
        ``std``), before its forward; e.g. for a teacher that scores the same views."""

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    #: augmented views of every training image per step (2 for a contrastive term); the engine
    #: stacks them, and ``loss`` / ``embedding_loss`` get the targets and indices repeated per view
    views: int = 1
    #: size of a projection head the model needs for :meth:`embedding_loss` (None: none)
    projection_dim: int | None = None

    def embedding_loss(self, z: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor | None:
        """A loss on the projected embeddings ``z`` of the step's views (see ``projection_dim``),
        added to :meth:`loss`; None (the default) when the strategy has none."""
        return None

    # -- evaluation ----------------------------------------------------------------------
    def parent_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    # -- second stages (dicc.rebalance) and the sub-class gallery ----------------------------
    def head_groups(self) -> list[range] | None:
        """The head rows of each class when a class may own several (DICC's sub-classes), else
        None (row ``c`` is class ``c``)."""
        return None

    def subclasses(self) -> tuple[torch.Tensor, Any] | None:
        """``(sub-class of every training sample, SubclassPlan)`` when the method has split the
        classes (DICC after its warm-up), else None."""
        return None

    # -- presentation and the run directory -------------------------------------------------
    def describe(self) -> str | None:
        """A few lines for the training log (e.g. DICC's sub-class plan), or None."""
        return None

    def run_files(self) -> dict[str, dict]:
        """Extra JSON files for the run directory: ``{file name: record}`` (e.g. DICC's
        ``subclass_plan.json``), written when training starts."""
        return {}

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {}

    def rank_state_dict(self) -> dict:
        """State that differs between DDP ranks (saved for every rank; default none)."""
        return {}

    def load_rank_state_dict(self, state: dict) -> None:
        pass

    def load_state_dict(self, state: dict) -> None:
        pass


_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available_strategies() -> dict[str, type[Strategy]]:
    from . import _load_all  # noqa: F401  (registers the built-in strategies)

    return dict(sorted(_REGISTRY.items()))


def build_options(cls: type[Strategy], options: dict | None) -> Any:
    """Turn a plain dict into ``cls.Options``; unknown keys are an error listing valid ones."""
    from ..config import _coerce

    options = dict(options or {})
    fields = {f.name: f for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        valid = ", ".join(sorted(fields)) or "(none)"
        raise ValueError(f"method {cls.name!r}: unknown option(s) {', '.join(unknown)}; valid: {valid}")
    hints = typing.get_type_hints(cls.Options)
    for key, value in options.items():  # a value of another type fails naming its key (values are kept as given)
        _coerce(value, hints.get(key), f"method.options.{key}")
    return cls.Options(**options)


def create_strategy(
    name: str, class_counts: Sequence[int], options: dict | None = None, class_names: Sequence[str] | None = None
) -> Strategy:
    """The strategy ``name`` for training data with ``class_counts`` (and ``class_names``, for
    messages: default the canonical emotions when there are 7 classes)."""
    strategies = available_strategies()
    if name not in strategies:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(strategies)}")
    cls = strategies[name]
    return cls(class_counts, build_options(cls, options), class_names=class_names)
