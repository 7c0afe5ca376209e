"""The grid file of ``dicc compare``: its format, and :func:`load_grid`, which parses and checks it.

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
      - label: ce+crt                  # a derived entry: a second stage applied to the
        after: ce                      # finished runs of entry `ce` (same setting and seed)
        stage: {name: crt, epochs: 5}  # the stage and its options (dicc.rebalance)
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

Derived entries (post-hoc logit adjustment, tau-normalisation, cRT: a second stage applied to
a trained run) have the keys ``label`` (required), ``after`` (the label of another entry of
the same grid, trained or itself derived) and ``stage`` (a mapping with ``name`` and the
stage's options, passed as a dict to :func:`dicc.rebalance.rebalance`); they take no
``name``, ``options`` or ``set``: everything else comes from the parent run, so neither the
settings' overrides nor ``--set`` apply to them. A derived run lives in
``OUT/<setting>/<label>/seed<k>`` like any other, is made once its parent run (same setting,
same seed) is finished, and is finished when it has a ``final.json``; an interrupted one is
redone from its parent. An ``after`` that names no entry of the grid, directly or through a
chain of derived entries, or a cycle of them, is an error when the grid is loaded.
``--only LABEL`` of a derived entry does not train its parent: the parent runs must be
finished already or be selected too (``--only ce --only ce+crt``), else nothing runs and the
error says which parent runs are missing (``--dry-run`` lists every derived run with its
parent and the parent's status).
"""

from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import yaml_error_line

GRID_KEYS = ("base", "methods", "out", "seeds", "settings")
METHOD_KEYS = ("label", "name", "options", "set")
DERIVED_KEYS = ("label", "after", "stage")
DEFAULT_SETTING = "default"


@dataclass
class MethodEntry:
    """One entry of ``methods``: a registered method trained with ``options`` (and ``overrides``),
    or, with ``after`` and ``stage``, a second stage applied to the runs of entry ``after``."""

    label: str
    name: str | None
    options: dict = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    after: str | None = None
    stage: dict | None = None

    @property
    def derived(self) -> bool:
        return self.after is not None

    def to_dict(self) -> dict:
        if self.derived:
            return {"label": self.label, "after": self.after, "stage": self.stage}
        return {"label": self.label, "name": self.name, "options": self.options, "set": self.overrides}


@dataclass
class Grid:
    base: dict
    methods: list[MethodEntry]
    seeds: list[int]
    settings: dict[str, list[str]]
    out: Path
    path: Path | None = None  # the grid file, when it came from one
    extra_overrides: list[str] = field(default_factory=list)  # --set, applied to every run

    def to_dict(self) -> dict:
        return {
            "out": str(self.out),
            "base": self.base,
            "methods": [m.to_dict() for m in self.methods],
            "seeds": self.seeds,
            "settings": self.settings,
        }

    @property
    def command(self) -> str:
        grid = str(self.path) if self.path is not None else str(self.out / "compare.json")
        sets = "".join(f" --set {shlex.quote(o)}" for o in self.extra_overrides)
        return f"dicc compare {shlex.quote(grid)}{sets}"


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
        raise ValueError(
            f"{where}: expected a list of dotted overrides like data.longtail=fer2013-if100, got {value!r}"
        )
    return list(value)


def _parse_derived(entry: dict, where: str) -> MethodEntry:
    trained_only = sorted(k for k in entry if k in METHOD_KEYS and k not in DERIVED_KEYS)
    if trained_only:
        raise ValueError(
            f"{where}: a derived entry (with 'after') takes no {', '.join(trained_only)}: its "
            f"config is its parent run's; put the stage's options in 'stage'"
        )
    _check_keys(entry, DERIVED_KEYS, where)
    missing = [k for k in DERIVED_KEYS if k not in entry]
    if missing:
        raise ValueError(
            f"{where}: a derived entry needs {', '.join(repr(k) for k in missing)} (keys: {', '.join(DERIVED_KEYS)})"
        )
    label = _check_name(entry["label"], f"{where}: label")
    after = entry["after"]
    if not isinstance(after, str) or not after:
        raise ValueError(f"{where} ({label}): after must be the label of another method entry, got {after!r}")
    stage = entry["stage"]
    if not isinstance(stage, dict) or not isinstance(stage.get("name"), str) or not stage["name"]:
        raise ValueError(
            f"{where} ({label}): stage must be a mapping with a 'name' (and the stage's options), got {stage!r}"
        )
    return MethodEntry(label=label, name=None, after=after, stage=copy.deepcopy(stage))


