"""The built-in synthetic FER data: deterministic, right shapes and counts, hidden styles that
are really there, and classes that are learnable but not trivially so."""

import numpy as np
import pytest
import torch

from dicc.data.base import FERDataset
from dicc.data.classes import EMOTIONS
from dicc.data.synthetic import SYNTHETIC_STYLES, make_synthetic, synthetic_counts

SMALL = [12] * 7


def test_same_seed_same_tensors():
    a = make_synthetic("train", seed=3, counts=SMALL)
    b = make_synthetic("train", seed=3, counts=SMALL)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.extras["style"], b.extras["style"])


def test_different_seed_or_split_differs():
    a = make_synthetic("train", seed=0, counts=SMALL)
    b = make_synthetic("train", seed=1, counts=SMALL)
    c = make_synthetic("test", seed=0, counts=SMALL)
    assert not torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    # not the same faces in another order either
    assert (
        a.images.float().mean((1, 2, 3)).sort().values - c.images.float().mean((1, 2, 3)).sort().values
    ).abs().max() > 0


def test_shapes_dtypes_counts():
    ds = make_synthetic("val", seed=0, counts=[3, 1, 4, 1, 5, 9, 2])
    assert isinstance(ds, FERDataset)
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (25, 1, 48, 48)
    assert ds.labels.dtype == torch.int64 and ds.extras["style"].dtype == torch.int64
    assert ds.class_counts() == [3, 1, 4, 1, 5, 9, 2]
    assert ds.images.float().std() > 10  # not blank


def test_counts_as_dict_and_image_size():
    ds = make_synthetic("train", seed=0, counts={"happy": 5, "fear": 2}, image_size=32)
    assert ds.images.shape == (7, 1, 32, 32)
    assert ds.class_counts() == [0, 0, 2, 5, 0, 0, 0]
    with pytest.raises(ValueError, match="unknown class"):
        make_synthetic("train", counts={"joy!": 3})
    with pytest.raises(ValueError, match="7 entries"):
        make_synthetic("train", counts=[1, 2, 3])
    with pytest.raises(ValueError, match="train, val, test"):
        make_synthetic("holdout")


def test_default_counts_long_tailed():
    train, test, val = synthetic_counts("train"), synthetic_counts("test"), synthetic_counts("val")
    assert len(train) == 7 and 3000 <= sum(train) <= 4000
    assert 20 <= max(train) / min(train) <= 50
    assert EMOTIONS[int(np.argmax(train))] == "happy" and EMOTIONS[int(np.argmin(train))] == "disgust"
    assert sorted(train, reverse=True)[1] == train[EMOTIONS.index("neutral")]
    assert len(set(test)) == 1 and len(set(val)) == 1
    # the majority classes (those DICC would split) have at least three styles
    for name in ("happy", "neutral", "sad"):
        assert len(SYNTHETIC_STYLES[name]) >= 3
    assert list(SYNTHETIC_STYLES) == list(EMOTIONS)


def test_styles_present_with_their_shares():
    ds = make_synthetic("test", seed=0, counts=[60] * 7)
    style = ds.extras["style"]
    for c, name in enumerate(EMOTIONS):
        s = style[ds.labels == c]
        k = len(SYNTHETIC_STYLES[name])
        assert int(s.min()) == 0 and int(s.max()) == k - 1
        assert torch.bincount(s, minlength=k).min() >= 5
    one = make_synthetic("test", seed=0, counts=[10] * 7, styles_per_class=1)
    assert int(one.extras["style"].max()) == 0
    some = make_synthetic("test", seed=0, counts=[20] * 7, styles_per_class={"happy": 2})
    assert int(some.extras["style"][some.labels == EMOTIONS.index("happy")].max()) == 1
    assert int(some.extras["style"][some.labels == EMOTIONS.index("neutral")].max()) == 2


def test_default_train_split():
    ds = make_synthetic()  # the default dataset a run without a path uses
    assert ds.class_counts() == synthetic_counts("train")
    assert ds.images.shape[1:] == (1, 48, 48)
    assert torch.bincount(ds.extras["style"][ds.labels == EMOTIONS.index("happy")]).min() > 100


def _pixels(ds):
    """Centre crop, 2x average-pooled, each image standardised (removes global brightness)."""
    x = torch.nn.functional.avg_pool2d(ds.images[:, :, 8:40, 8:40].float(), 2).flatten(1)
    return ((x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)).numpy()


@pytest.fixture(scope="module")
def balanced():
    return make_synthetic("train", seed=11, counts=[240] * 7), make_synthetic("test", seed=11, counts=[80] * 7)


def test_styles_are_visually_distinct(balanced):
    """A linear classifier on pixels tells the styles of a class apart clearly better than
    always guessing the most common style: the hidden sub-classes are real."""
    from sklearn.linear_model import LogisticRegression

    tr, te = balanced
    xtr, xte = _pixels(tr), _pixels(te)
    for name in EMOTIONS:
        c = EMOTIONS.index(name)
        a, b = (tr.labels == c).numpy(), (te.labels == c).numpy()
        ytr, yte = tr.extras["style"].numpy()[a], te.extras["style"].numpy()[b]
        clf = LogisticRegression(C=0.05, max_iter=200).fit(xtr[a], ytr)
        acc = (clf.predict(xte[b]) == yte).mean()
        majority = np.bincount(yte).max() / len(yte)
        assert acc > majority + 0.08, (name, acc, majority)


def test_learnable_but_not_trivial(balanced):
    from sklearn.linear_model import LogisticRegression

    tr, te = balanced
    clf = LogisticRegression(C=0.05, max_iter=200).fit(_pixels(tr), tr.labels.numpy())
    acc = (clf.predict(_pixels(te)) == te.labels.numpy()).mean()
    assert 0.3 < acc < 0.98, acc  # chance is 1/7
