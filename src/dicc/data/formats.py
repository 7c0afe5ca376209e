"""Readers for the FER dataset layouts users actually download.

Every reader returns a :class:`~dicc.data.base.FERDataset` with labels in the canonical order
of :data:`~dicc.data.classes.EMOTIONS`. Supported layouts (``FORMATS``):

``fer2013_csv``
    The Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``) or its ``icml_face_data.csv``
    variant (``emotion, Usage, pixels``, headers with leading spaces). ``path`` is the file,
    or a folder holding one of those names. Splits are the ``Usage`` values ``Training``,
    ``PublicTest``, ``PrivateTest``; aliases: ``train``/``training`` -> Training,
    ``val``/``valid``/``validation``/``public``/``test`` -> PublicTest, ``private`` ->
    PrivateTest. A CSV without a ``Usage`` column has the single split ``all``.
``fer2013_folders``
    The image-folder FER2013 download: ``train/<class>/Training_*.jpg`` and
    ``test/<class>/{PublicTest,PrivateTest}_*.jpg``. Splits ``train``, ``test`` and, selected
    inside ``test/`` by file-name prefix, ``PublicTest`` and ``PrivateTest`` (aliases as for
    the CSV: ``val``/``public`` -> PublicTest, ``private`` -> PrivateTest).
``imagefolder``
    One folder per class, either under split folders (``root/<split>/<class>/*``, e.g.
    MMAFEDB's ``train``/``valid``/``test``) or directly (``root/<class>/*``, split ``all``).
    Class folder names may be aliases (``Happiness``, ``anger``, ``3_happy``); images are
    found recursively. ``train``/``training``, ``val``/``valid``/``validation`` and
    ``test``/``testing`` stand in for each other when only one of them exists.
``rafdb``
    RAF-DB basic: ``EmoLabel/list_patition_label.txt`` (or at the root) with lines
    ``train_00001.jpg 5``, labels 1-7 = surprise, fear, disgust, happiness, sadness, anger,
    neutral, and images ``Image/aligned/train_00001_aligned.jpg`` (or ``aligned/`` at the
    root; names without the ``_aligned`` suffix are accepted too). Splits ``train`` and
    ``test`` (alias ``val``/``valid``/``validation`` -> test).

Files are ordered by class, then by path, so dataset indices are stable across runs.
Small images (``image_size <= 64``) are decoded once into memory through the on-disk cache
(:mod:`dicc.data.cache`); larger ones are streamed from their paths.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from .base import FERDataset
from .classes import EMOTIONS, class_index
from .decode import IMAGE_EXTENSIONS, is_image_file

#: ``in_memory="auto"`` decodes into memory up to this image size and streams above it.
IN_MEMORY_MAX_SIZE = 64

_IGNORED_DIRS = {"__MACOSX"}


# ----------------------------------------------------------------------------- helpers
def _subdirs(folder: Path) -> list[str]:
    """Names of the visible sub-folders of ``folder``, sorted."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith(".")
                      and e.name not in _IGNORED_DIRS)


