import os

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
    counts = [100, 10, 50, 1150, 300, 20, 200]  # uses 1150 of the 1200 happy images
    cfg = DataConfig(val="holdout", val_fraction=0.1, longtail=counts, test_split=None)
    data = build_run_data(cfg, need_test=False)
    assert data.train.class_counts() == counts
    assert not (_ids(data.train) & _ids(data.val))
    full = [280, 40, 360, 1200, 600, 200, 900]
    want = [min(round(0.1 * n), n - c) for n, c in zip(full, counts)]
    assert data.val.class_counts() == want  # happy capped at the 50 left over
    again = build_run_data(cfg, need_test=False)
    assert torch.equal(again.train.images, data.train.images) and torch.equal(again.val.images, data.val.images)


# ----------------------------------------------------------------------------- datasets on disk
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from data_helpers import class_tree, fer2013_csv, noise  # noqa: E402
from dicc.data.classes import EMOTIONS, EMOTIONS8  # noqa: E402


def fer_folders(root, skip=()):
    """FER2013's folder layout, 3 Training / 2 PublicTest / 2 PrivateTest images per class."""
    for i, cls in enumerate(EMOTIONS):
        if cls not in skip:
            class_tree(root / "train", {cls: 3}, seed=i, prefix="Training")
        class_tree(root / "test", {cls: 2}, seed=10 + i, prefix="PublicTest")
        class_tree(root / "test", {cls: 2}, seed=20 + i, prefix="PrivateTest")
    return root


def cfg_for(root, tmp_path, **kw):
    return DataConfig(path=str(root), cache_dir=str(tmp_path / "cache"), val_fraction=0.34, **kw)


def test_validation_or_training_images_in_the_test_set_are_refused(tmp_path):
    root = fer_folders(tmp_path / "fer2013")
    # PublicTest is part of test/: selecting checkpoints on it and reporting test/ is refused
    with pytest.raises(
        ValueError,
        match=r"data.val='PublicTest' and data.test_split='test' share 14 of their "
        r"images \(e.g. .*PublicTest_000.png\)",
    ):
        build_run_data(cfg_for(root, tmp_path, val="PublicTest", test_split="test"))
    with pytest.raises(ValueError, match="data.train_split='test' and data.test_split='PrivateTest' share"):
        build_run_data(cfg_for(root, tmp_path, train_split="test", test_split="PrivateTest"))
    with pytest.raises(ValueError, match="unknown split 'val'"):  # no longer an alias of PublicTest
        build_run_data(cfg_for(root, tmp_path, val="val", test_split="PrivateTest"))
    ok = build_run_data(cfg_for(root, tmp_path, val="PublicTest", test_split="PrivateTest"))
    assert len(ok.train) == 21 and len(ok.val) == 14 and len(ok.test) == 14
    assert not set(ok.val.ids) & set(ok.test.ids)


def test_duplicate_pictures_in_different_splits_are_different_samples(tmp_path):
    px = noise(np.random.default_rng(0), 7)
    rows = [(c, px[c], "Training") for c in range(7)] * 2 + [(c, px[c], "PublicTest") for c in range(7)]
    csv = fer2013_csv(tmp_path / "fer2013.csv", rows)  # every test picture is also a training picture
    data = build_run_data(DataConfig(path=str(csv), val_fraction=0.5))
    assert len(data.train) == 7 and len(data.val) == 7 and len(data.test) == 7
    assert all(":" in i and i.split(":")[-1].isdigit() for i in data.test.ids)  # <csv file>:<line>


def test_missing_training_class_folder_is_named_before_training(tmp_path):
    root = fer_folders(tmp_path / "fer2013", skip=("disgust",))
    with pytest.raises(
        ValueError,
        match=r"data.train_split='train': .*train has no images of disgust "
        r"\(label space: angry, disgust",
    ):
        build_run_data(cfg_for(root, tmp_path))


