"""Inference over a :class:`~dicc.data.base.FERDataset`: features, parent logits, metrics.

Eval mode, no augmentation, batched, sharded across DDP ranks where asked; the model's
train/eval mode is left as it was. ``tta`` averages the class probabilities over test-time views
(:func:`dicc.data.transforms.tta_views`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .data.base import FERDataset
from .data.loader import iterate_batches
from .data.transforms import normalize, tta_views
from .metrics import DEFAULT_SHOT_THRESHOLDS, metrics_from_logits
from .precision import Precision
from .strategies import Strategy


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


@contextmanager
def _evaluating(model: nn.Module):
    """The unwrapped model in eval mode for the block; its train/eval mode restored after."""
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def _fp32(device: torch.device) -> Precision:
    return Precision(torch.device(device).type)


@torch.no_grad()
def _forward_shard(
    model: nn.Module,
    ds: FERDataset,
    indices: torch.Tensor,
    batch_size: int,
    device: torch.device,
    mean: float,
    std: float,
    precision: Precision | None,
    fn,
    tta: str = "none",
) -> torch.Tensor:
    """``fn`` of every normalised batch; with ``tta`` (logits only) the log of the class
    probabilities averaged over the test-time views (:func:`dicc.data.transforms.tta_views`)."""
    prec = precision or _fp32(device)
    outs = []
    for x, _, _ in iterate_batches(ds, indices, batch_size):
        x = x.to(device, non_blocking=True)
        views = tta_views(x, tta)
        with prec.autocast():
            out = [fn(prec.prepare_input(normalize(v, mean, std))).float() for v in views]
        outs.append(out[0] if len(out) == 1 else torch.stack([o.softmax(1) for o in out]).mean(0).log())
    if not outs:  # an empty shard (fewer samples than ranks): an empty batch keeps the trailing shape
        x = torch.zeros(0, ds.channels, ds.image_size, ds.image_size, dtype=torch.uint8, device=device)
        outs.append(fn(normalize(x, mean, std)).float())
    return torch.cat(outs)


@torch.no_grad()
def extract_features(
    model: nn.Module,
    ds: FERDataset,
    *,
    batch_size: int = 512,
    device=None,
    mean: float = 0.5,
    std: float = 0.25,
    precision: Precision | None = None,
    rank: int = 0,
    world_size: int = 1,
    indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised penultimate features of every image of ``ds`` (eval mode, no
    augmentation), ordered by dataset index (only those of ``indices``, in that order, if
    given); under DDP each rank computes its shard and the result is gathered so every rank
    holds all of it."""
    with _evaluating(model) as net:
        device = device or next(net.parameters()).device
        subset = torch.arange(len(ds)) if indices is None else torch.as_tensor(indices).long().cpu()
        pos = distributed.eval_shard(len(subset), rank, world_size)
        feats = _forward_shard(net, ds, subset[pos], batch_size, device, mean, std, precision, net.features)
        feats = F.normalize(feats, dim=1)
        feats = distributed.gather_by_index(feats, pos.to(device), len(subset))
    return feats, ds.labels[subset].to(device)


@torch.no_grad()
def predict_parent_logits(
    model: nn.Module,
    strategy: Strategy,
    ds: FERDataset,
    *,
    batch_size: int = 512,
    device=None,
    mean: float = 0.5,
    std: float = 0.25,
    precision: Precision | None = None,
    indices: torch.Tensor | None = None,
    tta: str = "none",
) -> torch.Tensor:
    """Parent-class logits ``[len(indices), num_classes]`` (what evaluation sees); with ``tta``
    the log of the probabilities averaged over the test-time views."""
    with _evaluating(model) as net:
        device = device or next(net.parameters()).device
        idx = torch.arange(len(ds)) if indices is None else indices
        return _forward_shard(
            net,
            ds,
            idx,
            batch_size,
            device,
            mean,
            std,
            precision,
            lambda x: strategy.parent_logits(net(x).float()),
            tta,
        )


def evaluate(
    model: nn.Module,
    strategy: Strategy,
    ds: FERDataset,
    *,
    batch_size: int = 512,
    device=None,
    mean: float = 0.5,
    std: float = 0.25,
    precision: Precision | None = None,
    rank: int = 0,
    world_size: int = 1,
    tta: str = "none",
    train_counts=None,
    shot_thresholds=DEFAULT_SHOT_THRESHOLDS,
) -> dict:
    """Metrics of ``model`` on all of ``ds`` (:func:`dicc.metrics.metrics_from_logits`: the
    confusion-matrix metrics, top-2 accuracy, the calibration error, and the many / medium /
    few-shot accuracies given the training class counts ``train_counts``), from the parent logits
    of one pass over the split (under DDP each rank scores its shard and the logits are gathered,
    so every rank computes the same numbers from all of them); ``tta``: none, flip or crops
    (probabilities averaged over test-time views)."""
    idx = distributed.eval_shard(len(ds), rank, world_size)
    logits = predict_parent_logits(
        model,
        strategy,
        ds,
        batch_size=batch_size,
        device=device,
        mean=mean,
        std=std,
        precision=precision,
        indices=idx,
        tta=tta,
    )
    if world_size > 1 and distributed.active():  # (a rank's path run alone, without a group: its shard's)
        logits = distributed.gather_by_index(logits, idx.to(logits.device), len(ds))
        idx = torch.arange(len(ds))
    return metrics_from_logits(
        logits.cpu(), ds.labels[idx], ds.class_names, train_counts=train_counts, shot_thresholds=shot_thresholds
    )


# ---------------------------------------------------------------------------------------------


__all__ = ["evaluate", "extract_features", "predict_parent_logits"]
