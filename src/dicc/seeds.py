"""Every random stream's seed, from the run's seeds by one rule: :func:`derive_seed`.

A stream is named by its purpose; its seed is ``base * multiplier + offset + index`` with the
purpose's multiplier and offset below (the multipliers are primes, so the streams of nearby
bases and indices do not meet). The values are those dicc has always drawn with: changing one
changes every run's numbers.
"""

from __future__ import annotations

#: purpose -> (multiplier, offset)
PURPOSES: dict[str, tuple[int, int]] = {
    "augment": (7919, 0),  # a training run's batch augmentation; index = the rank
    "crt_augment": (7919, 17),  # the augmented feature sets of a cRT stage (dicc.rebalance)
    "order": (100_003, 0),  # the sample order of an epoch; index = the epoch
    "clustering": (1, 0),  # DICC's clustering at an epoch (method.options.seed); index = the epoch
    "cluster": (1009, 0),  # the k-means of one class within a clustering; index = the class
    "subsample": (1, 1),  # a sample drawn beside the stream seeded with ``base`` itself
}


def derive_seed(base: int, purpose: str, index: int = 0) -> int:
    """The seed of the stream ``purpose`` (a key of :data:`PURPOSES`) from ``base``."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; valid: {', '.join(PURPOSES)}")
    multiplier, offset = PURPOSES[purpose]
    return int(base) * multiplier + offset + int(index)


__all__ = ["PURPOSES", "derive_seed"]
