"""What a training checkpoint holds, and how ranks load one: the engine's side of
:mod:`dicc.checkpoint` (which saves, loads and checks the files)."""

from __future__ import annotations

from pathlib import Path

import torch

from . import distributed
from .checkpoint import FORMAT, VERSION, load_checkpoint
from .config import Config
from .data.base import FERDataset
from .rundir import environment
from .strategies import Strategy


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _projection(model) -> dict:
    """The model spec's ``projection_dim`` when the model has a projection head (contrastive)."""
    dim = getattr(_unwrap(model), "projection_dim", None)
    return {"projection_dim": dim} if dim else {}


def _weights(model) -> dict:
    """fp32, in the standard memory format, whatever the run computed in."""
    return {
        k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
        for k, v in _unwrap(model).state_dict().items()
    }


def rank_states(augment, strategy: Strategy, dinfo: distributed.DistInfo) -> list[dict]:
    """Every rank's augmentation, torch RNG and per-rank strategy state (collective), so a
    resumed run continues each rank's random streams and state exactly."""
    return distributed.all_gather_object(
        {"augment": augment.state_dict(), "rng": torch.get_rng_state(), "strategy": strategy.rank_state_dict()}
    )


def training_state(run, epoch: int, rank_states: list[dict] | None = None) -> dict:
    """The checkpoint dict of the :class:`~dicc.training_run.TrainingRun` ``run`` after ``epoch``
    epochs (``rank_states``: every rank's, from :func:`rank_states`). ``model`` holds the
    weights the run evaluates (the moving average's with ``train.ema``: so ``best.pt`` and every
    consumer of a checkpoint, ``dicc evaluate``/``export``/``predict``/``rebalance``, use them),
    and ``raw_model`` the trained weights when they differ (what a resume continues training)."""
    cfg, strategy, ema_model = run.cfg, run.strategy, run.ema.module if run.ema is not None else None
    return {
        "format": FORMAT,
        "version": VERSION,
        "epoch": epoch,
        "step": run.step,
        "best_val": run.best,
        "best_epoch": run.best_epoch,
        "early_stop_epoch": run.stopped_epoch,
        "config": cfg.to_dict(),
        "class_names": list(run.train.class_names),
        "class_counts": run.train.class_counts(),
        "model": _weights(ema_model if ema_model is not None else run.model),
        **({"raw_model": _weights(run.model)} if ema_model is not None else {}),
        "model_spec": _model_spec(cfg, strategy, run.train, run.model),
        "normalization": _normalization(cfg, run.train, (run.mean, run.std)),
        "strategy": {"name": strategy.name, "options": cfg.method.options, "state": strategy.state_dict()},
        "optimizer": run.optimizer.state_dict(),
        "augment": run.augment.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "environment": environment(run.precision),
        **({"scaler": run.scaler.state_dict()} if run.scaler is not None else {}),
        **({"rank_states": rank_states} if rank_states else {}),
    }


def _model_spec(cfg: Config, strategy: Strategy, train: FERDataset, model) -> dict:
    """What :func:`dicc.checkpoint.model_from_checkpoint` rebuilds the model from."""
    return {
        "name": cfg.model.name,
        "width": cfg.model.width,
        "num_outputs": strategy.num_outputs,
        "head_type": strategy.head_type,
        "in_channels": train.channels,
        "image_size": train.image_size,
        "dropout": cfg.model.dropout,
        **_projection(model),
    }


def _normalization(cfg: Config, train: FERDataset, normalization: tuple | None) -> dict:
    """The input normalisation (and image size, channels) prediction applies as training did."""
    mean, std = normalization or (cfg.augment.mean, cfg.augment.std)
    return {"mean": mean, "std": std, "image_size": train.image_size, "channels": train.channels}


def load_on_rank0(path: Path, dinfo: distributed.DistInfo, keys: tuple[str, ...] | None = None) -> dict:
    """Rank 0 loads the checkpoint at ``path`` (only ``keys`` of it, if given) and sends it to
    the other ranks, which need no access to the file."""
    ckpt, err = None, None
    if dinfo.is_main:
        try:
            ckpt = load_checkpoint(path, map_location="cpu")
            missing = [k for k in (keys or ()) if k not in ckpt]
            if missing:
                raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)} (not written by dicc's training?)")
            if keys is not None:
                ckpt = {k: ckpt[k] for k in keys}
        except Exception as e:  # noqa: BLE001 - re-raised on every rank
            err = e
    distributed.raise_if_any(err)
    return distributed.broadcast_object(ckpt)


__all__ = ["load_on_rank0", "rank_states", "training_state"]
