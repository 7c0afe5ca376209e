"""Decoupled classifier re-balancing (Kang et al., ICLR 2020) and post-hoc logit adjustment: a
second stage applied to a finished run, written as a run directory of its own.

``rebalance(parent_run, stage, out)`` takes the parent's best checkpoint (chosen on its
validation hold-out), keeps its backbone and re-balances the classifier; every choice (tau, the
cRT epochs) is made on the same hold-out, the test split is evaluated once at the end. Stages
(``stage["name"]``, options in the same mapping):

``crt``
    classifier re-training: the backbone is frozen, a new linear head is trained for ``epochs``
    (default 10) with class-balanced sampling (every class equally often) on the penultimate
    features of the training images, computed once: ``views`` (default 2) feature sets, the
    first without augmentation, the others with the run's training augmentation (Kang et al.
    train cRT with the usual augmentation; a frozen backbone makes precomputing them exact up to
    which augmented copies are seen). SGD (momentum 0.9, the run's weight decay), cosine
    schedule from ``lr`` (default: the run's ``optim.lr``), batch 128. ``space``: ``parent``
    (default) trains a C-way head on the class labels: the re-balanced classifier is the emotion
    classifier itself, and for DICC it replaces the sub-class head and its merge; ``subclass``
    (DICC only) trains an S-way head on the pseudo-labels with sub-class-balanced sampling and
    keeps DICC's merge.
``tau_norm``
    tau-normalisation: each head row ``w_j`` becomes ``w_j / ||w_j||^tau`` and the bias is
    dropped (Kang et al.'s classifier has none), ``tau`` in ``taus`` (default 0, 0.1, ..., 2)
    chosen by validation mean class accuracy (``tau: auto``, default) or given. ``space``
    (DICC): ``subclass`` (default) normalises every sub-class row and then merges as DICC does;
    ``parent`` divides all rows of a class by the mean norm of that class's rows (to the power
    tau), keeping the sub-classes' relative scales. LDAM's cosine head has unit rows: tau-norm
    changes nothing there.
``checkpoint`` (every stage): ``best`` (default: the parent's checkpoint chosen on validation)
or ``last``.

``logit_adjust``
    post-hoc logit adjustment (Menon et al., ICLR 2021): parent logits ``- tau * log pi`` with
    the training prior ``pi``; ``tau`` auto (chosen on validation from ``taus``, default 0, 0.25,
    ..., 2) or given. Recorded as ``eval.logit_adjust`` in the stage's config and checkpoint.

The stage's run directory holds ``config.yaml`` (the parent's, with ``eval`` and ``train.out``
updated), ``stage.json`` (parent, stage, what was chosen and the validation score of every
candidate), ``metrics.jsonl`` (cRT's epochs), ``checkpoints/best.pt`` (a normal checkpoint:
``dicc evaluate``, ``predict`` and ``export`` take the directory) and ``final.json``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_checkpoint, model_from_checkpoint, save_atomic, write_text_atomic
from .config import Config, from_dict, save_config

STAGES = ("crt", "tau_norm", "logit_adjust")
_OPTIONS = {
    "crt": {"epochs", "lr", "views", "space", "batch_size", "weight_decay", "checkpoint"},
    "tau_norm": {"tau", "taus", "space", "checkpoint"},
    "logit_adjust": {"tau", "taus", "checkpoint"},
}
logger = logging.getLogger("dicc")


def check_stage(stage: dict) -> dict:
    """The stage mapping with its name and options checked (ValueError naming the problem)."""
    if not isinstance(stage, dict) or "name" not in stage:
        raise ValueError(f"stage: expected a mapping with 'name' (one of {', '.join(STAGES)}), got {stage!r}")
    name = stage["name"]
    if name not in STAGES:
        raise ValueError(f"stage: unknown name {name!r}; valid: {', '.join(STAGES)}")
    unknown = sorted(set(stage) - {"name"} - _OPTIONS[name])
    if unknown:
        raise ValueError(
            f"stage {name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(_OPTIONS[name]))}"
        )
    if stage.get("checkpoint", "best") not in ("best", "last"):
        raise ValueError(f"stage {name}: checkpoint must be best or last, got {stage['checkpoint']!r}")
    if "space" in stage and stage["space"] not in ("parent", "subclass"):
        raise ValueError(f"stage {name}: space must be parent or subclass, got {stage['space']!r}")
    tau = stage.get("tau", "auto")
    if tau != "auto" and not (isinstance(tau, (int, float)) and math.isfinite(tau)):
        raise ValueError(f"stage {name}: tau must be 'auto' or a number, got {tau!r}")
    for key in ("epochs", "views", "batch_size"):
        if key in stage and (isinstance(stage[key], bool) or not isinstance(stage[key], int) or stage[key] < 1):
            raise ValueError(f"stage {name}: {key} must be an integer >= 1, got {stage[key]!r}")
    return dict(stage)


# -- the pieces ---------------------------------------------------------------------------------
def tau_normalized(weight: torch.Tensor, tau: float, groups: list[range] | None = None) -> torch.Tensor:
    """``w_j / ||w_j||^tau`` per row; with ``groups`` (row ranges) every row of a group is divided
    by the group's mean row norm to the power ``tau``."""
    norms = weight.norm(dim=1).clamp_min(1e-12)
    if groups is not None:
        norms = norms.clone()
        for r in groups:
            norms[r.start : r.stop] = norms[r.start : r.stop].mean()
    return weight / norms.pow(tau)[:, None]


