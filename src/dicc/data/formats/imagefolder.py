"""``imagefolder``: one folder per class, under split folders (``root/<split>/<class>/*``,
e.g. MMAFEDB's ``train``/``valid``/``test``) or directly (``root/<class>/*``: a *flat*
dataset, e.g. CK+48's ``anger, contempt, disgust, fear, happy, sadness, surprise``).

Class folder names may be aliases (``Happiness``, ``anger``, ``3_happy``); images are found
recursively. With split folders, ``train``/``training``, ``val``/``valid``/``validation`` and
``test``/``testing`` stand in for each other when only one of each group exists.

A flat dataset has the split ``all`` and two derived ones, ``train`` and ``test``: a seeded,
stratified split of ``all`` (each class puts ``round(test_fraction * n_c)`` images in
``test``, at least one when it has two, never all of them), so the default run config
(``train_split: train``, ``test_split: test``) works on it unchanged. Options, given as
``imagefolder:test_fraction=0.2,split_seed=0,group=prefix`` (``data.format`` or
``--format``):

``test_fraction`` (0.2)
    share of each class in the derived ``test`` split;
``split_seed`` (0)
    seed of the draw (the same seed gives the same split on any machine);
``group`` (``none``)
    ``prefix`` keeps the images whose file names share the part before the first ``_`` (CK+'s
    subject, ``S010`` in ``S010_004_00000017.png``) in the same split, so no subject is in
    both: whole groups are moved to ``test`` in a seeded order while that brings each class's
    test count closer to its target.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path

import torch

from .common import FileList, class_folders, files_format, is_class_name, subdirs
from .registry import Option, parse_choice, parse_fraction, parse_int, register

SPLIT_SYNONYMS = (("train", "training"), ("val", "valid", "validation"), ("test", "testing"))
OPTIONS = {
    "test_fraction": Option(0.2, parse_fraction, "share of each class in the derived test split"),
    "split_seed": Option(0, parse_int, "seed of the derived train/test split"),
    "group": Option(
        "none", parse_choice("none", "prefix"), "none, or prefix: file names sharing the part before '_' stay together"
    ),
}


def is_flat(root: Path) -> bool:
    """True for ``root/<class>/*`` (no split level): a sub-folder is an emotion name, or no
    sub-folder has sub-folders of its own (class folders of a user's own label space, e.g.
    ``pain/``, ``no_pain/``; auto-detection only knows emotion names, ``--format imagefolder``
    reads any)."""
    names = subdirs(root)
    return any(is_class_name(n) for n in names) or (bool(names) and not any(subdirs(root / n) for n in names))


def _detect(root: Path) -> bool:
    if not root.is_dir():
        return False
    names = subdirs(root)  # detection is strict: emotion names (or aliases) only
    return any(is_class_name(n) for n in names) or any(is_class_name(c) for s in names for c in subdirs(root / s))


def _splits(root: Path) -> list[str]:
    if is_flat(root):
        return ["all", "train", "test"]
    return [s for s in subdirs(root) if subdirs(root / s)]


def split_aliases(valid: list[str]) -> dict[str, str]:
    """train/training, val/valid/validation, test/testing: each stands for the one present."""
    aliases = {}
    for group in SPLIT_SYNONYMS:
        present = [s for s in valid if s.lower() in group]
        if len(present) == 1:
            aliases.update({a: present[0] for a in group})
    return aliases


def _group_holdout(labels: list[int], groups: list[str], fraction: float, seed: int) -> torch.Tensor:
    """A boolean mask of the test images: whole groups, drawn in a seeded order, each taken
    when it brings the per-class test counts closer (L1) to ``fraction`` of each class."""
    names = sorted(set(groups))
    members: dict[str, list[int]] = {g: [] for g in names}
    for i, g in enumerate(groups):
        members[g].append(i)
    counts = Counter(labels)
    target = [fraction * counts.get(c, 0) for c in range(max(labels) + 1)]
    have = [0.0] * len(target)
    test = torch.zeros(len(labels), dtype=torch.bool)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    for k in torch.randperm(len(names), generator=g).tolist():
        idx = members[names[k]]
        add = Counter(labels[i] for i in idx)
        before = sum(abs(have[c] - target[c]) for c in add)
        after = sum(abs(have[c] + n - target[c]) for c, n in add.items())
        if after < before:
            for c, n in add.items():
                have[c] += n
            test[idx] = True
    return test


def _derived(fl: FileList, split: str, options: dict, root: Path) -> FileList:
    from ..longtail import stratified_holdout

    frac, seed = options["test_fraction"], options["split_seed"]
    if options["group"] == "prefix":
        groups = [os.path.basename(p).split("_", 1)[0] for p in fl.paths]
        if len(set(groups)) < 2:
            raise ValueError(
                f"{root}: group=prefix found {len(set(groups))} group(s) of file "
                "names (the part before the first '_'); it needs at least 2"
            )
        mask = _group_holdout(fl.labels, groups, frac, seed)
    else:
        mask = torch.zeros(len(fl.labels), dtype=torch.bool)
        mask[stratified_holdout(torch.tensor(fl.labels), frac, seed)[1]] = True
    keep = mask if split == "test" else ~mask
    idx = keep.nonzero().flatten().tolist()
    return FileList([fl.paths[i] for i in idx], [fl.labels[i] for i in idx], dict(fl.dropped))


def _files(root: Path, split: str, classes: tuple, options: dict) -> FileList:
    flat = is_flat(root)
    if not flat and any(options[k] != o.default for k, o in OPTIONS.items()):
        changed = [k for k, o in OPTIONS.items() if options[k] != o.default]
        raise ValueError(
            f"{root}: imagefolder option {changed[0]} applies to a flat layout "
            "(root/<class>/*) only; this one has split folders"
        )
    if not flat:
        return class_folders(root / split, classes)
    fl = class_folders(root, classes)
    return fl if split == "all" else _derived(fl, split, options, root)


FORMAT = register(
    dataclasses.replace(
        files_format(
            "imagefolder",
            "one folder per class: root/<split>/<class>/* or root/<class>/* (derived train/test splits)",
            _detect,
            _splits,
            {},
            _files,
            options=OPTIONS,
        ),
        split_aliases=split_aliases,
    ),
    rank=90,
)
