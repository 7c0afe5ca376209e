"""``dicc compare``: a grid of methods x seeds (x settings) from one YAML file, and its report.

Every run gets its own ordinary run directory (see :func:`dicc.engine.fit`), trained one
after the other in this process. The grid is resumable: run it again and finished runs are
skipped, interrupted ones continue from their last checkpoint, so a grid larger than one
sitting completes over several invocations.

Grid file
---------
::

    out: runs/compare-fer2013          # root of all run directories and the report
    base:                              # an ordinary train config (same keys as configs/*.yaml),
      data: {path: data/fer2013}       # or the path of such a YAML file
      train: {epochs: 20}
    methods:                           # a method name, or a mapping
      - ce
      - balanced_softmax
      - label: ce+posthoc_la           # name of the run directory and of the table row
        name: logit_adjust             # a registered method (`dicc methods`)
        options: {mode: posthoc}       # its options (`dicc methods -v`)
      - label: dicc+bsm
        name: dicc
        options: {base_loss: balanced_softmax}
        set: [optim.lr=0.02]           # dotted overrides for this method's runs only
    seeds: [0, 1, 2]
    settings:                          # optional: setting name -> dotted overrides
      if100: [data.longtail=fer2013-if100]
      if10: [data.longtail=fer2013-if10]

Keys: ``out`` and ``methods`` are required; ``seeds`` defaults to ``[0]``; without
``settings`` there is one setting called ``default`` with no overrides. A method entry's
``label`` defaults to its ``name`` (labels must be unique); ``options`` defaults to ``{}``.

Each run's config is built as: defaults <- ``base`` <- the setting's overrides <- the
method's ``name``/``options`` (they replace any ``method`` section of ``base``) <- the
method's ``set`` overrides <- ``train.seed`` = the seed and ``train.out`` =
``OUT/<setting>/<label>/seed<k>``. Relative paths (``out``, ``data.path``) are relative to
the working directory, as for ``dicc train``. Unknown keys anywhere are errors that list the
valid ones, and every run's config and method options are validated before anything trains.

Outputs (under ``OUT``, rebuilt from whatever runs have a ``final.json``, also by
``dicc compare GRID --report-only``)
- ``results.csv``: one row per finished run: setting, method, seed, accuracy,
  mean_class_accuracy, macro_f1, recall_<class> for every class (fractions in [0, 1]),
  train_time_s (sum of the epochs' ``time_epoch``), epochs (trained), best_epoch (the epoch of
  the evaluated checkpoint), run_dir.
- ``results.md``: per setting, a table of mean +- sample std over seeds (in %) of accuracy,
  mean class accuracy, macro-F1 and per-class recall (classes ordered by training count), the
  best mean of each column in bold, and the command that regenerates it.
- ``recall_<setting>.png``: per-class recall, methods side by side, classes ordered by
  training count; ``confusion_<setting>.png``: one row-normalised confusion matrix per method
  (summed over seeds).
- ``compare.json``: the normalised grid and its path (orders the report's rows).
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import Config, apply_overrides, from_dict

GRID_KEYS = ("base", "methods", "out", "seeds", "settings")
METHOD_KEYS = ("label", "name", "options", "set")
DEFAULT_SETTING = "default"
# keys that do not change a run's numbers: ignored when checking a run against the grid
_INCIDENTAL = {"train.out", "train.progress", "train.device", "train.threads", "train.eval_batch_size",
               "data.workers", "data.cache_dir"}
_METRICS = (("val_mean_class_accuracy", "val mean class acc."), ("accuracy", "accuracy"),
            ("mean_class_accuracy", "mean class acc."), ("macro_f1", "macro-F1"))


def fit(cfg: Config, *, resume: bool = False, log: Callable = print):
    """:func:`dicc.engine.fit`, imported on first use (keeps ``import dicc.compare`` light)."""
    from .engine import fit as engine_fit

    return engine_fit(cfg, resume=resume, log=log)


# ---------------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------------
@dataclass
class MethodEntry:
    label: str
    name: str
    options: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)


@dataclass
class Grid:
    base: dict
    methods: list[MethodEntry]
    seeds: list[int]
    settings: dict[str, list[str]]
    out: Path
    path: Path | None = None        # the grid file, when it came from one
    extra_overrides: list[str] = field(default_factory=list)   # --set, applied to every run

    def to_dict(self) -> dict:
        return {"out": str(self.out), "base": self.base,
                "methods": [{"label": m.label, "name": m.name, "options": m.options, "set": m.overrides}
                            for m in self.methods],
                "seeds": self.seeds, "settings": self.settings}

    @property
    def command(self) -> str:
        grid = str(self.path) if self.path is not None else str(self.out / "compare.json")
        sets = "".join(f" --set {shlex.quote(o)}" for o in self.extra_overrides)
        return f"dicc compare {shlex.quote(grid)}{sets}"


@dataclass
class GridRun:
    setting: str
    label: str
    seed: int
    run_dir: Path
    cfg: Config

    @property
    def name(self) -> str:
        return f"{self.setting}/{self.label}/seed{self.seed}"


def _check_keys(data: dict, valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in set(data) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if value in (".", "..") or re.search(r"[/\\\s]", value):
        raise ValueError(f"{what} {value!r} is used as a directory name: no slashes, spaces or '.'/'..'")
    return value


def _override_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ValueError(f"{where}: expected a list of dotted overrides like data.longtail=fer2013-if100, "
                         f"got {value!r}")
    return list(value)


def _parse_method(entry: Any, i: int) -> MethodEntry:
    where = f"methods[{i}]"
    if isinstance(entry, str):
        return MethodEntry(label=_check_name(entry, f"{where}: method name"), name=entry)
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a method name or a mapping with keys {', '.join(METHOD_KEYS)}, "
                         f"got {entry!r}")
    _check_keys(entry, METHOD_KEYS, where)
    if "name" not in entry:
        raise ValueError(f"{where}: a method mapping needs 'name' (a registered method)")
    name = entry["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: name must be a method name, got {name!r}")
    label = _check_name(entry.get("label", name), f"{where}: label")
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError(f"{where} ({label}): options must be a mapping, got {options!r}")
    return MethodEntry(label=label, name=name, options=dict(options),
                       overrides=_override_list(entry.get("set"), f"{where} ({label}): set"))


def load_grid(grid: str | Path | dict | Grid, overrides: list[str] | None = None) -> Grid:
    """Parse and structurally check a grid (file path or mapping); see the module docstring.

    ``overrides`` (dotted ``key=value``) are applied to every run after everything else
    (e.g. ``train.device=cuda``). Method names and configs are checked by :func:`plan_runs`.
    """
    if isinstance(grid, Grid):
        g = copy.deepcopy(grid)
        g.extra_overrides = list(g.extra_overrides) + list(overrides or [])
        return g
    path = None
    if isinstance(grid, (str, Path)):
        path = Path(grid)
        if not path.is_file():
            raise FileNotFoundError(f"grid file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        if path.suffix == ".json" and isinstance(raw, dict) and "grid" in raw:   # a compare.json
            overrides = list(raw.get("overrides") or []) + list(overrides or [])
            raw = raw["grid"]
    else:
        raw = copy.deepcopy(grid)
    where = str(path) if path else "grid"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with keys {', '.join(GRID_KEYS)}")
    _check_keys(raw, GRID_KEYS, where)
    for key in ("out", "methods"):
        if raw.get(key) in (None, "", []):
            raise ValueError(f"{where}: '{key}' is required")

    base = raw.get("base") or {}
    if isinstance(base, str):
        base_path = Path(base)
        if not base_path.is_file() and path is not None and (path.parent / base).is_file():
            base_path = path.parent / base
        if not base_path.is_file():
            raise FileNotFoundError(f"{where}: base config file not found: {base}")
        base = yaml.safe_load(base_path.read_text()) or {}
    if not isinstance(base, dict):
        raise ValueError(f"{where}: base must be a train config mapping (or the path of one)")

    methods_raw = raw["methods"]
    if not isinstance(methods_raw, list):
        raise ValueError(f"{where}: methods must be a list of method names or mappings")
    methods = [_parse_method(e, i) for i, e in enumerate(methods_raw)]
    labels = [m.label for m in methods]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ValueError(f"{where}: duplicate method label(s) {', '.join(dup)}; give each entry its own 'label'")

    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ValueError(f"{where}: seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds has duplicates: {seeds}")

    settings_raw = raw.get("settings")
    if settings_raw in (None, {}):
        settings = {DEFAULT_SETTING: []}
    elif isinstance(settings_raw, dict):
        settings = {_check_name(str(k), "setting name"): _override_list(v, f"{where}: settings.{k}")
                    for k, v in settings_raw.items()}
        for name, items in settings.items():
            bad = [o for o in items if o.split("=", 1)[0].strip().startswith("method")]
            if bad:
                raise ValueError(f"{where}: settings.{name}: {', '.join(bad)}: the method is set per entry of "
                                 f"'methods' (use its options or set)")
    else:
        raise ValueError(f"{where}: settings must map setting names to lists of dotted overrides")
    return Grid(base=base, methods=methods, seeds=list(seeds), settings=settings, out=Path(str(raw["out"])),
                path=path, extra_overrides=list(overrides or []))


def _run_config(grid: Grid, setting: str, method: MethodEntry, seed: int, run_dir: Path) -> Config:
    raw = copy.deepcopy(grid.base)
    apply_overrides(raw, grid.settings[setting])
    raw["method"] = {"name": method.name, "options": copy.deepcopy(method.options)}
    apply_overrides(raw, method.overrides)
    apply_overrides(raw, list(grid.extra_overrides))
    apply_overrides(raw, [f"train.seed={seed}"])
    raw.setdefault("train", {})["out"] = str(run_dir)
    return from_dict(Config, raw)


def plan_runs(grid: Grid, only: list[str] | None = None, settings: list[str] | None = None,
              seeds: list[int] | None = None) -> list[GridRun]:
    """All runs of ``grid`` (filtered by method labels / setting names / seeds), each with its validated
    config. Raises ValueError naming the entry for an unknown method, option or config key,
    before anything is trained."""
    from .strategies import available_strategies
    from .strategies.base import build_options

    strategies = available_strategies()
    for m in grid.methods:
        if m.name not in strategies:
            raise ValueError(f"method entry {m.label!r}: unknown method {m.name!r}; valid: {', '.join(strategies)}")
        try:
            build_options(strategies[m.name], m.options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"method entry {m.label!r}: {err}") from None
    for wanted, valid, what in ((only, [m.label for m in grid.methods], "--only: method label"),
                                (settings, list(grid.settings), "--setting: setting"),
                                (seeds, list(grid.seeds), "--seed: seed")):
        bad = [w for w in (wanted or []) if w not in valid]
        if bad:
            raise ValueError(f"{what}(s) {', '.join(map(str, bad))} not in the grid; "
                             f"valid: {', '.join(map(str, valid))}")
    runs = []
    for setting in grid.settings:
        if settings and setting not in settings:
            continue
        for m in grid.methods:
            if only and m.label not in only:
                continue
            for seed in grid.seeds:
                if seeds and seed not in seeds:
                    continue
                run_dir = grid.out / setting / m.label / f"seed{seed}"
                try:
                    cfg = _run_config(grid, setting, m, seed, run_dir)
                except ValueError as err:
                    raise ValueError(f"run {setting}/{m.label}/seed{seed}: {err}") from None
                if cfg.method.name != m.name:
                    raise ValueError(f"run {setting}/{m.label}/seed{seed}: an override changed method.name to "
                                     f"{cfg.method.name!r}; use a separate method entry instead")
                if cfg.method.options != m.options:   # a setting or `set` touched the options
                    try:
                        build_options(strategies[m.name], cfg.method.options)
                    except (TypeError, ValueError) as err:
                        raise ValueError(f"run {setting}/{m.label}/seed{seed}: {err}") from None
                runs.append(GridRun(setting, m.label, seed, run_dir, cfg))
    return runs


# ---------------------------------------------------------------------------------------------
# Run status and running
# ---------------------------------------------------------------------------------------------
def _epoch_records(run_dir: Path) -> dict[int, dict]:
    """The per-epoch records of metrics.jsonl (the last one of each epoch, should a resumed run
    have logged an epoch twice)."""
    records: dict[int, dict] = {}
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue       # a line cut short by an interruption
        if isinstance(rec, dict) and "time_epoch" in rec and isinstance(rec.get("epoch"), int):
            records[rec["epoch"]] = rec
    return records


def run_status(run_dir: str | Path) -> str:
    """``done`` (final.json), ``partial`` (checkpoints/last.pt, no final.json) or ``pending``."""
    run_dir = Path(run_dir)
    if (run_dir / "final.json").is_file():
        return "done"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "partial"
    return "pending"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not (prefix + k).startswith("method.options"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_differences(run_dir: str | Path, cfg: Config) -> list[str]:
    """Dotted keys where the run's saved config.yaml differs from ``cfg`` (incidental keys such
    as the device or progress bars are ignored). Empty when there is no config.yaml."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return []
    try:
        saved = _flatten(from_dict(Config, yaml.safe_load(path.read_text()) or {}).to_dict())
    except (yaml.YAMLError, ValueError):
        return ["config.yaml (unreadable)"]
    now = _flatten(cfg.to_dict())
    return sorted(k for k in set(saved) | set(now) if k not in _INCIDENTAL and saved.get(k) != now.get(k))


