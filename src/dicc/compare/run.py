"""Running a grid: :func:`run_grid` trains every unfinished run in order (finished runs skipped,
interrupted ones resumed), makes the derived runs from their finished parents, then writes the
report."""

from __future__ import annotations

import copy
import logging
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import Config
from ..runlock import RunDirectoryBusy, claim_run_dir
from .grid import Grid, load_grid
from .plan import GridRun, plan_runs
from .records import config_differences, epoch_records, run_status, write_stage_record
from .report import write_report


def _info(*args, **kwargs) -> None:
    logging.getLogger("dicc").info(" ".join(str(a) for a in args))


def fit(cfg: Config, *, resume: bool = False, log: Callable = _info):
    """:func:`dicc.engine.fit`, imported on first use (keeps ``import dicc.compare`` light)."""
    from ..engine import fit as engine_fit

    return engine_fit(cfg, resume=resume, log=log)


def rebalance(parent_run_dir: Path, stage: dict, out: Path, *, log: Callable = _info) -> dict:
    """:func:`dicc.rebalance.rebalance` (a second stage applied to a finished run, written as a run
    directory ``out``), imported on first use."""
    from ..rebalance import rebalance as stage_fn

    return stage_fn(parent_run_dir, stage, out, log=log)


def _status(run: GridRun) -> str:
    """:func:`run_status`, except that a derived run is never ``partial``: it is redone whole."""
    status = run_status(run.run_dir)
    return "pending" if run.derived is not None and status == "partial" else status


def _fresh_status(run: GridRun) -> str:
    """The run's status now (rank 0's view on every rank): another process may have trained it
    since the grid started."""
    status = _status(run)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .. import distributed

        status = distributed.broadcast_object(status)
    return status


def _describe_status(run: GridRun, statuses: dict[str, str]) -> str:
    status = _status(run)
    if status == "partial":
        epochs = epoch_records(run.run_dir)
        status += f" ({max(epochs) if epochs else '?'}/{run.cfg.train.epochs} epochs; will resume)"
    if run.derived is not None:
        parent = statuses.get(run.parent_name)
        shown = parent if parent is not None else f"{run_status(run.derived.parent)}, not selected"
        status += f" (after {run.parent_name}: {shown})"
    if status != "pending":
        diff = config_differences(run.run_dir, run.derived or run.cfg)
        if diff:
            status += f" [config differs: {', '.join(diff)}]"
    return status


def _unmet_parents(todo: list[GridRun]) -> list[GridRun]:
    """Derived runs to make whose parent run is neither finished nor among the runs to do."""
    planned = {r.name for r in todo}
    return [
        r
        for r in todo
        if r.derived is not None and r.parent_name not in planned and run_status(r.derived.parent) != "done"
    ]


def _unmet_text(run: GridRun) -> str:
    return f"{run.name} (after {run.parent_name}: {run_status(run.derived.parent)})"


def _is_main_process() -> bool:
    from ..distributed import is_main_process

    return is_main_process()


def _derive(run: GridRun, outcome: "GridOutcome", log: Callable) -> None:
    """Make a derived run from its finished parent on rank 0; every rank raises if that fails."""
    err = None
    if _is_main_process():
        try:
            if run_status(run.derived.parent) != "done":
                why = " (it failed above)" if run.parent_name in outcome.failed else ""
                raise RuntimeError(
                    f"{run.name}: its parent run {run.parent_name} is not finished{why}: "
                    f"no {run.derived.parent / 'final.json'}"
                )
            rebalance(run.derived.parent, copy.deepcopy(run.derived.stage), run.run_dir, log=log)
            write_stage_record(run.run_dir, run.derived)
        except Exception as e:  # noqa: BLE001 - handed to every rank below
            err = e
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .. import distributed

        distributed.raise_if_any(err)
    elif err is not None:
        raise err


@dataclass
class GridOutcome:
    runs: list[GridRun]
    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # held by another process (dicc.runlock): left to it
    failed: dict[str, str] = field(default_factory=dict)
    report: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


