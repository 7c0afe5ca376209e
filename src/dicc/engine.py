"""Training as one plain function over a :class:`~dicc.strategies.Strategy`: :func:`fit`.

One code path for CPU, CUDA (with AMP) and torchrun/DDP. The engine never branches on a
method's name: everything method-specific is behind the strategy. Inference (features, logits,
metrics) is :mod:`dicc.inference`, re-exported here; the run directory's files are
:mod:`dicc.rundir`; a checkpoint's contents :mod:`dicc.training_state`.
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
from .checkpoint import save_atomic
from .config import Config, config_differences, flatten
from .data.build import RunData, build_run_data
from .data.loader import iterate_batches
from .data.transforms import BatchAugment, normalize, resolve_normalization
from .inference import evaluate, extract_features, predict_parent_logits  # noqa: F401 (the engine's API)
from .metrics import format_metrics, save_confusion_png
from .models import FER_NORMALIZATION, adapt_model, check_forward, create_model, default_normalization
from .precision import Precision, resolve_precision
from .rundir import RunDirectory, environment
from .schedule import learning_rate, make_optimizer  # noqa: F401 (the engine's API)
from .strategies import EpochContext, Strategy, create_strategy
from .strategies.posthoc import with_posthoc
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
    check_config(cfg, user_model=model is not None)  # before the process group, any data or any file
    return _fit(cfg, distributed.setup(cfg.train.device), resume, log or _default_log, data, model)


def _check_run_dir(rd: RunDirectory, cfg: Config, resume: bool, dinfo: distributed.DistInfo) -> None:
    """Rank 0 checks the run directory (fresh, or resumable with the same settings); every rank
    raises what it found (the others learn of it from raise_if_any rather than waiting)."""
    err = None
    if dinfo.is_main:
        try:
            if not resume and rd.holds_run():
                raise FileExistsError(
                    f"{rd.path} already holds a run; pass --resume to continue it or choose another --out"
                )
            if resume and not rd.last.exists():
                raise FileNotFoundError(f"--resume: no checkpoint at {rd.last}")
            saved = rd.saved_config() if resume else None
            if saved is not None:
                diff = config_differences(saved, cfg)
                if diff:
                    a, b = flatten(saved.to_dict()), flatten(cfg.to_dict())
                    shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff)
                    raise ValueError(
                        f"--resume: {rd.path} was trained with other settings ({shown}); resume with "
                        f"the run's own config (dicc train --out {rd.path} --resume) or start a new run"
                    )
        except Exception as e:  # noqa: BLE001 - raised on every rank
            err = e
    distributed.raise_if_any(err)


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
    device = dinfo.device
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    elif dinfo.enabled:  # share this node's cores among its processes (torchrun's default is 1 each)
        torch.set_num_threads(distributed.default_threads(dinfo))
    rd = RunDirectory(cfg.train.out, tensorboard=cfg.train.log == "tensorboard" and main)
    _check_run_dir(rd, cfg, resume, dinfo)

    torch.manual_seed(cfg.train.seed)
    data = data if data is not None else build_run_data(cfg.data)
    train = data.train
    counts = train.class_counts()
    strategy = create_strategy(cfg.method.name, counts, cfg.method.options, class_names=list(train.class_names))
    strategy.set_label_smoothing(cfg.train.label_smoothing)
    judged = with_posthoc(strategy, cfg.eval.logit_adjust)  # what validation and test see
    if user_model is not None:
        model = adapt_model(user_model, strategy.num_outputs, strategy.head_type).to(device)
        norm_default = FER_NORMALIZATION
    else:
        model = create_model(
            cfg.model.name,
            strategy.num_outputs,
            in_channels=train.channels,
            width=cfg.model.width,
            head_type=strategy.head_type,
            dropout=cfg.model.dropout,
            pretrained=cfg.model.pretrained,
            image_size=train.image_size,
        ).to(device)
        norm_default = default_normalization(cfg.model.name, cfg.model.pretrained)
    mean, std = resolve_normalization(cfg.augment.mean, cfg.augment.std, train.channels, norm_default)
    if user_model is not None:  # a model that cannot take the data fails now, in one line
        check_forward(model, normalize(train.get_batch(range(min(2, len(train)))).to(device), mean, std))
    precision = resolve_precision(cfg.train.amp, cfg.train.channels_last, device, model.convolutional)
    precision.prepare_model(model)
    optimizer = make_optimizer(cfg.optim, model.parameters())
    scaler = torch.amp.GradScaler(device.type) if precision.needs_scaler else None
    augment = BatchAugment(cfg.augment, seed=cfg.train.seed * 7919 + dinfo.rank, mean=mean, std=std)
    start_epoch, step, best = 0, 0, None

    if resume:
        ckpt = load_on_rank0(rd.last, dinfo)
        try:
            model.load_state_dict(ckpt["model"])
            strategy.load_state_dict(ckpt["strategy"]["state"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError) as err:
            raise ValueError(f"{rd.last}: does not fit this run's model/method ({str(err).splitlines()[0]})") from None
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        own = {"augment": ckpt["augment"], "rng": ckpt["rng"]["torch"]} if dinfo.rank == 0 else None
        if len(ckpt.get("rank_states") or []) == dinfo.world_size:
            own = ckpt["rank_states"][dinfo.rank]
        if own is not None:  # (a rank the checkpoint has no state for keeps its fresh seeds)
            augment.load_state_dict(own["augment"])
            torch.set_rng_state(own["rng"])
            strategy.load_rank_state_dict(own.get("strategy") or {})
        start_epoch, step, best = ckpt["epoch"], ckpt["step"], ckpt["best_val"]
        say(f"resuming {rd.path} after epoch {start_epoch}")

    if main:
        rd.start(cfg, environment(precision), strategy.run_files(), fresh=not resume)
        if resume:  # the epochs after the checkpoint are redone: their records go
            rd.truncate_log(start_epoch)
    names = train.class_names
    say(f"train: {train.source}  n={len(train)}  " + "  ".join(f"{n}={c}" for n, c in zip(names, counts)))
    if data.val is not None:
        say(f"val:   {data.val.source}  n={len(data.val)}")
    if strategy.describe():
        say(strategy.describe())
    say(
        f"method {strategy.name}, model {cfg.model.name} ({sum(p.numel() for p in model.parameters()):,} "
        f"parameters), device {device} ({precision.describe()}), world size {dinfo.world_size}"
    )

    ddp_model = model
    if dinfo.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    per_rank = -(-len(train) // dinfo.world_size)
    bs = cfg.train.batch_size
    steps_per_epoch = per_rank // bs if per_rank >= bs else 1
    total_steps = steps_per_epoch * cfg.train.epochs
    eval_kw = dict(batch_size=cfg.train.eval_batch_size, device=device, mean=mean, std=std, precision=precision)
    mixup = float(cfg.augment.mixup)

    def log_record(record: dict) -> None:
        if main:
            rd.log(record)

    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        ctx = EpochContext(
            epoch=epoch,
            epochs=cfg.train.epochs,
            model=model,
            device=device,
            extract_features=lambda indices=None: extract_features(
                model, train, rank=dinfo.rank, world_size=dinfo.world_size, indices=indices, **eval_kw
            ),
            # method events belong to the epoch they start (1-based, as the epoch lines)
            log=lambda record, e=epoch: log_record({**record, "epoch": e + 1}),
            rank=dinfo.rank,
            world_size=dinfo.world_size,
            broadcast=distributed.broadcast,
            gather=distributed.gather_by_index,
            check=distributed.raise_if_any,
            optimizer=optimizer,
            lr=lambda e: learning_rate(cfg.optim, e * steps_per_epoch, total_steps),
        )
        strategy.on_epoch_start(ctx)
        t_hook = time.perf_counter() - t0

        ddp_model.train()
        order = strategy.epoch_indices(train.labels, epoch, cfg.train.seed, dinfo.rank, dinfo.world_size)
        order = order[: steps_per_epoch * bs] if len(order) >= bs else order
        distributed.check_same(
            -(-len(order) // bs),
            f"epoch {epoch + 1}: the number of training batches "
            f"({strategy.name}.epoch_indices must give every rank as many indices)",
        )
        loss_sum = torch.zeros((), device=device)
        seen = 0
        batches = iterate_batches(train, order, bs, workers=cfg.data.workers)
        if cfg.train.progress and main:
            from tqdm import tqdm

            batches = tqdm(
                batches,
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                leave=False,
                mininterval=1.0,
                file=sys.stderr,
            )
        for x, y, idx in batches:
            lr = learning_rate(cfg.optim, step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = augment(x.to(device, non_blocking=True))
            y, idx = y.to(device, non_blocking=True), idx.to(device, non_blocking=True)
            if mixup > 0:
                x, perm, lam = augment.mix(x)
            keep = strategy.wants_features
            with precision.autocast():
                out = ddp_model(precision.prepare_input(x), return_features=keep)
            logits = out[0] if keep else out
            if keep:
                strategy.observe_features(out[1].detach(), y, idx)
            loss = strategy.loss(logits.float(), y, idx)
            if mixup > 0:  # the mixture's loss: lam * loss(y) + (1 - lam) * loss(y of the partner)
                loss = lam * loss + (1.0 - lam) * strategy.loss(logits.float(), y[perm], idx[perm])
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            step += 1
            loss_sum += loss.detach() * len(y)  # no host sync per step: checked once per epoch
            seen += len(y)
        distributed.broadcast_buffers(model)  # every rank evaluates with the statistics rank 0 saves
        t_train = time.perf_counter() - t0 - t_hook
        total_loss = float(distributed.all_reduce_sum(loss_sum.clone()).item())
        if not math.isfinite(total_loss):
            raise FloatingPointError(
                f"epoch {epoch + 1}: the training loss became {total_loss} (lower optim.lr?); "
                f"{rd.last} holds the last good epoch"
            )

        record = {
            "epoch": epoch + 1,
            "lr": learning_rate(cfg.optim, step - 1, total_steps),
            "train_loss": total_loss / max(1, seen * dinfo.world_size),
            "time_hook": round(t_hook, 3),
            "time_train": round(t_train, 3),
        }
        improved = False
        if data.val is not None:
            vm = evaluate(
                model, judged, data.val, rank=dinfo.rank, world_size=dinfo.world_size, tta=cfg.eval.tta, **eval_kw
            )
            record.update(
                {
                    "val_accuracy": vm["accuracy"],
                    "val_mean_class_accuracy": vm["mean_class_accuracy"],
                    "val_macro_f1": vm["macro_f1"],
                }
            )
            improved = best is None or vm["mean_class_accuracy"] > best
            if improved:
                best = vm["mean_class_accuracy"]
        record["time_epoch"] = round(time.perf_counter() - t0, 3)
        log_record(record)
        val_txt = (
            f"  val acc {100 * record['val_accuracy']:.2f} mca {100 * record['val_mean_class_accuracy']:.2f}"
            if data.val is not None
            else ""
        )
        say(
            f"epoch {epoch + 1}/{cfg.train.epochs}  loss {record['train_loss']:.4f}{val_txt}  "
            f"({record['time_epoch']:.1f}s)"
        )
        states = rank_states(augment, strategy, dinfo)
        if main:
            state = training_state(
                model,
                strategy,
                optimizer,
                augment,
                cfg,
                epoch + 1,
                step,
                best,
                train,
                states,
                scaler,
                precision,
                (mean, std),
            )
            save_atomic(state, rd.last)
            if improved or data.val is None:
                save_atomic(state, rd.best)
            rd.write_csv()
        distributed.barrier()

    if main:
        rd.write_curves()
        rd.close()
    final = None
    best_path = rd.best if (not main or rd.best.exists()) else rd.last
    ckpt = load_on_rank0(best_path, dinfo, keys=("model", "strategy", "epoch", "_path"))
    model.load_state_dict(ckpt["model"])
    strategy.load_state_dict(ckpt["strategy"]["state"])
    if data.test is not None:
        final = evaluate(
            model, judged, data.test, rank=dinfo.rank, world_size=dinfo.world_size, tta=cfg.eval.tta, **eval_kw
        )
        final.update(
            {
                "split": cfg.data.test_split,
                "checkpoint": Path(ckpt["_path"]).name,
                "epoch": ckpt["epoch"],
                "best_val_mean_class_accuracy": best,
                "method": strategy.name,
                "seed": cfg.train.seed,
                "train_class_counts": [int(c) for c in counts],
                **precision.to_dict(),
            }
        )
        if main:
            rd.write_final(final)
            save_confusion_png(
                final["confusion_matrix"],
                names,
                rd.path / "confusion_test.png",
                title=f"{strategy.name} on {cfg.data.test_split} ({Path(ckpt['_path']).name})",
            )
            say(f"test ({cfg.data.test_split}, {Path(ckpt['_path']).name} from epoch {ckpt['epoch']}):")
            say(format_metrics(final))
    model.eval()
    return RunResult(rd.path, final, best, model, strategy, precision, (mean, std))
