"""A picture of what DICC's sub-classes mean: for every split class, one row per sub-class
showing the training faces nearest to that sub-class's centroid."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .clustering import SubclassPlan


def subclass_centroids(features: torch.Tensor, assign: torch.Tensor, num_subclasses: int) -> torch.Tensor:
    """Mean feature of every sub-class ``[S, D]`` (zeros for an empty one)."""
    f = features.detach().float().cpu()
    a = assign.detach().long().cpu()
    sums = torch.zeros(num_subclasses, f.shape[1]).index_add_(0, a, f)
    return sums / torch.bincount(a, minlength=num_subclasses).clamp_min(1)[:, None]


def nearest_members(
    features: torch.Tensor, assign: torch.Tensor, plan: SubclassPlan, per_subclass: int = 8
) -> dict[int, torch.Tensor]:
    """For every sub-class of a split class: the indices of its members nearest to its
    centroid (cosine similarity, most similar first), at most ``per_subclass`` of them."""
    f = torch.nn.functional.normalize(features.detach().float().cpu(), dim=1)
    a = assign.detach().long().cpu()
    cents = torch.nn.functional.normalize(subclass_centroids(f, a, plan.S), dim=1)
    out = {}
    for c in plan.split_classes:
        for j in plan.subclass_range(c):
            members = (a == j).nonzero().flatten()
            sim = f[members] @ cents[j]
            out[j] = members[torch.argsort(sim, descending=True)[:per_subclass]]
    return out


def _checked_inputs(images, features, labels, assign, plan: SubclassPlan):
    """``(uint8 images, assignments on the CPU)``; ValueError for shapes that disagree, samples
    assigned to another class's sub-class, or a plan that splits nothing."""
    images = torch.as_tensor(images)
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"draw_gallery: expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    n = images.shape[0]
    for name, t in (("features", features), ("labels", labels), ("assign", assign)):
        if t.shape[0] != n:
            raise ValueError(f"draw_gallery: {name} has {t.shape[0]} rows, images {n}")
    labels = labels.detach().long().cpu()
    assign = assign.detach().long().cpu()
    bad = plan.sub_to_parent[assign] != labels
    if bad.any():
        raise ValueError(f"draw_gallery: {int(bad.sum())} samples are assigned to a sub-class of another class")
    if not plan.split_classes:
        raise ValueError("draw_gallery: the plan splits no class; there is nothing to show")
    return images, assign


def _show_face(ax, img: torch.Tensor) -> None:
    """One uint8 image ``[C, H, W]`` in ``ax``, pixel for pixel (grey or RGB), no axes."""
    ax.axis("off")
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img[:3].permute(1, 2, 0).numpy(), interpolation="nearest")


def draw_gallery(
    images: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    assign: torch.Tensor,
    plan: SubclassPlan,
    class_names: Sequence[str],
    out_png: str | Path,
    per_subclass: int = 8,
    dpi: int = 100,
) -> Path:
    """Write a grid to ``out_png``: for each split class, one row per sub-class (labelled
    ``"happy #2 (n=1234)"``) with the ``per_subclass`` training faces nearest to its centroid.

    ``images`` uint8 ``[N, C, H, W]`` (C = 1 or 3), ``features`` ``[N, D]`` (L2-normalised),
    ``labels`` ``[N]`` classes, ``assign`` ``[N]`` global sub-class ids of ``plan``.
    Each face cell is ``H x W`` pixels at ``dpi`` (1 inch = ``dpi`` pixels); the label column
    is 3.5 cells wide (room for "surprise #3 (n=12345)"). Returns the path.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    images, assign = _checked_inputs(images, features, labels, assign, plan)
    picks = nearest_members(features, assign, plan, per_subclass)
    sizes = torch.bincount(assign, minlength=plan.S)
    rows = [j for c in plan.split_classes for j in plan.subclass_range(c)]
    h, w = images.shape[2], images.shape[3]
    label_cells = 3.5
    fig_w = (per_subclass + label_cells) * w / dpi
    fig_h = len(rows) * h / dpi
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    total_w = per_subclass + label_cells
    for r, j in enumerate(rows):
        c = int(plan.sub_to_parent[j])
        local = j - plan.subclass_range(c).start
        bottom = 1.0 - (r + 1) / len(rows)
        ax = fig.add_axes((0.0, bottom, label_cells / total_w, 1.0 / len(rows)))
        ax.axis("off")
        text = f"{class_names[c]} #{local} (n={int(sizes[j])})"
        ax.text(0.95, 0.5, text, ha="right", va="center", fontsize=max(5, min(10, h / 6)), transform=ax.transAxes)
        for i, idx in enumerate(picks[j].tolist()):
            ax = fig.add_axes(((label_cells + i) / total_w, bottom, 1.0 / total_w, 1.0 / len(rows)))
            _show_face(ax, images[idx])
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


__all__ = ["draw_gallery", "nearest_members", "subclass_centroids"]
