"""The report of a grid: results.csv, results.md and the figures, rebuilt from whatever runs under
``OUT`` have a ``final.json`` (:func:`write_report`, also ``dicc compare GRID --report-only``).

Outputs (under ``OUT``)
- ``results.csv``: one row per finished run: setting, method, seed, accuracy,
  mean_class_accuracy, macro_f1, recall_<class> for every class (fractions in [0, 1]),
  train_time_s (sum of the epochs' ``time_epoch``), epochs (trained), best_epoch (the epoch of
  the evaluated checkpoint), run_dir. A derived run (see :mod:`dicc.compare.grid`) is a row
  like any other, under its label; its train_time_s and epochs are those its own
  metrics.jsonl records (the second stage's).
- ``results.md``: per setting, a table of mean +- sample std over seeds (in %) of accuracy,
  mean class accuracy, macro-F1 and per-class recall (classes ordered by training count), the
  best mean of each column in bold, and the command that regenerates it; then (for runs whose
  final.json has them) a second table, ``<setting>: calibration and shot groups``, of top-2
  accuracy, expected calibration error (lowest in bold) and many / medium / few-shot accuracy,
  with the classes of each shot group. results.csv has these columns too (empty for older runs).
- ``recall_<setting>.png``: per-class recall, methods side by side, classes ordered by
  training count; ``confusion_<setting>.png``: one row-normalised confusion matrix per method
  (summed over seeds).
- ``compare.json``: the normalised grid and its path (orders the report's rows).
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any, Callable

from .charts import save_confusion_grid, save_recall_chart
from .records import epoch_records, train_counts

_METRICS = (
    ("val_mean_class_accuracy", "val mean class acc."),
    ("accuracy", "accuracy"),
    ("mean_class_accuracy", "mean class acc."),
    ("macro_f1", "macro-F1"),
)
# the second table's columns (dicc.metrics.metrics_from_logits), and whether higher is better
_EXTRA = (
    ("top2_accuracy", "top-2 acc.", True),
    ("ece", "ECE", False),
    ("many_shot_accuracy", "many-shot", True),
    ("medium_shot_accuracy", "medium-shot", True),
    ("few_shot_accuracy", "few-shot", True),
)


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
        epochs = epoch_records(run_dir)
        rows.append(
            {
                "setting": run_dir.parent.parent.name,
                "method": run_dir.parent.name,
                "seed": int(m.group(1)),
                "accuracy": final["accuracy"],
                "mean_class_accuracy": final["mean_class_accuracy"],
                "macro_f1": final["macro_f1"],
                # the validation score the checkpoint was selected by (NaN when the run had no val split)
                "val_mean_class_accuracy": final.get("best_val_mean_class_accuracy")
                if final.get("best_val_mean_class_accuracy") is not None
                else float("nan"),
                **{key: final.get(key) for key, _, _ in _EXTRA},
                "shot_groups": final.get("shot_groups"),
                "shot_thresholds": final.get("shot_thresholds"),
                "recall": {name: pc["recall"] for name, pc in final.get("per_class", {}).items()},
                "confusion_matrix": final.get("confusion_matrix"),
                "train_time_s": round(sum(float(r["time_epoch"]) for r in epochs.values()), 3),
                "epochs": max(epochs) if epochs else None,
                "best_epoch": final.get("epoch"),
                "run_dir": run_dir,
            }
        )
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
        for key, _, _ in _EXTRA:  # over the runs that have the metric (older runs do not)
            vals = [r[key] for r in mine if r.get(key) is not None]
            s[key] = mean_std(vals) if vals else None
        out[method] = s
    return out


def _extra_table(summ: dict, methods: list[str], rows: list[dict]) -> list[str]:
    """The calibration / shot-group table of one setting (no lines when no run has the metrics)."""
    if not any(summ[m][key] is not None for m in methods for key, _, _ in _EXTRA):
        return []
    best = {}
    for key, _, higher in _EXTRA:
        shown = [round(100 * summ[m][key][0], 2) for m in methods if summ[m][key] is not None]
        best[key] = (max(shown) if higher else min(shown)) if shown else None
    lines = [
        "| method | n | " + " | ".join(h for _, h, _ in _EXTRA) + " |",
        "|---|---:|" + "---:|" * len(_EXTRA),
    ]
    for m in methods:
        cells = [
            "–" if summ[m][k] is None else _cell(*summ[m][k], round(100 * summ[m][k][0], 2) == best[k])
            for k, _, _ in _EXTRA
        ]
        lines.append(f"| {m} | {summ[m]['n']} | " + " | ".join(cells) + " |")
    note = next((r for r in rows if r.get("shot_groups")), None)
    if note is not None:
        many, few = note["shot_thresholds"]
        groups = "; ".join(f"{g}: {', '.join(c) or 'none'}" for g, c in note["shot_groups"].items())
        lines += [
            "",
            f"Shot groups by training count (many > {many:g}, few < {few:g}): {groups}. Shot accuracies are "
            "the mean recall of the group's classes; ECE over 15 confidence bins (lower is better).",
        ]
    return lines


def _markdown_table(summ: dict, methods: list[str], classes: list[str]) -> str:
    cols = [k for k, _ in _METRICS] + [f"recall_{c}" for c in classes]
    heads = [h for _, h in _METRICS] + [f"recall {c}" for c in classes]
    best = {}
    for col in cols:  # best displayed mean (ties at 2 decimals are all bold)
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
    record = _grid_record(out_dir)
    grid = record.get("grid", {})
    pref_methods = [m["label"] for m in grid.get("methods", [])]
    pref_settings = list(grid.get("settings", {}) or [])
    if command is None:
        command = record.get("command") or f"dicc compare {shlex.quote(str(out_dir / 'compare.json'))}"

    rows = collect_results(out_dir)
    settings = _order([r["setting"] for r in rows], pref_settings)
    csv_path = out_dir / "results.csv"
    _write_csv(csv_path, rows, settings, pref_methods)
    md, figures = _markdown(rows, settings, pref_methods, command, out_dir)
    md_path = out_dir / "results.md"
    md_path.write_text("\n".join(md))
    if log is not None:
        log("\n".join(md))
        log(f"report: {md_path}, {csv_path} ({len(rows)} finished run(s))")
        log(f"regenerate with: {command}")
    return {"csv": csv_path, "markdown": md_path, "figures": figures, "runs": len(rows)}


def _grid_record(out_dir: Path) -> dict:
    """``compare.json`` (the grid and its command), or {} when it is missing or unreadable."""
    if (out_dir / "compare.json").is_file():
        try:
            return json.loads((out_dir / "compare.json").read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def _write_csv(csv_path: Path, rows: list[dict], settings: list[str], pref_methods: list[str]) -> None:
    """``results.csv``: one row per run, by setting, then the grid's method order, then seed."""
    all_classes = list(dict.fromkeys(c for r in rows for c in r["recall"]))
    fields = [
        "setting",
        "method",
        "seed",
        "val_mean_class_accuracy",
        "accuracy",
        "mean_class_accuracy",
        "macro_f1",
        *[f"recall_{c}" for c in all_classes],
        *[key for key, _, _ in _EXTRA],
        "train_time_s",
        "epochs",
        "best_epoch",
        "run_dir",
    ]
    method_rank = {m: i for i, m in enumerate(pref_methods)}
    ordered = sorted(
        rows,
        key=lambda r: (
            settings.index(r["setting"]),
            method_rank.get(r["method"], len(method_rank)),
            r["method"],
            r["seed"],
        ),
    )
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in ordered:
            w.writerow(
                {
                    "setting": r["setting"],
                    "method": r["method"],
                    "seed": r["seed"],
                    "val_mean_class_accuracy": r["val_mean_class_accuracy"],
                    "accuracy": r["accuracy"],
                    "mean_class_accuracy": r["mean_class_accuracy"],
                    "macro_f1": r["macro_f1"],
                    **{f"recall_{c}": r["recall"].get(c, "") for c in all_classes},
                    **{key: "" if r[key] is None else r[key] for key, _, _ in _EXTRA},
                    "train_time_s": r["train_time_s"],
                    "epochs": "" if r["epochs"] is None else r["epochs"],
                    "best_epoch": "" if r["best_epoch"] is None else r["best_epoch"],
                    "run_dir": str(r["run_dir"]),
                }
            )


