"""``affectnet``: AffectNet's manually annotated part, ``training.csv`` and ``validation.csv``
(at the root or in ``Manually_Annotated_file_lists/``) with the columns
``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
expression, valence, arousal``, and the images ``Manually_Annotated_Images/<subDirectory_filePath>``
(also looked for under ``Manually_Annotated/``), used as stored (AffectNet's face crops).

Splits ``train`` (``training.csv``) and ``test`` (``validation.csv``, the set AffectNet papers
report on, its own test set being unreleased); a run's validation set is a hold-out of
``train``. ``expression`` codes: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust,
6 anger, 7 contempt, 8 none, 9 uncertain, 10 non-face. Codes 8-10 are dropped and counted
(``dicc data info`` lists them), as are the classes outside the label space (contempt with the
default ``emotions7``; kept with ``emotions8``). The training split has about 290k images
at full resolution: they stream from disk (``data.image_size`` above 64, ``data.workers``).
"""

from __future__ import annotations

import csv
import functools
import os
from collections import Counter
from pathlib import Path

from .common import FileList, files_format, map_labels
from .registry import register

AFFECTNET_NAMES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")
NON_EXPRESSION = {8: "none", 9: "uncertain", 10: "non-face"}
_FILES = {"train": "training.csv", "test": "validation.csv"}
_LIST_DIRS = ("", "Manually_Annotated_file_lists")
_IMAGE_DIRS = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images", "Manually_Annotated")
_ALIASES = {"training": "train", "testing": "test"}


def _csv(root: Path, split: str) -> Path | None:
    for d in _LIST_DIRS:
        f = root / d / _FILES[split]
        if f.is_file():
            return f
    return None


def _detect(root: Path) -> bool:
    if not root.is_dir():
        return False
    for split in _FILES:
        f = _csv(root, split)
        if f is not None:
            with open(f, encoding="utf-8-sig", errors="replace") as fh:
                head = fh.readline().lower()
            return "subdirectory_filepath" in head and "expression" in head
    return False


def _splits(root: Path) -> list[str]:
    return [s for s in _FILES if _csv(root, s) is not None]


@functools.lru_cache(maxsize=4)
def _rows_cached(file: str, mtime_ns: int, size: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(image paths relative to the image folder, expression codes) of one list file.

    Lines without quotes are split on commas directly (5x faster than the csv module on
    AffectNet's 290k rows with 136 landmark values each); a quoted line goes through ``csv``."""
    names, codes = [], []
    with open(file, "rb") as f:
        header = [c.strip().strip('"').lower() for c in f.readline().decode("utf-8-sig", "replace").split(",")]
        missing = [c for c in ("subdirectory_filepath", "expression") if c not in header]
        if missing:
            raise ValueError(
                f"{file}: missing column(s) {', '.join(missing)}; found "
                f"{header}, expected subDirectory_filePath, ..., expression, ..."
            )
        i_path, i_expr = header.index("subdirectory_filepath"), header.index("expression")
        for line_no, line in enumerate(f, start=2):
            if line.isspace() or not line:
                continue
            if b'"' in line:
                row = next(csv.reader([line.decode("utf-8", "replace")]))
            else:
                row = line.rstrip(b"\r\n").decode("utf-8", "replace").split(",")
            if len(row) <= max(i_path, i_expr):
                raise ValueError(f"{file}: line {line_no}: expected {len(header)} fields, found {len(row)}")
            code = row[i_expr].strip()
            if not code.isdigit() or int(code) > 10:
                raise ValueError(
                    f"{file}: line {line_no}: expression {code!r} out of range (expected an integer 0..10)"
                )
            name = row[i_path].strip()
            if not name:
                raise ValueError(f"{file}: line {line_no}: empty subDirectory_filePath")
            names.append(name)
            codes.append(int(code))
    return tuple(names), tuple(codes)


def _rows(root: Path, split: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    file = _csv(root, split)
    if file is None:
        raise FileNotFoundError(
            f"{root}: no AffectNet list {_FILES[split]} (looked in {', '.join(d or '.' for d in _LIST_DIRS)})"
        )
    st = file.stat()
    return _rows_cached(str(file.resolve()), st.st_mtime_ns, st.st_size)


def _image_dir(root: Path) -> Path:
    for d in _IMAGE_DIRS:
        if (root / d).is_dir():
            return root / d
    raise FileNotFoundError(f"{root}: no AffectNet image folder (looked for {', '.join(_IMAGE_DIRS)})")


def _select(root: Path, split: str, classes: tuple) -> tuple[list[str], list[int], Counter]:
    names, codes = _rows(root, split)
    dropped = Counter(NON_EXPRESSION[c] for c in codes if c in NON_EXPRESSION)
    expr = [i for i, c in enumerate(codes) if c < len(AFFECTNET_NAMES)]
    keep, labels, dropped = map_labels([codes[i] for i in expr], AFFECTNET_NAMES, classes, dropped)
    chosen = [names[expr[k]] for k in keep]
    order = sorted(range(len(chosen)), key=lambda j: (labels[j], chosen[j]))
    return [chosen[j] for j in order], [labels[j] for j in order], dropped


def _files(root: Path, split: str, classes: tuple, options: dict) -> FileList:
    rel, labels, dropped = _select(root, split, classes)
    folder = os.fspath(_image_dir(root))
    paths = [os.path.join(folder, r) for r in rel]
    for p in paths:
        if not os.path.isfile(p):
            raise ValueError(f"{p}: image listed in {_csv(root, split)} not found")
    return FileList(paths, labels, dict(dropped))


def _files_labels_only(root: Path, split: str, classes: tuple, options: dict) -> FileList:
    rel, labels, dropped = _select(root, split, classes)
    return FileList(list(rel), labels, dict(dropped))


FORMAT = register(
    files_format(
        "affectnet",
        "AffectNet: training.csv / validation.csv (subDirectory_filePath, expression) + Manually_Annotated_Images/",
        _detect,
        _splits,
        _ALIASES,
        _files,
        label_files=_files_labels_only,
    ),
    rank=20,
)  # counting needs no image: skip the file checks
