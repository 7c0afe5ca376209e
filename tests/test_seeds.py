"""dicc.seeds: every stream's seed from one rule, pinned to the values runs have always used
(a change here changes every run's numbers, which benchmarks/bit_identity.py would show)."""

import pytest

from dicc.seeds import PURPOSES, derive_seed


def test_derived_seeds_are_the_historical_formulas():
    assert derive_seed(3, "augment", 2) == 3 * 7919 + 2
    assert derive_seed(3, "crt_augment") == 3 * 7919 + 17
    assert derive_seed(3, "order", 5) == 3 * 100_003 + 5
    assert derive_seed(3, "clustering", 5) == 3 + 5
    assert derive_seed(3, "cluster", 6) == 3 * 1009 + 6
    assert derive_seed(3, "subsample") == 4
    assert set(PURPOSES) == {"augment", "crt_augment", "order", "clustering", "cluster", "subsample"}


def test_unknown_purpose_is_named():
    with pytest.raises(ValueError, match="unknown seed purpose 'nope'; valid: augment"):
        derive_seed(0, "nope")
