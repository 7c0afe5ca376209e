"""``fer2013_csv``: the Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``) or its
``icml_face_data.csv`` variant (``emotion, Usage, pixels``, headers with leading spaces).

``path`` is the file, or a folder holding one of those names. Splits are the ``Usage`` values
``Training``, ``PublicTest``, ``PrivateTest``; aliases ``train``/``training`` -> Training,
``test``/``public`` -> PublicTest, ``private`` -> PrivateTest. No alias is a validation
split: FER2013 has none besides its two test sets (a run's validation set is a hold-out of the
training split, or an explicitly named split). A CSV without a ``Usage`` column has the single
split ``all``. Labels 0-6 are FER2013's, the canonical order; rows of a class outside the
label space are dropped and counted. Sample identities are ``<absolute csv path>:<line>``.
The images are held in memory.

:func:`read_rows` and :func:`parse_pixels` are shared with the FERPlus reader.
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..base import FERDataset
from ..classes import EMOTIONS
from .common import labels_tensor, map_labels
from .registry import Format, SplitLabels, register

CSV_NAMES = ("fer2013.csv", "icml_face_data.csv", "fer2013/fer2013.csv")
CSV_SPLITS = ("Training", "PublicTest", "PrivateTest")
CSV_ALIASES = {
    "train": "Training",
    "training": "Training",
    "public": "PublicTest",
    "publictest": "PublicTest",
    "test": "PublicTest",
    "private": "PrivateTest",
    "privatetest": "PrivateTest",
}
_ROWS_PER_CHUNK = 1024


def csv_file(path: Path, names=CSV_NAMES) -> Path | None:
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    return None


def header_columns(file: Path) -> list[str]:
    with open(file, "rb") as f:
        head = f.readline(65536).decode("utf-8-sig", "replace")
    return [c.strip().strip('"').strip() for c in head.strip().split(",")]


def _detect(path: Path) -> bool:
    file = csv_file(path)
    if file is None:
        return False
    cols = [c.lower() for c in header_columns(file)]
    return "emotion" in cols and "pixels" in cols


def _field_bounds(line: bytes, n: int) -> list[int] | None:
    """Comma positions framing ``n`` fields (``[-1, c1, ..., len]``), or None if not ``n``.

    Searching commas instead of ``split`` avoids copying the long pixel field of rows that
    are not needed.
    """
    bounds = [-1]
    for _ in range(n - 1):
        pos = line.find(b",", bounds[-1] + 1)
        if pos < 0:
            return None
        bounds.append(pos)
    if line.find(b",", bounds[-1] + 1) >= 0:
        return None
    bounds.append(len(line))
    return bounds


def _no_csv(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{path}: no FER2013 CSV file (looked for {', '.join(CSV_NAMES)})")


def _header(file: Path, line: bytes):
    """``(column names, index of emotion, of pixels, of Usage or None)`` of the header line."""
    header = line.decode("utf-8-sig", "replace")
    cols = [c.strip().strip('"').strip() for c in header.strip().split(",")]
    lower = [c.lower() for c in cols]
    missing = [c for c in ("emotion", "pixels") if c not in lower]
    if missing:
        raise ValueError(
            f"{file}: missing column(s) {', '.join(missing)}; found columns {cols}, expected emotion, pixels and Usage"
        )
    i_use = lower.index("usage") if "usage" in lower else None
    return cols, lower.index("emotion"), lower.index("pixels"), i_use


def read_rows(path: Path, split: str | None, want_pixels: bool):
    """Read the CSV: ``(file, labels, line numbers, row indices, pixel fields)`` of the rows
    in ``split`` (labels are FER2013's 0-6, row indices count the data rows from 0).

    ``split=None`` returns the set of Usage values in place of the pixel fields (for listing
    splits). Each line is split on commas (FER2013 fields never contain any); a CSV without a
    Usage column has the single split ``all``.
    """
    file = csv_file(path)
    if file is None:
        raise _no_csv(path)
    with open(file, "rb") as f:
        cols, i_emo, i_pix, i_use = _header(file, f.readline())
        target = split.encode() if split is not None else None
        labels, lines, rows, pixels, usages = [], [], [], [], set()
        row = -1
        for lineno, line in enumerate(f, start=2):
            if line.isspace():
                continue
            row += 1
            b = _field_bounds(line, len(cols))
            if b is None:
                raise ValueError(
                    f"{file}: line {lineno}: expected {len(cols)} comma-separated "
                    f"fields ({', '.join(cols)}), found {line.count(b',') + 1}"
                )
            usage = line[b[i_use] + 1 : b[i_use + 1]].strip().strip(b'"') if i_use is not None else b"all"
            if target is None:
                usages.add(usage.decode())
                continue
            if usage != target:
                continue
            emo = line[b[i_emo] + 1 : b[i_emo + 1]].strip().strip(b'"')
            if not emo.isdigit() or int(emo) >= len(EMOTIONS):
                raise ValueError(
                    f"{file}: line {lineno}: emotion label {emo.decode()!r} out of "
                    f"range (expected an integer 0..{len(EMOTIONS) - 1})"
                )
            labels.append(int(emo))
            lines.append(lineno)
            rows.append(row)
            if want_pixels:
                pixels.append(line[b[i_pix] + 1 : b[i_pix + 1]].strip().strip(b'"').strip())
    if split is not None and not labels:
        valid = csv_splits(file)
        raise ValueError(
            f"{file}: unknown split {split!r} (no row has this Usage); valid splits are {', '.join(valid) or '(none)'}"
        )
    return file, labels, lines, rows, (usages if split is None else pixels)


@functools.lru_cache(maxsize=8)
def _splits_cached(file: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    usages = read_rows(Path(file), None, False)[4]
    return tuple([s for s in CSV_SPLITS if s in usages] + sorted(usages - set(CSV_SPLITS)))


def csv_splits(path: Path) -> list[str]:
    file = csv_file(path)
    if file is None:
        raise _no_csv(path)
    st = file.stat()
    return list(_splits_cached(str(file.resolve()), st.st_mtime_ns, st.st_size))


def _row_error(file: Path, line: int, text: bytes, n_pix: int) -> ValueError:
    """The ValueError describing what is wrong with one row's pixel field."""
    tokens = text.split()
    if len(tokens) != n_pix:
        side = math.isqrt(n_pix)
        return ValueError(f"{file}: line {line}: expected {n_pix} pixel values ({side}x{side}), found {len(tokens)}")
    return ValueError(f"{file}: line {line}: pixel values must be integers 0..255")


def parse_pixels(file: Path, pixels: list[bytes], lines: list[int]) -> np.ndarray:
    """Space-separated pixel strings -> uint8 array ``[N, side, side]``, every row checked.

    Rows are parsed a chunk at a time by numpy's C parser. Each row must hold exactly
    ``side * side`` values (taken from the first row) separated by single spaces (other
    separators are normalised first); a bad row is reported with its line number.
    """
    if not pixels:
        return np.zeros((0, 48, 48), dtype=np.uint8)
    n_pix = len(pixels[0].split())
    side = math.isqrt(n_pix)
    if n_pix == 0 or side * side != n_pix:
        raise ValueError(f"{file}: line {lines[0]}: {n_pix} pixel values is not a square image")
    out = np.empty((len(pixels), n_pix), dtype=np.uint8)
    for start in range(0, len(pixels), _ROWS_PER_CHUNK):
        chunk = pixels[start : start + _ROWS_PER_CHUNK]
        joined = b" ".join(chunk)
        raw = np.frombuffer(joined, dtype=np.uint8)
        space = raw == 32
        if (raw < 32).any() or (space[1:] & space[:-1]).any():  # tabs, double spaces, ...
            chunk = [b" ".join(t.split()) for t in chunk]
            joined = b" ".join(chunk)
        wrong = [i for i, t in enumerate(chunk) if not t or t.count(b" ") != n_pix - 1]
        if wrong:
            raise _row_error(file, lines[start + wrong[0]], chunk[wrong[0]], n_pix)
        try:
            values = np.fromstring(joined, dtype=np.int32, sep=" ").reshape(len(chunk), n_pix)
            bad = np.flatnonzero(((values < 0) | (values > 255)).any(axis=1))
        except ValueError:  # a token that is not a number
            bad = [i for i, t in enumerate(chunk) if not all(v.isdigit() for v in t.split())]
        if len(bad):
            i = int(bad[0])
            raise _row_error(file, lines[start + i], chunk[i], n_pix)
        out[start : start + len(chunk)] = values
    return out.reshape(len(pixels), side, side)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a uint8 batch ``[N, C, H, W]`` in chunks."""
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(images), 4096):
        x = images[i : i + 4096].float()
        y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + 4096] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def pixels_to_images(file: Path, pixels: list[bytes], lines: list[int], image_size: int, channels: int) -> torch.Tensor:
    """uint8 ``[N, channels, image_size, image_size]`` from the rows' pixel fields."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    images = torch.from_numpy(parse_pixels(file, pixels, lines)).unsqueeze(1)
    if images.shape[-1] != image_size:
        images = resize_batch(images, image_size)
    if channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    return images


def row_ids(file: Path, lines: list[int]) -> list[str]:
    """Sample identities of CSV rows: ``<absolute path>:<line>``."""
    base = os.path.abspath(file)
    return [f"{base}:{n}" for n in lines]


def _labels(path: Path, split: str, classes: tuple, options: dict) -> SplitLabels:
    _, labels, _, _, _ = read_rows(path, split, False)
    _, mapped, dropped = map_labels(labels, EMOTIONS, classes)
    return SplitLabels(labels_tensor(mapped), dict(dropped))


def _load(
    path: Path, split: str, *, classes: tuple, options: dict, image_size: int, channels: int, cache_dir, in_memory
) -> FERDataset:
    file, labels, lines, _, pixels = read_rows(path, split, True)
    keep, mapped, dropped = map_labels(labels, EMOTIONS, classes, Counter())
    if len(keep) < len(labels):
        pixels = [pixels[i] for i in keep]
        lines = [lines[i] for i in keep]
    images = pixels_to_images(file, pixels, lines, image_size, channels)
    del pixels
    return FERDataset(
        labels=labels_tensor(mapped),
        images=images,
        class_names=classes,
        source=f"{file}:{split}",
        ids=row_ids(file, lines),
        dropped=dict(dropped),
    )


FORMAT = register(
    Format(
        "fer2013_csv",
        "FER2013 CSV (emotion,pixels,Usage), incl. icml_face_data.csv",
        _detect,
        csv_splits,
        CSV_ALIASES,
        _labels,
        _load,
        quick_splits=CSV_SPLITS,
    ),
    rank=30,
)
