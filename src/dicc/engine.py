"""Training as one plain function over a :class:`~dicc.strategies.Strategy`: :func:`fit`.

One code path for CPU, CUDA (with AMP) and torchrun/DDP. The engine never branches on a
method's name: everything method-specific is behind the strategy. Inference (features, logits,
metrics) is :mod:`dicc.inference`, re-exported here; the run directory's files are
:mod:`dicc.rundir`; what a run is made of (built, or restored from a checkpoint)
:mod:`dicc.training_run`; a checkpoint's contents :mod:`dicc.training_state`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .config import Config, resolve_paths
from .data.build import RunData
from .data.loader import iterate_batches
from .inference import evaluate, extract_features, predict_parent_logits  # noqa: F401 (the engine's API)
from .loggers import create_logger
from .metrics import format_metrics
from .models import default_input_size
from .precision import Precision
from .rundir import RunDirectory, environment, final_record
from .runlock import claim_run_dir
from .schedule import learning_rate, make_optimizer  # noqa: F401 (the engine's API)
from .strategies import EpochContext, Strategy
from .training_run import TrainingRun, build_run, restore
from .training_state import load_on_rank0, rank_states
from .validate import check_config

logger = logging.getLogger("dicc")


@dataclass
class RunResult:
    """What :func:`fit` (and ``dicc.fit``) returns: the run directory, the test metrics, and the
    trained model with what it takes to predict with it (:meth:`predict`, :meth:`predict_proba`)."""

    run_dir: Path
    final: dict | None
    best_val: float | None
    model: nn.Module | None = None  # the trained model (the evaluated checkpoint's weights), eval mode
    strategy: Strategy | None = None
    precision: Precision | None = None
    normalization: tuple | None = None  # (mean, std) of the model's input: (x / 255 - mean) / std
    judged: Strategy | None = None  # the strategy as evaluation sees it (with eval.logit_adjust)
    input_shape: tuple | None = None  # (C, H, W) of the training images

    @property
    def class_names(self) -> list[str]:
        """The label space's classes: the columns of :meth:`predict_proba`."""
        strategy = self.judged or self.strategy
        return list(strategy.class_names or [f"class {c}" for c in range(strategy.num_classes)])

    def predict_proba(self, images, *, batch_size: int = 512, tta: str = "none") -> torch.Tensor:
        """Class probabilities ``[N, len(class_names)]`` (float, on the CPU) of ``images``, in the
        label space's classes for every method (DICC's sub-classes merged into their parent
        classes), as the run's validation and test saw them (``eval.logit_adjust`` included).

        ``images``: the forms ``dicc.fit`` takes (:func:`dicc.data.user.as_images`): a batch ``[N, C, H,
        W]`` / ``[N, H, W, C]`` / ``[N, H, W]`` (tensor or array), a sequence of images (PIL
        images, arrays, tensors), or one PIL image; uint8 or floats in [0, 1], each of the
        training images' shape. ``tta``: none, flip or crops (probabilities averaged over views).
        Eval mode, no gradients; the model's train/eval mode is left as it was."""
        from .data.base import FERDataset
        from .data.user import as_images

        x = as_images(images)
        if self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(
                f"images: shape {tuple(x.shape[1:])}, but the model was trained on {tuple(self.input_shape)} "
                "(resize them as the training images were)"
            )
        names = self.class_names
        ds = FERDataset(labels=torch.zeros(len(x), dtype=torch.long), images=x, class_names=names, source="images")
        mean, std = self.normalization if self.normalization is not None else (0.5, 0.25)
        logits = predict_parent_logits(
            self.model, self.judged or self.strategy, ds, batch_size=batch_size, mean=mean, std=std, tta=tta
        )
        return logits.float().softmax(1).cpu()

    def predict(self, images, *, batch_size: int = 512, tta: str = "none") -> torch.Tensor:
        """The most likely class of each image (int64 ``[N]``, indices into :attr:`class_names`):
        the argmax of :meth:`predict_proba`, the prediction ``dicc.evaluate`` scores."""
        return self.predict_proba(images, batch_size=batch_size, tta=tta).argmax(1)


def _default_log(*args, **kwargs) -> None:
    logger.info(" ".join(str(a) for a in args))


