"""Assemble the train / validation / test datasets a run needs from its ``DataConfig``.

Order of operations (so that nothing reported is tuned on): the validation hold-out is drawn
from the *full* training split first (stratified, seeded), then the long-tailed subset is
drawn from what remains. The test split is only read for the final evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass

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


    train = open_split(cfg, cfg.train_split)
    val = None
    if cfg.val == "holdout":
        from .longtail import stratified_holdout

        keep, hold = stratified_holdout(train.labels, cfg.val_fraction, cfg.subset_seed)
        val, train = train.subset(hold), train.subset(keep)
        val.source = f"{train.source} (hold-out {cfg.val_fraction:g})"
    elif cfg.val:
        val = open_split(cfg, cfg.val)
    if cfg.longtail is not None:
        from .longtail import longtail_subset, parse_longtail

        counts = parse_longtail(cfg.longtail, train.class_counts())
        train = train.subset(longtail_subset(train.labels, counts, cfg.subset_seed))
    test = open_split(cfg, cfg.test_split) if (need_test and cfg.test_split) else None
    return RunData(train, val, test)