def _scan_images(folder: Path) -> list[str]:
    """Image files anywhere under ``folder``, sorted by path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _IGNORED_DIRS]
        found.extend(os.path.join(dirpath, f) for f in filenames if is_image_file(f))
    return sorted(found)


def _is_class_name(name: str) -> bool:
    try:
        class_index(name)
        return True
    except ValueError:
        return False


def _class_folders(folder: Path) -> tuple[list[str], list[int]]:
    """(paths, labels) of ``folder/<class>/**/image``, ordered by class then path."""
    per_class: dict[int, tuple[Path, list[str]]] = {}
    for name in _subdirs(folder):
        d = folder / name
        label = class_index(name, where=f"class folder {d}")
        if label in per_class:
            raise ValueError(f"{d} and {per_class[label][0]} are both class "
                             f"{EMOTIONS[label]!r}; merge or rename one of them")
        files = _scan_images(d)
        if not files:
            raise ValueError(f"{d}: class folder is empty (no {'/'.join(IMAGE_EXTENSIONS)} "
                             "files)")
        per_class[label] = (d, files)
    if not per_class:
        raise ValueError(f"{folder}: no class folders found (expected sub-folders named "
                         f"{', '.join(EMOTIONS)} or aliases)")
    paths, labels = [], []
    for label in sorted(per_class):
        files = per_class[label][1]
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, labels


def _resolve_split(split: str, valid: list[str], aliases: dict[str, str], where: str) -> str:
    """Map a requested split name onto one of ``valid`` (case-insensitive, with aliases)."""
    by_lower = {v.lower(): v for v in valid}
    key = split.strip().lower()
    if key in by_lower:
        return by_lower[key]
    target = aliases.get(key)
    if target is not None and target.lower() in by_lower:
        return by_lower[target.lower()]
    alias_text = [a for a, t in aliases.items() if t.lower() in by_lower and a not in by_lower]
    extra = f" (aliases: {', '.join(alias_text)})" if alias_text else ""
    raise ValueError(f"{where}: unknown split {split!r}; valid splits are "
                     f"{', '.join(valid) or '(none)'}{extra}")


def _labels_tensor(labels: list[int]) -> torch.Tensor:
    return torch.tensor(labels, dtype=torch.long)


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Format:
    """One dataset layout.

    ``detect(root)`` says whether ``root`` has this layout; ``splits(root)`` lists its split
    names; ``aliases`` maps lower-case alternative names onto them; ``labels(root, split)``
    returns the canonical labels without decoding any image; ``load(root, split, ...)``
    returns the :class:`FERDataset`. ``split`` is always one of ``splits(root)`` here.
    """

    name: str
    description: str
    detect: Callable[[Path], bool]
    splits: Callable[[Path], list[str]]
    aliases: dict[str, str]
    labels: Callable[[Path, str], torch.Tensor]
    load: Callable[..., FERDataset]


def _files_format(name: str, description: str, detect: Callable[[Path], bool],
                  splits: Callable[[Path], list[str]], aliases: dict[str, str],
                  files: Callable[[Path, str], tuple[list[str], list[int]]]) -> Format:
    """A :class:`Format` for layouts that are a list of (image file, label)."""

    def labels(root: Path, split: str) -> torch.Tensor:
        return _labels_tensor(files(root, split)[1])

    def load(root: Path, split: str, *, image_size: int, channels: int, cache_dir,
             in_memory) -> FERDataset:
        paths, labs = files(root, split)
        source = f"{root}:{split}"
        if in_memory == "auto":
            in_memory = image_size <= IN_MEMORY_MAX_SIZE
        if not in_memory:
            return FERDataset(labels=_labels_tensor(labs), paths=paths, image_size=image_size,
                              channels=channels, source=source)
        from .cache import load_or_decode

        images = load_or_decode(paths, _labels_tensor(labs), source=root,
                                split=f"{name}-{split}", image_size=image_size,
                                channels=channels, cache_dir=cache_dir)
        return FERDataset(labels=_labels_tensor(labs), images=images, source=source)

    return Format(name, description, detect, splits, aliases, labels, load)


# ----------------------------------------------------------------------------- FER2013 CSV
_CSV_NAMES = ("fer2013.csv", "icml_face_data.csv", "fer2013/fer2013.csv")
_CSV_SPLITS = ("Training", "PublicTest", "PrivateTest")
_CSV_ALIASES = {"train": "Training", "training": "Training", "val": "PublicTest",
                "valid": "PublicTest", "validation": "PublicTest", "public": "PublicTest",
                "publictest": "PublicTest", "test": "PublicTest", "private": "PrivateTest",
                "privatetest": "PrivateTest"}
_CSV_ROWS_PER_CHUNK = 1024


def _csv_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    for name in _CSV_NAMES:
        if (path / name).is_file():
            return path / name
    return None


def _csv_detect(path: Path) -> bool:
    file = _csv_file(path)
    if file is None:
        return False
    with open(file, "rb") as f:
        head = f.readline(4096).decode("utf-8-sig", "replace").lower()
    cols = [c.strip().strip('"') for c in head.split(",")]
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


def _csv_rows(path: Path, split: str | None, want_pixels: bool):
    """Read the CSV: ``(file, labels, line numbers, pixel fields)`` of the rows in ``split``.

    ``split=None`` returns the set of Usage values instead (for listing splits). Each line is
    split on commas (FER2013 fields never contain any); a CSV without a Usage column has the
    single split ``all``.
    """
    file = _csv_file(path)
    if file is None:
        raise FileNotFoundError(f"{path}: no FER2013 CSV file (looked for {', '.join(_CSV_NAMES)})")
    with open(file, "rb") as f:
        header = f.readline().decode("utf-8-sig", "replace")
        cols = [c.strip().strip('"').strip() for c in header.strip().split(",")]
        lower = [c.lower() for c in cols]
        missing = [c for c in ("emotion", "pixels") if c not in lower]
        if missing:
            raise ValueError(f"{file}: missing column(s) {', '.join(missing)}; found columns "
                             f"{cols}, expected emotion, pixels and Usage")
        i_emo, i_pix = lower.index("emotion"), lower.index("pixels")
        i_use = lower.index("usage") if "usage" in lower else None
        target = split.encode() if split is not None else None
        labels, lines, pixels, usages = [], [], [], set()
        for lineno, line in enumerate(f, start=2):
            if line.isspace():
                continue
            b = _field_bounds(line, len(cols))
            if b is None:
                raise ValueError(f"{file}: line {lineno}: expected {len(cols)} comma-separated "
                                 f"fields ({', '.join(cols)}), found {line.count(b',') + 1}")
            usage = line[b[i_use] + 1:b[i_use + 1]].strip().strip(b'"') if i_use is not None \
                else b"all"
            if target is None:
                usages.add(usage.decode())
                continue
            if usage != target:
                continue
            emo = line[b[i_emo] + 1:b[i_emo + 1]].strip().strip(b'"')
            if not emo.isdigit() or int(emo) >= len(EMOTIONS):
                raise ValueError(f"{file}: line {lineno}: emotion label {emo.decode()!r} out of "
                                 f"range (expected an integer 0..{len(EMOTIONS) - 1})")
            labels.append(int(emo))
            lines.append(lineno)
            if want_pixels:
                pixels.append(line[b[i_pix] + 1:b[i_pix + 1]].strip().strip(b'"').strip())
    if split is not None and not labels:
        valid = _csv_splits(file)
        raise ValueError(f"{file}: unknown split {split!r} (no row has this Usage); valid "
                         f"splits are {', '.join(valid) or '(none)'}")
    return file, labels, lines, (usages if split is None else pixels)


@functools.lru_cache(maxsize=8)
def _csv_splits_cached(file: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    usages = _csv_rows(Path(file), None, False)[3]
    return tuple([s for s in _CSV_SPLITS if s in usages] + sorted(usages - set(_CSV_SPLITS)))


def _csv_splits(path: Path) -> list[str]:
    file = _csv_file(path)
    if file is None:
        raise FileNotFoundError(f"{path}: no FER2013 CSV file (looked for {', '.join(_CSV_NAMES)})")
    st = file.stat()
    return list(_csv_splits_cached(str(file.resolve()), st.st_mtime_ns, st.st_size))


def _row_error(file: Path, line: int, text: bytes, n_pix: int) -> ValueError:
    """The ValueError describing what is wrong with one row's pixel field."""
    tokens = text.split()
    if len(tokens) != n_pix:
        side = math.isqrt(n_pix)
        return ValueError(f"{file}: line {line}: expected {n_pix} pixel values ({side}x{side}), "
                          f"found {len(tokens)}")
    return ValueError(f"{file}: line {line}: pixel values must be integers 0..255")


