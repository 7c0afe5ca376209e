"""Tiny dataset fixtures written with PIL into a test's tmp_path (shared by the data tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, pixels: np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB").save(path, **save)
    return path


def noise(rng: np.random.Generator, n: int, size: int = 48, rgb: bool = False) -> np.ndarray:
    shape = (n, size, size, 3) if rgb else (n, size, size)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def class_tree(
    root: Path, counts: dict[str, int], seed: int = 0, prefix: str = "img", ext: str = ".png", size: int = 48
) -> dict[str, list[Path]]:
    """root/<folder>/<prefix>_<i><ext> for each folder; returns the files per folder."""
    rng = np.random.default_rng(seed)
    out = {}
    for folder, n in counts.items():
        out[folder] = [
            write_image(root / folder / f"{prefix}_{i:03d}{ext}", px) for i, px in enumerate(noise(rng, n, size))
        ]
    return out


def fer2013_csv(path: Path, rows: list[tuple[int, np.ndarray, str]]) -> Path:
    """A FER2013 CSV (emotion,pixels,Usage)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for label, px, usage in rows:
            f.write(f"{label},{' '.join(map(str, px.reshape(-1).tolist()))},{usage}\n")
    return path
