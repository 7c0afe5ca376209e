"""On-disk decode cache: hits, invalidation, location, robustness, parallel decoding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dicc.data import cache
from dicc.data.formats import load_split


def cache_tree(root: Path, n: int = 4, seed: int = 0) -> list[Path]:
    """root/train/{happy,sad}/img_i.png with random pixels."""
    rng = np.random.default_rng(seed)
    paths = []
    for cls in ("happy", "sad"):
        for i in range(n):
            p = root / "train" / cls / f"img_{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(p)
            paths.append(p)
    return paths


@pytest.fixture(autouse=True)
def cache_private_dir(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.cache/dicc from tests."""
    monkeypatch.setenv("DICC_CACHE_DIR", str(tmp_path_factory.mktemp("env-cache")))


def _no_decoding(*args, **kwargs):
    raise AssertionError("decoded although the cache should have been used")


def test_cache_hit_returns_equal_tensor(tmp_path, monkeypatch):
    data, store = tmp_path / "data", tmp_path / "store"
    cache_tree(data)
    first = load_split(data, "train", cache_dir=store)
    files = list(store.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"
    monkeypatch.setattr(cache, "decode_many", _no_decoding)
    second = load_split(data, "train", cache_dir=store)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    assert not any(p.name.startswith(".tmp") for p in store.iterdir())  # atomic write


def test_changed_file_invalidates_cache(tmp_path, monkeypatch):
    data, store = tmp_path / "data", tmp_path / "store"
    paths = cache_tree(data)
    before = load_split(data, "train", cache_dir=store)
    target = paths[1]
    Image.fromarray(np.full((48, 48), 7, dtype=np.uint8)).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # a new mtime
    after = load_split(data, "train", cache_dir=store)
    assert (after.images[1] == 7).all() and not torch.equal(before.images, after.images)
    assert len(list(store.iterdir())) == 1  # the stale entry was replaced
    # touching alone (same content, new mtime) also gives a fresh entry, never stale data
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    assert torch.equal(load_split(data, "train", cache_dir=store).images, after.images)
    # an added file changes the key too
    Image.fromarray(np.zeros((48, 48), dtype=np.uint8)).save(data / "train" / "sad" / "new.png")
    assert len(load_split(data, "train", cache_dir=store)) == len(paths) + 1
    # a different size is its own entry, kept next to the 48px one
    small = load_split(data, "train", image_size=32, cache_dir=store)
    assert small.images.shape[-1] == 32 and len(list(store.iterdir())) == 2
    monkeypatch.setattr(cache, "decode_many", _no_decoding)
    assert len(load_split(data, "train", cache_dir=store)) == len(paths) + 1


def test_env_var_and_disabled_cache(tmp_path, monkeypatch):
    data, env_dir = tmp_path / "data", tmp_path / "from-env"
    cache_tree(data)
    monkeypatch.setenv("DICC_CACHE_DIR", str(env_dir))
    assert cache.default_cache_dir() == env_dir
    load_split(data, "train")
    assert len(list(env_dir.iterdir())) == 1
    disabled = tmp_path / "disabled-env"
    monkeypatch.setenv("DICC_CACHE_DIR", str(disabled))
    load_split(data, "train", cache_dir=False)
    assert not disabled.exists()


def test_unreadable_cache_entry_is_rebuilt(tmp_path):
    data, store = tmp_path / "data", tmp_path / "store"
    cache_tree(data)
    good = load_split(data, "train", cache_dir=store).images
    entry = next(store.iterdir())
    entry.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        again = load_split(data, "train", cache_dir=store).images
    assert torch.equal(good, again)
    assert torch.load(entry, weights_only=True)["images"].shape == good.shape


def test_parallel_decoding_matches_sequential(tmp_path, monkeypatch):
    paths = cache_tree(tmp_path, n=6)
    sequential = cache.decode_many(paths, 40, 3, workers=1)
    monkeypatch.setattr(cache, "_PARALLEL_MIN_FILES", 1)
    parallel = cache.decode_many(paths, 40, 3, workers=2)
    assert parallel.shape == (12, 3, 40, 40) and torch.equal(sequential, parallel)
    assert cache.decode_many([], 48, 1).shape == (0, 1, 48, 48)
