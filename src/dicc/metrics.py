"""Metrics over the whole split (never averaged per batch): from one confusion matrix, and from
the split's parent-class logits (:func:`metrics_from_logits`) what a confusion matrix cannot give:
top-2 accuracy, the expected calibration error with its reliability diagram, and the many /
medium / few-shot accuracies by the training class counts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

#: equal-width confidence bins of the expected calibration error
ECE_BINS = 15
#: ``eval.shot_thresholds``' default ``[many, few]``: FER2013-LT IF=100 (4300, 2997, 1796 | 1077,
#: 387 | 139, 43) splits 3 / 2 / 2 at the two widest gaps; the long-tail papers' ImageNet-LT
#: convention ``[100, 20]`` would make six of its seven classes many-shot
DEFAULT_SHOT_THRESHOLDS = (1500, 200)
SHOT_GROUPS = ("many", "medium", "few")


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


def calibration(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """Expected calibration error (Guo et al. 2017) over ``bins`` equal-width bins of the
    confidence (the predicted class's probability): bin ``b`` holds the samples with confidence
    in ``(b / bins, (b + 1) / bins]``, and ``ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|``.
    Also each bin's count, accuracy and mean confidence (None for an empty bin): the
    reliability diagram."""
    conf = torch.as_tensor(confidence, dtype=torch.float64).flatten().cpu()
    hit = torch.as_tensor(correct, dtype=torch.float64).flatten().cpu()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    b = torch.bucketize(conf, edges[1:-1], right=False)  # edges[b] < conf <= edges[b + 1]
    count = torch.bincount(b, minlength=bins).double()
    hits = torch.zeros(bins, dtype=torch.float64).index_add_(0, b, hit)
    confs = torch.zeros(bins, dtype=torch.float64).index_add_(0, b, conf)
    n = len(conf)
    ece = float((hits - confs).abs().sum() / n) if n else 0.0
    return {
        "ece": ece,
        "bins": bins,
        "count": [int(c) for c in count.tolist()],
        "accuracy": [float(h / c) if c else None for h, c in zip(hits.tolist(), count.tolist())],
        "confidence": [float(s / c) if c else None for s, c in zip(confs.tolist(), count.tolist())],
    }


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """Share of samples whose true class is among the ``k`` highest logits."""
    logits = torch.as_tensor(logits)
    if len(logits) == 0:
        return 0.0
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return float((top == torch.as_tensor(targets).view(-1, 1).to(top.device)).any(1).double().mean())


def shot_groups(train_counts: Sequence[int], thresholds: Sequence[float] = DEFAULT_SHOT_THRESHOLDS) -> dict:
    """Class indices by training count: ``many`` (more than ``thresholds[0]`` images), ``few``
    (fewer than ``thresholds[1]``) and ``medium`` (the rest)."""
    many, few = thresholds
    groups = {g: [] for g in SHOT_GROUPS}
    for c, n in enumerate(train_counts):
        groups["many" if n > many else "few" if n < few else "medium"].append(c)
    return groups


def shot_metrics(m: dict, class_names: Sequence[str], train_counts: Sequence[int], thresholds) -> dict:
    """``many/medium/few_shot_accuracy``: the mean recall of each group's classes present in the
    split (None for a group with none), from the metrics ``m`` of :func:`metrics_from_confusion`;
    and the groups (class names) and thresholds they came from."""
    if len(train_counts) != len(class_names):
        raise ValueError(f"shot groups: {len(train_counts)} training counts for {len(class_names)} classes")
    groups = shot_groups(train_counts, thresholds)
    out = {"shot_thresholds": list(thresholds), "shot_groups": {}}
    for g, members in groups.items():
        out["shot_groups"][g] = [class_names[c] for c in members]
        rec = [m["per_class"][class_names[c]]["recall"] for c in members if m["per_class"][class_names[c]]["support"]]
        out[f"{g}_shot_accuracy"] = sum(rec) / len(rec) if rec else None
    return out


def metrics_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_names: Sequence[str],
    *,
    train_counts: Sequence[int] | None = None,
    shot_thresholds: Sequence[float] = DEFAULT_SHOT_THRESHOLDS,
) -> dict:
    """:func:`metrics_from_confusion` of the logits' predictions, plus ``top2_accuracy``, ``ece``
    with its reliability bins (``calibration``; probabilities are the softmax of ``logits``) and,
    given the training class counts, the many / medium / few-shot accuracies (:func:`shot_metrics`)."""
    logits = torch.as_tensor(logits).float().cpu()
    targets = torch.as_tensor(targets, dtype=torch.long).flatten().cpu()
    m = metrics_from_confusion(confusion_matrix(targets, logits.argmax(1), len(class_names)), class_names)
    probs = logits.double().softmax(1)
    conf, pred = probs.max(1)
    cal = calibration(conf, pred == targets)
    m["top2_accuracy"] = topk_accuracy(logits, targets, 2)
    m["ece"] = cal.pop("ece")
    m["calibration"] = cal
    if train_counts is not None:
        m.update(shot_metrics(m, class_names, [int(c) for c in train_counts], shot_thresholds))
    return m


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def format_metrics(m: dict) -> str:
    lines = [
        f"accuracy {100 * m['accuracy']:.2f}  mean class acc {100 * m['mean_class_accuracy']:.2f}  "
        f"macro-F1 {100 * m['macro_f1']:.2f}  (n={m['num_samples']})",
    ]
    if "ece" in m:
        bins = m["calibration"]["bins"]
        lines.append(f"top-2 accuracy {_pct(m.get('top2_accuracy'))}  ECE {_pct(m['ece'])} ({bins} bins)")
    if "shot_groups" in m:
        many, few = m["shot_thresholds"]
        lines.append(
            "  ".join(f"{g}-shot {_pct(m[f'{g}_shot_accuracy'])}" for g in SHOT_GROUPS)
            + f"  (mean recall; many > {many:g}, few < {few:g} training images)"
        )
    lines.append("class       recall  precision  support")
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


def save_reliability_png(cal: dict, path: str | Path, title: str = "", ece: float | None = None) -> Path:
    """The reliability diagram of :func:`calibration`'s bins as a PNG: each bin's accuracy as a
    bar against the diagonal (perfect calibration), the gap to its mean confidence shaded, and
    the share of samples per bin below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = int(cal["bins"])
    width = 1.0 / bins
    centers = [(b + 0.5) * width for b in range(bins)]
    acc = [a if a is not None else 0.0 for a in cal["accuracy"]]
    conf = [c if c is not None else a for a, c in zip(acc, cal["confidence"])]  # an empty bin: no gap
    n = max(1, sum(cal["count"]))
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(4.2, 5.0), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.bar(centers, acc, width=width, edgecolor="black", lw=0.5, color="tab:blue", label="accuracy")
    ax.bar(
        centers,
        [c - a for a, c in zip(acc, conf)],
        bottom=acc,
        width=width,
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    if title or ece is not None:
        ax.set_title(" ".join(x for x in (title, f"ECE {100 * ece:.2f}%" if ece is not None else "") if x), fontsize=9)
    ax_n.bar(centers, [c / n for c in cal["count"]], width=width, color="grey", edgecolor="black", lw=0.5)
    ax_n.set_xlim(0, 1)
    ax_n.set_xlabel("confidence (predicted class probability)")
    ax_n.set_ylabel("share")
    from .plots import save_figure

    return save_figure(fig, path)
