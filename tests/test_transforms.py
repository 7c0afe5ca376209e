import torch

from dicc.config import AugmentConfig
from dicc.data.transforms import BatchAugment, normalize, random_crop, random_erase, random_flip


def _batch(b=16, h=12):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (b, 1, h, h), generator=g, dtype=torch.uint8)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = _batch()
    out = random_crop(x, 3, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3), mode="replicate")
    for i in range(len(x)):  # each output equals some window of its own padded image
        found = any(torch.equal(out[i], padded[i, :, dy : dy + 12, dx : dx + 12]) for dy in range(7) for dx in range(7))
        assert found
    shifts = {tuple(out[i].flatten()[:5].tolist()) for i in range(len(x))}
    assert len(shifts) > 1


def test_flip_flips_about_half():
    x = _batch(200)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(200)]
    kept = [torch.equal(out[i], x[i]) for i in range(200)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 70 < sum(flipped) < 130


def test_erase_zeroes_a_rectangle():
    x = torch.ones(50, 1, 20, 20)
    out = random_erase(x, 1.0, torch.Generator().manual_seed(0))
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert (zeros > 0).all() and (zeros < 400).all()


def test_augment_is_seeded_and_normalises():
    cfg = AugmentConfig(brightness=0.2, contrast=0.2, erase=0.3)
    x = _batch()
    a, b = BatchAugment(cfg, seed=3)(x), BatchAugment(cfg, seed=3)(x)
    assert torch.equal(a, b) and a.dtype == torch.float32
    c = BatchAugment(cfg, seed=4)(x)
    assert not torch.equal(a, c)
    plain = normalize(x, 0.5, 0.25)
    assert torch.allclose(plain, (x.float() / 255 - 0.5) / 0.25)
