"""Long-tail profiles, the DICC paper's presets, seeded subset draws and the stratified hold-out."""

import math

import pytest
import torch

from dicc.data.classes import EMOTIONS
from dicc.data.longtail import (
    PRESETS,
    longtail_counts,
    longtail_subset,
    parse_longtail,
    stratified_holdout,
)

# FER2013 training split, canonical order (angry, disgust, fear, happy, sad, surprise, neutral)
FER_TRAIN = [3995, 436, 4097, 7215, 4830, 3171, 4965]

# The README's table, in the README's column order
README_COLUMNS = ["happy", "neutral", "sad", "fear", "angry", "surprise", "disgust"]
README_TABLE = {
    "fer2013-if100": [4300, 2997, 1796, 1077, 387, 139, 43],
    "fer2013-if10": [4300, 3488, 2612, 1744, 1308, 872, 430],
    "mmafedb-if100": [15529, 29300, 8497, 644, 1992, 4395, 293],
    "mmafedb-if10": [21275, 29300, 12223, 4859, 6566, 8113, 2930],
    "emotion-domestic-if100": [20000, 9080, 329, 200, 1650, 3260, 802],
    "emotion-domestic-if20": [20000, 10490, 1660, 1000, 2810, 3460, 1812],
}


def _labels(counts):
    return torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])


def test_presets_match_readme_table():
    assert set(PRESETS) == set(README_TABLE)
    for name, row in README_TABLE.items():
        expected = dict(zip(README_COLUMNS, row))
        assert list(PRESETS[name]) == list(EMOTIONS), name  # canonical order
        assert PRESETS[name] == expected, name
        assert parse_longtail(name, FER_TRAIN) == [expected[c] for c in EMOTIONS]


def test_exp_profile_formula():
    counts = longtail_counts("exp", FER_TRAIN, 100)
    ranked = sorted(range(7), key=lambda c: -FER_TRAIN[c])  # happy, neutral, sad, fear, angry, surprise, disgust
    for i, c in enumerate(ranked):
        assert counts[c] == math.floor(7215 * 100 ** (-i / 6) + 1e-9)
    assert counts[EMOTIONS.index("happy")] == 7215 and counts[EMOTIONS.index("disgust")] == 72
    # explicit n_max and order
    order = ["disgust", "angry", "fear", "happy", "sad", "surprise", "neutral"]
    counts = longtail_counts("exp", FER_TRAIN, 10, n_max=400, order=order)
    for i, name in enumerate(order):
        assert counts[EMOTIONS.index(name)] == math.floor(400 * 10 ** (-i / 6) + 1e-9)
    assert parse_longtail("exp:100:4000", FER_TRAIN) == longtail_counts("exp", FER_TRAIN, 100, n_max=4000)
    assert parse_longtail("exp:100", FER_TRAIN) == longtail_counts("exp", FER_TRAIN, 100)


def test_step_profile():
    counts = longtail_counts("step", FER_TRAIN, 10, n_max=1000)
    big = {"happy", "neutral", "sad", "fear"}  # the four largest classes of FER2013
    for c, name in enumerate(EMOTIONS):
        assert counts[c] == (1000 if name in big else 100), name
    assert parse_longtail("step:10", FER_TRAIN) == longtail_counts("step", FER_TRAIN, 10)


def test_profile_errors():
    with pytest.raises(ValueError, match="exp, step"):
        longtail_counts("linear", FER_TRAIN, 10)
    with pytest.raises(ValueError, match=">= 1"):
        longtail_counts("exp", FER_TRAIN, 0.5)
    with pytest.raises(ValueError, match="exactly once"):
        longtail_counts("exp", FER_TRAIN, 10, order=["happy"] * 7)


def test_parse_forms_and_unknown_preset():
    assert parse_longtail("1,2,3,4,5,6,7", FER_TRAIN) == [1, 2, 3, 4, 5, 6, 7]
    assert parse_longtail([7, 6, 5, 4, 3, 2, 1], FER_TRAIN) == [7, 6, 5, 4, 3, 2, 1]
    assert parse_longtail({"happy": 10, "disgust": 1}, FER_TRAIN) == [0, 1, 0, 10, 0, 0, 0]
    assert parse_longtail("FER2013-IF100", FER_TRAIN)[EMOTIONS.index("disgust")] == 43
    with pytest.raises(ValueError) as e:
        parse_longtail("fer2013-if50", FER_TRAIN)
    for name in PRESETS:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="7"):
        parse_longtail("1,2,3", FER_TRAIN)
    with pytest.raises(ValueError, match="unknown class"):
        parse_longtail({"joy!": 3}, FER_TRAIN)


