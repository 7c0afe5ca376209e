"""Training and evaluation as plain functions over a :class:`~dicc.strategies.Strategy`.

One code path for CPU, CUDA (with AMP) and torchrun/DDP. The engine never branches on a
method's name: everything method-specific is behind the strategy.
"""
from __future__ import annotations

import functools
import json
import math
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__, distributed
from .checkpoint import FORMAT, VERSION, load_checkpoint, save_atomic, write_text_atomic
from .config import Config, save_config
from .data.base import FERDataset
from .data.build import build_run_data
from .data.loader import iterate_batches
from .data.transforms import BatchAugment, normalize
from .metrics import confusion_matrix, format_metrics, metrics_from_confusion, save_confusion_png
from .models import FERModel, create_model
from .strategies import EpochContext, Strategy, create_strategy


def _unwrap(model: nn.Module) -> FERModel:
    return model.module if hasattr(model, "module") else model


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def learning_rate(cfg, step: int, total: int) -> float:
    """The learning rate at optimiser step ``step`` of ``total`` (a pure function of the step,
    so resuming needs no scheduler state)."""
    lr, frac = cfg.lr, min(max(step / max(total, 1), 0.0), 1.0)
    if cfg.schedule == "constant":
        return lr
    warm = cfg.warmup_fraction
    if cfg.schedule == "onecycle":  # as torch's OneCycleLR: cos up from lr/25, cos down to lr/25e4
        lo, end = lr / 25, lr / 25e4
        if frac < warm:
            return lo + (lr - lo) * (1 - math.cos(math.pi * frac / warm)) / 2
        t = (frac - warm) / max(1 - warm, 1e-8)
        return end + (lr - end) * (1 + math.cos(math.pi * t)) / 2
    if cfg.schedule == "cosine":  # linear warm-up, then cosine to zero
        if frac < warm:
            return lr * frac / warm
        t = (frac - warm) / max(1 - warm, 1e-8)
        return lr * (1 + math.cos(math.pi * t)) / 2
    raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: onecycle, cosine, constant")


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; valid: sgd, adamw")


@torch.no_grad()
def _forward_shard(model: nn.Module, ds: FERDataset, indices: torch.Tensor, batch_size: int,
                   device: torch.device, mean: float, std: float, amp: bool, fn) -> torch.Tensor:
    outs = []
    for x, _, _ in iterate_batches(ds, indices, batch_size):
        with _autocast(device, amp):
            outs.append(fn(normalize(x.to(device, non_blocking=True), mean, std)).float())
    if not outs:  # an empty shard (fewer samples than ranks): an empty batch keeps the trailing shape
        x = torch.zeros(0, ds.channels, ds.image_size, ds.image_size, dtype=torch.uint8, device=device)
        outs.append(fn(normalize(x, mean, std)).float())
    return torch.cat(outs)


