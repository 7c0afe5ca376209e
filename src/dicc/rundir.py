"""The files of a run directory, written by rank 0 only; the training loop calls these.

``config.yaml`` (the resolved config), ``environment.json`` (library versions, git commit,
precision), ``metrics.jsonl`` (one line per epoch, plus method events such as DICC's
re-clusterings; every ``epoch`` field is the 1-based epoch it belongs to), ``metrics.csv`` (the
epoch lines as a table), the files a strategy declares (``Strategy.run_files``, e.g. DICC's
``subclass_plan.json``), ``checkpoints/{last,best}.pt``, ``final.json``,
``confusion_test.png``, ``reliability_test.png``, ``curves.png``; with ``train.log`` the
tracker's folder (:mod:`dicc.loggers`); and ``.lock`` (:mod:`dicc.runlock`: one process per run
directory).

Every file is written atomically (a temporary file renamed into place). An epoch ends with
``metrics.jsonl`` (appended), ``checkpoints/last.pt`` (the commit point: it records in
``best_epoch`` the epoch ``best.pt`` must hold), ``checkpoints/best.pt`` (when the epoch is the
best so far) and ``metrics.csv``. A crash between two of these writes leaves at most a
``best.pt`` one selection behind a ``last.pt`` that is itself that selection, and a resume copies
``last.pt`` over it (:meth:`RunDirectory.check`); the log lines after ``last.pt``'s epoch are cut
back. So a run killed at any point and resumed ends as the uninterrupted run does.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import platform
import shutil
from pathlib import Path

import torch
import yaml

from .atomic import atomic_path, named_os_error, save_atomic, write_text_atomic
from .checkpoint import load_checkpoint
from . import distributed
from .config import Config, config_differences, config_yaml, flatten, from_dict, resolve_paths

logger = logging.getLogger("dicc")


@functools.lru_cache(maxsize=1)
def source_revision() -> dict:
    """The git commit of the dicc source tree and whether it had uncommitted changes (when it
    is a git checkout; an installed package has none), so a run's numbers can be tied to code."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"git_commit": rev.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {}


def environment(precision=None) -> dict:
    """Library versions, platform, git revision and (given) the precision the run computes in."""
    import numpy

    from . import __version__
    from .precision import cpu_description

    env = {
        "dicc": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        **source_revision(),
    }
    if precision is not None:
        env.update(precision.to_dict())
    return env


_OMIT = object()


def final_record(
    metrics: dict,
    *,
    split,
    checkpoint: str,
    epoch,
    best_val_mean_class_accuracy,
    method: str,
    seed: int,
    train_class_counts,
    precision,
    weights=_OMIT,
    early_stop_epoch=_OMIT,
    stage=_OMIT,
    parent=_OMIT,
) -> dict:
    """``final.json``'s record: the test ``metrics`` (updated in place and returned) with what was
    tested (split, checkpoint file, its epoch, the weights: trained or EMA), how it was chosen,
    the method, seed, training class counts, a second stage's ``stage`` and ``parent`` (the
    keys not given are left out) and the precision, in this order; built here for
    :func:`dicc.engine.fit`'s test and :func:`dicc.rebalance.rebalance`'s alike."""
    fields = {
        "split": split,
        "checkpoint": checkpoint,
        "epoch": epoch,
        "weights": weights,
        "best_val_mean_class_accuracy": best_val_mean_class_accuracy,
        "early_stop_epoch": early_stop_epoch,
        "method": method,
        "seed": seed,
        "train_class_counts": [int(c) for c in train_class_counts],
        "stage": stage,
        "parent": parent,
    }
    metrics.update({k: v for k, v in fields.items() if v is not _OMIT})
    metrics.update(precision.to_dict())
    return metrics