def fit(
    cfg: Config, *, resume: bool = False, log=None, data: RunData | None = None, model: nn.Module | None = None
) -> RunResult:
    """Train according to ``cfg``; write the run directory; return the final test metrics.

    The run directory holds ``config.yaml``, ``metrics.jsonl`` (one line per epoch, plus
    strategy events), ``checkpoints/{last,best}.pt``, ``final.json``, ``confusion_test.png``
    and ``reliability_test.png`` (see :mod:`dicc.rundir`). With ``train.ema`` the moving average
    of the weights is what is validated, tested, returned and saved as the checkpoints' ``model``
    (:mod:`dicc.ema`). ``resume=True`` continues from
    ``checkpoints/last.pt``; ``cfg`` must then equal the run's own ``config.yaml`` in every
    key that can change the result (``dicc.config.INCIDENTAL_KEYS`` may differ). Progress
    goes to ``log`` (default: the ``dicc`` logger at INFO level; the library never prints).

    ``data`` (a :class:`~dicc.data.build.RunData`) and ``model`` (any ``nn.Module`` with features
    and a head, :func:`dicc.models.adapt_model`) replace what ``cfg.data`` / ``cfg.model`` would
    build (``dicc.fit`` passes a user's own); ``cfg`` still says how to train. A copy of ``model``
    is trained (``RunResult.model``): the module passed in is left as it was; so is ``cfg``: the
    paths, ``auto`` values and a user model's name are resolved into a copy (what the run's
    ``config.yaml`` records).
    """
    # under torchrun the process group is started on the first call and kept for the process's
    # life (destroyed at exit; torch cannot start a second one), so several fits can follow
    # each other; a group the caller set up is used and left alone
    cfg = copy.deepcopy(cfg)
    if model is not None:
        cfg.model.name = f"user:{type(model).__name__}"
    resolve_paths(cfg)  # the run records where its data is (absolute): it works from any directory
    if cfg.data.image_size == "auto":  # stored resolved: the run's config.yaml says the size it trained at
        cfg.data.image_size = 48 if model is not None else default_input_size(cfg.model.name, cfg.model.pretrained)
    check_config(cfg, user_model=model is not None)  # before the process group, any data or any file
    dinfo = distributed.setup(cfg.train.device)
    with claim_run_dir(cfg.train.out):  # one run per directory: a second is refused before it writes
        return _fit(cfg, dinfo, resume, log or _default_log, data, model)


def _announce(run: TrainingRun, say) -> None:
    train, data, strategy, t = run.train, run.data, run.strategy, run.cfg.train
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
    controls = [
        f"{t.accumulate} batches per step (effective batch {t.batch_size * t.accumulate * run.dinfo.world_size})"
        if t.accumulate > 1
        else "",
        f"EMA of the weights (decay {t.ema:g}) evaluated" if t.ema is not None else "",
        f"gradient norm clipped at {t.grad_clip:g}" if t.grad_clip is not None else "",
        f"early stop after {t.early_stop} epochs without a better val mean class acc" if t.early_stop else "",
    ]
    if any(controls):
        say("; ".join(c for c in controls if c))


def _lr_at(run: TrainingRun, step: int) -> float:
    return learning_rate(run.cfg.optim, step, run.total_steps, run.cfg.train.epochs)


def _epoch_context(run: TrainingRun, epoch: int, log_record) -> EpochContext:
    """What a strategy's ``on_epoch_start`` may use (DICC re-clusters through it, with the
    trained model's features; its head split also rewrites the moving average's head)."""
    cfg, dinfo, kw = run.cfg, run.dinfo, run.eval_kw()
    steps = run.steps_per_epoch
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
        lr=lambda e: _lr_at(run, e * steps),
        averaged=run.ema.module if run.ema is not None else None,
    )


