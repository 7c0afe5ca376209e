"""Metrics from one confusion matrix over the whole split (never averaged per batch)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


def confusion_matrix(targets: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``cm[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (int64)."""
    targets = torch.as_tensor(targets, dtype=torch.long).flatten().cpu()
    preds = torch.as_tensor(preds, dtype=torch.long).flatten().cpu()
    return torch.bincount(targets * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(b > 0, a / b.clamp(min=1e-12), torch.zeros_like(a))


def metrics_from_confusion(cm: torch.Tensor, class_names: Sequence[str]) -> dict:
    """Accuracy, mean class accuracy (balanced accuracy over classes present in the split),
    macro-F1 (over the same classes), per-class precision/recall/F1/support, and the matrix.

    Classes with no samples in the split are left out of the means (as scikit-learn's
    ``balanced_accuracy_score`` does) and reported with ``support = 0``.
    """
    cm = cm.double()
    tp = cm.diag()
    support = cm.sum(1)
    predicted = cm.sum(0)
    recall = _safe_div(tp, support)
    precision = _safe_div(tp, predicted)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = support > 0
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total > 0 else 0.0,
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.long().tolist(),
        "num_samples": int(total),
        # classes with no sample here: left out of the mean class accuracy and macro-F1
        "absent_classes": [name for i, name in enumerate(class_names) if not bool(present[i])],
    }


def format_metrics(m: dict) -> str:
    lines = [
        f"accuracy {100 * m['accuracy']:.2f}  mean class acc {100 * m['mean_class_accuracy']:.2f}  "
        f"macro-F1 {100 * m['macro_f1']:.2f}  (n={m['num_samples']})",
        "class       recall  precision  support",
    ]
    for name, pc in m["per_class"].items():
        lines.append(f"{name:<10} {100 * pc['recall']:7.2f}  {100 * pc['precision']:9.2f}  {pc['support']:7d}")
    if m.get("absent_classes"):
        lines.append(
            f"(not in this split: {', '.join(m['absent_classes'])}; left out of the mean class accuracy and macro-F1)"
        )
    return "\n".join(lines)


def draw_confusion(ax, cm, class_names: Sequence[str], *, counts: bool = True, fontsize: float = 7) -> None:
    """Draw a row-normalised confusion matrix (true classes as rows; recall on the diagonal) on
    the matplotlib axes ``ax``: percentages, and the counts below them with ``counts``."""
    cm = torch.as_tensor(cm, dtype=torch.float64)
    norm = _safe_div(cm, cm.sum(1, keepdim=True).expand_as(cm))
    n = len(class_names)
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            text = f"{100 * norm[i, j]:.0f}" + (f"\n({int(cm[i, j])})" if counts else "")
            ax.text(
                j, i, text, ha="center", va="center", fontsize=fontsize, color="white" if norm[i, j] > 0.5 else "black"
            )
    tick = None if counts else fontsize
    ax.set_xticks(range(n), class_names, rotation=45 if counts else 60, ha="right", fontsize=tick)
    ax.set_yticks(range(n), class_names, fontsize=tick)


def save_confusion_png(cm, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall on the diagonal) with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n), dpi=110)
    draw_confusion(ax, cm, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    from .plots import save_figure

    return save_figure(fig, path)
