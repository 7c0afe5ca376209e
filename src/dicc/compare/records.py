"""Reading what a run directory records: its status, its ``metrics.jsonl`` (without the repeats
a resumed run leaves), its training counts, and whether it was made with the grid's config."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from ..config import Config, flatten, from_dict, resolve_paths
from .plan import DerivedStage

# keys that do not change a run's numbers: ignored when checking a run against the grid
_INCIDENTAL = {
    "train.out",
    "train.progress",
    "train.device",
    "train.threads",
    "train.eval_batch_size",
    "data.workers",
    "data.cache_dir",
}
STAGE_RECORD = "stage.json"  # a derived run's record of its parent and stage, written by dicc compare


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` ([] without one), the last of each kind only: a run
    killed and resumed logs the epochs it redoes again, so of the epoch lines (no ``event``) of
    one ``epoch`` and of the ``event`` lines of one (``event``, ``epoch``), only the last one is
    kept, in file order. The epoch numbers are only compared, never interpreted (0- or 1-based);
    lines without an ``epoch`` are all kept, lines cut short by an interruption are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    last: dict = {}
    for i, line in enumerate(path.read_text().splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interruption
        if not isinstance(rec, dict):
            continue
        key = (rec.get("event"), json.dumps(rec["epoch"])) if "epoch" in rec else i
        last.pop(key, None)  # re-insert: the dict keeps the order of the last occurrences
        last[key] = rec
    return list(last.values())


def epoch_records(run_dir: str | Path) -> dict[int, dict]:
    """The per-epoch records of metrics.jsonl (those with ``time_epoch``), by epoch."""
    return {
        rec["epoch"]: rec
        for rec in read_metrics(run_dir)
        if "event" not in rec and "time_epoch" in rec and isinstance(rec.get("epoch"), int)
    }


def run_status(run_dir: str | Path) -> str:
    """``done`` (final.json), ``partial`` (checkpoints/last.pt, no final.json) or ``pending``."""
    run_dir = Path(run_dir)
    if (run_dir / "final.json").is_file():
        return "done"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "partial"
    return "pending"


def train_counts(run_dir: str | Path) -> list[int] | None:
    """The training class counts a run was trained with (from final.json, else from its
    checkpoint), or None."""
    try:
        counts = json.loads((Path(run_dir) / "final.json").read_text()).get("train_class_counts")
        if counts is not None:
            return [int(c) for c in counts]
    except (OSError, json.JSONDecodeError, AttributeError, TypeError, ValueError):
        pass  # no usable record: try the checkpoints
    for name in ("last.pt", "best.pt"):
        path = Path(run_dir) / "checkpoints" / name
        if not path.is_file():
            continue
        import torch

        try:
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # mmap needs the zip format
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a report must not fail on one unreadable checkpoint
            continue
        counts = ckpt.get("class_counts") if isinstance(ckpt, dict) else None
        if counts is not None:
            return [int(c) for c in counts]
    return None


def write_stage_record(run_dir: str | Path, derived: DerivedStage) -> Path:
    """Record in a finished derived run which parent run and stage made it (``stage.json``)."""
    from ..atomic import write_text_atomic

    record = {"after": derived.after, "parent": str(derived.parent), "stage": derived.stage}
    return write_text_atomic(Path(run_dir) / STAGE_RECORD, json.dumps(record, indent=2))


def _stage_differences(run_dir: Path, derived: DerivedStage) -> list[str]:
    path = run_dir / STAGE_RECORD
    if not path.is_file():
        return []
    try:
        saved = json.loads(path.read_text())
        was, now = flatten(saved["stage"], "stage."), flatten(derived.stage, "stage.")
        diff = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
        if saved["after"] != derived.after:
            diff.append("after")
        if Path(saved["parent"]).resolve() != Path(derived.parent).resolve():
            diff.append("parent")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return [f"{STAGE_RECORD} (unreadable)"]
    return diff


def config_differences(run_dir: str | Path, cfg: Config | DerivedStage) -> list[str]:
    """Dotted keys where what made the run differs from what the grid says now: for a trained run
    the saved config.yaml against ``cfg`` (incidental keys such as the device or progress bars
    are ignored); for a derived run (``cfg`` a :class:`DerivedStage`) the stage's options
    (``stage.<key>``), the parent entry (``after``) and the parent run's path (``parent``) recorded
    in its stage.json. Empty when there is no such record."""
    if isinstance(cfg, DerivedStage):
        return _stage_differences(Path(run_dir), cfg)
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return []
    try:
        saved = flatten(resolve_paths(from_dict(Config, yaml.safe_load(path.read_text()) or {})).to_dict())
    except (yaml.YAMLError, ValueError):
        return ["config.yaml (unreadable)"]
    # a run records its data path resolved (dicc.config.resolve_paths); the grid's may be relative
    now = flatten(resolve_paths(copy.deepcopy(cfg)).to_dict())
    return sorted(k for k in set(saved) | set(now) if k not in _INCIDENTAL and saved.get(k) != now.get(k))
