"""Figures of a run: learning curves (``curves.png``) and the figure writer the confusion plots share;
matplotlib is imported only when drawing."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def save_curves(epochs: Sequence[dict], events: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Training loss (left) and validation accuracy / mean class accuracy (right) per epoch,
    from ``metrics.jsonl``'s epoch lines; each method event (``{"event": name, "epoch": e}``,
    e.g. a DICC re-clustering at the start of epoch ``e``) is a dotted vertical line at
    ``e - 0.5``, labelled with its name once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [int(r["epoch"]) for r in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    ax_loss.plot(x, [r["train_loss"] for r in epochs], marker="o", ms=3, color="tab:blue")
    ax_loss.set_ylabel("training loss")
    for key, label, color in (
        ("val_accuracy", "val accuracy", "tab:green"),
        ("val_mean_class_accuracy", "val mean class acc.", "tab:orange"),
    ):
        ys = [(r["epoch"], 100 * r[key]) for r in epochs if r.get(key) is not None]
        if ys:
            ax_acc.plot(*zip(*ys), marker="o", ms=3, color=color, label=label)
    ax_acc.set_ylabel("%")
    seen: set[str] = set()
    for ev in events:
        name = str(ev.get("event"))
        for ax in (ax_loss, ax_acc):
            ax.axvline(
                int(ev.get("epoch", 0)) - 0.5,
                color="grey",
                ls=":",
                lw=1,
                label=name if (ax is ax_acc and name not in seen) else None,
            )
        seen.add(name)
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if ax_acc.get_legend_handles_labels()[0]:
        ax_acc.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write atomically (creating the folder) and close a matplotlib figure; the file
    name's suffix is the format."""
    import matplotlib.pyplot as plt

    from .atomic import atomic_path

    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return path
