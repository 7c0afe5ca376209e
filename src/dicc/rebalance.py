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
``logit_adjust``
    post-hoc logit adjustment (Menon et al., ICLR 2021): parent logits ``- tau * log pi`` with
    the training prior ``pi``; ``tau`` auto (chosen on validation from ``taus``, default 0, 0.25,
    ..., 2) or given. Recorded as ``eval.logit_adjust`` in the stage's config and checkpoint.

``checkpoint`` (every stage): ``best`` (default: the parent's checkpoint chosen on validation)
or ``last``.

The stages are a registry (:func:`register_stage`): a stage is a function of the loaded parent
(:class:`Parent`) that changes its model, strategy or new config and says what it chose;
:func:`rebalance` loads the parent, runs the stage and is the one writer of the stage's run
directory (:func:`_write_stage`), whose ``final.json`` is built as the engine's
(:func:`dicc.rundir.final_record`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .atomic import save_atomic, write_text_atomic
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import Config, from_dict, save_config
from .seeds import derive_seed

logger = logging.getLogger("dicc")


@dataclass(frozen=True)
class Stage:
    """A registered second stage: its options (besides ``name``), the ``space`` it works in by
    default, and the function applying it to a loaded :class:`Parent`."""

    name: str
    options: frozenset
    apply: Callable[["Parent"], dict]
    default_space: str = "parent"


_STAGES: dict[str, Stage] = {}


def register_stage(name: str, options, *, default_space: str = "parent"):
    """Decorator registering ``fn(parent) -> record`` as the stage ``name`` (``options``: the
    keys its mapping may hold besides ``name``; the record holds at least ``chosen``)."""

    def deco(fn: Callable[["Parent"], dict]) -> Callable[["Parent"], dict]:
        _STAGES[name] = Stage(name, frozenset(options), fn, default_space)
        return fn

    return deco


def check_stage(stage: dict) -> dict:
    """The stage mapping with its name and options checked (ValueError naming the problem)."""
    if not isinstance(stage, dict) or "name" not in stage:
        raise ValueError(f"stage: expected a mapping with 'name' (one of {', '.join(STAGES)}), got {stage!r}")
    name = stage["name"]
    if name not in _STAGES:
        raise ValueError(f"stage: unknown name {name!r}; valid: {', '.join(STAGES)}")
    options = _STAGES[name].options
    unknown = sorted(set(stage) - {"name"} - options)
    if unknown:
        raise ValueError(f"stage {name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(options))}")
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


# -- the parent run, loaded -----------------------------------------------------------------------
@dataclass
class Parent:
    """What a stage works on: the parent's checkpoint, config, data, model and strategy, the
    validation features, and the stage's own config (a copy of the parent's). A stage may
    replace ``model.head``, ``strategy`` and entries of ``new_cfg``; ``log_epoch`` records a
    line of the stage's ``metrics.jsonl``."""

    path: Path
    stage: dict
    ckpt: dict
    cfg: Config
    data: Any
    model: nn.Module
    strategy: Any
    precision: Any
    eval_kw: dict
    space: str
    val_feats: torch.Tensor | None = field(repr=False, default=None)
    new_cfg: Config | None = None
    log_epoch: Callable[[dict], None] | None = None
    say: Callable[..., None] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.ckpt["class_names"])

    @property
    def val(self):
        return self.data.val

    def tau(self, default_taus: list[float], score: Callable[[float], float]) -> tuple[float, dict]:
        """The stage's ``tau``: given, or chosen on validation from ``taus`` (all scores kept)."""
        if self.stage.get("tau", "auto") != "auto":
            return float(self.stage["tau"]), {}
        return _choose([float(t) for t in self.stage.get("taus", default_taus)], score)


def _load_parent(parent: Path, stage: dict) -> Parent:
    """The parent's checkpoint (``stage["checkpoint"]``), data, model and strategy; refused
    without validation data, or where the stage's space needs what the run lacks."""
    from .data.build import build_run_data
    from .precision import resolve_precision

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
    space = stage.get("space", _STAGES[stage["name"]].default_space)
    sub = strategy.subclasses()
    if space == "subclass" and stage["name"] == "crt" and not (sub is not None and strategy.num_outputs == sub[1].S):
        raise ValueError(
            "stage crt: space=subclass needs a DICC run with a sub-class head (its sub-class pseudo-labels)"
        )
    return Parent(parent, stage, ckpt, cfg, data, model, strategy, precision, eval_kw, space)


# -- the stages ---------------------------------------------------------------------------------
@register_stage("crt", {"epochs", "lr", "views", "space", "batch_size", "weight_decay", "checkpoint"})
def _crt(p: Parent) -> dict:
    """Classifier re-training on the frozen backbone's features (see the module docstring)."""
    from .data.transforms import BatchAugment
    from .strategies import create_strategy

    cfg, ckpt, train, C = p.cfg, p.ckpt, p.data.train, p.num_classes
    views = int(p.stage.get("views", 2))
    norm = ckpt["normalization"]
    seed = derive_seed(cfg.train.seed, "crt_augment")
    augment = BatchAugment(cfg.augment, seed=seed, mean=norm["mean"], std=norm["std"])
    idx = torch.arange(len(train))
    feats = torch.cat([_features(p.model, train, idx, p.eval_kw, augment if v else None) for v in range(views)])
    if p.space == "subclass":
        targets = p.strategy.subclasses()[0].repeat(views)
        num_out, new_strategy = p.strategy.num_outputs, p.strategy
    else:
        targets = train.labels.repeat(views)
        num_out = C
        new_strategy = create_strategy("ce", ckpt["class_counts"], {}, class_names=ckpt["class_names"])

    def on_epoch(epoch, h, loss):
        with torch.no_grad():
            z = h(p.val_feats)
            vm = _mca(new_strategy.parent_logits(z), p.val.labels, C)
        p.log_epoch({"epoch": epoch + 1, "train_loss": loss, "val_mean_class_accuracy": vm, "time_epoch": 0.0})
        p.say(f"cRT epoch {epoch + 1}: loss {loss:.4f}  val mca {100 * vm:.2f}")

    new_head = _train_head(
        feats,
        targets,
        num_out,
        targets,
        epochs=int(p.stage.get("epochs", 10)),
        lr=float(p.stage.get("lr", cfg.optim.lr)),
        weight_decay=float(p.stage.get("weight_decay", cfg.optim.weight_decay)),
        batch_size=int(p.stage.get("batch_size", 128)),
        seed=cfg.train.seed,
        on_epoch=on_epoch,
    )
    p.model.head = new_head  # outside training: no DDP hooks to keep
    p.strategy = new_strategy
    if p.space == "parent":
        p.new_cfg.method.name, p.new_cfg.method.options = "ce", {}
    return {"chosen": {"space": p.space, "views": views}}


@register_stage("tau_norm", {"tau", "taus", "space", "checkpoint"}, default_space="subclass")
def _tau_norm(p: Parent) -> dict:
    """Tau-normalisation of the head's rows, tau chosen on validation (see the module docstring)."""
    head, strategy, C = p.model.head, p.strategy, p.num_classes
    w = head.weight.detach().clone()
    grouped = strategy.head_groups() is not None  # sub-classes: their rows normalised per class or each
    groups = strategy.head_groups() if (grouped and p.space == "parent") else None
    with torch.no_grad():
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()

        def score(t):
            head.weight.copy_(tau_normalized(w, t, groups))
            return _mca(strategy.parent_logits(head(p.val_feats).float()), p.val.labels, C)

        tau, scores = p.tau([round(0.1 * i, 1) for i in range(21)], score)
        head.weight.copy_(tau_normalized(w, tau, groups))
    return {"chosen": {"tau": tau, "space": p.space if grouped else "parent"}, "val_mean_class_accuracy": scores}


@register_stage("logit_adjust", {"tau", "taus", "checkpoint"})
def _logit_adjust(p: Parent) -> dict:
    """Post-hoc logit adjustment, tau chosen on validation; kept as the config's ``eval.logit_adjust``."""
    from .strategies.posthoc import PostHocAdjusted

    with torch.no_grad():
        base = p.strategy.parent_logits(p.model.head(p.val_feats).float())
    log_prior = PostHocAdjusted(p.strategy, 1.0).log_prior

    def score(t):
        return _mca(base - t * log_prior, p.val.labels, p.num_classes)

    tau, scores = p.tau([0.25 * i for i in range(9)], score)
    p.new_cfg.eval.logit_adjust = tau
    return {"chosen": {"tau": tau}, "val_mean_class_accuracy": scores}


#: the registered stages, in the order they were registered
STAGES = tuple(_STAGES)


# -- the stage's run directory -------------------------------------------------------------------
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
    "reliability_test.png",
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
    from .rundir import RunDirectory

    say = log or (lambda *a, **k: logger.info(" ".join(map(str, a))))
    p = _load_parent(parent, stage)
    p.say = say
    p.val_feats = _features(p.model, p.val, torch.arange(len(p.val)), p.eval_kw)
    record: dict = {"parent": str(parent.resolve()), "parent_checkpoint": Path(p.ckpt["_path"]).name, "stage": stage}
    rd = RunDirectory(out)
    _clear_attempt(rd.path)  # an interrupted attempt: made anew
    p.new_cfg = copy.deepcopy(p.cfg)
    p.new_cfg.train.out = str(rd.path)
    p.log_epoch = rd.log
    record.update(_STAGES[stage["name"]].apply(p))
    return _write_stage(p, rd, record)


def _stage_checkpoint(p: Parent, record: dict) -> dict:
    """A normal checkpoint of the re-balanced model (no training state: nothing resumes it)."""
    from .rundir import environment

    ckpt, model = p.ckpt, p.model
    new = dict(ckpt)
    new.pop("_path", None)
    new["config"] = p.new_cfg.to_dict()
    new["model"] = {
        k: v.detach().float().contiguous() if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    new["model_spec"] = {
        **ckpt["model_spec"],
        "num_outputs": int(model.head.out_features),
        "head_type": "linear" if isinstance(model.head, nn.Linear) else ckpt["model_spec"]["head_type"],
    }
    new["strategy"] = {"name": p.strategy.name, "options": p.new_cfg.method.options, "state": p.strategy.state_dict()}
    for key in ("optimizer", "augment", "rng", "rank_states", "scaler", "raw_model"):
        new.pop(key, None)
    new["environment"] = environment(p.precision)
    new["stage"] = {k: v for k, v in record.items() if k != "val_mean_class_accuracy"}
    return new


def _write_stage(p: Parent, rd, record: dict) -> dict:
    """Write the stage's run directory (checkpoint, config, environment), evaluate the saved
    checkpoint as any is (validation: ``stage.json``; test: ``final.json``) and return the test
    metrics ({} without a test split)."""
    from . import engine
    from .rundir import environment, final_record

    cfg, ckpt, precision, name = p.cfg, p.ckpt, p.precision, p.stage["name"]
    save_atomic(_stage_checkpoint(p, record), rd.best)
    save_config(p.new_cfg, rd.config)
    write_text_atomic(rd.path / "environment.json", json.dumps(environment(precision), indent=2))

    loaded = load_checkpoint(rd.best)
    m2, judged = model_from_checkpoint(loaded)  # (with the checkpoint's eval.logit_adjust applied)
    precision.prepare_model(m2)
    kw = dict(
        **p.eval_kw,
        precision=precision,
        tta=p.new_cfg.eval.tta,
        train_counts=ckpt["class_counts"],
        shot_thresholds=p.new_cfg.eval.shot_thresholds,
    )
    vm = engine.evaluate(m2, judged, p.val, **kw)
    record["val"] = {k: vm[k] for k in ("accuracy", "mean_class_accuracy", "macro_f1")}
    write_text_atomic(rd.path / "stage.json", json.dumps(record, indent=2))
    if p.data.test is None:
        return {}
    final = final_record(
        engine.evaluate(m2, judged, p.data.test, **kw),
        split=cfg.data.test_split,
        checkpoint="best.pt",
        epoch=ckpt.get("epoch"),
        best_val_mean_class_accuracy=vm["mean_class_accuracy"],
        method=f"{cfg.method.name}+{name}",  # the parent's method (cRT in parent space trains a CE head)
        seed=cfg.train.seed,
        train_class_counts=ckpt["class_counts"],
        stage=record["stage"],
        parent=record["parent"],
        precision=precision,
    )
    rd.write_final(final, list(ckpt["class_names"]), title=f"{p.path.name} + {name} on {cfg.data.test_split}")
    from .metrics import format_metrics

    p.say(f"{name} on {p.path}: val mca {100 * vm['mean_class_accuracy']:.2f}; test ({cfg.data.test_split}):")
    p.say(format_metrics(final))
    return final


__all__ = ["Parent", "STAGES", "Stage", "check_stage", "rebalance", "register_stage", "tau_normalized"]
