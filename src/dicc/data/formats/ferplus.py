"""``ferplus``: FERPlus (Barsoum et al. 2016), FER2013's images relabelled by 10 annotators.

Two layouts:

* ``fer2013new.csv`` (``Usage, Image name, neutral, happiness, surprise, sadness, anger,
  disgust, fear, contempt, unknown, NF``: vote counts) next to FER2013's ``fer2013.csv``, whose
  rows it follows one for one (``path`` is the folder or ``fer2013new.csv``; images in memory,
  identities ``<fer2013.csv>:<line>`` as for ``fer2013_csv``). Rows without an image name are
  the ones FERPlus excludes, and are dropped.
* the folders written by FERPlus's ``generate_training_data.py``: ``FER2013Train/``,
  ``FER2013Valid/``, ``FER2013Test/`` (at the root or in ``data/``), each with its PNG files and
  ``label.csv`` (``fer0000000.png,<10 vote counts>``).

Splits ``Training`` (aliases ``train``, ``training``), ``PublicTest`` (FERPlus's validation set,
``FER2013Valid``: aliases ``val``, ``valid``, ``validation``, ``public``) and ``PrivateTest``
(FERPlus's test set, ``FER2013Test``: aliases ``test``, ``private``). Note that ``test`` is
``PrivateTest`` here, as in FERPlus, whereas ``fer2013_csv`` calls ``PublicTest`` ``test``.

Labels follow FERPlus's reader (``src/ferplus.py`` of github.com/microsoft/FERPlus), option ``mode``:

``majority`` (default)
    votes of 1 are outliers and removed; an image is kept when one emotion has more than half
    of the remaining votes, and gets that label;
``crossentropy`` / ``probability``
    the largest vote counts are taken (at most 3 emotions, until 75 % of the votes), and the
    image is dropped when they hold 50 % or less or when ``unknown``/``NF`` is among them first;
    the label is the most voted emotion, the distribution is their share (``probability``
    differs from ``crossentropy`` only at training time, where FERPlus draws a label from it);
``multi_target``
    every emotion with at least 30 % of the votes; dropped when they hold 50 % or less.

In every mode an image whose leading entry is ``unknown`` or ``NF`` is dropped. Dropped
images are counted by reason (``unknown``, ``not a face``, ``no agreement``, ``unnamed``) and
so are those whose label is outside the label space (``contempt`` with ``emotions7``: use
``data.classes=emotions8`` to keep it). ``soft_labels=true`` stores each kept image's target
distribution (the mode's, over the label space, rows summing to 1; one-hot in ``majority``)
as ``extras["soft_labels"]`` (float32 ``[N, num_classes]``); dicc's methods train on the hard
label, the soft labels are there for custom losses and analysis.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch

from ..base import FERDataset
from ..classes import find_class
from .common import FileList, files_format, labels_tensor
from .fer2013_csv import CSV_NAMES, csv_file, header_columns, pixels_to_images, read_rows, row_ids
from .registry import Format, Option, SplitLabels, parse_bool, parse_choice, register

#: FERPlus's emotion columns (label order), by canonical name; then ``unknown`` and ``NF``
FERPLUS_NAMES = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "nf")
UNKNOWN, NOT_FACE = 8, 9
MODES = ("majority", "crossentropy", "probability", "multi_target")
SPLITS = ("Training", "PublicTest", "PrivateTest")
FOLDERS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
ALIASES = {
    "train": "Training",
    "training": "Training",
    "val": "PublicTest",
    "valid": "PublicTest",
    "validation": "PublicTest",
    "public": "PublicTest",
    "publictest": "PublicTest",
    "test": "PrivateTest",
    "private": "PrivateTest",
    "privatetest": "PrivateTest",
}
NEW_CSV = "fer2013new.csv"
OPTIONS = {
    "mode": Option("majority", parse_choice(*MODES), "label rule: " + ", ".join(MODES)),
    "soft_labels": Option(False, parse_bool, "store the vote distributions as extras['soft_labels']"),
}


# ----------------------------------------------------------------------------- the vote rules
def target_distribution(votes: Sequence[float], mode: str) -> list[float] | None:
    """FERPlus's target over its 10 columns for one image's vote counts, normalised to sum 1,
    or None when the mode discards the image (FERPlus then sets it to ``unknown``)."""
    v = [float(x) if x > 1 else 0.0 for x in votes]  # a single vote is an outlier
    total = sum(v)
    out = [0.0] * len(v)
    if mode == "majority":
        top = max(v)
        if top > 0.5 * total:
            out[v.index(top)] = top
    elif mode in ("crossentropy", "probability"):
        rest, taken, count, stop = list(v), 0.0, 0, False
        while taken < 0.75 * total and count < 3 and not stop:
            top = max(rest)
            for i, x in enumerate(rest):
                if x != top:
                    continue
                out[i], rest[i] = top, 0.0
                taken += top
                count += 1
                if i >= UNKNOWN:  # unknown or NF reached: stop here
                    stop = True
                    if sum(out) > top:  # emotions came before it: leave it out
                        out[i] = 0.0
                        count -= 1
                    break
        if sum(out) <= 0.5 * total or count > 3:
            return None
    elif mode == "multi_target":
        out = [x if x >= 0.3 * total else 0.0 for x in v]
        if sum(out) <= 0.5 * total:
            return None
    else:
        raise ValueError(f"unknown FERPlus mode {mode!r}; expected one of {', '.join(MODES)}")
    s = sum(out)
    return [x / s for x in out] if s > 0 else None


def label_votes(votes: list[list[float]], mode: str, classes: tuple, soft: bool):
    """Apply the mode to every image: ``(kept positions, labels, soft rows or None, dropped)``."""
    to_space = [find_class(n, classes) for n in FERPLUS_NAMES]
    keep, labels, rows, dropped = [], [], [], Counter()
    for i, vote in enumerate(votes):
        dist = target_distribution(vote, mode)
        lead = None if dist is None else dist.index(max(dist))
        if dist is None or lead >= UNKNOWN:
            v = [x if x > 1 else 0.0 for x in vote]
            first = lead if lead is not None else (v.index(max(v)) if max(v) > 0 else -1)
            dropped[{UNKNOWN: "unknown", NOT_FACE: "not a face"}.get(first, "no agreement")] += 1
            continue
        emo = dist[:UNKNOWN]
        hard = emo.index(max(emo))
        if to_space[hard] is None:
            dropped[FERPLUS_NAMES[hard]] += 1
            continue
        keep.append(i)
        labels.append(to_space[hard])
        if soft:
            row = [0.0] * len(classes)
            for j, p in enumerate(emo):
                if to_space[j] is not None:
                    row[to_space[j]] += p
            s = sum(row)
            rows.append([x / s for x in row])
    soft_t = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), len(classes)) if soft else None
    return keep, labels, soft_t, dropped


def _votes(text: list[str], where: str) -> list[float]:
    try:
        out = [float(x) for x in text]
    except ValueError:
        raise ValueError(f"{where}: vote counts must be numbers, got {','.join(text)!r}") from None
    if len(out) != len(VOTE_COLUMNS) or min(out) < 0:
        raise ValueError(
            f"{where}: expected {len(VOTE_COLUMNS)} vote counts ({', '.join(VOTE_COLUMNS)}), got {','.join(text)!r}"
        )
    return out


# ----------------------------------------------------------------------------- CSV layout
def _new_csv(root: Path) -> Path | None:
    if root.is_file():
        return root if "image name" in [c.lower() for c in header_columns(root)] else None
    return root / NEW_CSV if (root / NEW_CSV).is_file() else None


def _folder_root(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    for base in (root, root / "data"):
        if any((base / f / "label.csv").is_file() for f in FOLDERS.values()):
            return base
    return None


def _detect(root: Path) -> bool:
    return _new_csv(root) is not None or _folder_root(root) is not None


def _read_new(file: Path) -> list[tuple[int, str, str, list[float]]]:
    """(line, Usage, image name, 10 vote counts) of every data row of ``fer2013new.csv``."""
    with open(file, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [c.strip().lower() for c in next(reader, [])]
        need = ["usage", "image name", *VOTE_COLUMNS]
        missing = [c for c in need if c not in header]
        if missing:
            raise ValueError(
                f"{file}: missing column(s) {', '.join(missing)}; expected Usage, "
                "Image name, neutral, happiness, surprise, sadness, anger, disgust, "
                "fear, contempt, unknown, NF"
            )
        cols = [header.index(c) for c in need]
        rows = []
        for row in reader:
            if not row or not any(x.strip() for x in row):
                continue
            where = f"{file}: line {reader.line_num}"
            if len(row) < len(header):
                raise ValueError(f"{where}: expected {len(header)} fields, found {len(row)}")
            usage, name, *votes = (row[c].strip() for c in cols)
            rows.append((reader.line_num, usage, name, _votes(votes, where)))
    return rows


def _pixels_csv(new: Path) -> Path:
    for folder in (new.parent, new.parent / "fer2013"):
        f = csv_file(folder)
        if f is not None:
            return f
    raise FileNotFoundError(
        f"{new}: FERPlus needs FER2013's pixels: no {' or '.join(CSV_NAMES)} "
        f"next to it (fer2013new.csv follows fer2013.csv row by row)"
    )


def _csv_select(new: Path, split: str, options: dict, classes: tuple):
    rows = [(i, r) for i, r in enumerate(_read_new(new)) if r[1] == split]
    if not rows:
        raise ValueError(
            f"{new}: unknown split {split!r} (no row has this Usage); valid splits are {', '.join(SPLITS)}"
        )
    named = [(i, r) for i, r in rows if r[2]]
    keep, labels, soft, dropped = label_votes(
        [r[3] for _, r in named], options["mode"], classes, options["soft_labels"]
    )
    if len(named) < len(rows):
        dropped["unnamed"] += len(rows) - len(named)
    return rows, [named[k][0] for k in keep], labels, soft, dropped


def _csv_load(new: Path, split: str, classes: tuple, options: dict, image_size: int, channels: int) -> FERDataset:
    rows, chosen, labels, soft, dropped = _csv_select(new, split, options, classes)
    px_file = _pixels_csv(new)
    file, _, lines, px_rows, pixels = read_rows(px_file, split, True)
    if px_rows != [i for i, _ in rows]:
        mine = {i for i, _ in rows}
        theirs = set(px_rows)
        bad = min(mine ^ theirs) if mine != theirs else 0
        raise ValueError(
            f"{new} and {file} do not line up: data row {bad + 1} has Usage {split!r} in "
            f"one of them only (fer2013new.csv must follow fer2013.csv row by row)"
        )
    at = {r: k for k, r in enumerate(px_rows)}
    sel = [at[r] for r in chosen]
    images = pixels_to_images(file, [pixels[k] for k in sel], [lines[k] for k in sel], image_size, channels)
    extras = {"soft_labels": soft} if soft is not None else {}
    return FERDataset(
        labels=labels_tensor(labels),
        images=images,
        class_names=classes,
        source=f"{new}:{split}",
        extras=extras,
        ids=row_ids(file, [lines[k] for k in sel]),
        dropped=dict(dropped),
    )


# ----------------------------------------------------------------------------- folder layout
def _folder_files(root: Path, split: str, classes: tuple, options: dict) -> FileList:
    base = _folder_root(root)
    folder = base / FOLDERS[split]
    label_file = folder / "label.csv"
    if not label_file.is_file():
        raise FileNotFoundError(f"{label_file}: no FERPlus label file for split {split!r}")
    names, votes = [], []
    with open(label_file, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for row in reader:
            if not row or not any(x.strip() for x in row):
                continue
            if reader.line_num == 1 and len(row) > 1 and not row[1].strip().replace(".", "").isdigit():
                continue  # a header line
            names.append(row[0].strip())
            votes.append(_votes([x.strip() for x in row[1:]], f"{label_file}: line {reader.line_num}"))
    keep, labels, soft, dropped = label_votes(votes, options["mode"], classes, options["soft_labels"])
    order = sorted(range(len(keep)), key=lambda j: (labels[j], names[keep[j]]))
    paths = []
    for j in order:
        p = folder / names[keep[j]]
        if not p.is_file():
            raise ValueError(f"{p}: image listed in {label_file} not found")
        paths.append(str(p))
    extras = {"soft_labels": soft[order]} if soft is not None else {}
    return FileList(paths, [labels[j] for j in order], dict(dropped), extras)


_FOLDERS_FORMAT = files_format("ferplus", "", _detect, lambda r: [], ALIASES, _folder_files, options=OPTIONS)


# ----------------------------------------------------------------------------- the format
def _splits(root: Path) -> list[str]:
    base = _folder_root(root) if _new_csv(root) is None else None
    if base is not None:
        return [s for s in SPLITS if (base / FOLDERS[s] / "label.csv").is_file()]
    present = {r[1] for r in _read_new(_new_csv(root))}
    return [s for s in SPLITS if s in present]


def _labels(root: Path, split: str, classes: tuple, options: dict) -> SplitLabels:
    new = _new_csv(root)
    if new is None:
        return _FOLDERS_FORMAT.labels(root, split, classes, options)
    _, _, labels, _, dropped = _csv_select(new, split, dict(options, soft_labels=False), classes)
    return SplitLabels(labels_tensor(labels), dict(dropped))


def _load(
    root: Path, split: str, *, classes: tuple, options: dict, image_size: int, channels: int, cache_dir, in_memory
) -> FERDataset:
    new = _new_csv(root)
    if new is None:
        return _FOLDERS_FORMAT.load(
            root,
            split,
            classes=classes,
            options=options,
            image_size=image_size,
            channels=channels,
            cache_dir=cache_dir,
            in_memory=in_memory,
        )
    return _csv_load(new, split, classes, options, image_size, channels)


FORMAT = register(
    Format(
        "ferplus",
        "FERPlus: fer2013new.csv (vote counts) + fer2013.csv, or FER2013Train/ "
        "FER2013Valid/ FER2013Test/ with label.csv",
        _detect,
        _splits,
        ALIASES,
        _labels,
        _load,
        options=OPTIONS,
    ),
    rank=10,
)
