"""Assemble the train / validation / test datasets a run needs from its ``DataConfig``.

Nothing reported is tuned on: the validation split (``val: holdout``) comes from the training
split. Without a long-tailed subset it is a stratified hold-out of ``val_fraction`` of every
class. With one, the subset is drawn first from the *whole* training split (so its counts are
exactly the requested ones, e.g. the DICC paper's IF=10 table uses 430 of FER2013's 436 disgust
images), and the validation images are then drawn from the images the subset left out:
``round(val_fraction * n_c)`` per class, capped at what is left. The test split is only read
for the final evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import FERDataset


@dataclass
class RunData:
    train: FERDataset
    val: FERDataset | None
    test: FERDataset | None


def open_split(cfg, split: str) -> FERDataset:
    """One split of the configured source: the built-in synthetic data when ``cfg.path`` is
    None, otherwise a dataset on disk in any supported format."""
    if cfg.path is None:
        from .synthetic import make_synthetic

        return make_synthetic(split=split, seed=cfg.subset_seed, image_size=cfg.image_size)
    from .formats import load_split

    return load_split(cfg.path, split, fmt=cfg.format, image_size=cfg.image_size, channels=cfg.channels,
                      cache_dir=cfg.cache_dir)


def build_run_data(cfg, *, need_test: bool = True) -> RunData:


    from .longtail import longtail_subset, parse_longtail, stratified_holdout

    full = open_split(cfg, cfg.train_split)
    val = None
    if cfg.longtail is not None:
        counts = parse_longtail(cfg.longtail, full.class_counts())
        chosen = longtail_subset(full.labels, counts, cfg.subset_seed)
        train = full.subset(chosen)
        train.source = f"{full.source} (long-tailed {cfg.longtail})"
        if cfg.val == "holdout":
            left = torch.ones(len(full), dtype=torch.bool)
            left[chosen] = False
            rest = left.nonzero().flatten()
            rest_counts = torch.bincount(full.labels[rest], minlength=full.num_classes).tolist()
            want = [min(round(cfg.val_fraction * n), r) for n, r in zip(full.class_counts(), rest_counts)]
            val = full.subset(rest[longtail_subset(full.labels[rest], want, cfg.subset_seed + 1)])
    else:
        train = full
        if cfg.val == "holdout":
            keep, hold = stratified_holdout(full.labels, cfg.val_fraction, cfg.subset_seed)
            val, train = full.subset(hold), full.subset(keep)
    if val is not None:
        val.source = f"{full.source} (hold-out {cfg.val_fraction:g})"
    elif cfg.val and cfg.val != "holdout":
        val = open_split(cfg, cfg.val)
    test = open_split(cfg, cfg.test_split) if (need_test and cfg.test_split) else None
    return RunData(train, val, test)
