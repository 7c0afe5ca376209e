"""Streamed datasets: a corrupt image is one clear line naming the file, with or without
worker processes, through the loader and through ``dicc train``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_helpers import class_tree, write_image
from dicc.data.formats import load_split
from dicc.data.loader import iterate_batches


@pytest.fixture(autouse=True)
def loader_private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DICC_CACHE_DIR", str(tmp_path_factory.mktemp("dicc-cache")))


def corrupt_folder(root):
    """root/train/{happy,sad}/*.png at 80x80 (streamed at 72 px), one of them corrupt."""
    class_tree(root / "train", {"happy": 6, "sad": 6}, size=80)
    bad = root / "train" / "sad" / "img_003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return bad


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_in_a_worker_is_one_line_naming_the_file(tmp_path, workers):
    bad = corrupt_folder(tmp_path)
    ds = load_split(tmp_path, "train", image_size=72, classes=["happy", "sad"])
    assert ds.paths is not None
    good = list(iterate_batches(ds, torch.arange(6), 3, workers=workers))  # the happy images decode
    assert [len(b[0]) for b in good] == [3, 3] and good[0][0].shape == (3, 1, 72, 72)
    with pytest.raises(ValueError) as e:
        list(iterate_batches(ds, torch.arange(len(ds)), 4, workers=workers))
    msg = str(e.value)
    assert msg.startswith(f"{bad}: cannot decode image: ") and "\n" not in msg
    assert "DataLoader" not in msg and "Traceback" not in msg


def test_workers_give_the_same_batches(tmp_path):
    class_tree(tmp_path / "train", {"happy": 5, "sad": 4}, size=80)
    write_image(tmp_path / "train" / "sad" / "rgb.jpg", np.full((90, 70, 3), 200, np.uint8))
    ds = load_split(tmp_path, "train", image_size=72, channels=3, classes=["happy", "sad"])
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    a = list(iterate_batches(ds, order, 4, workers=0))
    b = list(iterate_batches(ds, order, 4, workers=2))
    assert len(a) == len(b) == 3
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)


def test_cli_train_reports_a_corrupt_streamed_image_in_one_line(tmp_path, capsys):
    from dicc.cli import main

    bad = corrupt_folder(tmp_path / "data")
    rc = main(
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--no-progress",
            "--set",
            "data.workers=1",
            "--set",
            "data.image_size=72",
            "--set",
            "data.classes=[happy, sad]",
            "--set",
            "data.val=null",
            "--set",
            "data.test_split=null",
            "--set",
            "model.width=4",
            "--set",
            "train.batch_size=4",
            "--set",
            "train.threads=1",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(f"dicc train: error: {bad}: cannot decode image: ")
