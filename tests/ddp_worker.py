"""Worker for tests/test_distributed.py, launched with ``torchrun --nproc_per_node=2`` (gloo).

``python ddp_worker.py OUT OVERRIDE...`` trains the same DICC run twice in one process group:

1. ``OUT/full``: uninterrupted, through the command line (``dicc.cli.main(["train", ...])``,
   which starts the process group);
2. ``OUT/cut``: interrupted at the start of epoch ``DICC_TEST_STOP_EPOCH`` (0-based) by a hook
   (KeyboardInterrupt raised from the strategy's ``on_epoch_start`` on every rank), then started
   again without ``resume`` (must fail on every rank, no hang) and resumed;
3. ``OUT/fail``: the clustering raises on rank 0 only; every rank must raise it (none hangs);
4. ``OUT/ema``: the run with ``train.ema``, ``train.accumulate=2`` and ``train.grad_clip`` on (the
   moving average beside the trained weights, DDP's ``no_sync`` on the non-final micro-batches).

Each rank snapshots its model state (the trained model's, and the evaluated one's: the moving
average with ``train.ema``) and pseudo-labels whenever the engine evaluates (after each epoch's
training, then for the final test) and writes them to ``OUT/<run>/rank<r>.pt``; what
it observed goes to ``OUT/rank<r>.json``. Between the runs, the collective helpers are checked
with shards of unequal and zero size.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import dicc.engine as engine
import dicc.training_run as training_run
from dicc import cli, distributed
from dicc.config import load_config
from dicc.strategies.dicc import DICC

OUT = Path(sys.argv[1])
OVERRIDES = sys.argv[2:]
STOP = int(os.environ.get("DICC_TEST_STOP_EPOCH", "3"))
RANK = int(os.environ["RANK"])
facts: dict = {"rank": RANK}

# -- capture the model and strategy fit() builds; build the (deterministic) data once ---------
made: dict = {}
_create_model, _create_strategy, _build_run_data = (
    training_run.create_model,
    training_run.create_strategy,
    training_run.build_run_data,
)
_data_cache: dict = {}


def create_model(*a, **k):
    made["model"] = _create_model(*a, **k)
    return made["model"]


def create_strategy(*a, **k):
    made["strategy"] = _create_strategy(*a, **k)
    return made["strategy"]


def build_run_data(cfg, **k):
    key = repr(cfg)
    if key not in _data_cache:
        _data_cache[key] = _build_run_data(cfg, **k)
    return _data_cache[key]


training_run.create_model, training_run.create_strategy, training_run.build_run_data = (
    create_model,
    create_strategy,
    build_run_data,
)

# -- count the DDP wrappings; remember the head's parameter the reducer hooked -----------------
_DDP = torch.nn.parallel.DistributedDataParallel


class CountingDDP(_DDP):
    def __init__(self, module, *a, **k):
        facts["ddp_wraps"] = facts.get("ddp_wraps", 0) + 1
        made["head_at_wrap"] = module.head.weight
        super().__init__(module, *a, **k)

    def no_sync(self):
        facts["no_sync"] = facts.get("no_sync", 0) + 1
        return super().no_sync()


torch.nn.parallel.DistributedDataParallel = CountingDDP

# -- the interruption hook ------------------------------------------------------------------
_on_epoch_start = DICC.on_epoch_start
stop_at: dict = {"epoch": None}


def on_epoch_start(self, ctx):
    if ctx.epoch == stop_at["epoch"]:
        raise KeyboardInterrupt(f"test hook: stop at the start of epoch {ctx.epoch}")
    return _on_epoch_start(self, ctx)


DICC.on_epoch_start = on_epoch_start


# -- snapshots of what each rank holds whenever it evaluates -------------------------------
_evaluate = engine.evaluate
snapshots: list = []


def evaluate(model, strategy, ds, **k):
    s = made["strategy"]
    snapshots.append(
        {
            "model": {n: v.detach().cpu().clone() for n, v in made["model"].state_dict().items()},
            "evaluated": {n: v.detach().cpu().clone() for n, v in model.state_dict().items()},
            "pseudo": s.pseudo,
            "centroids": s.centroids,
            "rounds": s.rounds,
            "n": len(ds),
            "head_is_wrapped_param": made["model"].head.weight is made["head_at_wrap"],
        }
    )
    return _evaluate(model, strategy, ds, **k)


engine.evaluate = evaluate


def dump(run: str) -> None:
    torch.save(snapshots, OUT / run / f"rank{RANK}.pt")
    snapshots.clear()


def cfg_for(run: str):
    return load_config(None, [*OVERRIDES, f"train.out={OUT / run}"])


quiet = lambda *a, **k: None  # noqa: E731

# 1. uninterrupted, from the command line; fit() starts the process group itself
assert not dist.is_initialized()
facts["cli_rc"] = cli.main(
    ["train", "--no-progress", *(a for o in OVERRIDES for a in ("--set", o)), "--out", str(OUT / "full")]
)
facts["group_kept_after_fit"] = dist.is_initialized()
facts["world_size"] = dist.get_world_size()
facts["backend"] = dist.get_backend()
facts["threads"] = torch.get_num_threads()
dump("full")

# collective helpers with unequal shards: n=7 over 2 ranks (4 + 3 rows), n=1 (1 + 0 rows)
for n in (7, 1):
    idx = distributed.eval_shard(n, RANK, 2)
    vals = torch.stack([idx.float(), -idx.float()], 1) if len(idx) else torch.zeros(0, 2)
    got = distributed.gather_by_index(vals, idx, n)
    facts[f"gather_{n}_ok"] = bool(
        torch.equal(got, torch.stack([torch.arange(n).float(), -torch.arange(n).float()], 1))
    )
facts["broadcast_object"] = distributed.broadcast_object({"from": RANK})
try:
    distributed.raise_if_any(ValueError("rank 1 says no") if RANK == 1 else None)
except ValueError as e:
    facts["raise_if_any"] = str(e)


class TwoArgError(Exception):  # pickles, but does not unpickle (its __init__ wants two arguments)
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


try:
    distributed.raise_if_any(TwoArgError("x", "y") if RANK == 1 else None)
except Exception as e:  # noqa: BLE001
    facts["raise_if_any_custom"] = [type(e).__name__, str(e)]

# 2. interrupted at the start of epoch STOP, on every rank
stop_at["epoch"] = STOP
try:
    engine.fit(cfg_for("cut"), log=quiet)
except KeyboardInterrupt:
    facts["interrupted"] = True
stop_at["epoch"] = None
snapshots.clear()
# started again without --resume: FileExistsError on every rank (rank 0 checks, the others hear of it)
try:
    engine.fit(cfg_for("cut"), log=quiet)
except FileExistsError as e:
    facts["exists_error"] = str(e)
res = engine.fit(cfg_for("cut"), resume=True, log=quiet)
facts["resumed_final"] = res.final
dump("cut")

# 3. the clustering fails on rank 0 only: every rank raises (rank 1 does not wait in the broadcast)
import dicc.strategies.dicc.strategy as dicc_strategy  # noqa: E402

_Clusterer = dicc_strategy.SubclassClusterer


class FailingClusterer(_Clusterer):
    def fit(self, *a, **k):
        raise ValueError("test hook: k-means failed on rank 0")


if RANK == 0:
    dicc_strategy.SubclassClusterer = FailingClusterer
try:
    engine.fit(cfg_for("fail"), log=quiet)
except ValueError as e:
    facts["cluster_error"] = str(e)
dicc_strategy.SubclassClusterer = _Clusterer

# 4. the moving average, accumulation and clipping under DDP
snapshots.clear()
facts["no_sync"] = 0
ema_cfg = load_config(
    None, [*OVERRIDES, "train.ema=0.9", "train.accumulate=2", "train.grad_clip=1.0", f"train.out={OUT / 'ema'}"]
)
facts["ema_final"] = engine.fit(ema_cfg, log=quiet).final
dump("ema")

distributed.barrier()
# the exit handler's teardown: afterwards no DDP wrapper (one is left in a reference cycle by the
# tracebacks above) may outlive the group; one freed during interpreter shutdown can abort gloo
distributed.teardown()
facts["ddp_alive_after_teardown"] = sum(isinstance(o, _DDP) for o in gc.get_objects())
(OUT / f"rank{RANK}.json").write_text(json.dumps(facts, indent=1))