@torch.no_grad()
def extract_features(model: nn.Module, ds: FERDataset, *, batch_size: int = 512, device=None,
                     mean: float = 0.5, std: float = 0.25, amp: bool = False, rank: int = 0,
                     world_size: int = 1, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised penultimate features of every image of ``ds`` (eval mode, no
    augmentation), ordered by dataset index (only those of ``indices``, in that order, if
    given); under DDP each rank computes its shard and the result is gathered so every rank
    holds all of it."""
    net = _unwrap(model)
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    subset = torch.arange(len(ds)) if indices is None else torch.as_tensor(indices).long().cpu()
    pos = distributed.eval_shard(len(subset), rank, world_size)
    feats = _forward_shard(net, ds, subset[pos], batch_size, device, mean, std, amp, net.features)
    feats = F.normalize(feats, dim=1)
    feats = distributed.gather_by_index(feats, pos.to(device), len(subset))
    net.train(was_training)
    return feats, ds.labels[subset].to(device)


@torch.no_grad()
def predict_parent_logits(model: nn.Module, strategy: Strategy, ds: FERDataset, *, batch_size: int = 512,
                          device=None, mean: float = 0.5, std: float = 0.25, amp: bool = False,
                          indices: torch.Tensor | None = None) -> torch.Tensor:
    """Parent-class logits ``[len(indices), num_classes]`` (what evaluation sees)."""
    net = _unwrap(model)
    device = device or next(net.parameters()).device
    net.eval()
    idx = torch.arange(len(ds)) if indices is None else indices
    return _forward_shard(net, ds, idx, batch_size, device, mean, std, amp,
                          lambda x: strategy.parent_logits(net(x).float()))


def evaluate(model: nn.Module, strategy: Strategy, ds: FERDataset, *, batch_size: int = 512, device=None,
             mean: float = 0.5, std: float = 0.25, amp: bool = False, rank: int = 0, world_size: int = 1) -> dict:
    """Metrics of ``model`` on all of ``ds`` from one confusion matrix (summed across ranks)."""
    idx = distributed.eval_shard(len(ds), rank, world_size)
    logits = predict_parent_logits(model, strategy, ds, batch_size=batch_size, device=device, mean=mean,
                                   std=std, amp=amp, indices=idx)
    cm = confusion_matrix(ds.labels[idx], logits.argmax(1).cpu(), ds.num_classes)
    cm = distributed.all_reduce_sum(cm.to(logits.device if world_size > 1 else "cpu")).cpu()
    return metrics_from_confusion(cm, ds.class_names)


# ---------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    run_dir: Path
    final: dict | None
    best_val: float | None


@functools.lru_cache(maxsize=1)
def _source_revision() -> dict:
    """The git commit of the dicc source tree and whether it had uncommitted changes (when it
    is a git checkout; an installed package has none), so a run's numbers can be tied to code."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return {"git_commit": rev.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {}


def _environment() -> dict:
    import numpy

    return {"dicc": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "numpy": numpy.__version__, "platform": platform.platform(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None, **_source_revision()}


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _rank_states(augment, dinfo: distributed.DistInfo) -> list[dict] | None:
    """Every rank's augmentation and torch RNG state (collective; None with one process), so a
    resumed DDP run continues each rank's random streams exactly."""
    if not dinfo.enabled:
        return None
    return distributed.all_gather_object({"augment": augment.state_dict(), "rng": torch.get_rng_state()})


def _state(model, strategy, optimizer, augment, cfg: Config, epoch: int, step: int, best: float | None,
           train: FERDataset, rank_states: list[dict] | None = None) -> dict:
    net = _unwrap(model)
    return {
        "format": FORMAT, "version": VERSION, "epoch": epoch, "step": step, "best_val": best,
        "config": cfg.to_dict(), "class_names": list(train.class_names), "class_counts": train.class_counts(),
        "model": net.state_dict(),
        "model_spec": {"name": cfg.model.name, "width": cfg.model.width, "num_outputs": strategy.num_outputs,
                       "head_type": strategy.head_type, "in_channels": train.channels,
                       "image_size": train.image_size, "dropout": cfg.model.dropout},
        "normalization": {"mean": cfg.augment.mean, "std": cfg.augment.std, "image_size": train.image_size,
                          "channels": train.channels},
        "strategy": {"name": strategy.name, "options": cfg.method.options, "state": strategy.state_dict()},
        "optimizer": optimizer.state_dict(), "augment": augment.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "environment": _environment(),
        **({"rank_states": rank_states} if rank_states else {}),
    }


def _load_on_rank0(path: Path, dinfo: distributed.DistInfo, keys: tuple[str, ...] | None = None) -> dict:
    """Rank 0 loads the checkpoint at ``path`` (only ``keys`` of it, if given) and sends it to
    the other ranks, which need no access to the file."""
    ckpt, err = None, None
    if dinfo.is_main:
        try:
            ckpt = load_checkpoint(path, map_location="cpu")
            if keys is not None:
                ckpt = {k: ckpt[k] for k in keys}
        except Exception as e:  # noqa: BLE001 - re-raised on every rank
            err = e
    distributed.raise_if_any(err)
    return distributed.broadcast_object(ckpt)


def fit(cfg: Config, *, resume: bool = False, log=print) -> RunResult:
    """Train according to ``cfg``; write the run directory; return the final test metrics.

    The run directory holds ``config.yaml``, ``metrics.jsonl`` (one line per epoch, plus
    strategy events), ``checkpoints/{last,best}.pt``, ``final.json`` and
    ``confusion_test.png``. ``resume=True`` continues from ``checkpoints/last.pt``.
    """
    # under torchrun the process group is started on the first call and kept for the process's
    # life (destroyed at exit; torch cannot start a second one), so several fits can follow
    # each other; a group the caller set up is used and left alone
    return _fit(cfg, distributed.setup(cfg.train.device), resume, log)


def _fit(cfg: Config, dinfo: distributed.DistInfo, resume: bool, log) -> RunResult:
    main = dinfo.is_main
    say = log if main else (lambda *a, **k: None)
    device = dinfo.device
    amp = cfg.train.amp and device.type == "cuda"
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    elif dinfo.enabled:  # share this node's cores among its processes (torchrun's default is 1 each)
        torch.set_num_threads(distributed.default_threads(dinfo))
    run_dir = Path(cfg.train.out)
    ckpt_dir = run_dir / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    # only rank 0 touches the run directory (it need not be on a shared filesystem); the others
    # learn of its errors from raise_if_any rather than waiting for it in a collective
    err = None
    if main and not resume and (last_path.exists() or (run_dir / "final.json").exists()):
        err = FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if main and resume and not last_path.exists():
        err = FileNotFoundError(f"--resume: no checkpoint at {last_path}")
    distributed.raise_if_any(err)

    torch.manual_seed(cfg.train.seed)
    data = build_run_data(cfg.data)
    train = data.train
    counts = train.class_counts()
    strategy = create_strategy(cfg.method.name, counts, cfg.method.options)
    strategy.class_names = list(train.class_names)
    model = create_model(cfg.model.name, strategy.num_outputs, in_channels=train.channels, width=cfg.model.width,
                         head_type=strategy.head_type, dropout=cfg.model.dropout,
                         pretrained=cfg.model.pretrained).to(device)
    optimizer = make_optimizer(cfg.optim, model.parameters())
    augment = BatchAugment(cfg.augment, seed=cfg.train.seed * 7919 + dinfo.rank)
    start_epoch, step, best = 0, 0, None

    if resume:
        ckpt = _load_on_rank0(last_path, dinfo)
        model.load_state_dict(ckpt["model"])
        strategy.load_state_dict(ckpt["strategy"]["state"])
        optimizer.load_state_dict(ckpt["optimizer"])
        own = {"augment": ckpt["augment"], "rng": ckpt["rng"]["torch"]} if dinfo.rank == 0 else None
        if len(ckpt.get("rank_states") or []) == dinfo.world_size:
            own = ckpt["rank_states"][dinfo.rank]
        if own is not None:  # (a rank the checkpoint has no state for keeps its fresh seeds)
            augment.load_state_dict(own["augment"])
            torch.set_rng_state(own["rng"])
        start_epoch, step, best = ckpt["epoch"], ckpt["step"], ckpt["best_val"]
        say(f"resuming {run_dir} after epoch {start_epoch}")

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:  # a fresh run: drop what an attempt that died before its first checkpoint logged
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "environment.json").write_text(json.dumps(_environment(), indent=2))
        if hasattr(strategy, "plan_record"):
            (run_dir / "subclass_plan.json").write_text(json.dumps(strategy.plan_record(), indent=2))
    names = train.class_names
    say(f"train: {train.source}  n={len(train)}  " + "  ".join(f"{n}={c}" for n, c in zip(names, counts)))
    if data.val is not None:
        say(f"val:   {data.val.source}  n={len(data.val)}")
    if hasattr(strategy, "describe"):
        say(strategy.describe())
    say(f"method {strategy.name}, model {cfg.model.name} ({sum(p.numel() for p in model.parameters()):,} "
        f"parameters), device {device}{' (AMP bf16)' if amp else ''}, world size {dinfo.world_size}")

    ddp_model = model
    if dinfo.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    per_rank = -(-len(train) // dinfo.world_size)
    bs = cfg.train.batch_size
    steps_per_epoch = per_rank // bs if per_rank >= bs else 1
    total_steps = steps_per_epoch * cfg.train.epochs
    metrics_path = run_dir / "metrics.jsonl"
    eval_kw = dict(batch_size=cfg.train.eval_batch_size, device=device, mean=cfg.augment.mean, std=cfg.augment.std,
                   amp=amp)

    def log_record(record: dict) -> None:
        if main:
            _append_jsonl(metrics_path, record)

    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        ctx = EpochContext(
            epoch=epoch, epochs=cfg.train.epochs, model=model, device=device,
            extract_features=lambda indices=None: extract_features(model, train, rank=dinfo.rank,
                                                                   world_size=dinfo.world_size, indices=indices,
                                                                   **eval_kw),
            log=log_record, rank=dinfo.rank, world_size=dinfo.world_size, broadcast=distributed.broadcast,
            gather=distributed.gather_by_index, check=distributed.raise_if_any, optimizer=optimizer)
        strategy.on_epoch_start(ctx)
        t_hook = time.perf_counter() - t0

        ddp_model.train()
        order = strategy.epoch_indices(train.labels, epoch, cfg.train.seed, dinfo.rank, dinfo.world_size)
        order = order[: steps_per_epoch * bs] if len(order) >= bs else order
        distributed.check_same(-(-len(order) // bs), f"epoch {epoch + 1}: the number of training batches "
                               f"({strategy.name}.epoch_indices must give every rank as many indices)")
        loss_sum = torch.zeros((), device=device)
        seen = 0
        batches = iterate_batches(train, order, bs, workers=cfg.data.workers)
        if cfg.train.progress and main:
            from tqdm import tqdm

            batches = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                           leave=False, mininterval=1.0, file=sys.stderr)
        for x, y, idx in batches:
            lr = learning_rate(cfg.optim, step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = augment(x.to(device, non_blocking=True))
            y, idx = y.to(device, non_blocking=True), idx.to(device, non_blocking=True)
            with _autocast(device, amp):
                logits = ddp_model(x)
            loss = strategy.loss(logits.float(), y, idx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1}: the loss became {loss.item()} (lower optim.lr?)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.detach() * len(y)
            seen += len(y)
        distributed.broadcast_buffers(model)  # every rank evaluates with the statistics rank 0 saves
        t_train = time.perf_counter() - t0 - t_hook

        record = {"epoch": epoch + 1, "lr": learning_rate(cfg.optim, step - 1, total_steps),
                  "train_loss": float(distributed.all_reduce_sum(loss_sum.clone()).item())
                  / max(1, seen * dinfo.world_size),
                  "time_hook": round(t_hook, 3), "time_train": round(t_train, 3)}
        improved = False
        if data.val is not None:
            vm = evaluate(model, strategy, data.val, rank=dinfo.rank, world_size=dinfo.world_size, **eval_kw)
            record.update({"val_accuracy": vm["accuracy"], "val_mean_class_accuracy": vm["mean_class_accuracy"],
                           "val_macro_f1": vm["macro_f1"]})
            improved = best is None or vm["mean_class_accuracy"] > best
            if improved:
                best = vm["mean_class_accuracy"]
        record["time_epoch"] = round(time.perf_counter() - t0, 3)
        log_record(record)
        val_txt = (f"  val acc {100 * record['val_accuracy']:.2f} mca {100 * record['val_mean_class_accuracy']:.2f}"
                   if data.val is not None else "")
        say(f"epoch {epoch + 1}/{cfg.train.epochs}  loss {record['train_loss']:.4f}{val_txt}  "
            f"({record['time_epoch']:.1f}s)")
        rank_states = _rank_states(augment, dinfo)
        if main:
            state = _state(model, strategy, optimizer, augment, cfg, epoch + 1, step, best, train, rank_states)
            save_atomic(state, last_path)
            if improved or data.val is None:
                save_atomic(state, ckpt_dir / "best.pt")
        distributed.barrier()

    final = None
    if data.test is not None:
        best_path = ckpt_dir / "best.pt"
        ckpt = _load_on_rank0(best_path if (not main or best_path.exists()) else last_path, dinfo,
                              keys=("model", "strategy", "epoch", "_path"))
        model.load_state_dict(ckpt["model"])
        strategy.load_state_dict(ckpt["strategy"]["state"])
        final = evaluate(model, strategy, data.test, rank=dinfo.rank, world_size=dinfo.world_size, **eval_kw)
        final.update({"split": cfg.data.test_split, "checkpoint": Path(ckpt["_path"]).name, "epoch": ckpt["epoch"],
                      "best_val_mean_class_accuracy": best, "method": strategy.name, "seed": cfg.train.seed,
                      "train_class_counts": [int(c) for c in counts]})
        if main:
            # atomically: a report reading it meanwhile, or a crash, never sees half a file
            write_text_atomic(run_dir / "final.json", json.dumps(final, indent=2))
            save_confusion_png(final["confusion_matrix"], names, run_dir / "confusion_test.png",
                               title=f"{strategy.name} on {cfg.data.test_split} ({Path(ckpt['_path']).name})")
            say(f"test ({cfg.data.test_split}, {Path(ckpt['_path']).name} from epoch {ckpt['epoch']}):")
            say(format_metrics(final))
    return RunResult(run_dir, final, best)