def run_grid(
    grid: str | Path | dict | Grid,
    *,
    only: list[str] | None = None,
    settings: list[str] | None = None,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    dry_run: bool = False,
    keep_going: bool = False,
    report: bool = True,
    log: Callable = _info,
) -> GridOutcome:
    """Run every unfinished run of ``grid`` in order, then write the report into ``out``.

    Finished runs (``final.json``) are skipped, runs with ``checkpoints/last.pt`` but no
    ``final.json`` are resumed; a run whose directory another process holds (another ``dicc
    compare`` on the same grid, :mod:`dicc.runlock`) is left to it (``GridOutcome.busy``), and
    each run's status is read again once its directory is held; a derived run is made
    (:func:`dicc.rebalance.rebalance`) after its parent run, and before anything trains it is an
    error if its parent run is neither finished nor selected. ``dry_run`` only lists the runs
    and their status. A failing run stops the grid (the error propagates) unless ``keep_going``,
    which records it and goes on (a derived run of a failed parent then fails too).
    """
    g = load_grid(grid, overrides)
    runs = plan_runs(g, only, settings, seeds)
    outcome = GridOutcome(runs)
    statuses = {run.name: _status(run) for run in runs}  # decided up front
    if dry_run:
        log(f"{len(runs)} run(s) under {g.out}:")
        for run in runs:
            log(f"  {run.name:<40} {_describe_status(run, statuses)}")
        return outcome
    statuses = _shared_statuses(runs, statuses)
    todo = [r for r in runs if statuses[r.name] != "done"]
    _check_parents(todo)
    main = _is_main_process()
    if main:
        g.out.mkdir(parents=True, exist_ok=True)
        _write_grid_record(g)
    outcome.skipped = [r.name for r in runs if statuses[r.name] == "done"]
    log(f"compare: {len(runs)} run(s), {len(outcome.skipped)} finished, {len(todo)} to train, under {g.out}")
    for i, run in enumerate(todo, 1):
        _run_one(run, f"[{i}/{len(todo)}] {run.name}", outcome, keep_going, log)
    _finish(g, outcome, report and main, log)
    return outcome


def _finish(g: Grid, outcome: GridOutcome, report: bool, log: Callable) -> None:
    """What was skipped, the report (``report``: on rank 0), what failed."""
    for name in outcome.skipped:
        log(f"skipped (finished): {name}")
    if outcome.busy:
        log(f"skipped (another process is training them): {', '.join(outcome.busy)}")
    if report:
        outcome.report = write_report(g.out, command=g.command, log=log)
    if outcome.failed:
        log(f"{len(outcome.failed)} run(s) failed: {', '.join(outcome.failed)}")


def _shared_statuses(runs: list[GridRun], statuses: dict[str, str]) -> dict[str, str]:
    """``statuses`` as rank 0 sees them, on every rank under torchrun (the process group set
    up on the runs' device); as they are otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return statuses
    from .. import distributed

    device = next((r.cfg.train.device for r in runs if r.cfg is not None), "auto")
    distributed.setup(device)
    return distributed.broadcast_object(statuses)


def _check_parents(todo: list[GridRun]) -> None:
    """Refuse derived runs whose parent run is neither finished nor among ``todo``."""
    unmet = _unmet_parents(todo)
    if unmet:
        parents = " ".join(f"--only {shlex.quote(a)}" for a in dict.fromkeys(r.derived.after for r in unmet))
        raise ValueError(
            f"derived run(s) whose parent run is not finished and not selected: "
            f"{'; '.join(_unmet_text(r) for r in unmet)}; train the parents first or select them too "
            f"({parents})"
        )


def _run_one(run: GridRun, label: str, outcome: GridOutcome, keep_going: bool, log: Callable) -> None:
    """:func:`_train_one` with its outcome recorded: trained, resumed, busy (another process
    holds it) or, with ``keep_going``, failed."""
    try:
        resume = _train_one(run, label, outcome, log)
    except RunDirectoryBusy as err:
        outcome.busy.append(run.name)
        log(f"=== {label}: skipped: {err} ===")
        return
    except Exception as err:  # noqa: BLE001 - keep_going records any failure of one run
        if not keep_going:
            raise
        outcome.failed[run.name] = f"{type(err).__name__}: {err}"
        log(f"error: {run.name} failed: {type(err).__name__}: {err}; continuing (--keep-going)")
        return
    if resume is not None:
        (outcome.resumed if resume else outcome.trained).append(run.name)


def _train_one(run: GridRun, label: str, outcome: GridOutcome, log: Callable) -> bool | None:
    """Train, resume or derive ``run`` while its directory is held; whether it was resumed, or
    None when another process finished it meanwhile (then it is recorded as skipped)."""
    with claim_run_dir(run.run_dir):  # another compare process may be on this run, or be done with it
        status = _fresh_status(run)
        if status == "done":
            log(f"=== {label}: finished meanwhile by another process ===")
            outcome.skipped.append(run.name)
            return None
        resume = status == "partial"
        diff = config_differences(run.run_dir, run.cfg) if resume else []
        if diff:
            log(
                f"warning: {run.name} was started with a different config ({', '.join(diff)}); resuming "
                f"with the grid's config (delete {run.run_dir} to start it afresh)"
            )
        after = f" (after {run.parent_name}: {run.derived.stage['name']})" if run.derived is not None else ""
        log(f"=== {label}{' (resuming)' if resume else ''}{after} ===")
        if run.derived is not None:
            _derive(run, outcome, log)
        else:
            fit(run.cfg, resume=resume, log=log)
    return resume


def _write_grid_record(g: Grid) -> None:
    record = {
        "grid_path": str(g.path) if g.path is not None else None,
        "command": g.command,
        "overrides": list(g.extra_overrides),
        "grid": g.to_dict(),
    }
    (g.out / "compare.json").write_text(json.dumps(record, indent=2))