def _describe_status(run: GridRun) -> str:
    status = run_status(run.run_dir)
    if status == "partial":
        epochs = _epoch_records(run.run_dir)
        status += f" ({max(epochs) if epochs else '?'}/{run.cfg.train.epochs} epochs; will resume)"
    if status != "pending":
        diff = config_differences(run.run_dir, run.cfg)
        if diff:
            status += f" [config differs: {', '.join(diff)}]"
    return status


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class GridOutcome:
    runs: list[GridRun]
    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.failed


def run_grid(grid: str | Path | dict | Grid, *, only: list[str] | None = None, settings: list[str] | None = None,
             seeds: list[int] | None = None, overrides: list[str] | None = None, dry_run: bool = False, keep_going: bool = False,
             report: bool = True, log: Callable = print) -> GridOutcome:
    """Run every unfinished run of ``grid`` in order, then write the report into ``out``.

    Finished runs (``final.json``) are skipped, runs with ``checkpoints/last.pt`` but no
    ``final.json`` are resumed. ``dry_run`` only lists the runs and their status. A failing run
    stops the grid (the error propagates) unless ``keep_going``, which records it and goes on.
    """
    g = load_grid(grid, overrides)
    runs = plan_runs(g, only, settings, seeds)
    outcome = GridOutcome(runs)
    if dry_run:
        log(f"{len(runs)} run(s) under {g.out}:")
        for run in runs:
            log(f"  {run.name:<40} {_describe_status(run)}")
        return outcome
    statuses = {run.name: run_status(run.run_dir) for run in runs}   # decided up front
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: rank 0's view, on every rank
        from . import distributed

        distributed.setup(runs[0].cfg.train.device if runs else "auto")
        statuses = distributed.broadcast_object(statuses)
    main = _is_main_process()
    if main:
        g.out.mkdir(parents=True, exist_ok=True)
        _write_grid_record(g)
    todo = [r for r in runs if statuses[r.name] != "done"]
    outcome.skipped = [r.name for r in runs if statuses[r.name] == "done"]
    log(f"compare: {len(runs)} run(s), {len(outcome.skipped)} finished, {len(todo)} to train, under {g.out}")
    for i, run in enumerate(todo, 1):
        resume = statuses[run.name] == "partial"
        diff = config_differences(run.run_dir, run.cfg) if resume else []
        if diff:
            log(f"warning: {run.name} was started with a different config ({', '.join(diff)}); resuming with the "
                f"grid's config (delete {run.run_dir} to start it afresh)")
        log(f"=== [{i}/{len(todo)}] {run.name}{' (resuming)' if resume else ''} ===")
        try:
            fit(run.cfg, resume=resume, log=log)
        except Exception as err:  # noqa: BLE001 - keep_going records any failure of one run
            if not keep_going:
                raise
            outcome.failed[run.name] = f"{type(err).__name__}: {err}"
            log(f"error: {run.name} failed: {type(err).__name__}: {err}; continuing (--keep-going)")
            continue
        (outcome.resumed if resume else outcome.trained).append(run.name)
    for name in outcome.skipped:
        log(f"skipped (finished): {name}")
    if report and main:
        outcome.report = write_report(g.out, command=g.command, log=log)
    if outcome.failed:
        log(f"{len(outcome.failed)} run(s) failed: {', '.join(outcome.failed)}")
    return outcome


