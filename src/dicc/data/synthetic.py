"""The built-in default dataset: procedurally drawn cartoon faces with hidden sub-classes.

Nothing ships as files: :func:`make_synthetic` draws 48x48 grayscale faces with vectorised
torch operations (coordinate grids and soft masks, rendered in batches, no per-pixel or
per-image Python). Each of the seven expressions comes in several visually distinct *styles*
(``SYNTHETIC_STYLES``), e.g. happy = closed-mouth smile / open grin with teeth / laughing with
closed eyes / lopsided smirk. The style is returned as ``extras["style"]`` (int64, 0..k-1
within its class) and is exactly the kind of hidden intra-class structure DICC is meant to
discover: the majority classes have 3-4 styles, the minority classes 2.

What makes it non-trivial:

* expression *intensity* varies per face (``0.4 .. 1.15`` times the style's deviation from a
  neutral face), so weak expressions drift towards neutral;
* identity (face shape, eye spacing and size, mouth and brow placement, skin tone, hair),
  pose (rotation, shift, scale), background level and gradient, a lighting gradient across
  the image, occasional glasses and occluding blobs, and Gaussian pixel noise;
* deliberately confusable pairs: fear vs surprise (raised brows, wide eyes, open mouth),
  sad vs neutral ("downcast" sad vs "sleepy" neutral), angry vs disgust (lowered brows,
  narrowed eyes, an open mouth), weak expressions vs neutral.

Default split sizes (:func:`synthetic_counts`): ``train`` is long-tailed like FER data
(happy 1200, neutral 900, sad 600, fear 360, angry 280, surprise 200, disgust 40: 3,580
images, imbalance factor 30); ``val`` has 50 and ``test`` 100 images per class. Each
(split, seed) pair has its own random stream, so the same seed gives identical tensors and
different splits give different faces from the same distribution.
"""
from __future__ import annotations

import hashlib
import math
from typing import Mapping, Sequence

import torch

from .base import FERDataset
from .classes import EMOTIONS

__all__ = ["SYNTHETIC_STYLES", "SYNTHETIC_SPLITS", "synthetic_counts", "make_synthetic"]

# --------------------------------------------------------------------------------------------
# Expression parameters: the neutral face, per-face jitter, and the styles as overrides.
# Geometry is in face units: the face oval spans about x in [-0.62, 0.62], y in [-0.8, 0.8],
# y grows downwards; the image spans [-1, 1] before pose is applied.
# --------------------------------------------------------------------------------------------
_EXPR_NEUTRAL: dict[str, float] = {
    "eye_open": 0.55,      # eye height / eye half-width
    "eye_arc": 0.0,        # >0 bends the eye into an upward arc (laughing), <0 downwards
    "pupil_dx": 0.0,       # pupil offset, fraction of the eye half-width (sign randomised)
    "pupil_dy": 0.0,       # >0 looks down
    "brow_raise": 0.0,     # upward shift of the eyebrows
    "brow_tilt": 0.0,      # >0 inner ends down (angry), <0 inner ends up (sad, fear)
    "brow_arch": 0.015,    # middle of the brow higher than its ends
    "mouth_curve": 0.0,    # >0 corners up (smile), <0 corners down (frown)
    "mouth_open": 0.0,     # opening at the centre of the mouth
    "mouth_w": 0.21,       # mouth half-width
    "mouth_asym": 0.0,     # one corner raised (side randomised)
    "teeth": 0.0,          # visibility of a row of teeth inside an open mouth
    "nose_wrinkle": 0.0,   # horizontal wrinkles on the nose bridge (disgust)
    "furrow": 0.0,         # vertical frown lines between the brows (angry)
    "tears": 0.0,          # tear drops under the eyes (crying)
    "tongue": 0.0,         # tongue sticking out of the mouth (disgust)
    "glasses": 0.0,        # a pair of round glasses (not scaled by intensity)
}
_EXPR_JITTER: dict[str, float] = {
    "eye_open": 0.1, "eye_arc": 0.01, "pupil_dx": 0.15, "pupil_dy": 0.12, "brow_raise": 0.025,
    "brow_tilt": 0.1, "brow_arch": 0.01, "mouth_curve": 0.02, "mouth_open": 0.015,
    "mouth_w": 0.022, "mouth_asym": 0.01, "teeth": 0.0, "nose_wrinkle": 0.0, "furrow": 0.0,
    "tears": 0.0, "tongue": 0.0, "glasses": 0.0,
}
_NOT_SCALED = ("glasses",)     # binary accessories: present or not, whatever the intensity