def test_subset_exact_counts_and_seeded():
    labels = _labels([50, 8, 40, 120, 60, 30, 90])[torch.randperm(398, generator=torch.Generator().manual_seed(0))]
    want = [20, 8, 10, 100, 5, 1, 0]
    idx = longtail_subset(labels, want, seed=1)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == len(idx)
    assert torch.bincount(labels[idx], minlength=7).tolist() == want
    assert torch.equal(idx, longtail_subset(labels, want, seed=1))
    assert not torch.equal(idx, longtail_subset(labels, want, seed=2))
    by_name = longtail_subset(labels, dict(zip(EMOTIONS, want)), seed=1)
    assert torch.equal(idx, by_name)


def test_subset_too_few_names_class_and_numbers():
    labels = _labels([50, 8, 40, 120, 60, 30, 90])
    with pytest.raises(ValueError) as e:
        longtail_subset(labels, [20, 43, 10, 100, 5, 1, 0], seed=0)
    msg = str(e.value)
    assert "disgust" in msg and "8" in msg and "43" in msg


def test_stratified_holdout():
    counts = [50, 1, 2, 120, 60, 30, 90]
    labels = _labels(counts)[torch.randperm(353, generator=torch.Generator().manual_seed(0))]
    keep, hold = stratified_holdout(labels, 0.1, seed=0)
    assert len(set(keep.tolist()) & set(hold.tolist())) == 0
    assert sorted(keep.tolist() + hold.tolist()) == list(range(len(labels)))
    assert torch.equal(keep, keep.sort().values) and torch.equal(hold, hold.sort().values)
    held = torch.bincount(labels[hold], minlength=7).tolist()
    assert held == [5, 0, 1, 12, 6, 3, 9]  # round(10%), at least 1 when the class has >= 2
    k2, h2 = stratified_holdout(labels, 0.1, seed=0)
    assert torch.equal(keep, k2) and torch.equal(hold, h2)
    _, h3 = stratified_holdout(labels, 0.1, seed=1)
    assert not torch.equal(hold, h3)
    with pytest.raises(ValueError, match="between 0 and 1"):
        stratified_holdout(labels, 1.5, seed=0)


def test_other_label_spaces_profiles_and_counts_work_presets_refuse():
    from dicc.data.classes import EMOTIONS8

    avail = [400, 50, 300, 900, 500, 200, 600, 80]  # the seven + contempt
    counts = parse_longtail("exp:10", avail, EMOTIONS8)
    ranked = sorted(range(8), key=lambda c: -avail[c])
    assert [counts[c] for c in ranked] == [math.floor(900 * 10 ** (-i / 7) + 1e-9) for i in range(8)]
    assert parse_longtail("step:4", avail, EMOTIONS8) == longtail_counts("step", avail, 4)
    assert parse_longtail({"contempt": 5, "Happiness": 7}, avail, EMOTIONS8) == [0, 0, 0, 7, 0, 0, 0, 5]
    assert parse_longtail("1,2,3,4,5,6,7,8", avail, EMOTIONS8) == [1, 2, 3, 4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match=r"need 8 entries \(angry, .*, contempt\), got 7"):
        parse_longtail("1,2,3,4,5,6,7", avail, EMOTIONS8)
    for space in (EMOTIONS8, ("happy", "sad", "neutral")):
        with pytest.raises(ValueError, match="preset 'fer2013-if10' is a table of the seven FER emotions"):
            parse_longtail("fer2013-if10", [10] * len(space), space)
    with pytest.raises(ValueError, match="preset"):
        parse_longtail("fer2013-if10", [10, 10, 10])  # three unnamed classes
    assert longtail_counts(
        "exp", [9, 3, 1], 9, order=["sad", "happy", "pain"], class_names=("happy", "sad", "pain")
    ) == [3, 9, 1]
    labels = _labels([3, 1, 2])
    with pytest.raises(ValueError, match=r"class 'sad' \(1\) has 1 samples but the long-tail subset asks for 2"):
        longtail_subset(labels, [1, 2, 0], class_names=("happy", "sad", "pain"))