def _parse_pixels(file: Path, pixels: list[bytes], lines: list[int]) -> np.ndarray:
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
    for start in range(0, len(pixels), _CSV_ROWS_PER_CHUNK):
        chunk = pixels[start:start + _CSV_ROWS_PER_CHUNK]
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
        out[start:start + len(chunk)] = values
    return out.reshape(len(pixels), side, side)


def _resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a uint8 batch ``[N, C, H, W]`` in chunks."""
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, len(images), 4096):
        x = images[i:i + 4096].float()
        y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                            antialias=True, align_corners=False)
        out[i:i + 4096] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _csv_labels(path: Path, split: str) -> torch.Tensor:
    return _labels_tensor(_csv_rows(path, split, False)[1])


def _csv_load(path: Path, split: str, *, image_size: int, channels: int, cache_dir,
              in_memory) -> FERDataset:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    file, labels, lines, pixels = _csv_rows(path, split, True)
    images = torch.from_numpy(_parse_pixels(file, pixels, lines)).unsqueeze(1)
    del pixels
    if images.shape[-1] != image_size:
        images = _resize_batch(images, image_size)
    if channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    return FERDataset(labels=_labels_tensor(labels), images=images, source=f"{file}:{split}")


# ----------------------------------------------------------------------------- FER2013 folders
_FER_PREFIXES = ("Training_", "PublicTest_", "PrivateTest_")
_FER_FOLDER_ALIASES = {"training": "train", "testing": "test", "val": "PublicTest",
                       "valid": "PublicTest", "validation": "PublicTest",
                       "public": "PublicTest", "publictest": "PublicTest",
                       "private": "PrivateTest", "privatetest": "PrivateTest"}


def _first_images(folder: Path, per_class: int = 3) -> list[str]:
    """A few image names from each class folder of ``folder`` (cheap peek)."""
    names = []
    for sub in _subdirs(folder):
        with os.scandir(folder / sub) as it:
            images = (e.name for e in it if is_image_file(e.name))
            names.extend(itertools.islice(images, per_class))
    return names


def _fer_folders_detect(root: Path) -> bool:
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        return False
    names = _first_images(root / "train") + _first_images(root / "test")
    return any(n.startswith(_FER_PREFIXES) for n in names)


def _fer_folders_splits(root: Path) -> list[str]:
    splits = [s for s in ("train", "test") if (root / s).is_dir()]
    if (root / "test").is_dir():
        names = {os.path.basename(p).split("_", 1)[0] for p in _scan_images(root / "test")}
        splits += [s for s in ("PublicTest", "PrivateTest") if s in names]
    return splits


def _fer_folders_files(root: Path, split: str) -> tuple[list[str], list[int]]:
    if split in ("train", "test"):
        return _class_folders(root / split)
    paths, labels = _class_folders(root / "test")
    keep = [i for i, p in enumerate(paths) if os.path.basename(p).startswith(split + "_")]
    if not keep:
        raise ValueError(f"{root / 'test'}: split {split!r} selects no files (no file name "
                         f"starts with {split + '_'!r})")
    return [paths[i] for i in keep], [labels[i] for i in keep]


# ----------------------------------------------------------------------------- ImageFolder
_SPLIT_SYNONYMS = (("train", "training"), ("val", "valid", "validation"), ("test", "testing"))


def _imagefolder_flat(root: Path) -> bool:
    """True for ``root/<class>/*`` (no split level): a sub-folder is a class name."""
    return any(_is_class_name(n) for n in _subdirs(root))


def _imagefolder_detect(root: Path) -> bool:
    if not root.is_dir():
        return False
    if _imagefolder_flat(root):
        return True
    return any(_is_class_name(c) for s in _subdirs(root) for c in _subdirs(root / s))


def _imagefolder_splits(root: Path) -> list[str]:
    if _imagefolder_flat(root):
        return ["all"]
    return [s for s in _subdirs(root) if _subdirs(root / s)]


def _imagefolder_files(root: Path, split: str) -> tuple[list[str], list[int]]:
    return _class_folders(root if split == "all" else root / split)


# ----------------------------------------------------------------------------- RAF-DB
_RAF_LABELS = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry",
               7: "neutral"}
_RAF_TO_CANONICAL = {k: EMOTIONS.index(v) for k, v in _RAF_LABELS.items()}
_RAF_LIST_NAMES = ("EmoLabel/list_patition_label.txt", "list_patition_label.txt",
                   "EmoLabel/list_partition_label.txt", "list_partition_label.txt")
_RAF_IMAGE_DIRS = ("Image/aligned", "aligned")
_RAF_ALIASES = {"training": "train", "val": "test", "valid": "test", "validation": "test",
                "testing": "test"}


def _raf_list(root: Path) -> Path | None:
    return next((root / n for n in _RAF_LIST_NAMES if (root / n).is_file()), None)


def _raf_entries(root: Path) -> list[tuple[str, int, int]]:
    """(file name, canonical label, line number) of every line of the partition list."""
    file = _raf_list(root)
    if file is None:
        raise FileNotFoundError(f"{root}: no RAF-DB label list (looked for "
                                f"{', '.join(_RAF_LIST_NAMES)})")
    entries = []
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in _RAF_TO_CANONICAL:
                raise ValueError(f"{file}: line {lineno}: expected '<image name> <label 1-7>', "
                                 f"got {line.strip()!r}")
            entries.append((parts[0], _RAF_TO_CANONICAL[int(parts[1])], lineno))
    return entries


def _raf_splits(root: Path) -> list[str]:
    present = {name.split("_", 1)[0] for name, _, _ in _raf_entries(root)}
    return [s for s in ("train", "test") if s in present]


def _raf_files(root: Path, split: str) -> tuple[list[str], list[int]]:
    """Aligned images of ``split``: ``<dir>/<stem>_aligned.jpg`` (or ``<dir>/<name>``)."""
    folder = next((root / d for d in _RAF_IMAGE_DIRS if (root / d).is_dir()), None)
    if folder is None:
        raise FileNotFoundError(f"{root}: no RAF-DB image folder (looked for "
                                f"{', '.join(_RAF_IMAGE_DIRS)})")
    rows = sorted((label, name) for name, label, _ in _raf_entries(root)
                  if name.startswith(split + "_"))
    paths = []
    for _, name in rows:
        stem, ext = os.path.splitext(name)
        aligned = folder / f"{stem}_aligned{ext}"
        path = aligned if aligned.is_file() else folder / name
        if not path.is_file():
            raise ValueError(f"{aligned}: image listed in {_raf_list(root)} not found")
        paths.append(str(path))
    return paths, [label for label, _ in rows]


# ----------------------------------------------------------------------------- public API
FORMATS: dict[str, Format] = {}


def _register(fmt: Format) -> None:
    FORMATS[fmt.name] = fmt


_register(Format("fer2013_csv", "FER2013 CSV (emotion,pixels,Usage), incl. icml_face_data.csv",
                 _csv_detect, _csv_splits, _CSV_ALIASES, _csv_labels, _csv_load))
_register(_files_format("rafdb", "RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned/",
                        lambda r: r.is_dir() and _raf_list(r) is not None, _raf_splits,
                        _RAF_ALIASES, _raf_files))
_register(_files_format("fer2013_folders",
                        "FER2013 image folders: train/<class>/Training_*, "
                        "test/<class>/PublicTest_*",
                        _fer_folders_detect, _fer_folders_splits, _FER_FOLDER_ALIASES,
                        _fer_folders_files))
_register(_files_format("imagefolder",
                        "one folder per class: root/<split>/<class>/* or root/<class>/*",
                        _imagefolder_detect, _imagefolder_splits, {}, _imagefolder_files))


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    return p


def detect_format(path: str | os.PathLike) -> str:
    """Name of the layout at ``path`` (a key of :data:`FORMATS`).

    Checked in order: FER2013 CSV, RAF-DB, FER2013 folders, generic class folders.
    """
    p = _existing(path)
    for name, fmt in FORMATS.items():
        if fmt.detect(p):
            return name
    raise ValueError(
        f"{p}: unrecognised dataset layout; looked for a FER2013 CSV file (columns emotion, "
        f"pixels, Usage), RAF-DB's EmoLabel/list_patition_label.txt, FER2013's train/ and "
        f"test/ folders, and class folders ({', '.join(EMOTIONS)} or aliases) directly under "
        f"the path or one level down"
    )


def get_format(path: str | os.PathLike, fmt: str = "auto") -> Format:
    """The :class:`Format` for ``path`` (``fmt="auto"`` detects it)."""
    if fmt == "auto":
        return FORMATS[detect_format(path)]
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; choose one of "
                         f"{', '.join(['auto', *FORMATS])}")
    return FORMATS[fmt]


def list_splits(path: str | os.PathLike, fmt: str = "auto") -> list[str]:
    """The split names available at ``path``."""
    p = _existing(path)
    return get_format(p, fmt).splits(p)


def resolve_split(path: str | os.PathLike, split: str, fmt: str = "auto") -> str:
    """The canonical name of ``split`` at ``path`` (case and aliases resolved)."""
    p = _existing(path)
    f = get_format(p, fmt)
    if f.name == "fer2013_csv":  # skip reading the whole file; the reader checks the rows
        key = split.strip().lower()
        known = {s.lower(): s for s in _CSV_SPLITS}.get(key) or _CSV_ALIASES.get(key)
        if known:
            return known
    valid = f.splits(p)
    aliases = dict(f.aliases)
    if f.name == "imagefolder":  # train/training, val/valid/validation, test/testing
        for group in _SPLIT_SYNONYMS:
            present = [s for s in valid if s.lower() in group]
            if len(present) == 1:
                aliases.update({a: present[0] for a in group})
    return _resolve_split(split, valid, aliases, f"{p} ({f.name})")


def split_labels(path: str | os.PathLike, split: str, fmt: str = "auto") -> torch.Tensor:
    """Canonical labels of a split without decoding any image (for counting)."""
    p = _existing(path)
    f = get_format(p, fmt)
    return f.labels(p, resolve_split(p, split, f.name))


def load_split(path: str | os.PathLike, split: str, fmt: str = "auto", image_size: int = 48,
               channels: int = 1, cache_dir: str | os.PathLike | None | bool = None,
               in_memory: bool | Literal["auto"] = "auto") -> FERDataset:
    """Load one split of the dataset at ``path`` as a :class:`FERDataset`.

    ``fmt`` is a key of :data:`FORMATS` or ``"auto"``. Images are ``channels`` x
    ``image_size`` x ``image_size`` uint8. ``in_memory="auto"`` decodes into memory when
    ``image_size <= 64`` (through the on-disk cache in ``cache_dir``, default
    ``$DICC_CACHE_DIR`` or ``~/.cache/dicc``; ``cache_dir=False`` disables it) and keeps file
    paths to stream otherwise. The CSV format is always held in memory.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if in_memory not in (True, False, "auto"):
        raise ValueError(f"in_memory must be True, False or 'auto', got {in_memory!r}")
    p = _existing(path)
    f = get_format(p, fmt)
    name = resolve_split(p, split, f.name)
    return f.load(p, name, image_size=image_size, channels=channels, cache_dir=cache_dir,
                  in_memory=in_memory)


__all__ = ["FORMATS", "Format", "IN_MEMORY_MAX_SIZE", "detect_format", "get_format",
           "list_splits", "load_split", "resolve_split", "split_labels"]