# class -> [(style name, share of the class, overrides of the neutral face)]
_STYLE_SPECS: dict[str, list[tuple[str, float, dict[str, float]]]] = {
    "angry": [
        ("glare", 0.40, dict(brow_tilt=0.42, brow_raise=-0.045, eye_open=0.38, mouth_curve=-0.025,
                             mouth_w=0.17, furrow=1.0)),
        ("shout", 0.35, dict(brow_tilt=0.40, brow_raise=-0.035, eye_open=0.6, mouth_open=0.17,
                             mouth_w=0.23, mouth_curve=-0.045, furrow=0.6)),
        ("clenched_teeth", 0.25, dict(brow_tilt=0.36, brow_raise=-0.03, eye_open=0.45, mouth_open=0.08,
                                      teeth=1.0, mouth_w=0.26, mouth_curve=-0.015, furrow=0.8)),
    ],
    "disgust": [
        ("wrinkled_nose", 0.6, dict(brow_tilt=0.22, brow_raise=-0.05, eye_open=0.28, nose_wrinkle=1.0,
                                    mouth_curve=-0.06, mouth_w=0.19, mouth_open=0.03)),
        ("tongue_out", 0.4, dict(brow_tilt=0.16, brow_raise=-0.03, eye_open=0.32, mouth_open=0.07,
                                 tongue=1.0, nose_wrinkle=0.4, mouth_curve=-0.03, mouth_asym=0.03)),
    ],
    "fear": [
        ("scream", 0.6, dict(brow_raise=0.075, brow_tilt=-0.3, eye_open=1.0, mouth_open=0.13,
                             mouth_w=0.24, mouth_curve=-0.035)),
        ("grimace", 0.4, dict(brow_raise=0.07, brow_tilt=-0.34, eye_open=0.95, mouth_open=0.035,
                              mouth_w=0.27, mouth_curve=-0.045, teeth=0.7)),
    ],
    "happy": [
        ("closed_smile", 0.35, dict(mouth_curve=0.085, mouth_w=0.24, eye_open=0.48)),
        ("open_grin", 0.30, dict(mouth_curve=0.09, mouth_open=0.11, teeth=1.0, mouth_w=0.26,
                                 eye_open=0.45)),
        ("laughing", 0.20, dict(eye_open=0.1, eye_arc=0.055, mouth_open=0.17, mouth_curve=0.07,
                                mouth_w=0.25, brow_raise=0.02)),
        ("smirk", 0.15, dict(mouth_asym=0.085, mouth_curve=0.03, mouth_w=0.2, eye_open=0.45)),
    ],
    "sad": [
        ("frown", 0.45, dict(brow_tilt=-0.34, brow_raise=0.015, eye_open=0.45, mouth_curve=-0.075,
                             mouth_w=0.19)),
        ("crying", 0.30, dict(brow_tilt=-0.38, eye_open=0.12, eye_arc=-0.03, tears=1.0,
                              mouth_open=0.08, mouth_curve=-0.08, mouth_w=0.21)),
        ("downcast", 0.25, dict(brow_tilt=-0.16, eye_open=0.3, pupil_dy=0.6, mouth_curve=-0.03,
                                mouth_w=0.17)),
    ],
    "surprise": [
        ("open_o", 0.6, dict(brow_raise=0.1, brow_arch=0.045, eye_open=1.05, mouth_open=0.2,
                             mouth_w=0.11)),
        ("raised_brows", 0.4, dict(brow_raise=0.1, brow_arch=0.045, eye_open=1.0, mouth_open=0.045,
                                   mouth_w=0.14)),
    ],
    "neutral": [
        ("relaxed", 0.45, dict()),
        ("glasses", 0.30, dict(glasses=1.0)),
        ("sleepy", 0.25, dict(eye_open=0.26, mouth_curve=-0.012, brow_raise=-0.01)),
    ],
}
assert tuple(_STYLE_SPECS) == tuple(sorted(_STYLE_SPECS, key=EMOTIONS.index))

SYNTHETIC_STYLES: dict[str, list[str]] = {c: [s[0] for s in specs] for c, specs in _STYLE_SPECS.items()}
"""Style (hidden sub-class) names per class, in canonical class order; ``extras["style"]``
indexes into these lists."""

_DEFAULT_COUNTS: dict[str, dict[str, int]] = {
    "train": dict(angry=280, disgust=40, fear=360, happy=1200, sad=600, surprise=200, neutral=900),
    "val": {c: 50 for c in EMOTIONS},
    "test": {c: 100 for c in EMOTIONS},
}
SYNTHETIC_SPLITS: tuple[str, ...] = tuple(_DEFAULT_COUNTS)

