"""``rafdb``: RAF-DB basic, ``EmoLabel/list_patition_label.txt`` (or at the root) with lines
``train_00001.jpg 5``, labels 1-7 = surprise, fear, disgust, happiness, sadness, anger,
neutral, and images ``Image/aligned/train_00001_aligned.jpg`` (or ``aligned/`` at the root;
names without the ``_aligned`` suffix are accepted too).

Splits ``train`` and ``test`` (alias ``training``, ``testing``; RAF-DB has no validation set,
so ``val`` is not an alias of ``test``). Images of a class outside the label space are dropped
and counted.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import FileList, files_format, map_labels
from .registry import register

RAF_NAMES = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")  # labels 1-7
_LIST_NAMES = (
    "EmoLabel/list_patition_label.txt",
    "list_patition_label.txt",
    "EmoLabel/list_partition_label.txt",
    "list_partition_label.txt",
)
_IMAGE_DIRS = ("Image/aligned", "aligned")
_ALIASES = {"training": "train", "testing": "test"}


def _list(root: Path) -> Path | None:
    return next((root / n for n in _LIST_NAMES if (root / n).is_file()), None)


def _entries(root: Path) -> list[tuple[str, int, int]]:
    """(file name, RAF label 0-6, line number) of every line of the partition list."""
    file = _list(root)
    if file is None:
        raise FileNotFoundError(f"{root}: no RAF-DB label list (looked for {', '.join(_LIST_NAMES)})")
    entries = []
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 7:
                raise ValueError(f"{file}: line {lineno}: expected '<image name> <label 1-7>', got {line.strip()!r}")
            entries.append((parts[0], int(parts[1]) - 1, lineno))
    return entries


def _splits(root: Path) -> list[str]:
    present = {name.split("_", 1)[0] for name, _, _ in _entries(root)}
    return [s for s in ("train", "test") if s in present]


def _files(root: Path, split: str, classes: tuple, options: dict) -> FileList:
    """Aligned images of ``split``: ``<dir>/<stem>_aligned.jpg`` (or ``<dir>/<name>``)."""
    folder = next((root / d for d in _IMAGE_DIRS if (root / d).is_dir()), None)
    if folder is None:
        raise FileNotFoundError(f"{root}: no RAF-DB image folder (looked for {', '.join(_IMAGE_DIRS)})")
    rows = [(name, raf) for name, raf, _ in _entries(root) if name.startswith(split + "_")]
    keep, labels, dropped = map_labels([raf for _, raf in rows], RAF_NAMES, classes)
    order = sorted(range(len(keep)), key=lambda j: (labels[j], rows[keep[j]][0]))
    paths = []
    for j in order:
        name = rows[keep[j]][0]
        stem, ext = os.path.splitext(name)
        aligned = folder / f"{stem}_aligned{ext}"
        path = aligned if aligned.is_file() else folder / name
        if not path.is_file():
            raise ValueError(f"{aligned}: image listed in {_list(root)} not found")
        paths.append(str(path))
    return FileList(paths, [labels[j] for j in order], dict(dropped))


FORMAT = register(
    files_format(
        "rafdb",
        "RAF-DB basic: EmoLabel/list_patition_label.txt + Image/aligned/",
        lambda r: r.is_dir() and _list(r) is not None,
        _splits,
        _ALIASES,
        _files,
    ),
    rank=40,
)
