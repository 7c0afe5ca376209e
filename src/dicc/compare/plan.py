"""The runs a grid means: :func:`plan_runs` lists them (setting x method x seed), each with its
validated train config or, for a derived entry, the parent run and the stage applied to it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, apply_overrides, from_dict
from .grid import Grid, MethodEntry


@dataclass
class DerivedStage:
    """What a derived run is made from: the finished run ``parent`` (entry ``after``, same
    setting and seed) and the ``stage`` (``{"name": ..., options}``) applied to it."""

    after: str
    parent: Path
    stage: dict


@dataclass
class GridRun:
    setting: str
    label: str
    seed: int
    run_dir: Path
    cfg: Config | None  # the train config (None for a derived run)
    derived: DerivedStage | None = None

    @property
    def name(self) -> str:
        return f"{self.setting}/{self.label}/seed{self.seed}"

    @property
    def parent_name(self) -> str | None:
        """The name of the run a derived run is made from (None for a trained run)."""
        return None if self.derived is None else f"{self.setting}/{self.derived.after}/seed{self.seed}"


def _run_config(grid: Grid, setting: str, method: MethodEntry, seed: int, run_dir: Path) -> Config:
    raw = copy.deepcopy(grid.base)
    apply_overrides(raw, grid.settings[setting])
    raw["method"] = {"name": method.name, "options": copy.deepcopy(method.options)}
    apply_overrides(raw, method.overrides)
    apply_overrides(raw, list(grid.extra_overrides))
    apply_overrides(raw, [f"train.seed={seed}"])
    raw.setdefault("train", {})["out"] = str(run_dir)
    return from_dict(Config, raw)


def _dependency_order(methods: list[MethodEntry]) -> list[MethodEntry]:
    """The entries in grid order, except that a derived entry comes after the entry it is made
    from (load_grid has checked that every chain ends at a trained entry)."""
    done: set[str] = set()
    order: list[MethodEntry] = []
    while len(order) < len(methods):
        for m in methods:
            if m.label not in done and (not m.derived or m.after in done):
                order.append(m)
                done.add(m.label)
    return order


def _trained_run(grid: Grid, setting: str, m: MethodEntry, seed: int, run_dir: Path, strategies: dict) -> GridRun:
    from ..strategies.base import build_options

    try:
        cfg = _run_config(grid, setting, m, seed, run_dir)
    except ValueError as err:
        raise ValueError(f"run {setting}/{m.label}/seed{seed}: {err}") from None
    if cfg.method.name != m.name:
        raise ValueError(
            f"run {setting}/{m.label}/seed{seed}: an override changed method.name to "
            f"{cfg.method.name!r}; use a separate method entry instead"
        )
    if cfg.method.options != m.options:  # a setting or `set` touched the options
        try:
            build_options(strategies[m.name], cfg.method.options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"run {setting}/{m.label}/seed{seed}: {err}") from None
    return GridRun(setting, m.label, seed, run_dir, cfg)


def _check_methods(grid: Grid) -> dict:
    """Every trained method entry's method and options checked; the registered strategies."""
    from ..strategies import available_strategies
    from ..strategies.base import build_options

    strategies = available_strategies()
    for m in grid.methods:
        if m.derived:
            continue
        if m.name not in strategies:
            raise ValueError(f"method entry {m.label!r}: unknown method {m.name!r}; valid: {', '.join(strategies)}")
        try:
            build_options(strategies[m.name], m.options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"method entry {m.label!r}: {err}") from None
    return strategies


def _check_selection(grid: Grid, only, settings, seeds) -> None:
    """``--only``, ``--setting`` and ``--seed`` name what the grid holds."""
    for wanted, valid, what in (
        (only, [m.label for m in grid.methods], "--only: method label"),
        (settings, list(grid.settings), "--setting: setting"),
        (seeds, list(grid.seeds), "--seed: seed"),
    ):
        bad = [w for w in (wanted or []) if w not in valid]
        if bad:
            raise ValueError(
                f"{what}(s) {', '.join(map(str, bad))} not in the grid; valid: {', '.join(map(str, valid))}"
            )


def plan_runs(
    grid: Grid, only: list[str] | None = None, settings: list[str] | None = None, seeds: list[int] | None = None
) -> list[GridRun]:
    """All runs of ``grid`` (filtered by method labels / setting names / seeds), each with its validated
    config; a derived run comes after the runs of its parent entry. Raises ValueError naming the
    entry for an unknown method, option or config key, before anything is trained. Selecting a
    derived entry does not select its parent entry (see the grid module's docstring)."""
    strategies = _check_methods(grid)
    _check_selection(grid, only, settings, seeds)
    runs = []
    for setting in grid.settings:
        if settings and setting not in settings:
            continue
        for m in _dependency_order(grid.methods):
            if only and m.label not in only:
                continue
            for seed in grid.seeds:
                if seeds and seed not in seeds:
                    continue
                run_dir = grid.out / setting / m.label / f"seed{seed}"
                if m.derived:
                    parent = grid.out / setting / m.after / f"seed{seed}"
                    runs.append(
                        GridRun(
                            setting, m.label, seed, run_dir, None, DerivedStage(m.after, parent, copy.deepcopy(m.stage))
                        )
                    )
                else:
                    runs.append(_trained_run(grid, setting, m, seed, run_dir, strategies))
    return runs
