"""Renders synthetic faces from their parameters, in batches: soft-mask primitives, the face in
its upright canvas, then pose, background, occluder, lighting and noise.

The face is painted in its own upright frame on a canvas a little finer than the
image (each feature only inside a fixed window of the canvas, which keeps the work small),
then one bilinear ``grid_sample`` applies each image's pose, and the background, an
occluder, lighting and noise are added in image coordinates. Shapes are [B, H, W];
per-image parameters broadcast as [B, 1, 1].
"""

from __future__ import annotations

import torch

_EXTENT = 0.96  # the face canvas spans face coordinates [-_EXTENT, _EXTENT]^2


def _soft(d: torch.Tensor, inv_edge: float) -> torch.Tensor:
    """1 inside (d < 0), 0 outside, with a linear edge ``1 / inv_edge`` wide (about a pixel)."""
    return d.mul(-inv_edge).add_(0.5).clamp_(0.0, 1.0)


def _ellipse(u, v, cx, cy, a, b, inv_edge):
    """Soft ellipse mask; the signed distance is approximated by ``f / |grad f|``."""
    ia, ib = 1.0 / a, 1.0 / b
    du, dv = (u - cx) * ia, (v - cy) * ib
    f = du * du + dv * dv - 1.0
    grad2 = du.mul_(ia).square_() + dv.mul_(ib).square_()
    return _soft(f.mul_(grad2.add_(1e-6).rsqrt_()), 0.5 * inv_edge)


def _band(d, half_width, inv_edge):
    """1 where ``|d| < half_width`` (soft edges)."""
    return _soft(d.abs() - half_width, inv_edge)


def _paint(img, mask, value):
    img.add_((value - img).mul_(mask))


class _Window:
    """A fixed rectangle of the face canvas (face coordinates ``x0..x1``, ``y0..y1``) with
    its coordinate grids ``u``, ``v`` (shape ``[1, h, w]``) and the matching canvas slices."""

    def __init__(self, grid: torch.Tensor, x0: float, x1: float, y0: float, y1: float):
        n = len(grid)
        lo = lambda z: max(0, int((z + _EXTENT) / (2 * _EXTENT) * n))  # noqa: E731
        hi = lambda z: min(n, int((z + _EXTENT) / (2 * _EXTENT) * n) + 2)  # noqa: E731
        self.rows, self.cols = slice(lo(y0), hi(y1)), slice(lo(x0), hi(x1))
        self.u = grid[None, None, self.cols].expand(1, self.rows.stop - self.rows.start, -1).contiguous()
        self.v = grid[None, self.rows, None].expand(1, -1, self.cols.stop - self.cols.start).contiguous()

    def view(self, canvas: torch.Tensor) -> torch.Tensor:
        return canvas[:, self.rows, self.cols]


class _Rows(dict):
    """The parameters of a subset of the images, indexed lazily."""

    def __init__(self, q: dict[str, torch.Tensor], idx: torch.Tensor):
        super().__init__()
        self.q, self.idx = q, idx

    def __missing__(self, key):
        self[key] = value = self.q[key][self.idx]
        return value


def _on(q: dict[str, torch.Tensor], key: str):
    """Indices of the images whose parameter ``key`` is positive and their parameters."""
    idx = (q[key].flatten() > 0).nonzero().flatten()
    return (idx, _Rows(q, idx)) if len(idx) else (None, None)


