"""What is in a dataset: per-split class counts, as a dict, a table or a bar chart.

Counting reads only labels (file lists, the CSV's emotion column, RAF-DB's label list,
AffectNet's and FERPlus's label files); no image is decoded. Used by
``dicc data info PATH [--split NAME] [--format F] [--json] [--chart FILE]``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .classes import resolve_classes
from .formats import get_format, list_splits, resolve_split, split_summary


def data_info(path: str | os.PathLike, split: str | None = None, fmt: str = "auto", classes=None) -> dict:
    """Class counts of every split at ``path`` (or only ``split``) in the label space
    ``classes`` (default the seven emotions).

    Returns ``{"path", "format", "classes", "splits": {name: {"counts": {class: n},
    "total": n, "imbalance": max/min count or None when a class is missing,
    "missing": [classes without images], "dropped": {reason: n}}}}`` with the classes in
    label-space order. ``dropped`` counts what the reader leaves out (classes outside the label
    space, AffectNet's none/uncertain/non-face, FERPlus's unknown/not-a-face/no-agreement).
    """
    names_cls = resolve_classes(classes)
    f = get_format(path, fmt)
    names = [resolve_split(path, split, fmt)] if split is not None else list_splits(path, fmt)
    splits = {}
    for name in names:
        summary = split_summary(path, name, fmt, names_cls)
        counts = summary.labels.bincount(minlength=len(names_cls)).tolist()
        lo = min(counts)
        splits[name] = {
            "counts": dict(zip(names_cls, counts)),
            "total": sum(counts),
            "imbalance": round(max(counts) / lo, 2) if lo > 0 else None,
            "missing": [c for c, n in zip(names_cls, counts) if n == 0],
            "dropped": dict(sorted(summary.dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
        }
    return {"path": str(Path(path)), "format": f.name, "classes": list(names_cls), "splits": splits}


def format_info(info: dict) -> str:
    """A plain-text table of :func:`data_info`'s result, one row per split, then a notice
    for every split with missing classes or dropped samples."""
    classes = info["classes"]
    header = ["split", *classes, "total", "IF"]
    rows = []
    for name, s in info["splits"].items():
        imb = s.get("imbalance")
        rows.append(
            [name, *(str(s["counts"][c]) for c in classes), str(s["total"]), f"{imb:g}" if imb is not None else "-"]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt_row = lambda r: "  ".join(  # noqa: E731
        cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))
    )
    lines = [
        f"{info['path']} ({info['format']})",
        fmt_row(header),
        "  ".join("-" * w for w in widths),
        *map(fmt_row, rows),
    ]
    notes = []
    for name, s in info["splits"].items():
        if s.get("missing"):
            notes.append(f"{name}: no images of {', '.join(s['missing'])}")
        if s.get("dropped"):
            parts = ", ".join(f"{reason} {n}" for reason, n in s["dropped"].items())
            notes.append(f"{name}: left out {sum(s['dropped'].values())} ({parts})")
    return "\n".join(lines + notes) + "\nIF = imbalance factor, largest / smallest class count"


def save_count_chart(info: dict, out_png: str | os.PathLike) -> Path:
    """Bar chart of the class counts (one group of bars per class, one colour per split)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes, splits = info["classes"], info["splits"]
    fig = Figure(figsize=(1.2 * len(classes) + 2, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(len(splits), 1)
    for j, (name, s) in enumerate(splits.items()):
        xs = [i + (j - (len(splits) - 1) / 2) * width for i in range(len(classes))]
        bars = ax.bar(xs, [s["counts"][c] for c in classes], width, label=f"{name} ({s['total']})")
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_ylabel("images")
    ax.set_title(f"{Path(info['path']).name} ({info['format']})")
    ax.legend()
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
