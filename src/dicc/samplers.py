"""Per-epoch index orders: seeded by ``(seed, epoch)``, identical on every rank, then sharded
across ranks (:func:`shard`). Every strategy's ``epoch_indices`` goes through here, so under
torchrun each rank visits its own part of one common order and all ranks take equally many
steps."""

from __future__ import annotations

import torch

from .seeds import derive_seed


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, "order", epoch))


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``indices`` (the epoch's order, identical on every rank): padded
    by wrapping around to ``ceil(n / world_size) * world_size`` entries so every rank gets the
    same number (as ``DistributedSampler`` does; DDP needs equal step counts), then strided.

    The shards cover ``indices`` and are disjoint except for the fewer than ``world_size``
    padding entries, which repeat the first entries of the order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    if world_size == 1:
        return indices
    n = len(indices)
    if n == 0:
        return indices
    per_rank = -(-n // world_size)
    total = per_rank * world_size
    if total > n:  # (may wrap more than once when n < world_size)
        indices = indices.repeat(-(-total // n))[:total]
    return indices[rank:total:world_size]


def shuffled_indices(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    perm = torch.randperm(n, generator=epoch_generator(seed, epoch))
    return shard(perm, rank, world_size)


def weighted_indices(
    labels: torch.Tensor,
    class_weights: torch.Tensor,
    epoch: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_samples: int | None = None,
) -> torch.Tensor:
    """Draw ``num_samples`` (default: dataset size) indices with replacement, each sample's
    probability proportional to its class weight; the same draw on every rank, then sharded."""
    n = num_samples or len(labels)
    w = class_weights.double()[labels]
    draw = torch.multinomial(w, n, replacement=True, generator=epoch_generator(seed, epoch))
    return shard(draw, rank, world_size)


def group_sampling_weights(groups: torch.Tensor, num_groups: int, power: float = 1.0) -> torch.Tensor:
    """Per-group weight of one *sample* for :func:`weighted_indices`: ``n_g^{-power}`` for a group
    (class or sub-class) of ``n_g`` samples, 0 for an empty one. ``power=1``: every group is drawn
    equally often (class-aware sampling); ``power=0.5``: group frequencies ~ ``sqrt(n_g)``."""
    counts = torch.bincount(torch.as_tensor(groups).long().cpu(), minlength=num_groups).double()
    return torch.where(counts > 0, counts.clamp_min(1.0).pow(-power), torch.zeros_like(counts))