def _draw_face(q: dict[str, torch.Tensor], res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey level and opacity ``[B, res, res]`` of the faces in the canonical face frame."""
    grid = (torch.arange(res, dtype=torch.float32) + 0.5) / res * (2 * _EXTENT) - _EXTENT
    ie = res / (2 * _EXTENT)  # 1 / edge width: one canvas pixel
    full = _Window(grid, -_EXTENT, _EXTENT, -_EXTENT, _EXTENT)
    u, v = full.u, full.v
    skin = q["skin"]
    dark = skin * q["feature_dark"]
    light = torch.clamp(skin + 60.0, max=245.0)
    fw, fh = 0.62 * q["face_w"], 0.80 * q["face_h"]

    face = _ellipse(u, v, 0.0, 0.0, fw, fh, ie)
    r2 = (u * (1.0 / fw)).square_().add_((v * (1.0 / fh)).square_()).clamp_(max=1.0)
    img = r2.mul_(-0.18 * skin).add_(skin)  # skin, a little darker towards the edge
    alpha = _draw_hair(q, img, face, u, v, ie)
    for sgn in (-1.0, 1.0):
        _draw_eye(q, img, grid, ie, sgn, dark, light)
    _draw_glasses(q, img, grid, ie)
    _draw_tears(q, img, grid, ie)
    _draw_nose(q, img, grid, ie, skin)
    _draw_mouth(q, img, grid, ie, skin, dark)
    return img, alpha


def _draw_hair(q, img: torch.Tensor, face: torch.Tensor, u, v, ie: float) -> torch.Tensor:
    """Hair behind the head and a fringe over the forehead (painted into ``img``); the opacity."""
    alpha = face
    idx, h = _on(q, "hair")
    if idx is not None:
        back = _ellipse(u, v, 0.0, -0.1, 0.62 * h["face_w"] + 0.08, 0.78 * h["face_h"], ie)
        line = h["hairline"] + 0.12 * (u * (1.0 / (0.62 * h["face_w"]))).square_()
        f = face[idx]
        hair = torch.maximum(back * (1.0 - f), f * _soft(v - line, ie))
        sub = img[idx]
        _paint(sub, hair, h["hair_grey"])
        img[idx] = sub
        alpha = alpha.clone()
        alpha[idx] = torch.maximum(f, back)
    return alpha


def _draw_eye(q, img: torch.Tensor, grid, ie: float, sgn: float, dark, light) -> None:
    """The eye (outline, white, pupil; an arc bends it: laughing, crying) and the eyebrow on the
    side ``sgn`` (-1 left, 1 right)."""
    x0, x1 = (0.03, 0.5) if sgn > 0 else (-0.5, -0.03)
    ex, ey, ew = sgn * q["eye_dx"], q["eye_y"], q["eye_w"]
    w = _Window(grid, x0, x1, -0.48, 0.24)
    u, v, view = w.u, w.v, w.view(img)
    t = ((u - ex) * (1.0 / ew)).clamp_(-1.0, 1.0)
    ve = v + q["eye_arc"] * (1.0 - t.square_())
    eh = ew * q["eye_open"]
    _paint(view, _ellipse(u, ve, ex, ey, ew + 0.03, eh + 0.03, ie), dark)
    eye = _ellipse(u, ve, ex, ey, ew, eh, ie)
    pr = torch.clamp(0.85 * eh, max=0.055)
    px = ex + q["pupil_dx"] * (ew - pr)
    py = ey + q["pupil_dy"] * (eh - pr).clamp(min=0.0)
    pupil = _ellipse(u, ve, px, py, pr, pr, ie).mul_(eye)
    _paint(view, eye, light)
    _paint(view, pupil, dark * 0.5)
    # eyebrow: a thick curved segment; t > 0 towards the outer end
    w = _Window(grid, x0, x1, -0.74, 0.02)
    u, v, view = w.u, w.v, w.view(img)
    by = q["eye_y"] - q["brow_gap"] - q["brow_raise"]
    t = sgn * (u - ex)
    line = by - q["brow_tilt"] * t - q["brow_arch"] * (1.0 - (t * (1.0 / q["brow_len"])).square_())
    brow = _band(v - line, q["brow_th"], ie).mul_(_band(t, q["brow_len"], ie))
    _paint(view, brow, dark)


def _draw_glasses(q, img: torch.Tensor, grid, ie: float) -> None:
    """Two rings and a bridge, on the faces that wear glasses."""
    idx, h = _on(q, "glasses")
    if idx is None:
        return
    w = _Window(grid, -0.55, 0.55, -0.42, 0.2)
    u, v, view = w.u, w.v, w.view(img)
    sub, colour = view[idx], h["skin"] * h["feature_dark"] * 0.8
    for sgn in (-1.0, 1.0):
        r = ((u - sgn * h["eye_dx"]).square_() + ((v - h["eye_y"]) * (1 / 0.85)).square_()).sqrt_()
        _paint(sub, _band(r - 0.18, 0.02, ie), colour)
    bridge = _band(v - h["eye_y"] + 0.03, 0.018, ie).mul_(_soft(u.abs() - (h["eye_dx"] - 0.17), ie))
    _paint(sub, bridge, colour)
    view[idx] = sub


def _draw_tears(q, img: torch.Tensor, grid, ie: float) -> None:
    """A tear under each eye, on the faces that cry."""
    idx, h = _on(q, "tears")
    if idx is None:
        return
    w = _Window(grid, -0.4, 0.4, -0.15, 0.2)
    u, v, view = w.u, w.v, w.view(img)
    sub = view[idx]
    for sgn in (-1.0, 1.0):
        tx, ty = sgn * (h["eye_dx"] + 0.04), h["eye_y"] + 0.16
        _paint(sub, _ellipse(u, v, tx, ty, 0.045, 0.09, ie).mul_(h["tears"]), h["skin"] * 0.6)
        drop = _ellipse(u, v, tx, ty, 0.025, 0.07, ie).mul_(h["tears"])
        _paint(sub, drop, torch.clamp(h["skin"] + 70.0, max=255.0))
    view[idx] = sub


def _draw_nose(q, img: torch.Tensor, grid, ie: float, skin) -> None:
    """The nose, frown lines between the brows, wrinkles on the nose bridge."""
    w = _Window(grid, -0.16, 0.16, -0.5, 0.3)
    u, v, view = w.u, w.v, w.view(img)
    for sgn in (-1.0, 1.0):
        _paint(view, _ellipse(u, v, sgn * 0.055, 0.22, 0.035, 0.022, ie), skin * 0.5)
    _paint(view, _band(u + 0.02, 0.012, ie).mul_(_band(v - 0.1, 0.1, ie)), skin * 0.8)
    idx, h = _on(q, "furrow")
    if idx is not None:
        sub, by = view[idx], h["eye_y"] - h["brow_gap"] * 0.6
        for sgn in (-1.0, 1.0):
            m = _band(v - by, 0.07, ie).mul_(_band(u - sgn * 0.045, 0.012, ie))
            _paint(sub, m.mul_(h["furrow"]), h["skin"] * 0.55)
        view[idx] = sub
    idx, h = _on(q, "nose_wrinkle")
    if idx is not None:
        sub = view[idx]
        for k in range(3):
            m = _band(v - (h["eye_y"] + 0.08 + 0.06 * k), 0.012, ie).mul_(_band(u, 0.085, ie))
            _paint(sub, m.mul_(h["nose_wrinkle"]), h["skin"] * 0.5)
        view[idx] = sub


def _draw_mouth(q, img: torch.Tensor, grid, ie: float, skin, dark) -> None:
    """The mouth: upper lip curve, an opening below it, teeth under the upper lip; a tongue
    hanging over the lower lip on the faces that show one."""
    w = _Window(grid, -0.38, 0.38, 0.12, 0.92)
    u, v, view = w.u, w.v, w.view(img)
    t = (u * (1.0 / q["mouth_w"])).clamp_(-1.5, 1.5)
    corner = t * t
    upper = q["mouth_y"] - q["mouth_curve"] * (corner - 0.3) - q["mouth_asym"] * torch.relu(t).square_()
    opening = q["mouth_open"] * (1.0 - corner).clamp_(min=0.0).sqrt_()
    lower = upper + opening
    inside_x = _soft(t.abs_() - 1.0, ie * q["mouth_w"])
    below_upper, above_lower = _soft(upper - v, ie), _soft(v - lower, ie)
    lips = _soft(v - lower - 0.03, ie).mul_(_soft(upper - 0.03 - v, ie)).mul_(inside_x)
    _paint(view, lips, dark * 1.6)
    hole = below_upper.mul_(above_lower).mul_(inside_x)
    teeth = _soft(v - upper - torch.clamp(opening * 0.6, max=0.07), ie).mul_(hole).mul_(q["teeth"])
    _paint(view, hole, dark * 0.4)
    _paint(view, teeth, torch.clamp(skin + 55.0, max=240.0))
    idx, h = _on(q, "tongue")
    if idx is not None:
        sub = view[idx]
        ty = h["mouth_y"] + 0.3 * h["mouth_curve"] + h["mouth_open"] + 0.02
        rim = _ellipse(u, v, 0.0, ty, 0.1, 0.11, ie).mul_(_soft(ty - 0.05 - v, ie))
        _paint(sub, rim.mul_(h["tongue"]), h["skin"] * h["feature_dark"])
        tongue = _ellipse(u, v, 0.0, ty, 0.075, 0.085, ie).mul_(_soft(ty - 0.03 - v, ie))
        _paint(sub, tongue.mul_(h["tongue"]), h["skin"] * 0.75)
        view[idx] = sub


def render(p: dict[str, torch.Tensor], size: int, noise: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[B, size, size]`` of the faces with parameters ``p`` (``[B]`` tensors) and
    unit Gaussian pixel noise ``noise`` (``[B, size, size]``)."""
    q = {k: t[:, None, None] for k, t in p.items()}
    res = size + size // 6  # the canvas is a little finer than the image; pose resamples it
    face, alpha = _draw_face(q, res)

    # pose: image coordinates [-1, 1] -> canvas coordinates [-1, 1], then bilinear resampling
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    x, y = lin[None, None, :], lin[None, :, None]
    cos, sin, inv = torch.cos(q["rot"]), torch.sin(q["rot"]), 1.0 / (q["scale"] * _EXTENT)
    dx, dy = x - q["tx"], y - q["ty"]
    grid = torch.stack([(cos * dx + sin * dy) * inv, (cos * dy - sin * dx) * inv], -1)
    warped = torch.nn.functional.grid_sample(
        torch.stack([face.mul_(alpha), alpha], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    img = q["bg"] + q["bg_gx"] * x + q["bg_gy"] * y
    img = img.mul_(1.0 - warped[:, 1]).add_(warped[:, 0])  # premultiplied "over"

    idx, h = _on(q, "occ")
    if idx is not None:  # a hand or an object, in image coordinates
        sub = img[idx]
        _paint(sub, _ellipse(x, y, h["occ_x"], h["occ_y"], h["occ_r"], h["occ_r"] * 1.3, size / 2.0), h["occ_grey"])
        img[idx] = sub

    # lighting across the image, sensor noise
    img.mul_(1.0 + q["light_x"] * x + q["light_y"] * y)
    img.add_(q["noise"] * noise)
    return img.round_().clamp_(0.0, 255.0).to(torch.uint8)