def _parse_method(entry: Any, i: int) -> MethodEntry:
    where = f"methods[{i}]"
    if isinstance(entry, str):
        return MethodEntry(label=_check_name(entry, f"{where}: method name"), name=entry)
    if not isinstance(entry, dict):
        raise ValueError(
            f"{where}: expected a method name or a mapping with keys {', '.join(METHOD_KEYS)}, got {entry!r}"
        )
    if "after" in entry or "stage" in entry:
        return _parse_derived(entry, where)
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
    return MethodEntry(
        label=label,
        name=name,
        options=dict(options),
        overrides=_override_list(entry.get("set"), f"{where} ({label}): set"),
    )


def _check_parents(methods: list[MethodEntry], where: str) -> None:
    """Every derived entry's chain of ``after`` ends at a trained entry of the grid."""
    by_label = {m.label: m for m in methods}
    for i, m in enumerate(methods):
        chain = [m.label]
        cur = m
        while cur.derived:
            if cur.after not in by_label:
                via = f" (through {' -> '.join(chain)})" if len(chain) > 1 else ""
                raise ValueError(
                    f"{where}: methods[{i}] ({m.label}): after: {cur.after!r} is not a method entry "
                    f"of this grid{via}; labels: {', '.join(by_label)}"
                )
            if cur.after in chain:
                raise ValueError(
                    f"{where}: methods[{i}] ({m.label}): after: a cycle "
                    f"{' -> '.join(chain + [cur.after])}; a chain of derived entries must start "
                    f"at a trained entry"
                )
            chain.append(cur.after)
            cur = by_label[cur.after]


def _load_raw(grid: str | Path | dict, overrides: list[str] | None):
    """The grid's mapping, its file (or None) and the overrides (a compare.json adds its own)."""
    if not isinstance(grid, (str, Path)):
        return copy.deepcopy(grid), None, list(overrides or [])
    path = Path(grid)
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {yaml_error_line(err)}") from None
    if path.suffix == ".json" and isinstance(raw, dict) and "grid" in raw:  # a compare.json
        return raw["grid"], path, list(raw.get("overrides") or []) + list(overrides or [])
    return raw, path, list(overrides or [])


def _load_base(base: Any, path: Path | None, where: str) -> dict:
    base = base or {}
    if isinstance(base, str):
        base_path = Path(base)
        if not base_path.is_file() and path is not None and (path.parent / base).is_file():
            base_path = path.parent / base
        if not base_path.is_file():
            raise FileNotFoundError(f"{where}: base config file not found: {base}")
        base = yaml.safe_load(base_path.read_text()) or {}
    if not isinstance(base, dict):
        raise ValueError(f"{where}: base must be a train config mapping (or the path of one)")
    return base


def _load_settings(settings_raw: Any, where: str) -> dict[str, list[str]]:
    if settings_raw in (None, {}):
        return {DEFAULT_SETTING: []}
    if not isinstance(settings_raw, dict):
        raise ValueError(f"{where}: settings must map setting names to lists of dotted overrides")
    settings = {
        _check_name(str(k), "setting name"): _override_list(v, f"{where}: settings.{k}")
        for k, v in settings_raw.items()
    }
    for name, items in settings.items():
        bad = [o for o in items if o.split("=", 1)[0].strip().startswith("method")]
        if bad:
            raise ValueError(
                f"{where}: settings.{name}: {', '.join(bad)}: the method is set per entry of "
                f"'methods' (use its options or set)"
            )
    return settings


def load_grid(grid: str | Path | dict | Grid, overrides: list[str] | None = None) -> Grid:
    """Parse and structurally check a grid (file path or mapping); see the module docstring.

    ``overrides`` (dotted ``key=value``) are applied to every trained run after everything else
    (e.g. ``train.device=cuda``). Method names and configs are checked by :func:`plan_runs`.
    """
    if isinstance(grid, Grid):
        g = copy.deepcopy(grid)
        g.extra_overrides = list(g.extra_overrides) + list(overrides or [])
        return g
    raw, path, overrides = _load_raw(grid, overrides)
    where = str(path) if path else "grid"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with keys {', '.join(GRID_KEYS)}")
    _check_keys(raw, GRID_KEYS, where)
    for key in ("out", "methods"):
        if raw.get(key) in (None, "", []):
            raise ValueError(f"{where}: '{key}' is required")
    base = _load_base(raw.get("base"), path, where)

    methods_raw = raw["methods"]
    if not isinstance(methods_raw, list):
        raise ValueError(f"{where}: methods must be a list of method names or mappings")
    methods = [_parse_method(e, i) for i, e in enumerate(methods_raw)]
    labels = [m.label for m in methods]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ValueError(f"{where}: duplicate method label(s) {', '.join(dup)}; give each entry its own 'label'")
    _check_parents(methods, where)

    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ValueError(f"{where}: seeds must be a non-empty list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: seeds has duplicates: {seeds}")
    return Grid(
        base=base,
        methods=methods,
        seeds=list(seeds),
        settings=_load_settings(raw.get("settings"), where),
        out=Path(str(raw["out"])),
        path=path,
        extra_overrides=overrides,
    )
