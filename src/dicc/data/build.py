"""Assemble the train / validation / test datasets a run needs from its ``DataConfig``.

Nothing reported is tuned on: the validation split (``val: holdout``) comes from the training
split. Without a long-tailed subset it is a stratified hold-out of ``val_fraction`` of every
class. With one, the subset is drawn first from the *whole* training split (so its counts are
exactly the requested ones, e.g. the DICC paper's IF=10 table uses 430 of FER2013's 436 disgust
images), and the validation images are then drawn from the images the subset left out:
``round(val_fraction * n_c)`` per class, capped at what is left. The test split is only read
for the final evaluation.

Checks, before anything trains (each a one-line ``ValueError``):

* the validation set and the test set share no sample, nor do the training set and the test
  set (by sample identity, :attr:`FERDataset.ids`, taken as the file it names: device and
  inode, so a symlinked split folder or file and a hard link are caught; ``data.val=PublicTest``
  with ``data.test_split=test`` on FER2013's folders, where PublicTest is part of ``test/``, is
  refused; FER2013's genuinely duplicated pictures in different splits are not);
* every class of the label space (``data.classes``) has training images; classes missing from
  the validation or test set are listed in :attr:`RunData.missing_classes` (their recall is
  undefined; the metrics leave them out of the means).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from ..seeds import derive_seed
from .base import FERDataset
from .classes import EMOTIONS, resolve_classes


@dataclass
class RunData:
    train: FERDataset
    val: FERDataset | None
    test: FERDataset | None
    #: role ("val", "test") -> names of the label-space classes it has no image of
    missing_classes: dict[str, list[str]] = field(default_factory=dict)


def open_split(cfg, split: str) -> FERDataset:
    """One split of the configured source: the built-in synthetic data when ``cfg.path`` is
    None, otherwise a dataset on disk in any supported format, in the label space
    ``cfg.classes``."""
    classes = resolve_classes(getattr(cfg, "classes", None))
    if cfg.path is None:
        if classes != EMOTIONS:
            raise ValueError(
                f"data.classes: the built-in synthetic data has the seven emotions "
                f"({', '.join(EMOTIONS)}); got {', '.join(classes)} (set data.path to "
                "a dataset, or leave data.classes unset)"
            )
        from .synthetic import make_synthetic

        return make_synthetic(split=split, seed=cfg.subset_seed, image_size=cfg.image_size)
    from .formats import load_split

    return load_split(
        cfg.path,
        split,
        fmt=cfg.format,
        image_size=cfg.image_size,
        channels=cfg.channels,
        cache_dir=cfg.cache_dir,
        classes=classes,
    )


def physical_ids(ids: list[str]) -> list:
    """Sample identities as the files they are: a file path becomes its ``(device, inode)``, a CSV
    row ``<path>:<line>`` ``(device, inode, line)``; so a symlinked folder (``ln -s test val``),
    a symlinked file or a hard link is the sample it points at. An identity that names no file
    (the built-in data's, a user's) stays as it is."""
    stats: dict[str, tuple | None] = {}

    def inode(path: str) -> tuple | None:
        if path not in stats:
            try:
                st = os.stat(path)
                stats[path] = (st.st_dev, st.st_ino)
            except (OSError, ValueError):
                stats[path] = None
        return stats[path]

    out: list = []
    for i in ids:
        key = inode(i)
        if key is None:
            path, _, line = i.rpartition(":")
            if path and line.isdigit() and (file := inode(path)) is not None:
                key = (*file, int(line))
        out.append(key if key is not None else i)
    return out


def _refuse_overlap(a: FERDataset, a_key: str, b: FERDataset, b_key: str) -> None:
    """Raise when ``a`` and ``b`` share a sample (:func:`physical_ids`; ``*_key``: the config
    settings that chose them, for the message)."""
    small, big = (a, b) if len(a) <= len(b) else (b, a)
    big_ids = dict(zip(physical_ids(big.ids), big.ids))
    shared = [(i, big_ids[k]) for i, k in zip(small.ids, physical_ids(small.ids)) if k in big_ids]
    if shared:
        one, other = shared[0]
        same = one if one == other else f"{one} is {other}"
        raise ValueError(
            f"{a_key} and {b_key} share {len(shared)} of their images (e.g. {same}): "
            f"{a.source} and {b.source} overlap; choose disjoint splits (e.g. data.val=holdout, "
            "drawn from the training images)"
        )


def build_run_data(cfg, *, need_test: bool = True) -> RunData:
    from .longtail import longtail_subset, parse_longtail, stratified_holdout

    full = open_split(cfg, cfg.train_split)
    names = full.class_names
    val = None
    if cfg.longtail is not None:
        try:
            counts = parse_longtail(cfg.longtail, full.class_counts(), names)
        except (ValueError, TypeError) as err:
            raise ValueError(f"data.longtail={cfg.longtail!r}: {err}") from None
        chosen = longtail_subset(full.labels, counts, cfg.subset_seed, names)
        train = full.subset(chosen)
        train.source = f"{full.source} (long-tailed {cfg.longtail})"
        if cfg.val == "holdout":
            left = torch.ones(len(full), dtype=torch.bool)
            left[chosen] = False
            rest = left.nonzero().flatten()
            rest_counts = torch.bincount(full.labels[rest], minlength=full.num_classes).tolist()
            want = [min(round(cfg.val_fraction * n), r) for n, r in zip(full.class_counts(), rest_counts)]
            seed = derive_seed(cfg.subset_seed, "subsample")
            val = full.subset(rest[longtail_subset(full.labels[rest], want, seed, names)])
    else:
        train = full
        if cfg.val == "holdout":
            keep, hold = stratified_holdout(full.labels, cfg.val_fraction, cfg.subset_seed)
            val, train = full.subset(hold), full.subset(keep)
    missing = train.missing_classes()
    if missing:
        raise ValueError(
            f"data.train_split={cfg.train_split!r}: {train.source} has no images of "
            f"{', '.join(missing)} (label space: {', '.join(names)}); add them, or set "
            "data.classes to the classes it has"
        )
    val_key = f"data.val={cfg.val!r}"
    if val is not None:
        val.source = f"{full.source} (hold-out {cfg.val_fraction:g})"
    elif cfg.val and cfg.val != "holdout":
        val = open_split(cfg, cfg.val)
    test = open_split(cfg, cfg.test_split) if (need_test and cfg.test_split) else None
    if test is not None:
        test_key = f"data.test_split={cfg.test_split!r}"
        _refuse_overlap(train, f"data.train_split={cfg.train_split!r}", test, test_key)
        if val is not None:
            _refuse_overlap(val, val_key, test, test_key)
    out = RunData(train, val, test)
    for role, ds in (("val", val), ("test", test)):
        if ds is not None and ds.missing_classes():
            out.missing_classes[role] = ds.missing_classes()
    return out