_EXPR_NAMES = tuple(_EXPR_NEUTRAL)
_INTENSITY = (0.4, 1.15)
_CHUNK = 1024          # images rendered at once (bounds memory, not results)


def synthetic_counts(split: str = "train") -> list[int]:
    """Default number of images per class (canonical order) of a synthetic split."""
    if split not in _DEFAULT_COUNTS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {', '.join(SYNTHETIC_SPLITS)}")
    return [_DEFAULT_COUNTS[split][c] for c in EMOTIONS]


def _resolve_counts(split: str, counts) -> list[int]:
    if counts is None:
        return synthetic_counts(split)
    if isinstance(counts, Mapping):
        unknown = sorted(set(counts) - set(EMOTIONS))
        if unknown:
            raise ValueError(f"unknown class names in counts: {unknown}; expected {', '.join(EMOTIONS)}")
        out = [int(counts.get(c, 0)) for c in EMOTIONS]
    else:
        out = [int(n) for n in counts]
        if len(out) != len(EMOTIONS):
            raise ValueError(f"counts needs {len(EMOTIONS)} entries ({', '.join(EMOTIONS)}), got {len(out)}")
    if any(n < 0 for n in out):
        raise ValueError(f"counts must be non-negative, got {out}")
    return out


def _resolve_styles(styles_per_class) -> list[int]:
    """Number of styles used per class (the first k of each class's list)."""
    avail = [len(_STYLE_SPECS[c]) for c in EMOTIONS]
    if styles_per_class is None:
        return avail
    if isinstance(styles_per_class, Mapping):
        unknown = sorted(set(styles_per_class) - set(EMOTIONS))
        if unknown:
            raise ValueError(f"unknown class names in styles_per_class: {unknown}")
        want = [int(styles_per_class.get(c, a)) for c, a in zip(EMOTIONS, avail)]
    else:
        want = [int(styles_per_class)] * len(EMOTIONS)
    if any(k < 1 for k in want):
        raise ValueError(f"styles_per_class must be >= 1, got {want}")
    return [min(k, a) for k, a in zip(want, avail)]