def _epoch_order(run: TrainingRun, epoch: int) -> torch.Tensor:
    """The dataset indices this rank trains on in ``epoch``, cut to whole batches."""
    cfg, dinfo, strategy, bs = run.cfg, run.dinfo, run.strategy, run.cfg.train.batch_size
    order = strategy.epoch_indices(run.train.labels, epoch, cfg.train.seed, dinfo.rank, dinfo.world_size)
    order = order[: run.batches_per_epoch * bs] if len(order) >= bs else order
    distributed.check_same(
        -(-len(order) // bs),
        f"epoch {epoch + 1}: the number of training batches "
        f"({strategy.name}.epoch_indices must give every rank as many indices)",
    )
    return order


def _with_progress(run: TrainingRun, batches, epoch: int):
    if not (run.cfg.train.progress and run.dinfo.is_main):
        return batches
    from tqdm import tqdm

    return tqdm(
        batches,
        total=run.batches_per_epoch,
        desc=f"epoch {epoch + 1}/{run.cfg.train.epochs}",
        leave=False,
        mininterval=1.0,
        file=sys.stderr,
    )


def _forward_loss(run: TrainingRun, x, y, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch's training loss, and how many of its samples the parent-class prediction
    gets right (training accuracy; under mixup against the label with the larger share)."""
    device, strategy, mixup = run.dinfo.device, run.strategy, float(run.cfg.augment.mixup)
    n = len(y)
    x, y, idx = _views(run, x.to(device, non_blocking=True), y.to(device), idx.to(device))
    if mixup > 0:
        x, perm, lam = run.augment.mix(x)
    keep, embed = strategy.wants_features, strategy.projection_dim is not None
    strategy.observe_inputs(x, run.augment.mean, run.augment.std)
    with run.precision.autocast():
        extra = {"return_projection": True} if embed else {}
        out = run.ddp_model(run.precision.prepare_input(x), return_features=keep, **extra)
    logits = out[0] if (keep or embed) else out
    if keep:  # the first view's features (the images as the other methods see them)
        strategy.observe_features(out[1][:n].detach(), y[:n], idx[:n])
    loss = strategy.loss(logits.float(), y, idx)
    target = y
    if mixup > 0:  # the mixture's loss: lam * loss(y) + (1 - lam) * loss(y of the partner)
        loss = lam * loss + (1.0 - lam) * strategy.loss(logits.float(), y[perm], idx[perm])
        target = y if lam >= 0.5 else y[perm]
    if embed:  # a representation term on the projected views (DICC's contrastive option)
        loss = loss + strategy.embedding_loss(out[2].float(), y, idx)
    with torch.no_grad():  # the first view's predictions
        correct = (strategy.parent_logits(logits[:n].detach().float()).argmax(1) == target[:n]).sum()
    return loss, correct


def _backward(run: TrainingRun, loss: torch.Tensor) -> None:
    (run.scaler.scale(loss) if run.scaler is not None else loss).backward()


def _optimizer_step(run: TrainingRun) -> torch.Tensor | None:
    """Clip (after unscaling, with a GradScaler), step, update the moving average; returns the
    gradient norm before clipping (with ``train.grad_clip``)."""
    clip, opt, scaler = run.cfg.train.grad_clip, run.optimizer, run.scaler
    norm = None
    if clip is not None:
        if scaler is not None:
            scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    run.step += 1
    if run.ema is not None:
        run.ema.update(run.model)
    return norm


def _train_epoch(run: TrainingRun, epoch: int) -> tuple[torch.Tensor, int]:
    """One pass over the epoch's batches, one optimiser step per ``train.accumulate`` of them
    (the last group of the epoch steps on what it has). Each micro-batch's loss is divided by its
    group's size, so a step's gradient is the mean over the group's samples as one batch of them
    all would give; under DDP only a group's last backward all-reduces (``no_sync``). Returns the
    sums of the loss per sample, the correct predictions and the gradient norms (on the device:
    no host sync per step), and the number of samples this rank saw."""
    cfg, dinfo, optimizer = run.cfg, run.dinfo, run.optimizer
    bs, k = cfg.train.batch_size, cfg.train.accumulate
    run.ddp_model.train()
    order = _epoch_order(run, epoch)
    n_batches = -(-len(order) // bs)
    sums = torch.zeros(3, dtype=torch.float64, device=dinfo.device)  # loss x n, correct, grad norms
    seen = 0
    batches = _with_progress(run, iterate_batches(run.train, order, bs, workers=cfg.data.workers), epoch)
    for i, (x, y, idx) in enumerate(batches):
        start = i - i % k
        group, last = min(k, n_batches - start), i + 1 == min(start + k, n_batches)
        if i == start:
            lr = _lr_at(run, run.step)
            for g in optimizer.param_groups:
                g["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
        sync = run.ddp_model.no_sync() if dinfo.enabled and not last else contextlib.nullcontext()
        with sync:
            loss, correct = _forward_loss(run, x, y, idx)
            _backward(run, loss / group if group > 1 else loss)
        if last:
            norm = _optimizer_step(run)
            if norm is not None:
                sums[2] += norm.detach().double()
        sums[0] += loss.detach().double() * len(y)
        sums[1] += correct
        seen += len(y)
    distributed.broadcast_buffers(run.model)  # every rank evaluates with the statistics rank 0 saves
    if run.ema is not None:
        run.ema.copy_buffers(run.model)
    return sums, seen


def _metric_kw(run: TrainingRun) -> dict:
    return dict(run.eval_kw(), train_counts=run.train.class_counts(), shot_thresholds=run.cfg.eval.shot_thresholds)


def _views(run: TrainingRun, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor):
    """The step's augmented batch: ``strategy.views`` augmentations of the images stacked (views
    of one image share its target and index), normalised."""
    views = int(run.strategy.views)
    if views == 1:
        return run.augment(x), y, idx
    return torch.cat([run.augment(x) for _ in range(views)]), y.repeat(views), idx.repeat(views)


def _validate(run: TrainingRun, record: dict) -> bool:
    """Score the hold-out into ``record`` (the EMA weights when there are some); True when the
    mean class accuracy is the best so far (the checkpoint that becomes ``best.pt``)."""
    if run.data.val is None:
        return False
    vm = evaluate(run.evaluated_model, run.judged, run.data.val, tta=run.cfg.eval.tta, **_metric_kw(run))
    record.update(
        {
            "val_accuracy": vm["accuracy"],
            "val_mean_class_accuracy": vm["mean_class_accuracy"],
            "val_macro_f1": vm["macro_f1"],
        }
    )
    if run.best is not None and vm["mean_class_accuracy"] <= run.best:
        return False
    run.best, run.best_epoch = vm["mean_class_accuracy"], record["epoch"]
    return True


def _early_stop(run: TrainingRun, epoch: int, log_record, say) -> bool:
    """Whether ``train.early_stop`` ends training after ``epoch`` (0-based): that many epochs
    without a better validation mean class accuracy, with epochs still to come. The stop is an
    event line of ``metrics.jsonl`` and ``final.json``'s ``early_stop_epoch``."""
    patience, done = run.cfg.train.early_stop, epoch + 1
    if patience is None or run.best_epoch is None or done >= run.cfg.train.epochs:
        return False
    if done - run.best_epoch < patience:
        return False
    run.stopped_epoch = done
    log_record(
        {
            "event": "early_stop",
            "epoch": done,
            "best_epoch": run.best_epoch,
            "best_val_mean_class_accuracy": run.best,
            "patience": patience,
        }
    )
    say(f"early stop after epoch {done}: no better val mean class acc since epoch {run.best_epoch} ({patience} epochs)")
    return True


def _epoch_line(run: TrainingRun, record: dict) -> str:
    val = (
        f"  val acc {100 * record['val_accuracy']:.2f} mca {100 * record['val_mean_class_accuracy']:.2f}"
        if "val_accuracy" in record
        else ""
    )
    return (
        f"epoch {record['epoch']}/{run.cfg.train.epochs}  loss {record['train_loss']:.4f}  "
        f"train acc {100 * record['train_accuracy']:.2f}{val}  ({record['time_epoch']:.1f}s)"
    )


def _test(run: TrainingRun, rd: RunDirectory, say) -> dict | None:
    """Load the selected checkpoint (best on validation; the last one without validation) into
    the evaluated model and evaluate it once on the test split."""
    dinfo, cfg = run.dinfo, run.cfg
    best_path = rd.best if (not dinfo.is_main or rd.best.exists()) else rd.last
    ckpt = load_on_rank0(best_path, dinfo, keys=("model", "strategy", "epoch", "_path"))
    run.evaluated_model.load_state_dict(ckpt["model"])
    run.strategy.load_state_dict(ckpt["strategy"]["state"])
    if run.data.test is None:
        return None
    name = Path(ckpt["_path"]).name
    final = final_record(
        evaluate(run.evaluated_model, run.judged, run.data.test, tta=cfg.eval.tta, **_metric_kw(run)),
        split=cfg.data.test_split,
        checkpoint=name,
        epoch=ckpt["epoch"],
        weights="ema" if run.ema is not None else "trained",
        best_val_mean_class_accuracy=run.best,
        early_stop_epoch=run.stopped_epoch,
        method=run.strategy.name,
        seed=cfg.train.seed,
        train_class_counts=run.train.class_counts(),
        precision=run.precision,
    )
    if dinfo.is_main:
        rd.write_final(final, run.train.class_names, title=f"{run.strategy.name} on {cfg.data.test_split} ({name})")
        say(f"test ({cfg.data.test_split}, {name} from epoch {ckpt['epoch']}):")
        say(format_metrics(final))
    return final


def _train_record(run: TrainingRun, epoch: int, sums: torch.Tensor, seen: int, t_hook: float, t_train: float):
    """The epoch's line of ``metrics.jsonl`` before validation (sums over every rank)."""
    total = distributed.all_reduce_sum(sums.clone()).tolist()
    if not math.isfinite(total[0]):
        raise FloatingPointError(
            f"epoch {epoch + 1}: the training loss became {total[0]} (lower optim.lr?); "
            f"{run.cfg.train.out}/checkpoints/last.pt holds the last good epoch"
        )
    n = max(1, seen * run.dinfo.world_size)
    record = {
        "epoch": epoch + 1,
        "lr": _lr_at(run, run.step - 1),
        "train_loss": total[0] / n,
        "train_accuracy": total[1] / n,
    }
    if run.cfg.train.grad_clip is not None:  # the mean norm before clipping, to choose the bound by
        record["train_grad_norm"] = total[2] / max(1, run.steps_per_epoch * run.dinfo.world_size)
    record.update({"time_hook": round(t_hook, 3), "time_train": round(t_train, 3)})
    return record


def _save(run: TrainingRun, rd: RunDirectory, epoch: int, improved: bool) -> None:
    """``last.pt`` (and ``best.pt`` when ``improved``, or every epoch without validation)."""
    states = rank_states(run.augment, run.strategy, run.dinfo)
    if run.dinfo.is_main:
        state = run.state_dict(epoch + 1, states)
        rd.save_checkpoints(state, best=improved or run.data.val is None)
    distributed.barrier()


def _train_epochs(run: TrainingRun, rd: RunDirectory, say) -> None:
    """The epochs from ``run.start_epoch`` on: the strategy's epoch hook, training, validation,
    the epoch's line, early stopping, the checkpoints."""
    cfg, main = run.cfg, run.dinfo.is_main

    def log_record(record: dict) -> None:
        if main:
            rd.log(record)

    if run.stopped_epoch is not None:
        say(f"training stopped early after epoch {run.stopped_epoch} (train.early_stop): nothing left to train")
    for epoch in range(run.start_epoch, cfg.train.epochs if run.stopped_epoch is None else run.start_epoch):
        t0 = time.perf_counter()
        run.strategy.on_epoch_start(_epoch_context(run, epoch, log_record))
        t_hook = time.perf_counter() - t0
        sums, seen = _train_epoch(run, epoch)
        record = _train_record(run, epoch, sums, seen, t_hook, time.perf_counter() - t0 - t_hook)
        improved = _validate(run, record)
        record["time_epoch"] = round(time.perf_counter() - t0, 3)
        log_record(record)
        say(_epoch_line(run, record))
        stop = _early_stop(run, epoch, log_record, say)
        _save(run, rd, epoch, improved)
        if stop:
            break


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
    tracker = create_logger(cfg.train.log, cfg.train.out, cfg.to_dict(), resume) if main else None
    rd = RunDirectory(cfg.train.out, logger=tracker)
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
    _train_epochs(run, rd, say)
    if main:
        rd.finish()
    final = _test(run, rd, say)
    model = run.evaluated_model
    model.eval()
    train = run.train
    shape = (
        tuple(train.images.shape[1:])
        if train.images is not None
        else (train.channels, train.image_size, train.image_size)
    )
    norm = (run.mean, run.std)
    return RunResult(rd.path, final, run.best, model, run.strategy, run.precision, norm, run.judged, shape)