class RunDirectory:
    """Paths of one run directory and the writes the engine makes into it."""

    def __init__(self, path: str | Path, logger=None) -> None:
        self.path = Path(path)
        #: a :class:`dicc.loggers.RunLogger` every record also goes to (``train.log``), or None
        self.logger = logger
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.metrics_csv = self.path / "metrics.csv"
        self.final = self.path / "final.json"
        self._best_epoch: int | None = None  # the epoch best.pt holds (recorded in last.pt)
        self.resumable = False  # set by check()

    # -- state ---------------------------------------------------------------------------
    def holds_run(self) -> bool:
        return self.last.exists() or self.final.exists()

    def saved_config(self) -> Config | None:
        """The run's ``config.yaml`` as a :class:`Config` (None when there is none)."""
        if not self.config.is_file():
            return None
        try:
            return from_dict(Config, yaml.safe_load(self.config.read_text()) or {})
        except (yaml.YAMLError, ValueError) as err:
            raise ValueError(f"{self.config}: cannot read the run's config ({err})") from None

    def check(self, cfg: Config, resume: bool, dinfo: distributed.DistInfo) -> None:
        """Rank 0 checks the directory (fresh, or resumable with the same settings, its
        checkpoints reconciled); every rank raises what it found (the others learn of it from
        raise_if_any rather than waiting)."""
        err = None
        if dinfo.is_main:
            try:
                if not resume and self.holds_run():
                    raise FileExistsError(
                        f"{self.path} already holds a run; pass --resume to continue it or choose another --out"
                    )
                if resume and not self.last.exists() and not self.config.is_file():
                    raise FileNotFoundError(f"--resume: no run to continue in {self.path} (no {self.last})")
                if resume and self.last.exists():
                    self._reconcile_best()
                saved = self.saved_config() if resume else None
                if saved is not None:  # a run saved before paths were recorded resolved: from here, as then
                    resolve_paths(saved)
                diff = config_differences(saved, cfg) if saved is not None else []
                if diff:
                    a, b = flatten(saved.to_dict()), flatten(cfg.to_dict())
                    shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff)
                    raise ValueError(
                        f"--resume: {self.path} was trained with other settings ({shown}); resume with "
                        f"the run's own config (dicc train --out {self.path} --resume) or start a new run"
                    )
            except Exception as e:  # noqa: BLE001 - raised on every rank
                err = e
        distributed.raise_if_any(err)
        #: whether a resume has a checkpoint to continue from (an attempt that died before its
        #: first epoch ended has none: it starts over, with its own config.yaml)
        self.resumable = distributed.broadcast_object(resume and dinfo.is_main and self.last.exists())

    def _reconcile_best(self) -> None:
        """Make ``best.pt`` hold the epoch ``last.pt`` records as the best (``best_epoch``): a
        crash after ``last.pt`` and before ``best.pt`` leaves it one selection behind, and
        ``last.pt`` is then that selection (copied over it). Any other disagreement is refused."""
        last = load_checkpoint(self.last)
        want = last.get("best_epoch")
        self._best_epoch = want
        if want is None:  # a checkpoint of a dicc that did not record it
            return
        have = load_checkpoint(self.best).get("epoch") if self.best.exists() else None
        if have == want:
            return
        if want == last["epoch"]:
            with atomic_path(self.best) as tmp:
                shutil.copyfile(self.last, tmp)
            logger.info(f"{self.best}: restored from {self.last.name} (epoch {want}, the best so far)")
            return
        raise ValueError(
            f"{self.best} holds epoch {have}, but {self.last} records epoch {want} as the best: the "
            "checkpoints disagree (copied by hand?); restore the run's own best.pt or start a new run"
        )

    # -- writes ----------------------------------------------------------------------------
    def start(self, cfg: Config, env: dict, files: dict[str, dict], *, fresh: bool) -> None:
        """Create the directory; write ``config.yaml`` (a fresh run only: a resumed run keeps
        its own), ``environment.json`` and the strategy's files. A fresh run drops what an
        attempt that died before its first checkpoint logged."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.metrics.unlink(missing_ok=True)
            self.metrics_csv.unlink(missing_ok=True)
            write_text_atomic(self.config, config_yaml(cfg))
        write_text_atomic(self.path / "environment.json", json.dumps(env, indent=2))
        for name, record in files.items():
            write_text_atomic(self.path / name, json.dumps(record, indent=2))

    def records(self) -> list[dict]:
        """Every readable line of ``metrics.jsonl`` (a line cut short by a kill is skipped)."""
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def truncate_log(self, epoch: int) -> None:
        """Cut ``metrics.jsonl`` back to what happened up to the end of ``epoch`` (1-based), the
        checkpoint a resume continues from: the records of the epochs that are redone go."""
        kept = [r for r in self.records() if int(r.get("epoch", 0)) <= epoch]
        write_text_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))
        self.write_csv()

    def log(self, record: dict) -> None:
        """Append ``record`` to ``metrics.jsonl`` (a line cut short by a crash is skipped when
        read, and a resume rewrites the file)."""
        try:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            raise named_os_error(err, self.metrics) from None
        if self.logger is not None:
            self.logger.log(record)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()

    def epoch_records(self) -> list[dict]:
        return [r for r in self.records() if "event" not in r and "train_loss" in r]

    def write_csv(self) -> None:
        """``metrics.csv``: one row per epoch line of ``metrics.jsonl``."""
        rows = self.epoch_records()
        if not rows:
            self.metrics_csv.unlink(missing_ok=True)
            return
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys and not isinstance(r[k], (dict, list))]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        write_text_atomic(self.metrics_csv, buf.getvalue())

    def save_checkpoints(self, state: dict, *, best: bool) -> None:
        """The epoch's training state as ``checkpoints/last.pt``, recording which epoch
        ``best.pt`` holds; then ``best.pt`` when the epoch is the best on validation; then
        ``metrics.csv`` up to it (the order the module docstring explains)."""
        if best:
            self._best_epoch = state["epoch"]
        save_atomic({**state, "best_epoch": self._best_epoch}, self.last)
        if best:
            save_atomic({**state, "best_epoch": self._best_epoch}, self.best)
        self.write_csv()

    def write_final(self, final: dict, class_names=None, title: str = "") -> None:
        """``final.json`` (atomically: a report reading it meanwhile, or a crash, never sees half
        a file) and, given the class names, ``confusion_test.png`` and (with calibration bins)
        ``reliability_test.png``."""
        write_text_atomic(self.final, json.dumps(final, indent=2))
        if class_names is not None:
            from .metrics import save_confusion_png, save_reliability_png

            save_confusion_png(final["confusion_matrix"], class_names, self.path / "confusion_test.png", title=title)
            if "calibration" in final:
                save_reliability_png(
                    final["calibration"], self.path / "reliability_test.png", title=title, ece=final.get("ece")
                )

    def finish(self) -> None:
        """After the last epoch: ``curves.png``, and the tracker (``train.log``) closed."""
        self.write_curves()
        self.close()

    def write_curves(self) -> Path | None:
        """``curves.png``: training loss and validation accuracy / mean class accuracy per epoch,
        with the epochs where a method event happened (e.g. a DICC re-clustering) marked."""
        from .plots import save_curves

        rows = self.epoch_records()
        if not rows:
            return None
        events = [r for r in self.records() if "event" in r]
        return save_curves(rows, events, self.path / "curves.png")


__all__ = ["RunDirectory", "environment", "source_revision"]