def _features(model, ds, indices, eval_kw, augment=None, seed: int = 0) -> torch.Tensor:
    """Penultimate features (not normalised) of ``ds[indices]``, eval mode; with ``augment`` (a
    BatchAugment) of augmented copies."""
    from .data.loader import iterate_batches
    from .data.transforms import normalize

    model.eval()
    out = []
    with torch.no_grad():
        for x, _, _ in iterate_batches(ds, indices, eval_kw["batch_size"]):
            x = augment(x) if augment is not None else normalize(x, eval_kw["mean"], eval_kw["std"])
            out.append(model.features(x).float())
    return torch.cat(out) if out else torch.zeros(0, model.feature_dim)


def _mca(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    from .metrics import confusion_matrix, metrics_from_confusion

    cm = confusion_matrix(labels, logits.argmax(1), num_classes)
    return metrics_from_confusion(cm, [str(i) for i in range(num_classes)])["mean_class_accuracy"]


def _choose(candidates: list[float], score: Callable[[float], float]) -> tuple[float, dict]:
    """The candidate with the best score (the first of ties: the smallest change) and all scores."""
    scores = {float(c): float(score(c)) for c in candidates}
    best = max(scores, key=lambda c: (scores[c], -candidates.index(c)))
    return best, scores


def _train_head(
    feats: torch.Tensor,
    targets: torch.Tensor,
    num_outputs: int,
    groups: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    on_epoch: Callable[[int, nn.Linear, float], None],
) -> nn.Linear:
    """A new linear head on fixed ``feats`` trained with draws balanced over ``groups``."""
    from .samplers import group_sampling_weights, weighted_indices

    torch.manual_seed(seed)
    head = nn.Linear(feats.shape[1], num_outputs)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    weights = group_sampling_weights(groups, int(groups.max()) + 1, 1.0)
    n = len(targets)
    steps = max(1, n // batch_size)
    total = steps * epochs
    step = 0
    for epoch in range(epochs):
        order = weighted_indices(groups, weights, epoch, seed)
        loss_sum = 0.0
        for s in range(steps):
            idx = order[s * batch_size : (s + 1) * batch_size]
            for g in opt.param_groups:
                g["lr"] = lr * (1 + math.cos(math.pi * step / total)) / 2
            loss = F.cross_entropy(head(feats[idx]), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach()) * len(idx)
        on_epoch(epoch, head, loss_sum / (steps * batch_size))
    return head


# -- the stage ----------------------------------------------------------------------------------
#: what a stage writes into its directory (with dicc compare's record and atomic writes' temporaries):
#: a directory holding anything else is not an earlier attempt and is never cleared
_STAGE_FILES = {
    ".lock",
    "config.yaml",
    "environment.json",
    "stage.json",
    "metrics.jsonl",
    "final.json",
    "confusion_test.png",
    "checkpoints",
    "best.pt",
}


def _check_out(out: Path, parent: Path) -> None:
    if Path(os.path.realpath(parent)).is_relative_to(os.path.realpath(out)):
        raise ValueError(f"--out {out}: is or holds the parent run {parent}; choose a new directory for the stage")


def _clear_attempt(out: Path) -> None:
    """Empty ``out`` (what an interrupted attempt left), keeping its lock; refuse an ``out`` that
    holds files no stage writes (another run's)."""
    found = [p for p in out.rglob("*") if not p.name.startswith(".") or p.name == ".lock"]
    other = sorted(str(p.relative_to(out)) for p in found if p.name not in _STAGE_FILES and not p.name.endswith(".tmp"))
    if other or (out / "checkpoints" / "last.pt").exists():
        shown = ", ".join(other[:3]) or "checkpoints/last.pt"
        raise FileExistsError(
            f"--out {out}: holds files a re-balancing stage does not write ({shown}): another run's; "
            "choose a new directory for the stage"
        )
    for p in out.iterdir():
        if p.name != ".lock":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def rebalance(parent_run_dir: str | Path, stage: dict, out: str | Path, *, log: Callable | None = None) -> dict:
    """Apply ``stage`` (see the module docstring) to the finished run ``parent_run_dir`` and
    write the result as the run directory ``out`` (replacing what an interrupted attempt left;
    an ``out`` that is the parent, or holds another run's files, is refused); returns the test
    metrics (``final.json``; None-valued when the parent has no test split). ``out`` is held
    (:mod:`dicc.runlock`) while the stage runs: a second process using it is refused."""
    from .runlock import claim

    stage = check_stage(stage)
    _check_out(Path(out), Path(parent_run_dir))
    with claim(out):
        return _rebalance(Path(parent_run_dir), stage, Path(out), log)


def _rebalance(parent: Path, stage: dict, out: Path, log: Callable | None) -> dict:
    from . import engine
    from .data.build import build_run_data
    from .data.transforms import BatchAugment
    from .precision import resolve_precision
    from .rundir import RunDirectory, environment
    from .strategies import create_strategy

    say = log or (lambda *a, **k: logger.info(" ".join(map(str, a))))
    name = stage["name"]
    src = parent / "checkpoints" / f"{stage.get('checkpoint', 'best')}.pt"
    ckpt = load_checkpoint(src)
    cfg = from_dict(Config, ckpt["config"])
    data = build_run_data(cfg.data)
    if data.val is None:
        raise ValueError(f"{parent}: the run has no validation split (data.val); a re-balancing stage chooses on it")
    model, strategy = model_from_checkpoint(ckpt)
    precision = resolve_precision(cfg.train.amp, cfg.train.channels_last, "cpu", model.convolutional)
    eval_kw = dict(
        batch_size=cfg.train.eval_batch_size, mean=ckpt["normalization"]["mean"], std=ckpt["normalization"]["std"]
    )
    train, val = data.train, data.val
    C = len(ckpt["class_names"])
    is_dicc = hasattr(strategy, "plan")
    space = stage.get("space", "subclass" if name == "tau_norm" else "parent")
    if space == "subclass" and name == "crt" and not (is_dicc and strategy.num_outputs == strategy.plan.S):
        raise ValueError(
            "stage crt: space=subclass needs a DICC run with a sub-class head (its sub-class pseudo-labels)"
        )
    val_feats = _features(model, val, torch.arange(len(val)), eval_kw)
    record: dict = {"parent": str(parent.resolve()), "parent_checkpoint": Path(ckpt["_path"]).name, "stage": stage}
    rd = RunDirectory(out)
    _clear_attempt(rd.path)  # an interrupted attempt: made anew
    new_cfg = copy.deepcopy(cfg)
    new_cfg.train.out = str(rd.path)
    head = model.head

    if name == "logit_adjust":
        from .strategies.posthoc import PostHocAdjusted

        taus = [float(t) for t in stage.get("taus", [0.25 * i for i in range(9)])]
        with torch.no_grad():
            base = strategy.parent_logits(head(val_feats).float())
        log_prior = PostHocAdjusted(strategy, 1.0).log_prior

        def score(t):
            return _mca(base - t * log_prior, val.labels, C)

        tau, scores = (float(stage["tau"]), {}) if stage.get("tau", "auto") != "auto" else _choose(taus, score)
        new_cfg.eval.logit_adjust = tau
        record.update({"chosen": {"tau": tau}, "val_mean_class_accuracy": scores})
    elif name == "tau_norm":
        w = head.weight.detach().clone()
        groups = [strategy.head_plan.subclass_range(c) for c in range(C)] if (is_dicc and space == "parent") else None
        taus = [float(t) for t in stage.get("taus", [round(0.1 * i, 1) for i in range(21)])]
        with torch.no_grad():
            if getattr(head, "bias", None) is not None:
                head.bias.zero_()

            def score(t):
                head.weight.copy_(tau_normalized(w, t, groups))
                return _mca(strategy.parent_logits(head(val_feats).float()), val.labels, C)

            tau, scores = (float(stage["tau"]), {}) if stage.get("tau", "auto") != "auto" else _choose(taus, score)
            head.weight.copy_(tau_normalized(w, tau, groups))
        record.update(
            {"chosen": {"tau": tau, "space": space if is_dicc else "parent"}, "val_mean_class_accuracy": scores}
        )
    else:  # crt
        views = int(stage.get("views", 2))
        norm = ckpt["normalization"]
        augment = BatchAugment(cfg.augment, seed=cfg.train.seed * 7919 + 17, mean=norm["mean"], std=norm["std"])
        idx = torch.arange(len(train))
        feats = torch.cat([_features(model, train, idx, eval_kw, augment if v else None) for v in range(views)])
        if space == "subclass":
            targets = strategy.pseudo.repeat(views)
            num_out, new_strategy = strategy.num_outputs, strategy
        else:
            targets = train.labels.repeat(views)
            num_out = C
            new_strategy = create_strategy("ce", ckpt["class_counts"], {}, class_names=ckpt["class_names"])

        def on_epoch(epoch, h, loss):
            with torch.no_grad():
                z = h(val_feats)
                vm = _mca(new_strategy.parent_logits(z), val.labels, C)
            rd.log({"epoch": epoch + 1, "train_loss": loss, "val_mean_class_accuracy": vm, "time_epoch": 0.0})
            say(f"cRT epoch {epoch + 1}: loss {loss:.4f}  val mca {100 * vm:.2f}")

        new_head = _train_head(
            feats,
            targets,
            num_out,
            targets,
            epochs=int(stage.get("epochs", 10)),
            lr=float(stage.get("lr", cfg.optim.lr)),
            weight_decay=float(stage.get("weight_decay", cfg.optim.weight_decay)),
            batch_size=int(stage.get("batch_size", 128)),
            seed=cfg.train.seed,
            on_epoch=on_epoch,
        )
        model.head = new_head  # outside training: no DDP hooks to keep
        strategy = new_strategy
        if space == "parent":
            new_cfg.method.name, new_cfg.method.options = "ce", {}
        record.update({"chosen": {"space": space, "views": views}})

    # a normal checkpoint of the re-balanced model
    new = dict(ckpt)
    new.pop("_path", None)
    new["config"] = new_cfg.to_dict()
    new["model"] = {
        k: v.detach().float().contiguous() if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    new["model_spec"] = {
        **ckpt["model_spec"],
        "num_outputs": int(model.head.out_features),
        "head_type": "linear" if isinstance(model.head, nn.Linear) else ckpt["model_spec"]["head_type"],
    }
    new["strategy"] = {"name": strategy.name, "options": new_cfg.method.options, "state": strategy.state_dict()}
    for key in ("optimizer", "augment", "rng", "rank_states", "scaler", "raw_model"):
        new.pop(key, None)
    new["environment"] = environment(precision)
    new["stage"] = {k: v for k, v in record.items() if k != "val_mean_class_accuracy"}
    save_atomic(new, rd.best)
    save_config(new_cfg, rd.config)
    write_text_atomic(rd.path / "environment.json", json.dumps(environment(precision), indent=2))

    # evaluated as any checkpoint is: validation (recorded) and test (final.json)
    loaded = load_checkpoint(rd.best)
    m2, s2 = model_from_checkpoint(loaded)
    precision.prepare_model(m2)
    judged = s2  # (model_from_checkpoint applies the checkpoint's eval.logit_adjust)
    kw = dict(
        batch_size=cfg.train.eval_batch_size,
        mean=eval_kw["mean"],
        std=eval_kw["std"],
        precision=precision,
        tta=new_cfg.eval.tta,
        train_counts=ckpt["class_counts"],
        shot_thresholds=new_cfg.eval.shot_thresholds,
    )
    vm = engine.evaluate(m2, judged, val, **kw)
    record["val"] = {k: vm[k] for k in ("accuracy", "mean_class_accuracy", "macro_f1")}
    write_text_atomic(rd.path / "stage.json", json.dumps(record, indent=2))
    final: dict = {}
    if data.test is not None:
        final = engine.evaluate(m2, judged, data.test, **kw)
        final.update(
            {
                "split": cfg.data.test_split,
                "checkpoint": "best.pt",
                "epoch": ckpt.get("epoch"),
                "best_val_mean_class_accuracy": vm["mean_class_accuracy"],
                "method": f"{strategy.name}+{name}",
                "seed": cfg.train.seed,
                "train_class_counts": [int(c) for c in ckpt["class_counts"]],
                "stage": record["stage"],
                "parent": record["parent"],
                **precision.to_dict(),
            }
        )
        rd.write_final(final, list(ckpt["class_names"]), title=f"{parent.name} + {name} on {cfg.data.test_split}")
        from .metrics import format_metrics

        say(f"{name} on {parent}: val mca {100 * vm['mean_class_accuracy']:.2f}; test ({cfg.data.test_split}):")
        say(format_metrics(final))
    return final


__all__ = ["STAGES", "check_stage", "rebalance", "tau_normalized"]
