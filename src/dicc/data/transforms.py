"""Batch augmentation and normalisation with tensor ops (no per-image Python).

Images arrive as uint8 ``[B, C, H, W]``; augmentation draws its randomness from an explicit
``torch.Generator`` (on the CPU) so a seed reproduces a run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import TTA_MODES


def _per_channel(v, x: torch.Tensor):
    if isinstance(v, (list, tuple)):
        return torch.tensor([float(u) for u in v], device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    return float(v)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 -> float ``(x / 255 - mean) / std``; ``mean``/``std`` are numbers or one per channel."""
    return (x.float() / 255.0 - _per_channel(mean, x)) / _per_channel(std, x)


def resolve_normalization(mean, std, channels: int, default: dict) -> tuple:
    """``(mean, std)`` for data with ``channels`` channels: ``"auto"`` takes ``default`` (the
    model's, :func:`dicc.models.default_normalization`); per-channel values on grayscale data are
    averaged (the model replicates the channel); a list must have one value per channel."""
    out = []
    for key, v in (("mean", mean), ("std", std)):
        if v == "auto" or v is None:
            v = default[key]
        if isinstance(v, (list, tuple)):
            v = [float(u) for u in v]
            if channels == 1:
                v = sum(v) / len(v)
            elif len(v) != channels:
                raise ValueError(f"augment.{key}: {len(v)} values for {channels}-channel images")
        else:
            v = float(v)
        out.append(v)
    if any(s <= 0 for s in (out[1] if isinstance(out[1], list) else [out[1]])):
        raise ValueError(f"augment.std must be > 0, got {out[1]}")
    return tuple(out)


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of the original size from an edge-padded batch."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="replicate")
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B,1,H,1]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B,1,1,W]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast jitter on a float batch in [0, 1]."""
    b = x.shape[0]
    if brightness > 0:
        f = 1 + (torch.rand(b, generator=gen) * 2 - 1) * brightness
        x = x * f.to(x.device)[:, None, None, None]
    if contrast > 0:
        f = (1 + (torch.rand(b, generator=gen) * 2 - 1) * contrast).to(x.device)[:, None, None, None]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * f + mean
    return x.clamp(0, 1)


def random_erase(x: torch.Tensor, p: float, gen: torch.Generator, scale=(0.02, 0.2)) -> torch.Tensor:
    """Zero one random rectangle per selected sample (Zhong et al. 2020), vectorised."""
    if p <= 0:
        return x
    b, _, h, w = x.shape
    apply = torch.rand(b, generator=gen) < p
    area = torch.empty(b).uniform_(*scale, generator=gen) * h * w
    ratio = torch.exp(torch.empty(b).uniform_(-1.2, 1.2, generator=gen))
    eh = (area * ratio).sqrt().clamp(1, h).long()
    ew = (area / ratio).sqrt().clamp(1, w).long()
    y0 = (torch.rand(b, generator=gen) * (h - eh + 1)).long()
    x0 = (torch.rand(b, generator=gen) * (w - ew + 1)).long()
    yy = torch.arange(h)[None, :, None]
    xx = torch.arange(w)[None, None, :]
    mask = (
        (yy >= y0[:, None, None])
        & (yy < (y0 + eh)[:, None, None])
        & (xx >= x0[:, None, None])
        & (xx < (x0 + ew)[:, None, None])
        & apply[:, None, None]
    )
    return x.masked_fill(mask[:, None].to(x.device), 0.0)


def random_affine(x: torch.Tensor, degrees: float, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random rotation (uniform in +-``degrees``) and zoom (uniform in 1 +- ``scale``)
    about the image centre of a float batch, bilinear, edges replicated (one ``grid_sample``)."""
    if degrees <= 0 and scale <= 0:
        return x
    b = x.shape[0]
    ang = (torch.rand(b, generator=gen) * 2 - 1) * (degrees * torch.pi / 180.0)
    zoom = 1 + (torch.rand(b, generator=gen) * 2 - 1) * scale
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mix_batch(x: torch.Tensor, alpha: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al., ICLR 2018): ``lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha,
    alpha)`` drawn once for the batch; returns ``(mixed, perm, lam)``. The loss is then
    ``lam * loss(y) + (1 - lam) * loss(y[perm])``."""
    lam = _beta(alpha, gen)
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], perm, lam


def _beta(alpha: float, gen: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha), seeded from ``gen`` (so it is part of its state)."""
    import numpy as np

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def tta_views(x: torch.Tensor, mode: str, shift: int = 2) -> list[torch.Tensor]:
    """Test-time views of a batch (any dtype, ``[B, C, H, W]``): ``"none"`` the batch itself;
    ``"flip"`` it and its mirror image; ``"crops"`` ten views: the centre and the four corner
    shifts by ``shift`` pixels (edge-replicated, the shifts training's padded crops make), each
    also mirrored. The caller averages the class probabilities over the views."""
    if mode in (None, "none"):
        return [x]
    if mode == "flip":
        return [x, x.flip(-1)]
    if mode == "crops":
        h, w = x.shape[-2:]
        p = F.pad(x.float(), (shift,) * 4, mode="replicate").to(x.dtype) if shift > 0 else x
        views = []
        for dy, dx in ((shift, shift), (0, 0), (0, 2 * shift), (2 * shift, 0), (2 * shift, 2 * shift)):
            v = p[..., dy : dy + h, dx : dx + w]
            views += [v, v.flip(-1)]
        return views
    raise ValueError(f"unknown test-time augmentation {mode!r}; valid: {', '.join(TTA_MODES)}")


class BatchAugment:
    """Training-time augmentation of a uint8 batch, returning a normalised float batch."""

    def __init__(self, cfg, seed: int = 0, mean=None, std=None) -> None:
        self.cfg = cfg
        self.gen = torch.Generator().manual_seed(seed)
        # the resolved normalisation (cfg's may say "auto": the compact CNNs' 0.5 / 0.25 here)
        self.mean = mean if mean is not None else (0.5 if cfg.mean == "auto" else cfg.mean)
        self.std = std if std is not None else (0.25 if cfg.std == "auto" else cfg.std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = random_crop(x, cfg.crop_padding, self.gen)
        if cfg.flip:
            x = random_flip(x, self.gen)
        x = x.float() / 255.0
        x = random_affine(x, getattr(cfg, "rotate", 0.0), getattr(cfg, "scale", 0.0), self.gen)
        x = color_jitter(x, cfg.brightness, cfg.contrast, self.gen)
        x = random_erase(x, cfg.erase, self.gen)
        return (x - _per_channel(self.mean, x)) / _per_channel(self.std, x)

    def mix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """:func:`mix_batch` with ``cfg.mixup`` as alpha, from this augmenter's generator."""
        return mix_batch(x, float(self.cfg.mixup), self.gen)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
