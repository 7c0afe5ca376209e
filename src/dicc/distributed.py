"""torchrun environment -> process group, device per local rank, and the few collectives the
engine needs. With one process every helper is a no-op, so the same code path runs everywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available; use train.device=cpu or auto")
        return torch.device(f"cuda:{local_rank}")
    return torch.device(spec)


def setup(device_spec: str = "auto") -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); start the process group
    (NCCL on CUDA, gloo on CPU) when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    if _active():
        dist.broadcast(t, src=src)
    return t


def barrier() -> None:
    if _active():
        dist.barrier()


def eval_shard(n: int, rank: int, world_size: int) -> torch.Tensor:
    """Indices rank ``rank`` evaluates: a strided shard with no padding, so across ranks every
    sample is seen exactly once."""
    return torch.arange(rank, n, world_size)


def gather_by_index(values: torch.Tensor, indices: torch.Tensor, n: int) -> torch.Tensor:
    """Assemble the rows each rank computed for its ``indices`` into one ``[n, ...]`` tensor,
    identical on every rank. Ranks may hold different numbers of rows."""
    if not _active():
        out = values.new_zeros((n,) + tuple(values.shape[1:]))
        out[indices.to(values.device)] = values
        return out
    world = dist.get_world_size()
    count = torch.tensor([len(indices)], device=values.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    m = int(max(c.item() for c in counts))
    pad_v = values.new_zeros((m,) + tuple(values.shape[1:]))
    pad_v[: len(values)] = values
    pad_i = torch.full((m,), -1, dtype=torch.long, device=values.device)
    pad_i[: len(indices)] = indices.to(values.device)
    all_v = [torch.zeros_like(pad_v) for _ in range(world)]
    all_i = [torch.zeros_like(pad_i) for _ in range(world)]
    dist.all_gather(all_v, pad_v)
    dist.all_gather(all_i, pad_i)
    out = values.new_zeros((n,) + tuple(values.shape[1:]))
    for v, i in zip(all_v, all_i):
        keep = i >= 0
        out[i[keep]] = v[keep]
    return out