def _write_grid_record(g: Grid) -> None:
    record = {"grid_path": str(g.path) if g.path is not None else None, "command": g.command,
              "overrides": list(g.extra_overrides), "grid": g.to_dict()}
    (g.out / "compare.json").write_text(json.dumps(record, indent=2))


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
def train_counts(run_dir: str | Path) -> list[int] | None:
    """The training class counts a run was trained with (from final.json, else from its
    checkpoint), or None."""
    try:
        counts = json.loads((Path(run_dir) / "final.json").read_text()).get("train_class_counts")
        if counts is not None:
            return [int(c) for c in counts]
    except (OSError, json.JSONDecodeError, AttributeError, TypeError, ValueError):
        pass   # no usable record: try the checkpoints
    for name in ("last.pt", "best.pt"):
        path = Path(run_dir) / "checkpoints" / name
        if not path.is_file():
            continue
        import torch

        try:
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:   # mmap needs the zip format
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a report must not fail on one unreadable checkpoint
            continue
        counts = ckpt.get("class_counts") if isinstance(ckpt, dict) else None
        if counts is not None:
            return [int(c) for c in counts]
    return None


def collect_results(out_dir: str | Path) -> list[dict]:
    """One record per finished run under ``out_dir`` (``<setting>/<label>/seed<k>/final.json``)."""
    out_dir = Path(out_dir)
    rows = []
    for final_path in sorted(out_dir.glob("*/*/seed*/final.json")):
        run_dir = final_path.parent
        m = re.fullmatch(r"seed(\d+)", run_dir.name)
        if not m:
            continue
        try:
            final = json.loads(final_path.read_text())
        except (json.JSONDecodeError, OSError) as err:
            raise ValueError(f"{final_path}: not readable JSON ({err})") from None
        epochs = _epoch_records(run_dir)
        rows.append({
            "setting": run_dir.parent.parent.name, "method": run_dir.parent.name, "seed": int(m.group(1)),
            "accuracy": final["accuracy"], "mean_class_accuracy": final["mean_class_accuracy"],
            "macro_f1": final["macro_f1"],
            # the validation score the checkpoint was selected by (NaN when the run had no val split)
            "val_mean_class_accuracy": final.get("best_val_mean_class_accuracy") if
            final.get("best_val_mean_class_accuracy") is not None else float("nan"),
            "recall": {name: pc["recall"] for name, pc in final.get("per_class", {}).items()},
            "confusion_matrix": final.get("confusion_matrix"),
            "train_time_s": round(sum(float(r["time_epoch"]) for r in epochs.values()), 3),
            "epochs": max(epochs) if epochs else None, "best_epoch": final.get("epoch"),
            "run_dir": run_dir,
        })
    return rows


