import torch

from dicc.config import DataConfig
from dicc.data.build import build_run_data


def _ids(ds):
    # the synthetic images are all distinct: use their bytes as identities
    return {bytes(x.flatten().tolist()) for x in ds.images}


def test_holdout_then_no_longtail_is_disjoint_and_stratified():
    cfg = DataConfig(val="holdout", val_fraction=0.2, test_split=None)
    data = build_run_data(cfg, need_test=False)
    assert not (_ids(data.train) & _ids(data.val))
    total = [a + b for a, b in zip(data.train.class_counts(), data.val.class_counts())]
    for n, v in zip(total, data.val.class_counts()):
        assert abs(v - 0.2 * n) <= 1


def test_longtail_counts_are_exact_and_val_comes_from_the_rest():
    counts = [100, 10, 50, 1150, 300, 20, 200]   # uses 1150 of the 1200 happy images
    cfg = DataConfig(val="holdout", val_fraction=0.1, longtail=counts, test_split=None)
    data = build_run_data(cfg, need_test=False)
    assert data.train.class_counts() == counts
    assert not (_ids(data.train) & _ids(data.val))
    full = [280, 40, 360, 1200, 600, 200, 900]
    want = [min(round(0.1 * n), n - c) for n, c in zip(full, counts)]
    assert data.val.class_counts() == want          # happy capped at the 50 left over
    again = build_run_data(cfg, need_test=False)
    assert torch.equal(again.train.images, data.train.images) and torch.equal(again.val.images, data.val.images)
