"""Readers for the FER dataset layouts users actually download, one module per format.

Every reader returns a :class:`~dicc.data.base.FERDataset` whose labels index its label space
(``classes``: ``emotions7`` by default, ``emotions8``, or a list of names; see
:mod:`dicc.data.classes`). The formats, in the order auto-detection tries them (``FORMATS``):

=================== ===========================================================
``ferplus``         :mod:`.ferplus` (``fer2013new.csv`` + ``fer2013.csv``, or FERPlus's folders)
``affectnet``       :mod:`.affectnet` (``training.csv`` / ``validation.csv`` + images)
``fer2013_csv``     :mod:`.fer2013_csv` (``fer2013.csv``, ``icml_face_data.csv``)
``rafdb``           :mod:`.rafdb` (``EmoLabel/list_patition_label.txt`` + ``Image/aligned``)
``fer2013_folders`` :mod:`.fer2013_folders` (``train/<class>/Training_*``, ``test/...``)
``imagefolder``     :mod:`.imagefolder` (``<split>/<class>/*``, or ``<class>/*`` with derived
                    ``train``/``test`` splits: CK+, your own data)
=================== ===========================================================

A format may take options, given with its name: ``"ferplus:mode=crossentropy,soft_labels=true"``
(``data.format``, ``--format``) or as ``load_split(..., options={...})``; an unknown option is
an error that lists the valid ones. Files are ordered by class, then by path, so dataset
indices are stable across runs. Small images (``image_size <= 64``) are decoded once into
memory through the on-disk cache (:mod:`dicc.data.cache`); larger ones are streamed from their
paths. Adding a format: write a module that builds a :class:`Format` and ``register``\\s it,
and import it below (at its place in the detection order).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch

from ..base import FERDataset
from ..classes import resolve_classes
from .common import resolve_split_name
from .registry import FORMATS, IN_MEMORY_MAX_SIZE, Format, SplitLabels, check_options, existing, parse_format_spec

# each module registers its format (with its rank in the detection order)
from . import affectnet, fer2013_csv, fer2013_folders, ferplus, imagefolder, rafdb  # noqa: E402,F401


def detect_format(path: str | os.PathLike) -> str:
    """Name of the layout at ``path`` (a key of :data:`FORMATS`, tried in that order)."""
    p = existing(path)
    for name, fmt in FORMATS.items():
        if fmt.detect(p):
            return name
    raise ValueError(
        f"{p}: unrecognised dataset layout; looked for FERPlus's fer2013new.csv, AffectNet's "
        f"training.csv/validation.csv, a FER2013 CSV file (columns emotion, pixels, Usage), "
        f"RAF-DB's EmoLabel/list_patition_label.txt, FER2013's train/ and test/ folders, and "
        f"class folders (emotion names or aliases) directly under the path or one level down"
    )


def _lookup(path: Path, fmt: str) -> tuple[Format, dict[str, str]]:
    name, options = parse_format_spec(fmt)
    if name in ("", "auto"):
        return FORMATS[detect_format(path)], options
    if name not in FORMATS:
        raise ValueError(f"unknown dataset format {name!r}; choose one of {', '.join(['auto', *FORMATS])}")
    return FORMATS[name], options


def get_format(path: str | os.PathLike, fmt: str = "auto") -> Format:
    """The :class:`Format` for ``path`` (``fmt="auto"`` detects it; options are ignored)."""
    return _lookup(Path(path).expanduser(), fmt)[0]


def _resolve(path, fmt: str, options: dict | None) -> tuple[Path, Format, dict]:
    p = existing(path).absolute()  # so every path a reader builds is absolute (sample identities)
    f, given = _lookup(p, fmt)
    return p, f, check_options(f, {**given, **(options or {})})


def list_splits(path: str | os.PathLike, fmt: str = "auto") -> list[str]:
    """The split names available at ``path``."""
    p = existing(path)
    return _lookup(p, fmt)[0].splits(p)


def _resolve_in(p: Path, f: Format, split: str) -> str:
    if f.quick_splits:  # e.g. a CSV: skip reading the whole file; the reader checks the rows
        key = split.strip().lower()
        known = {s.lower(): s for s in f.quick_splits}.get(key) or f.aliases.get(key)
        if known:
            return known
    valid = f.splits(p)
    aliases = dict(f.aliases)
    if f.split_aliases is not None:
        aliases.update(f.split_aliases(valid))
    return resolve_split_name(split, valid, aliases, f"{p} ({f.name})")


def resolve_split(path: str | os.PathLike, split: str, fmt: str = "auto") -> str:
    """The canonical name of ``split`` at ``path`` (case and aliases resolved)."""
    p = existing(path)
    return _resolve_in(p, _lookup(p, fmt)[0], split)


def split_summary(
    path: str | os.PathLike, split: str, fmt: str = "auto", classes: Any = None, options: dict | None = None
) -> SplitLabels:
    """Labels of a split and the samples the reader dropped, without decoding any image."""
    p, f, opts = _resolve(path, fmt, options)
    return f.labels(p, _resolve_in(p, f, split), resolve_classes(classes), opts)


def split_labels(
    path: str | os.PathLike, split: str, fmt: str = "auto", classes: Any = None, options: dict | None = None
) -> torch.Tensor:
    """Labels of a split (label-space indices) without decoding any image (for counting)."""
    return split_summary(path, split, fmt, classes, options).labels


def load_split(
    path: str | os.PathLike,
    split: str,
    fmt: str = "auto",
    image_size: int = 48,
    channels: int = 1,
    cache_dir: str | os.PathLike | None | bool = None,
    in_memory: bool | Literal["auto"] = "auto",
    classes: Any = None,
    options: dict | None = None,
) -> FERDataset:
    """Load one split of the dataset at ``path`` as a :class:`FERDataset`.

    ``fmt`` is a key of :data:`FORMATS` or ``"auto"``, optionally with options
    (``"name:key=value,..."``; ``options`` adds to them). ``classes`` is the label space
    (``None``/``"emotions7"``, ``"emotions8"`` or a list of names). Images are ``channels`` x
    ``image_size`` x ``image_size`` uint8. ``in_memory="auto"`` decodes into memory when
    ``image_size <= 64`` (through the on-disk cache in ``cache_dir``, default
    ``$DICC_CACHE_DIR`` or ``~/.cache/dicc``; ``cache_dir=False`` disables it) and keeps file
    paths to stream otherwise. The CSV formats are always held in memory.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if in_memory not in (True, False, "auto"):
        raise ValueError(f"in_memory must be True, False or 'auto', got {in_memory!r}")
    space = resolve_classes(classes)
    p, f, opts = _resolve(path, fmt, options)
    name = _resolve_in(p, f, split)
    return f.load(
        p,
        name,
        classes=space,
        options=opts,
        image_size=image_size,
        channels=channels,
        cache_dir=cache_dir,
        in_memory=in_memory,
    )


__all__ = [
    "FORMATS",
    "Format",
    "IN_MEMORY_MAX_SIZE",
    "SplitLabels",
    "detect_format",
    "get_format",
    "list_splits",
    "load_split",
    "parse_format_spec",
    "resolve_split",
    "split_labels",
    "split_summary",
]
