"""What one training run is made of (data, strategy, model, precision, optimizer, augmentation,
and where the loop stands), built once for a fresh run and restored from a checkpoint for a
resumed one. The loop that trains it is :mod:`dicc.engine`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .checkpoint import state_dict_mismatch
from .config import Config
from .data.build import RunData, build_run_data
from .distill import with_distillation
from .data.transforms import BatchAugment, normalize, resolve_normalization
from .ema import ModelEMA
from .models import FER_NORMALIZATION, adapt_model, check_forward, create_model, default_normalization
from .precision import Precision, resolve_precision
from .schedule import make_optimizer
from .seeds import derive_seed
from .strategies import Strategy, create_strategy
from .strategies.posthoc import with_posthoc
from .training_state import load_on_rank0, training_state


@dataclass
class TrainingRun:
    """What one training run is made of: built once by :func:`build_run`, then trained."""

    cfg: Config
    dinfo: distributed.DistInfo
    data: RunData
    strategy: Strategy
    judged: Strategy  # the strategy as validation and test see it (with post-hoc adjustment)
    model: nn.Module
    mean: tuple
    std: tuple
    precision: Precision
    optimizer: torch.optim.Optimizer
    scaler: object
    augment: BatchAugment
    ema: ModelEMA | None = None  # the moving average of the weights (train.ema), evaluated instead of `model`
    start_epoch: int = 0
    step: int = 0  # optimiser steps taken
    best: float | None = None
    best_epoch: int | None = None  # the (1-based) epoch of `best` (train.early_stop counts from it)
    stopped_epoch: int | None = None  # the (1-based) epoch after which train.early_stop ended training
    ddp_model: nn.Module | None = None

    @property
    def train(self):
        return self.data.train

    @property
    def evaluated_model(self) -> nn.Module:
        """What validation, the test and the checkpoints' ``model`` hold: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def batches_per_epoch(self) -> int:
        per_rank = -(-len(self.train) // self.dinfo.world_size)
        bs = self.cfg.train.batch_size
        return per_rank // bs if per_rank >= bs else 1

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per epoch: one per ``train.accumulate`` batches, the last group of an
        epoch whose batch count is not a multiple of it stepping on its own (smaller) group."""
        return -(-self.batches_per_epoch // self.cfg.train.accumulate)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.train.epochs

    def state_dict(self, epoch: int, rank_states: list[dict] | None = None) -> dict:
        """The training checkpoint after ``epoch`` epochs (:func:`dicc.training_state.training_state`);
        :func:`restore` is its inverse."""
        return training_state(self, epoch, rank_states)

    def eval_kw(self) -> dict:
        return dict(
            batch_size=self.cfg.train.eval_batch_size,
            device=self.dinfo.device,
            mean=self.mean,
            std=self.std,
            precision=self.precision,
            rank=self.dinfo.rank,
            world_size=self.dinfo.world_size,
        )


def _build_model(cfg: Config, strategy, train, device, user_model: nn.Module | None):
    """``(model on device, its default normalisation)``: a copy of the user's module behind the
    seam, or ``model.name``; with the strategy's outputs, head type and projection head."""
    if user_model is not None:  # a copy is trained: the caller's module is left as it was
        model = adapt_model(copy.deepcopy(user_model), strategy.num_outputs, strategy.head_type).to(device)
        norm_default = FER_NORMALIZATION
    else:
        model = create_model(
            cfg.model.name,
            strategy.num_outputs,
            in_channels=train.channels,
            width=cfg.model.width,
            head_type=strategy.head_type,
            dropout=cfg.model.dropout,
            pretrained=cfg.model.pretrained,
            image_size=train.image_size,
        ).to(device)
        norm_default = default_normalization(cfg.model.name, cfg.model.pretrained)
    if strategy.projection_dim:  # a contrastive term's projection head, trained with the model
        model.set_projection(strategy.projection_dim)
        model.projector.to(device)
    model.input_shape = (train.channels, train.image_size)  # what dicc.evaluate checks data against
    return model, norm_default


def build_run(
    cfg: Config, dinfo: distributed.DistInfo, data: RunData | None, user_model: nn.Module | None
) -> TrainingRun:
    """Seed, data, strategy, model, normalisation, precision, optimizer and augmentation, in
    this order (the order the random streams are drawn in)."""
    device = dinfo.device
    torch.manual_seed(cfg.train.seed)
    data = data if data is not None else build_run_data(cfg.data)
    train = data.train
    strategy = create_strategy(
        cfg.method.name, train.class_counts(), cfg.method.options, class_names=list(train.class_names)
    )
    strategy.set_label_smoothing(cfg.train.label_smoothing)
    if cfg.distill.teacher:  # the teachers' targets on the training images, before the student exists
        strategy = with_distillation(
            strategy,
            cfg.distill,
            train,
            run_dir=Path(cfg.train.out) if dinfo.is_main else None,
            batch_size=cfg.train.eval_batch_size,
            device=device,
            precision=resolve_precision(cfg.train.amp, cfg.train.channels_last, device),
        )
    judged = with_posthoc(strategy, cfg.eval.logit_adjust)
    model, norm_default = _build_model(cfg, strategy, train, device, user_model)
    mean, std = resolve_normalization(cfg.augment.mean, cfg.augment.std, train.channels, norm_default)
    if user_model is not None:  # a model that cannot take the data fails now, in one line
        check_forward(model, normalize(train.get_batch(range(min(2, len(train)))).to(device), mean, std))
    precision = resolve_precision(cfg.train.amp, cfg.train.channels_last, device, model.convolutional)
    precision.prepare_model(model)
    ema = ModelEMA(model, cfg.train.ema) if cfg.train.ema is not None else None
    optimizer = make_optimizer(cfg.optim, model.parameters())
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    augment = BatchAugment(cfg.augment, seed=derive_seed(cfg.train.seed, "augment", dinfo.rank), mean=mean, std=std)
    return TrainingRun(
        cfg, dinfo, data, strategy, judged, model, mean, std, precision, optimizer, scaler, augment, ema=ema
    )


def restore(run: TrainingRun, path: Path) -> None:
    """Continue from the checkpoint at ``path``: weights (the trained ones and their moving
    average), method, optimizer, and every rank's random streams and per-rank method state."""
    dinfo = run.dinfo
    ckpt = load_on_rank0(path, dinfo)
    try:
        if run.ema is not None:  # the checkpoint's `model` is the average, `raw_model` the trained weights
            run.model.load_state_dict(ckpt["raw_model"])
            run.ema.module.load_state_dict(ckpt["model"])
        else:
            run.model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError):
        weights = ckpt.get("raw_model", ckpt["model"]) if run.ema is not None else ckpt["model"]
        raise ValueError(f"{path}: does not fit this run's model ({state_dict_mismatch(run.model, weights)})") from None
    try:
        run.strategy.load_state_dict(ckpt["strategy"]["state"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: does not fit this run's method/optimizer ({str(err).splitlines()[0]})") from None
    if run.scaler is not None and "scaler" in ckpt:
        run.scaler.load_state_dict(ckpt["scaler"])
    own = {"augment": ckpt["augment"], "rng": ckpt["rng"]["torch"]} if dinfo.rank == 0 else None
    if len(ckpt.get("rank_states") or []) == dinfo.world_size:
        own = ckpt["rank_states"][dinfo.rank]
    if own is not None:  # (a rank the checkpoint has no state for keeps its fresh seeds)
        run.augment.load_state_dict(own["augment"])
        torch.set_rng_state(own["rng"])
        run.strategy.load_rank_state_dict(own.get("strategy") or {})
    run.start_epoch, run.step, run.best = ckpt["epoch"], ckpt["step"], ckpt["best_val"]
    run.best_epoch, run.stopped_epoch = ckpt.get("best_epoch"), ckpt.get("early_stop_epoch")


__all__ = ["TrainingRun", "build_run", "restore"]