def _order(values: list[str], preferred: list[str]) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + sorted(v for v in seen if v not in preferred)


def mean_std(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    vals = [float(v) for v in values]
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def _cell(mean: float, std: float | None, bold: bool) -> str:
    text = f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")
    return f"**{text}**" if bold else text


def _setting_classes(rows: list[dict]) -> tuple[list[str], list[int] | None]:
    """The classes of one setting, ordered by training count (most frequent first) when the
    counts can be read from a checkpoint, else in their natural order; and the counts."""
    classes = list(dict.fromkeys(c for r in rows for c in r["recall"]))
    for r in rows:
        counts = train_counts(r["run_dir"])
        if counts is not None and len(counts) == len(classes):
            order = sorted(range(len(classes)), key=lambda i: -counts[i])
            return [classes[i] for i in order], [counts[i] for i in order]
    return classes, None


def _summaries(rows: list[dict], methods: list[str], classes: list[str]) -> dict:
    """method -> {"n": seeds, column -> (mean, std)} for the metric and recall columns."""
    out = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        s: dict[str, Any] = {"n": len(mine), "seeds": sorted(r["seed"] for r in mine)}
        for key, _ in _METRICS:
            s[key] = mean_std([r[key] for r in mine])
        for c in classes:
            vals = [r["recall"][c] for r in mine if c in r["recall"]]
            s[f"recall_{c}"] = mean_std(vals) if vals else None
        out[method] = s
    return out


def _markdown_table(summ: dict, methods: list[str], classes: list[str]) -> str:
    cols = [k for k, _ in _METRICS] + [f"recall_{c}" for c in classes]
    heads = [h for _, h in _METRICS] + [f"recall {c}" for c in classes]
    best = {}
    for col in cols:    # best displayed mean (ties at 2 decimals are all bold)
        shown = [round(100 * summ[m][col][0], 2) for m in methods if summ[m][col] is not None]
        best[col] = max(shown) if shown else None
    lines = ["| method | n | " + " | ".join(heads) + " |", "|---|---:|" + "---:|" * len(cols)]
    for m in methods:
        cells = []
        for col in cols:
            v = summ[m][col]
            cells.append("–" if v is None else _cell(v[0], v[1], round(100 * v[0], 2) == best[col]))
        lines.append(f"| {m} | {summ[m]['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out_dir: str | Path, command: str | None = None, log: Callable | None = None) -> dict:
    """(Re)write results.csv, results.md and the per-setting figures from the finished runs
    under ``out_dir``. Rows follow the grid's order when ``out_dir/compare.json`` exists.
    Returns ``{"csv": path, "markdown": path, "figures": [paths], "runs": n}``."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"compare output directory not found: {out_dir}")
    record = {}
    if (out_dir / "compare.json").is_file():
        try:
            record = json.loads((out_dir / "compare.json").read_text())
        except json.JSONDecodeError:
            record = {}
    grid = record.get("grid", {})
    pref_methods = [m["label"] for m in grid.get("methods", [])]
    pref_settings = list(grid.get("settings", {}) or [])
    if command is None:
        command = record.get("command") or f"dicc compare {shlex.quote(str(out_dir / 'compare.json'))}"

    rows = collect_results(out_dir)
    settings = _order([r["setting"] for r in rows], pref_settings)
    all_classes = list(dict.fromkeys(c for r in rows for c in r["recall"]))

    # results.csv
    csv_path = out_dir / "results.csv"
    fields = ["setting", "method", "seed", "val_mean_class_accuracy", "accuracy", "mean_class_accuracy", "macro_f1",
              *[f"recall_{c}" for c in all_classes], "train_time_s", "epochs", "best_epoch", "run_dir"]
    method_rank = {m: i for i, m in enumerate(pref_methods)}
    ordered = sorted(rows, key=lambda r: (settings.index(r["setting"]), method_rank.get(r["method"], len(method_rank)),
                                          r["method"], r["seed"]))
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in ordered:
            w.writerow({"setting": r["setting"], "method": r["method"], "seed": r["seed"],
                        "val_mean_class_accuracy": r["val_mean_class_accuracy"], "accuracy": r["accuracy"],
                        "mean_class_accuracy": r["mean_class_accuracy"], "macro_f1": r["macro_f1"],
                        **{f"recall_{c}": r["recall"].get(c, "") for c in all_classes},
                        "train_time_s": r["train_time_s"], "epochs": "" if r["epochs"] is None else r["epochs"],
                        "best_epoch": "" if r["best_epoch"] is None else r["best_epoch"],
                        "run_dir": str(r["run_dir"])})

    # results.md and figures
    md = ["# Comparison", "",
          f"Regenerate (trains whatever is unfinished, then rewrites this file): `{command}`",
          f"(report only: `{command} --report-only`).", "",
          "Metrics in %, mean ± sample standard deviation over seeds (n = number of seeds). "
          "`val mean class acc.` is the validation score (held out from the training data) that selected "
          "the checkpoint; every other column is on the test split; "
          "per-class columns are recall, classes ordered by training count; the best mean of each column "
          "is in **bold**.", ""]
    figures = []
    for setting in settings:
        srows = [r for r in rows if r["setting"] == setting]
        methods = _order([r["method"] for r in srows], pref_methods)
        classes, counts = _setting_classes(srows)
        summ = _summaries(srows, methods, classes)
        seeds = sorted({r["seed"] for r in srows})
        md += [f"## {setting}", ""]
        if counts is not None:
            md += ["Training counts: " + ", ".join(f"{c} {n}" for c, n in zip(classes, counts)) + ".", ""]
        md += [_markdown_table(summ, methods, classes), "", f"Seeds: {', '.join(map(str, seeds))}.", ""]
        try:
            figures.append(save_recall_chart(summ, methods, classes, counts, out_dir / f"recall_{setting}.png",
                                             title=setting))
            figures.append(save_confusion_grid(srows, methods, classes, out_dir / f"confusion_{setting}.png",
                                               title=setting))
        except ImportError:   # matplotlib is missing: the tables are still written
            pass
    if not rows:
        md += ["No finished runs yet.", ""]
    md_path = out_dir / "results.md"
    md_path.write_text("\n".join(md))
    if log is not None:
        log("\n".join(md))
        log(f"report: {md_path}, {csv_path} ({len(rows)} finished run(s))")
        log(f"regenerate with: {command}")
    return {"csv": csv_path, "markdown": md_path, "figures": figures, "runs": len(rows)}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_recall_chart(summ: dict, methods: list[str], classes: list[str], counts: list[int] | None,
                      path: Path, title: str = "") -> Path:
    """Grouped bars of per-class recall (mean over seeds, sample-std error bars), one bar per method."""
    plt = _plt()
    n_m = max(len(methods), 1)
    width = 0.8 / n_m
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + len(classes) * (0.35 + 0.18 * n_m)), 3.8), dpi=110)
    # one colour per method: the default cycle (tab10) repeats after ten
    palette = plt.get_cmap("tab10" if n_m <= 10 else "tab20").colors
    for j, m in enumerate(methods):
        xs, ys, es = [], [], []
        for i, c in enumerate(classes):
            v = summ[m][f"recall_{c}"]
            if v is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * v[0])
            es.append(100 * v[1] if v[1] is not None else 0.0)
        ax.bar(xs, ys, width=width, yerr=es if any(es) else None, capsize=2, label=f"{m} (n={summ[m]['n']})",
               color=palette[j % len(palette)])
    labels = [f"{c}\n{counts[i]}" for i, c in enumerate(classes)] if counts else classes
    ax.set_xticks(range(len(classes)), labels, fontsize=8)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 118)   # headroom for the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("class (training count)" if counts else "class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(n_m, 4), loc="upper right")
    if title:
        ax.set_title(f"per-class recall: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_confusion_grid(rows: list[dict], methods: list[str], classes: list[str], path: Path,
                        title: str = "") -> Path:
    """One row-normalised confusion matrix per method (summed over its seeds), side by side."""
    import numpy as np

    from .metrics import draw_confusion

    plt = _plt()
    natural = list(dict.fromkeys(c for r in rows for c in r["recall"]))
    perm = [natural.index(c) for c in classes]
    n = len(methods)
    cols = min(n, 4)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(0.6 * len(classes) * cols + 1, 0.6 * len(classes) * nrows + 1),
                             dpi=100, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, m in zip(axes.flat, methods):
        mats = [np.asarray(r["confusion_matrix"], dtype=float) for r in rows
                if r["method"] == m and r.get("confusion_matrix") is not None]
        if not mats or mats[0].shape != (len(natural), len(natural)):
            ax.axis("off")
            continue
        draw_confusion(ax, sum(mats)[np.ix_(perm, perm)], classes, counts=False, fontsize=6)
        ax.set_title(f"{m} (n={len(mats)})", fontsize=8)
    if title:
        fig.suptitle(f"confusion (row %, true = rows): {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def add_compare_parser(subparsers) -> None:
    p = subparsers.add_parser("compare", help="run a grid of methods x seeds (x settings) and tabulate the results",
                              description="Train every unfinished run of a grid file (finished runs are skipped, "
                              "interrupted ones resumed), then write results.csv, results.md and figures into the "
                              "grid's out directory. See configs/compare-smoke.yaml for the file format.")
    p.add_argument("grid", help="grid YAML file (base, methods, seeds, settings, out)")
    p.add_argument("--only", action="append", metavar="LABEL", help="only this method label (repeatable)")
    p.add_argument("--setting", action="append", metavar="NAME", help="only this setting (repeatable)")
    p.add_argument("--seed", type=int, action="append", metavar="N", help="only this seed (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their status; train nothing")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the finished runs")
    p.add_argument("--keep-going", action="store_true", help="go on with the next run when one fails")
    p.add_argument("--no-report", action="store_true",
                   help="train only; leave the report alone (for several compare processes on one grid: "
                   "write it once at the end with --report-only)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override for every run, e.g. --set train.device=cuda")


def run_compare(args) -> int:
    if args.report_only:
        g = load_grid(args.grid, args.overrides)
        if not g.out.is_dir():
            raise FileNotFoundError(f"{args.grid}: out directory {g.out} does not exist yet (nothing has run)")
        write_report(g.out, command=g.command, log=print)
        return 0
    outcome = run_grid(args.grid, only=args.only, settings=args.setting, seeds=args.seed, overrides=args.overrides,
                       dry_run=args.dry_run, keep_going=args.keep_going, report=not args.no_report)
    return 0 if outcome.ok else 1
