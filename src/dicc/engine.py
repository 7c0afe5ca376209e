"""Training as one plain function over a :class:`~dicc.strategies.Strategy`: :func:`fit`.

One code path for CPU, CUDA (with AMP) and torchrun/DDP. The engine never branches on a
method's name: everything method-specific is behind the strategy. Inference (features, logits,
metrics) is :mod:`dicc.inference`, re-exported here; the run directory's files are
:mod:`dicc.rundir`; what a run is made of (built, or restored from a checkpoint)
:mod:`dicc.training_run`; a checkpoint's contents :mod:`dicc.training_state`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .config import Config
from .data.build import RunData
from .data.loader import iterate_batches
from .inference import evaluate, extract_features, predict_parent_logits  # noqa: F401 (the engine's API)
from .metrics import format_metrics
from .models import default_input_size
from .precision import Precision
from .rundir import RunDirectory, environment
from .runlock import claim_run_dir
from .schedule import learning_rate, make_optimizer  # noqa: F401 (the engine's API)
from .strategies import EpochContext, Strategy
from .training_run import TrainingRun, build_run, restore
from .training_state import load_on_rank0, rank_states, training_state
from .validate import check_config

logger = logging.getLogger("dicc")


@dataclass
class RunResult:
    run_dir: Path
    final: dict | None
    best_val: float | None
    model: nn.Module | None = None  # the trained model (the evaluated checkpoint's weights), eval mode
    strategy: Strategy | None = None
    precision: Precision | None = None
    normalization: tuple | None = None  # (mean, std) of the model's input: (x / 255 - mean) / std


def _default_log(*args, **kwargs) -> None:
    logger.info(" ".join(str(a) for a in args))


def fit(
    cfg: Config, *, resume: bool = False, log=None, data: RunData | None = None, model: nn.Module | None = None
) -> RunResult:
    """Train according to ``cfg``; write the run directory; return the final test metrics.

    The run directory holds ``config.yaml``, ``metrics.jsonl`` (one line per epoch, plus
    strategy events), ``checkpoints/{last,best}.pt``, ``final.json`` and
    ``confusion_test.png`` (see :mod:`dicc.rundir`). ``resume=True`` continues from
    ``checkpoints/last.pt``; ``cfg`` must then equal the run's own ``config.yaml`` in every
    key that can change the result (``dicc.config.INCIDENTAL_KEYS`` may differ). Progress
    goes to ``log`` (default: the ``dicc`` logger at INFO level; the library never prints).

    ``data`` (a :class:`~dicc.data.build.RunData`) and ``model`` (any ``nn.Module`` with features
    and a head, :func:`dicc.models.adapt_model`) replace what ``cfg.data`` / ``cfg.model`` would
    build (``dicc.fit`` passes a user's own); ``cfg`` still says how to train.
    """
    # under torchrun the process group is started on the first call and kept for the process's
    # life (destroyed at exit; torch cannot start a second one), so several fits can follow
    # each other; a group the caller set up is used and left alone
    if model is not None:
        cfg.model.name = f"user:{type(model).__name__}"
    if cfg.data.image_size == "auto":  # stored resolved: the run's config.yaml says the size it trained at
        cfg.data.image_size = 48 if model is not None else default_input_size(cfg.model.name, cfg.model.pretrained)
    check_config(cfg, user_model=model is not None)  # before the process group, any data or any file
    dinfo = distributed.setup(cfg.train.device)
    with claim_run_dir(cfg.train.out):  # one run per directory: a second is refused before it writes
        return _fit(cfg, dinfo, resume, log or _default_log, data, model)


def _announce(run: TrainingRun, say) -> None:
    train, data, strategy = run.train, run.data, run.strategy
    counts = train.class_counts()
    say(f"train: {train.source}  n={len(train)}  " + "  ".join(f"{n}={c}" for n, c in zip(train.class_names, counts)))
    if data.val is not None:
        say(f"val:   {data.val.source}  n={len(data.val)}")
    if strategy.describe():
        say(strategy.describe())
    say(
        f"method {strategy.name}, model {run.cfg.model.name} ({sum(p.numel() for p in run.model.parameters()):,} "
        f"parameters), device {run.dinfo.device} ({run.precision.describe()}), world size {run.dinfo.world_size}"
    )


def _epoch_context(run: TrainingRun, epoch: int, log_record) -> EpochContext:
    """What a strategy's ``on_epoch_start`` may use (DICC re-clusters through it)."""
    cfg, dinfo, kw = run.cfg, run.dinfo, run.eval_kw()
    steps, total = run.steps_per_epoch, run.total_steps
    return EpochContext(
        epoch=epoch,
        epochs=cfg.train.epochs,
        model=run.model,
        device=dinfo.device,
        extract_features=lambda indices=None: extract_features(run.model, run.train, indices=indices, **kw),
        # method events belong to the epoch they start (1-based, as the epoch lines)
        log=lambda record: log_record({**record, "epoch": epoch + 1}),
        rank=dinfo.rank,
        world_size=dinfo.world_size,
        broadcast=distributed.broadcast,
        gather=distributed.gather_by_index,
        check=distributed.raise_if_any,
        optimizer=run.optimizer,
        lr=lambda e: learning_rate(cfg.optim, e * steps, total),
    )


def _train_epoch(run: TrainingRun, epoch: int) -> tuple[torch.Tensor, int]:
    """One pass over the epoch's batches; returns the summed loss (on the device: no host sync
    per step) and the number of samples seen by this rank."""
    cfg, dinfo, device, strategy, optimizer = run.cfg, run.dinfo, run.dinfo.device, run.strategy, run.optimizer
    bs, steps, total = cfg.train.batch_size, run.steps_per_epoch, run.total_steps
    mixup = float(cfg.augment.mixup)
    run.ddp_model.train()
    order = strategy.epoch_indices(run.train.labels, epoch, cfg.train.seed, dinfo.rank, dinfo.world_size)
    order = order[: steps * bs] if len(order) >= bs else order
    distributed.check_same(
        -(-len(order) // bs),
        f"epoch {epoch + 1}: the number of training batches "
        f"({strategy.name}.epoch_indices must give every rank as many indices)",
    )
    loss_sum = torch.zeros((), device=device)
    seen = 0
    batches = iterate_batches(run.train, order, bs, workers=cfg.data.workers)
    if cfg.train.progress and dinfo.is_main:
        from tqdm import tqdm

        batches = tqdm(
            batches,
            total=steps,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            leave=False,
            mininterval=1.0,
            file=sys.stderr,
        )
    for x, y, idx in batches:
        lr = learning_rate(cfg.optim, run.step, total)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = run.augment(x.to(device, non_blocking=True))
        y, idx = y.to(device, non_blocking=True), idx.to(device, non_blocking=True)
        if mixup > 0:
            x, perm, lam = run.augment.mix(x)
        keep = strategy.wants_features
        with run.precision.autocast():
            out = run.ddp_model(run.precision.prepare_input(x), return_features=keep)
        logits = out[0] if keep else out
        if keep:
            strategy.observe_features(out[1].detach(), y, idx)
        loss = strategy.loss(logits.float(), y, idx)
        if mixup > 0:  # the mixture's loss: lam * loss(y) + (1 - lam) * loss(y of the partner)
            loss = lam * loss + (1.0 - lam) * strategy.loss(logits.float(), y[perm], idx[perm])
        optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.step(optimizer)
            run.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        run.step += 1
        loss_sum += loss.detach() * len(y)
        seen += len(y)
    distributed.broadcast_buffers(run.model)  # every rank evaluates with the statistics rank 0 saves
    return loss_sum, seen


def _validate(run: TrainingRun, record: dict) -> bool:
    """Score the hold-out into ``record``; True when the mean class accuracy is the best so far
    (the checkpoint that becomes ``best.pt``)."""
    if run.data.val is None:
        return False
    vm = evaluate(run.model, run.judged, run.data.val, tta=run.cfg.eval.tta, **run.eval_kw())
    record.update(
        {
            "val_accuracy": vm["accuracy"],
            "val_mean_class_accuracy": vm["mean_class_accuracy"],
            "val_macro_f1": vm["macro_f1"],
        }
    )
    if run.best is not None and vm["mean_class_accuracy"] <= run.best:
        return False
    run.best = vm["mean_class_accuracy"]
    return True


def _epoch_line(run: TrainingRun, record: dict) -> str:
    val = (
        f"  val acc {100 * record['val_accuracy']:.2f} mca {100 * record['val_mean_class_accuracy']:.2f}"
        if "val_accuracy" in record
        else ""
    )
    return (
        f"epoch {record['epoch']}/{run.cfg.train.epochs}  loss {record['train_loss']:.4f}{val}  "
        f"({record['time_epoch']:.1f}s)"
    )


def _test(run: TrainingRun, rd: RunDirectory, say) -> dict | None:
    """Load the selected checkpoint (best on validation; the last one without validation) and
    evaluate it once on the test split."""
    dinfo, cfg = run.dinfo, run.cfg
    best_path = rd.best if (not dinfo.is_main or rd.best.exists()) else rd.last
    ckpt = load_on_rank0(best_path, dinfo, keys=("model", "strategy", "epoch", "_path"))
    run.model.load_state_dict(ckpt["model"])
    run.strategy.load_state_dict(ckpt["strategy"]["state"])
    if run.data.test is None:
        return None
    final = evaluate(run.model, run.judged, run.data.test, tta=cfg.eval.tta, **run.eval_kw())
    name = Path(ckpt["_path"]).name
    final.update(
        {
            "split": cfg.data.test_split,
            "checkpoint": name,
            "epoch": ckpt["epoch"],
            "best_val_mean_class_accuracy": run.best,
            "method": run.strategy.name,
            "seed": cfg.train.seed,
            "train_class_counts": [int(c) for c in run.train.class_counts()],
            **run.precision.to_dict(),
        }
    )
    if dinfo.is_main:
        rd.write_final(final, run.train.class_names, title=f"{run.strategy.name} on {cfg.data.test_split} ({name})")
        say(f"test ({cfg.data.test_split}, {name} from epoch {ckpt['epoch']}):")
        say(format_metrics(final))
    return final


def _fit(
    cfg: Config,
    dinfo: distributed.DistInfo,
    resume: bool,
    log,
    data: RunData | None = None,
    user_model: nn.Module | None = None,
) -> RunResult:
    main = dinfo.is_main
    say = log if main else (lambda *a, **k: None)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    elif dinfo.enabled:  # share this node's cores among its processes (torchrun's default is 1 each)
        torch.set_num_threads(distributed.default_threads(dinfo))
    rd = RunDirectory(cfg.train.out, tensorboard=cfg.train.log == "tensorboard" and main)
    rd.check(cfg, resume, dinfo)

    run = build_run(cfg, dinfo, data, user_model)
    if rd.resumable:
        restore(run, rd.last)
        say(f"resuming {rd.path} after epoch {run.start_epoch}")
    if main:
        rd.start(cfg, environment(run.precision), run.strategy.run_files(), fresh=not resume)
        if resume:  # the epochs after the checkpoint are redone: their records go
            rd.truncate_log(run.start_epoch)
    _announce(run, say)
    run.ddp_model = run.model
    if dinfo.enabled:
        device = dinfo.device
        run.ddp_model = nn.parallel.DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def log_record(record: dict) -> None:
        if main:
            rd.log(record)

    for epoch in range(run.start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        run.strategy.on_epoch_start(_epoch_context(run, epoch, log_record))
        t_hook = time.perf_counter() - t0
        loss_sum, seen = _train_epoch(run, epoch)
        t_train = time.perf_counter() - t0 - t_hook
        total_loss = float(distributed.all_reduce_sum(loss_sum.clone()).item())
        if not math.isfinite(total_loss):
            raise FloatingPointError(
                f"epoch {epoch + 1}: the training loss became {total_loss} (lower optim.lr?); "
                f"{rd.last} holds the last good epoch"
            )
        record = {
            "epoch": epoch + 1,
            "lr": learning_rate(cfg.optim, run.step - 1, run.total_steps),
            "train_loss": total_loss / max(1, seen * dinfo.world_size),
            "time_hook": round(t_hook, 3),
            "time_train": round(t_train, 3),
        }
        improved = _validate(run, record)
        record["time_epoch"] = round(time.perf_counter() - t0, 3)
        log_record(record)
        say(_epoch_line(run, record))
        states = rank_states(run.augment, run.strategy, dinfo)
        if main:
            state = training_state(
                run.model,
                run.strategy,
                run.optimizer,
                run.augment,
                cfg,
                epoch + 1,
                run.step,
                run.best,
                run.train,
                states,
                run.scaler,
                run.precision,
                (run.mean, run.std),
            )
            rd.save_checkpoints(state, best=improved or run.data.val is None)
        distributed.barrier()

    if main:
        rd.finish()
    final = _test(run, rd, say)
    run.model.eval()
    return RunResult(rd.path, final, run.best, run.model, run.strategy, run.precision, (run.mean, run.std))
