"""Draws each synthetic face's parameters from one random stream: its expression (style,
intensity, jitter), identity, pose and scene."""

from __future__ import annotations

import math

import torch

from ..classes import EMOTIONS
from .styles import EXPR_JITTER, EXPR_NAMES, EXPR_NEUTRAL, INTENSITY, NOT_SCALED, STYLE_SPECS


def _uniform(g, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=g)


def sample_params(labels: torch.Tensor, styles: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-image parameters ``{name: [N] float tensor}`` of faces of class ``labels`` in style
    ``styles`` (index within the class), drawn from ``g`` in a fixed order: the expression, the
    identity, then the pose and the scene."""
    p = _expression(labels, styles, g)
    _identity(p, len(labels), g)
    _pose_and_scene(p, len(labels), g)
    return p


def _expression(labels: torch.Tensor, styles: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The expression parameters: each style's values scaled by a drawn intensity, jittered, a
    side drawn for the asymmetric ones; accessories also seen outside their style."""
    n = len(labels)
    # style table [total styles, P] and the row of each image
    rows, offsets = [], []
    for c in EMOTIONS:
        offsets.append(len(rows))
        for _, _, over in STYLE_SPECS[c]:
            rows.append([over.get(k, EXPR_NEUTRAL[k]) for k in EXPR_NAMES])
    table = torch.tensor(rows, dtype=torch.float32)
    neutral = torch.tensor([EXPR_NEUTRAL[k] for k in EXPR_NAMES])
    jitter = torch.tensor([EXPR_JITTER[k] for k in EXPR_NAMES])
    scaled = torch.tensor([k not in NOT_SCALED for k in EXPR_NAMES])
    row = torch.tensor(offsets)[labels] + styles
    intensity = _uniform(g, n, *INTENSITY)[:, None]
    target = table[row]
    expr = torch.where(scaled, neutral + intensity * (target - neutral), target)
    expr = expr + jitter * torch.randn(n, len(EXPR_NAMES), generator=g)
    p = {k: expr[:, i] for i, k in enumerate(EXPR_NAMES)}
    side = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    p["mouth_asym"] = p["mouth_asym"] * side
    p["pupil_dx"] = p["pupil_dx"] * side
    for k in ("mouth_open", "teeth", "nose_wrinkle", "furrow", "tears", "tongue", "glasses"):
        p[k] = p[k].clamp(0.0, 1.0 if k != "mouth_open" else 0.28)
    p["eye_open"] = p["eye_open"].clamp(0.06, 1.3)
    p["mouth_w"] = p["mouth_w"].clamp(0.08, 0.32)
    p["pupil_dx"] = p["pupil_dx"].clamp(-0.7, 0.7)
    p["pupil_dy"] = p["pupil_dy"].clamp(-0.7, 0.7)
    # accessories also seen outside their style (so that glasses alone do not mean neutral)
    p["glasses"] = torch.maximum(p["glasses"], (torch.rand(n, generator=g) < 0.07).float())
    return p


def _normal(g: torch.Generator, n: int, mean, std, lo, hi) -> torch.Tensor:
    return (mean + std * torch.randn(n, generator=g)).clamp(lo, hi)


def _identity(p: dict[str, torch.Tensor], n: int, g: torch.Generator) -> None:
    """Face shape, feature positions and sizes, skin and hair (added to ``p``)."""
    p["face_w"] = _normal(g, n, 1.0, 0.05, 0.86, 1.14)
    p["face_h"] = _normal(g, n, 1.0, 0.04, 0.88, 1.12)
    p["eye_dx"] = _normal(g, n, 0.26, 0.015, 0.22, 0.30)
    p["eye_y"] = _normal(g, n, -0.1, 0.025, -0.17, -0.03)
    p["eye_w"] = _normal(g, n, 0.125, 0.01, 0.1, 0.15)
    p["brow_gap"] = _normal(g, n, 0.17, 0.012, 0.14, 0.2)
    p["brow_len"] = _normal(g, n, 0.14, 0.012, 0.11, 0.17)
    p["brow_th"] = _normal(g, n, 0.036, 0.006, 0.024, 0.05)
    p["mouth_y"] = _normal(g, n, 0.42, 0.025, 0.35, 0.49)
    p["skin"] = _normal(g, n, 165.0, 30.0, 95.0, 230.0)
    p["feature_dark"] = _normal(g, n, 0.22, 0.06, 0.08, 0.4)  # feature grey level as a share of skin
    p["hair"] = (torch.rand(n, generator=g) < 0.75).float()
    p["hair_grey"] = _uniform(g, n, 15.0, 120.0)
    p["hairline"] = _normal(g, n, -0.5, 0.07, -0.65, -0.35)


def _pose_and_scene(p: dict[str, torch.Tensor], n: int, g: torch.Generator) -> None:
    """Rotation, shift and scale; background, its gradient, lighting, noise and an occluder."""
    p["rot"] = _normal(g, n, 0.0, math.radians(7.0), -math.radians(16.0), math.radians(16.0))
    p["tx"] = _uniform(g, n, -0.08, 0.08)
    p["ty"] = _uniform(g, n, -0.07, 0.07)
    p["scale"] = _uniform(g, n, 0.9, 1.12)
    p["bg"] = _uniform(g, n, 10.0, 245.0)
    ang = _uniform(g, n, 0.0, 2 * math.pi)
    amp = _uniform(g, n, 0.0, 45.0)
    p["bg_gx"], p["bg_gy"] = amp * torch.cos(ang), amp * torch.sin(ang)
    ang = _uniform(g, n, 0.0, 2 * math.pi)
    amp = _uniform(g, n, 0.0, 0.35)
    p["light_x"], p["light_y"] = amp * torch.cos(ang), amp * torch.sin(ang)
    p["noise"] = _uniform(g, n, 3.0, 18.0)
    p["occ"] = (torch.rand(n, generator=g) < 0.08).float()
    p["occ_x"] = _uniform(g, n, -0.7, 0.7)
    p["occ_y"] = _uniform(g, n, -0.7, 0.7)
    p["occ_r"] = _uniform(g, n, 0.15, 0.3)
    p["occ_grey"] = _uniform(g, n, 0.0, 255.0)
