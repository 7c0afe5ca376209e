"""Per-epoch index orders: seeded, identical on every rank, sharded disjointly across ranks."""
from __future__ import annotations

import torch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``indices``: padded by wrapping so every rank gets the same
    number (as ``DistributedSampler`` does), then strided."""
    if world_size == 1:
        return indices
    n = len(indices)
    per_rank = -(-n // world_size)
    total = per_rank * world_size
    if total > n:
        indices = torch.cat([indices, indices[: total - n]])
    return indices[rank:total:world_size]


def shuffled_indices(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    perm = torch.randperm(n, generator=epoch_generator(seed, epoch))
    return shard(perm, rank, world_size)


def weighted_indices(labels: torch.Tensor, class_weights: torch.Tensor, epoch: int, seed: int,
                     rank: int = 0, world_size: int = 1, num_samples: int | None = None) -> torch.Tensor:
    """Draw ``num_samples`` (default: dataset size) indices with replacement, each sample's
    probability proportional to its class weight; the same draw on every rank, then sharded."""
    n = num_samples or len(labels)
    w = class_weights.double()[labels]
    draw = torch.multinomial(w, n, replacement=True, generator=epoch_generator(seed, epoch))
    return shard(draw, rank, world_size)