def _markdown(rows: list[dict], settings: list[str], pref_methods: list[str], command: str, out_dir: Path):
    """The lines of ``results.md`` and the figures drawn (per setting: recall chart, confusions)."""
    md = [
        "# Comparison",
        "",
        f"Regenerate (trains whatever is unfinished, then rewrites this file): `{command}`",
        f"(report only: `{command} --report-only`).",
        "",
        "Metrics in %, mean ± sample standard deviation over seeds (n = number of seeds). "
        "`val mean class acc.` is the validation score (held out from the training data) that selected "
        "the checkpoint; every other column is on the test split; "
        "per-class columns are recall, classes ordered by training count; the best mean of each column "
        "is in **bold**.",
        "",
    ]
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
        extra = _extra_table(summ, methods, srows)
        if extra:
            md += [f"## {setting}: calibration and shot groups", "", *extra, ""]
        try:
            figures.append(
                save_recall_chart(summ, methods, classes, counts, out_dir / f"recall_{setting}.png", title=setting)
            )
            figures.append(
                save_confusion_grid(srows, methods, classes, out_dir / f"confusion_{setting}.png", title=setting)
            )
        except ImportError:  # matplotlib is missing: the tables are still written
            pass
    if not rows:
        md += ["No finished runs yet.", ""]
    return md, figures