def _split_seed(split: str, seed: int) -> int:
    digest = hashlib.sha256(f"dicc.synthetic/{split}/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _largest_remainder(n: int, weights: Sequence[float]) -> list[int]:
    total = sum(weights)
    raw = [n * w / total for w in weights]
    out = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in order[: n - sum(out)]:
        out[i] += 1
    return out


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
def _uniform(g, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _sample_params(labels: torch.Tensor, styles: torch.Tensor, g: torch.Generator) -> dict[str, torch.Tensor]:
    n = len(labels)
    # style table [total styles, P] and the row of each image
    rows, offsets = [], []
    for c in EMOTIONS:
        offsets.append(len(rows))
        for _, _, over in _STYLE_SPECS[c]:
            rows.append([over.get(k, _EXPR_NEUTRAL[k]) for k in _EXPR_NAMES])
    table = torch.tensor(rows, dtype=torch.float32)
    neutral = torch.tensor([_EXPR_NEUTRAL[k] for k in _EXPR_NAMES])
    jitter = torch.tensor([_EXPR_JITTER[k] for k in _EXPR_NAMES])
    scaled = torch.tensor([k not in _NOT_SCALED for k in _EXPR_NAMES])
    row = torch.tensor(offsets)[labels] + styles
    intensity = _uniform(g, n, *_INTENSITY)[:, None]
    target = table[row]
    expr = torch.where(scaled, neutral + intensity * (target - neutral), target)
    expr = expr + jitter * torch.randn(n, len(_EXPR_NAMES), generator=g)
    p = {k: expr[:, i] for i, k in enumerate(_EXPR_NAMES)}
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

    def normal(mean, std, lo, hi):
        return (mean + std * torch.randn(n, generator=g)).clamp(lo, hi)

    # identity
    p["face_w"] = normal(1.0, 0.05, 0.86, 1.14)
    p["face_h"] = normal(1.0, 0.04, 0.88, 1.12)
    p["eye_dx"] = normal(0.26, 0.015, 0.22, 0.30)
    p["eye_y"] = normal(-0.1, 0.025, -0.17, -0.03)
    p["eye_w"] = normal(0.125, 0.01, 0.1, 0.15)
    p["brow_gap"] = normal(0.17, 0.012, 0.14, 0.2)
    p["brow_len"] = normal(0.14, 0.012, 0.11, 0.17)
    p["brow_th"] = normal(0.036, 0.006, 0.024, 0.05)
    p["mouth_y"] = normal(0.42, 0.025, 0.35, 0.49)
    p["skin"] = normal(165.0, 30.0, 95.0, 230.0)
    p["feature_dark"] = normal(0.22, 0.06, 0.08, 0.4)  # feature grey level as a share of skin
    p["hair"] = (torch.rand(n, generator=g) < 0.75).float()
    p["hair_grey"] = _uniform(g, n, 15.0, 120.0)
    p["hairline"] = normal(-0.5, 0.07, -0.65, -0.35)
    # pose
    p["rot"] = normal(0.0, math.radians(7.0), -math.radians(16.0), math.radians(16.0))
    p["tx"] = _uniform(g, n, -0.08, 0.08)
    p["ty"] = _uniform(g, n, -0.07, 0.07)
    p["scale"] = _uniform(g, n, 0.9, 1.12)
    # scene
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
    return p


# --------------------------------------------------------------------------------------------
# Rendering. The face is painted in its own upright frame on a canvas a little finer than the
# image (each feature only inside a fixed window of the canvas, which keeps the work small),
# then one bilinear ``grid_sample`` applies each image's pose, and the background, an
# occluder, lighting and noise are added in image coordinates. Shapes are [B, H, W];
# per-image parameters broadcast as [B, 1, 1].
# --------------------------------------------------------------------------------------------
_EXTENT = 0.96      # the face canvas spans face coordinates [-_EXTENT, _EXTENT]^2


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
    alpha = face
    idx, h = _on(q, "hair")
    if idx is not None:  # hair behind the head and a fringe over the forehead
        back = _ellipse(u, v, 0.0, -0.1, 0.62 * h["face_w"] + 0.08, 0.78 * h["face_h"], ie)
        line = h["hairline"] + 0.12 * (u * (1.0 / (0.62 * h["face_w"]))).square_()
        f = face[idx]
        hair = torch.maximum(back * (1.0 - f), f * _soft(v - line, ie))
        sub = img[idx]
        _paint(sub, hair, h["hair_grey"])
        img[idx] = sub
        alpha = alpha.clone()
        alpha[idx] = torch.maximum(f, back)

    for sgn in (-1.0, 1.0):
        x0, x1 = (0.03, 0.5) if sgn > 0 else (-0.5, -0.03)
        ex, ey, ew = sgn * q["eye_dx"], q["eye_y"], q["eye_w"]
        # eye: outline, white, pupil; an arc bends it (laughing, crying)
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

    idx, h = _on(q, "glasses")
    if idx is not None:  # two rings and a bridge
        w = _Window(grid, -0.55, 0.55, -0.42, 0.2)
        u, v, view = w.u, w.v, w.view(img)
        sub, colour = view[idx], h["skin"] * h["feature_dark"] * 0.8
        for sgn in (-1.0, 1.0):
            r = ((u - sgn * h["eye_dx"]).square_() + ((v - h["eye_y"]) * (1 / 0.85)).square_()).sqrt_()
            _paint(sub, _band(r - 0.18, 0.02, ie), colour)
        bridge = _band(v - h["eye_y"] + 0.03, 0.018, ie).mul_(_soft(u.abs() - (h["eye_dx"] - 0.17), ie))
        _paint(sub, bridge, colour)
        view[idx] = sub
    idx, h = _on(q, "tears")
    if idx is not None:
        w = _Window(grid, -0.4, 0.4, -0.15, 0.2)
        u, v, view = w.u, w.v, w.view(img)
        sub = view[idx]
        for sgn in (-1.0, 1.0):
            tx, ty = sgn * (h["eye_dx"] + 0.04), h["eye_y"] + 0.16
            _paint(sub, _ellipse(u, v, tx, ty, 0.045, 0.09, ie).mul_(h["tears"]), h["skin"] * 0.6)
            drop = _ellipse(u, v, tx, ty, 0.025, 0.07, ie).mul_(h["tears"])
            _paint(sub, drop, torch.clamp(h["skin"] + 70.0, max=255.0))
        view[idx] = sub

    # nose, frown lines between the brows, wrinkles on the nose bridge
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

    # mouth: upper lip curve, an opening below it, teeth under the upper lip
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
    if idx is not None:  # a tongue hanging over the lower lip
        sub = view[idx]
        ty = h["mouth_y"] + 0.3 * h["mouth_curve"] + h["mouth_open"] + 0.02
        rim = _ellipse(u, v, 0.0, ty, 0.1, 0.11, ie).mul_(_soft(ty - 0.05 - v, ie))
        _paint(sub, rim.mul_(h["tongue"]), h["skin"] * h["feature_dark"])
        tongue = _ellipse(u, v, 0.0, ty, 0.075, 0.085, ie).mul_(_soft(ty - 0.03 - v, ie))
        _paint(sub, tongue.mul_(h["tongue"]), h["skin"] * 0.75)
        view[idx] = sub
    return img, alpha


def _render(p: dict[str, torch.Tensor], size: int, noise: torch.Tensor) -> torch.Tensor:
    q = {k: t[:, None, None] for k, t in p.items()}
    res = size + size // 6  # the canvas is a little finer than the image; pose resamples it
    face, alpha = _draw_face(q, res)

    # pose: image coordinates [-1, 1] -> canvas coordinates [-1, 1], then bilinear resampling
    lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    x, y = lin[None, None, :], lin[None, :, None]
    cos, sin, inv = torch.cos(q["rot"]), torch.sin(q["rot"]), 1.0 / (q["scale"] * _EXTENT)
    dx, dy = x - q["tx"], y - q["ty"]
    grid = torch.stack([(cos * dx + sin * dy) * inv, (cos * dy - sin * dx) * inv], -1)
    warped = torch.nn.functional.grid_sample(torch.stack([face.mul_(alpha), alpha], 1), grid,
                                             mode="bilinear", padding_mode="zeros", align_corners=False)
    img = q["bg"] + q["bg_gx"] * x + q["bg_gy"] * y
    img = img.mul_(1.0 - warped[:, 1]).add_(warped[:, 0])  # premultiplied "over"

    idx, h = _on(q, "occ")
    if idx is not None:  # a hand or an object, in image coordinates
        sub = img[idx]
        _paint(sub, _ellipse(x, y, h["occ_x"], h["occ_y"], h["occ_r"], h["occ_r"] * 1.3, size / 2.0),
               h["occ_grey"])
        img[idx] = sub

    # lighting across the image, sensor noise
    img.mul_(1.0 + q["light_x"] * x + q["light_y"] * y)
    img.add_(q["noise"] * noise)
    return img.round_().clamp_(0.0, 255.0).to(torch.uint8)


def make_synthetic(
    split: str = "train",
    seed: int = 0,
    counts: Sequence[int] | Mapping[str, int] | None = None,
    image_size: int = 48,
    styles_per_class: int | Mapping[str, int] | None = None,
) -> FERDataset:
    """Draw the synthetic FER dataset's ``split`` (``train``, ``val`` or ``test``).

    Args:
        split: which split; selects the default counts and, with ``seed``, the random stream.
        seed: same (split, seed) gives identical tensors.
        counts: images per class, a list in canonical order or a ``{class: n}`` dict
            (missing classes get 0); default :func:`synthetic_counts` of ``split``.
        image_size: side of the square images (the faces scale with it).
        styles_per_class: use only the first k styles of each class (an int, or a dict by
            class name); ``1`` removes the hidden sub-classes. Default: all styles.

    Returns a :class:`FERDataset` with uint8 images ``[N, 1, S, S]`` in random order and
    ``extras["style"]`` (int64, the style index within the class, see ``SYNTHETIC_STYLES``).
    """
    if split not in _DEFAULT_COUNTS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {', '.join(SYNTHETIC_SPLITS)}")
    if int(image_size) < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    n_per_class = _resolve_counts(split, counts)
    n_styles = _resolve_styles(styles_per_class)

    labels, styles = [], []
    for c, (name, n) in enumerate(zip(EMOTIONS, n_per_class)):
        weights = [spec[1] for spec in _STYLE_SPECS[name][: n_styles[c]]]
        for s, k in enumerate(_largest_remainder(n, weights)):
            labels += [c] * k
            styles += [s] * k
    g = torch.Generator(device="cpu").manual_seed(_split_seed(split, seed))
    perm = torch.randperm(len(labels), generator=g)
    labels_t = torch.tensor(labels, dtype=torch.long)[perm] if labels else torch.zeros(0, dtype=torch.long)
    styles_t = torch.tensor(styles, dtype=torch.long)[perm] if styles else torch.zeros(0, dtype=torch.long)

    params = _sample_params(labels_t, styles_t, g)
    noise = torch.randn(len(labels_t), image_size, image_size, generator=g)
    chunks = [
        _render({k: v[i:i + _CHUNK] for k, v in params.items()}, image_size, noise[i:i + _CHUNK])
        for i in range(0, len(labels_t), _CHUNK)
    ]
    images = torch.cat(chunks) if chunks else torch.zeros(0, image_size, image_size, dtype=torch.uint8)
    return FERDataset(
        labels=labels_t,
        images=images[:, None].contiguous(),
        source=f"synthetic:{split}(seed={seed})",
        extras={"style": styles_t},
    )