def test_label_space_reaches_the_datasets_and_missing_test_classes_are_listed(tmp_path):
    root = tmp_path / "flat"
    class_tree(root, {c: 6 for c in EMOTIONS8 if c != "fear"} | {"fear": 1})
    data = build_run_data(cfg_for(root, tmp_path, classes="emotions8"))
    assert data.train.class_names == data.val.class_names == data.test.class_names == EMOTIONS8
    assert data.train.class_counts() == [3, 3, 1, 3, 3, 3, 3, 3]  # 6 -> test 1, val 2, train 3
    assert data.missing_classes == {"val": ["fear"], "test": ["fear"]}  # its only image trains
    lt = build_run_data(cfg_for(root, tmp_path, classes="emotions8", longtail="exp:5", val=None))
    assert lt.train.class_counts() == [5, 3, 1, 3, 2, 1, 1, 1]  # floor(5 * 5 ** (-rank / 7)), fear last
    with pytest.raises(ValueError, match="preset 'fer2013-if100' is a table of the seven FER emotions.*contempt"):
        build_run_data(cfg_for(root, tmp_path, classes="emotions8", longtail="fer2013-if100"))
    with pytest.raises(ValueError, match="class 'angry' .* is not in the label space; valid classes are happy, sad"):
        build_run_data(cfg_for(root, tmp_path, classes=["happy", "sad"]))
    class_tree(tmp_path / "three", {"Happiness": 5, "sad": 5, "contemptuous": 5})
    three = build_run_data(cfg_for(tmp_path / "three", tmp_path, classes="happiness, sad,contempt"))
    assert three.train.class_names == ("happy", "sad", "contempt") and three.train.class_counts() == [3, 3, 3]
    with pytest.raises(ValueError, match="data.classes: the built-in synthetic data has the seven emotions"):
        build_run_data(DataConfig(classes="emotions8"))


def _cli_train(root, tmp_path, *sets):
    from dicc.cli import main

    args = ["train", "--data", str(root), "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")]
    for s in ("model.width=4", "data.val_fraction=0.34", f"data.cache_dir={tmp_path / 'cache'}", *sets):
        args += ["--set", s]
    return main(args)


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["data.val=PublicTest"], "data.val='PublicTest' and data.test_split='test' share 14 of their images"),
        (["data.train_split=test", "data.test_split=PrivateTest"], "data.train_split='test' and data.test_split="),
        ([], "train has no images of disgust (label space: angry, disgust"),
    ],
)
def test_cli_refuses_overlapping_splits_and_a_missing_class_in_one_line(tmp_path, capsys, sets, fragment):
    """Through `dicc train`: exit 2, one line naming both settings (or the missing class), no run
    directory written."""
    root = fer_folders(tmp_path / "fer2013", skip=() if sets else ("disgust",))
    assert _cli_train(root, tmp_path, *sets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "run").exists()


def test_cli_names_a_class_absent_from_the_test_split(tmp_path, capsys):
    root = tmp_path / "flat"
    class_tree(root, {c: 6 for c in EMOTIONS if c != "fear"} | {"fear": 1})  # fear's one image trains
    assert _cli_train(root, tmp_path) == 0
    out = capsys.readouterr()
    assert "not in this split: fear" in out.out + out.err


def _split_folders(root, splits=("train", "test", "val")):
    """An image folder dataset: 4 train, 2 test and 2 val images per class (distinct pixels)."""
    for s, split in enumerate(splits):
        for i, cls in enumerate(EMOTIONS):
            class_tree(root / split, {cls: 4 if split == "train" else 2}, seed=100 * s + i, prefix=split)
    return root


@pytest.mark.parametrize(
    "trick, sets, fragment",
    [
        ("ln -s test val", ["data.val=val"], "data.val='val' and data.test_split='test' share 14"),
        ("ln -s train test", [], "data.train_split='train' and data.test_split='test' share 21"),
        ("one val file symlinked to a test file", ["data.val=val"], "val/angry/val_000.png is "),
        ("one val file hard-linked to a test file", ["data.val=val"], "val/angry/val_000.png is "),
    ],
)
def test_symlinks_and_hard_links_cannot_bring_test_images_into_training_or_validation(
    tmp_path, capsys, trick, sets, fragment
):
    """Issue 23: samples are the files they are (device and inode), not the paths that reach them."""
    root = tmp_path / "data"
    if trick == "ln -s test val":
        _split_folders(root, ("train", "test"))
        os.symlink("test", root / "val")
    elif trick == "ln -s train test":
        _split_folders(root, ("train",))
        os.symlink("train", root / "test")
    else:
        _split_folders(root)
        victim, target = root / "val" / "angry" / "val_000.png", root / "test" / "angry" / "test_001.png"
        victim.unlink()
        os.symlink(target, victim) if "symlinked" in trick else os.link(target, victim)
    assert _cli_train(root, tmp_path, *sets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "run").exists()


def test_physical_ids_keep_what_names_no_file(tmp_path):
    from dicc.data.build import physical_ids

    f = tmp_path / "a.csv"
    f.write_text("x")
    os.link(f, tmp_path / "b.csv")
    ids = [str(f), f"{f}:7", f"{tmp_path / 'b.csv'}:7", "synthetic:0:train:3", f"{tmp_path / 'gone.png'}"]
    got = physical_ids(ids)
    st = os.stat(f)
    assert got == [(st.st_dev, st.st_ino), (st.st_dev, st.st_ino, 7), (st.st_dev, st.st_ino, 7), ids[3], ids[4]]
