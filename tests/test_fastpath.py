"""The fast path of issue 24: classify at batch 1 makes one backend call (test-time views stacked
into it), normalises in NumPy to the same bits as training, and prints no warning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicc.data.transforms import normalize, tta_views
from dicc.faces import normalize_batch, tta_pixels
from dicc.predict import Recognizer

from helpers import make_checkpoint


def _faces(n: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, channels, 48, 48), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["none", "flip", "crops"])
@pytest.mark.parametrize("shift", [1, 2])
def test_tta_pixels_are_training_views_in_their_order(mode, shift):
    x = _faces(3, seed=shift)
    want = [v.numpy() for v in tta_views(torch.from_numpy(x), mode, shift=shift)]
    got = tta_pixels(x, mode, shift=shift)
    assert got.shape == (len(want), *x.shape) and got.dtype == np.uint8
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'tiles'"):
        tta_pixels(x, "tiles")


@pytest.mark.parametrize(
    "mean,std,channels", [(0.5, 0.25, 1), (0.45, 0.3, 1), (0.50775, 0.25506, 1), ([0.4, 0.5, 0.6], [0.2, 0.25, 0.3], 3)]
)
def test_numpy_normalisation_is_trainings_bit_for_bit(mean, std, channels):
    x = _faces(4, seed=1, channels=channels)
    x.flags.writeable = False  # as np.asarray of a PIL image: read-only is fine, nothing is written
    got = normalize_batch(x, mean, std)
    want = normalize(torch.from_numpy(x.copy()), mean, std).numpy()
    assert got.dtype == np.float32 and np.array_equal(got, want)


class _Counting:
    """A backend that counts its calls and the rows it was given."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def __call__(self, x):
        self.calls.append(len(x))
        return self.inner(x)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("fast") / "ce.pt", mean=0.45, std=0.3)


@pytest.mark.parametrize("tta,views", [("none", 1), ("flip", 2), ("crops", 10)])
def test_classify_is_one_backend_call_and_the_mean_over_the_views(ckpt, tta, views):
    rec = Recognizer.from_checkpoint(ckpt, device="cpu", tta=tta, batch_size=4)
    rec.backend = _Counting(rec.backend)
    face = _faces(1, seed=2)
    got = rec.classify(face)
    assert rec.backend.calls == [views]  # batch 1: every view in one call
    # the reference: each training view normalised by torch and forwarded alone, probabilities averaged
    inner = rec.backend.inner
    ref = np.mean(
        [inner(normalize(v, rec.mean, rec.std).numpy()) for v in tta_views(torch.from_numpy(face), tta)], axis=0
    )
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert got.shape == (1, 7) and got.dtype == np.float32
    # more faces than batch_size: batch_size faces' views per call, the same numbers
    rec.backend.calls.clear()
    many = _faces(9, seed=3)
    probs = rec.classify(many)
    assert rec.backend.calls == [4 * views, 4 * views, 1 * views]
    np.testing.assert_allclose(probs[5], rec.classify(many[5:6])[0], atol=1e-6)
    assert rec.classify(many[:0]).shape == (0, 7)
