"""The report's figures: per-class recall bars and confusion matrices, methods side by side
(matplotlib is imported only when drawing)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_recall_chart(
    summ: dict, methods: list[str], classes: list[str], counts: list[int] | None, path: Path, title: str = ""
) -> Path:
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
        ax.bar(
            xs,
            ys,
            width=width,
            yerr=es if any(es) else None,
            capsize=2,
            label=f"{m} (n={summ[m]['n']})",
            color=palette[j % len(palette)],
        )
    labels = [f"{c}\n{counts[i]}" for i, c in enumerate(classes)] if counts else classes
    ax.set_xticks(range(len(classes)), labels, fontsize=8)
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 118)  # headroom for the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("class (training count)" if counts else "class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(n_m, 4), loc="upper right")
    if title:
        ax.set_title(f"per-class recall: {title}", fontsize=9)
    return _save(plt, fig, path)


def save_confusion_grid(rows: list[dict], methods: list[str], classes: list[str], path: Path, title: str = "") -> Path:
    """One row-normalised confusion matrix per method (summed over its seeds), side by side."""
    import numpy as np

    from ..metrics import draw_confusion

    plt = _plt()
    natural = list(dict.fromkeys(c for r in rows for c in r["recall"]))
    perm = [natural.index(c) for c in classes]
    n = len(methods)
    cols = min(n, 4)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(0.6 * len(classes) * cols + 1, 0.6 * len(classes) * nrows + 1), dpi=100, squeeze=False
    )
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, m in zip(axes.flat, methods):
        mats = [
            np.asarray(r["confusion_matrix"], dtype=float)
            for r in rows
            if r["method"] == m and r.get("confusion_matrix") is not None
        ]
        if not mats or mats[0].shape != (len(natural), len(natural)):
            ax.axis("off")
            continue
        draw_confusion(ax, sum(mats)[np.ix_(perm, perm)], classes, counts=False, fontsize=6)
        ax.set_title(f"{m} (n={len(mats)})", fontsize=8)
    if title:
        fig.suptitle(f"confusion (row %, true = rows): {title}", fontsize=9)
    return _save(plt, fig, path)
