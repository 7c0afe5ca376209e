"""torchrun environment -> process group, device per local rank, and the few collectives the
engine needs. With one process every helper is a no-op, so the same code path runs everywhere.

Launch with ``torchrun`` (single node: ``--standalone --nproc_per_node=N``; several nodes: the
usual ``--nnodes/--node_rank/--rdzv_*`` flags). :func:`setup` reads ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``, starts NCCL on CUDA (one GPU per local rank) and gloo on
CPU. The process group is created once per process and destroyed when the process exits
(torch cannot start a second default group under torchrun after destroying the first, so a
process that trains several runs, like ``dicc compare``, keeps one); a group the caller
initialised itself is used as it is and never destroyed here.

Nothing here assumes a shared filesystem: only rank 0 reads and writes files, and what the
other ranks need from a file (a checkpoint to resume from or to evaluate) is sent to them with
:func:`broadcast_object`.
"""

from __future__ import annotations

import atexit
import gc
import os
import pickle
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def is_main_process() -> bool:
    """Whether this process is rank 0 of a torchrun launch (or not under torchrun at all), from
    the environment, before or without a process group."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1
    #: whether :func:`setup` started the process group (it is destroyed at exit)
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(spec: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``auto`` -> this local rank's GPU when CUDA is available, else the CPU; ``cuda`` -> this
    local rank's GPU; anything else as given (``cuda:N`` only with one process)."""
    if spec in ("auto", "cuda"):
        if not torch.cuda.is_available():
            if spec == "cuda":
                raise ValueError(
                    "train.device=cuda: CUDA is not available on this machine; use train.device=cpu or auto"
                )
            return torch.device("cpu")
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {n} GPU(s) are visible on this node; "
                f"start at most {n} processes per node (torchrun --nproc_per_node={n})"
            )
        return torch.device(f"cuda:{local_rank}")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"train.device: unknown device {spec!r}; valid: auto, cpu, cuda, cuda:N") from None
    if world_size > 1 and device.type == "cuda" and device.index is not None:
        raise ValueError(
            f"train.device={spec} would put all {world_size} processes on one GPU; under torchrun "
            "use train.device=cuda or auto (one GPU per local rank)"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={spec}: CUDA is not available on this machine; use train.device=cpu or auto")
    return device


def setup(device_spec: str = "auto") -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE); start the
    process group (NCCL on CUDA, gloo on CPU) when there is more than one process. A process
    group the caller already initialised is used as it is (and left to the caller)."""
    initialised = dist.is_available() and dist.is_initialized()
    if initialised:
        world, rank = dist.get_world_size(), dist.get_rank()
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    device = resolve_device(device_spec, local_rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not initialised:
        if not dist.is_available():
            raise RuntimeError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
        atexit.register(teardown)
        owns = True
    return DistInfo(rank, world, local_rank, device, local_world, owns)


def default_threads(info: DistInfo) -> int:
    """CPU threads per process when the config does not say: the cores this process may use
    shared among the processes of this node (torchrun's own default is one thread each)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, info.local_world_size))


def teardown(info: DistInfo | None = None) -> None:
    """Destroy the process group if ``info`` says :func:`setup` created it (with no ``info``:
    whatever group is initialised). Registered to run at exit by :func:`setup`; a new group
    cannot be started in the same torchrun process afterwards."""
    if info is not None and not info.owns_group:
        return
    if dist.is_available() and dist.is_initialized():
        # a DDP wrapper left in a reference cycle (e.g. by a traceback of a fit that raised) holds
        # the group through its reducer: free it now, while the group and the interpreter are
        # whole; freed later, during interpreter shutdown, gloo can abort the process
        gc.collect()
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def active() -> bool:
    """Whether a process group of more than one process is running (every collective here is a
    no-op without one)."""
    return _active()


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


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``src``'s (picklable) ``obj`` on every rank; the argument is ignored on the others."""
    if not _active():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's (picklable) ``obj``, in rank order, on every rank."""
    if not _active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_gather_rows(z: torch.Tensor, *labels: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], int]:
    """Every rank's rows of ``z`` (with their gradients: autograd flows back to the rank that
    computed them) and of each ``labels`` tensor, concatenated in rank order on every rank, and
    where this rank's rows start. Every rank must hold as many rows (the engine gives every rank
    as many samples per step). Without a process group: the tensors themselves and 0."""
    if not _active():
        return (z, *labels), 0
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.long, device=z.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(z)], device=z.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(f"all_gather_rows: the ranks hold {[int(s) for s in sizes]} rows; they must hold as many")
    from torch.distributed.nn.functional import all_gather as all_gather_with_grad

    out = [torch.cat(all_gather_with_grad(z.contiguous()))]
    for t in labels:
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous())
        out.append(torch.cat(parts))
    return tuple(out), rank * len(z)


def raise_if_any(err: BaseException | None) -> None:
    """Collective error check: every rank passes the exception it hit (or None). If any rank
    hit one, every rank raises: its own exception, else the first failing rank's, so no rank is
    left waiting in a collective for a rank that gave up."""
    if not _active():
        if err is not None:
            raise err
        return
    sendable = err
    if err is not None:
        # every rank unpickles what is sent: an exception whose __init__ takes other arguments
        # pickles but does not unpickle, so check the round trip, not just the pickling
        try:
            pickle.loads(pickle.dumps(err))
        except Exception:  # noqa: BLE001 - send a description instead
            sendable = RuntimeError(f"{type(err).__name__}: {err}")
    errors = all_gather_object(sendable)
    if err is not None:
        raise err
    for e in errors:
        if e is not None:
            raise e


def check_same(value: Any, what: str) -> None:
    """Raise on every rank unless ``value`` is equal on all of them (e.g. the number of
    training batches: a rank with fewer would leave the others hanging in DDP's all-reduce)."""
    if not _active():
        return
    values = all_gather_object(value)
    if any(v != values[0] for v in values):
        raise RuntimeError(f"{what} differs across ranks: {values}")


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running statistics) to every rank. DDP broadcasts them
    before each training forward, but each rank's forward then updates its own copy with its own
    batch; after an epoch this makes evaluation (and DICC's feature extraction) on every rank use
    the statistics rank 0 saves in the checkpoint."""
    if not _active():
        return
    for b in module.buffers():
        dist.broadcast(b, src=src)


def eval_shard(n: int, rank: int, world_size: int) -> torch.Tensor:
    """Indices rank ``rank`` evaluates: a strided shard with no padding, so across ranks every
    sample is seen exactly once (shard sizes differ by at most one; a rank may get none)."""
    return torch.arange(n)[rank::world_size]  # (arange(rank, n, w) fails when rank > n)


def gather_by_index(values: torch.Tensor, indices: torch.Tensor, n: int) -> torch.Tensor:
    """Assemble the rows each rank computed for its ``indices`` into one ``[n, ...]`` tensor,
    identical on every rank. Ranks may hold different numbers of rows (also none, as long as
    ``values`` has the common trailing shape); rows no rank holds are zero."""
    if len(values) != len(indices):
        raise ValueError(f"gather_by_index: {len(values)} rows for {len(indices)} indices")
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
