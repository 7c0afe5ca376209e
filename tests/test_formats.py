"""Dataset readers: layouts, label mapping, CSV/folder agreement, detection and errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dicc.data.classes import EMOTIONS
from dicc.data.decode import decode_image
from dicc.data.formats import FORMATS, detect_format, list_splits, load_split
from dicc.data.info import data_info, format_info, save_count_chart


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def formats_private_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.cache/dicc from tests."""
    monkeypatch.setenv("DICC_CACHE_DIR", str(tmp_path_factory.mktemp("dicc-cache")))


def formats_write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB").save(path)
    return path


def formats_noise(rng: np.random.Generator, n: int, size: int = 48) -> np.ndarray:
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8)


def formats_class_tree(
    root: Path, counts: dict[str, int], seed: int = 0, prefix: str = "img", ext: str = ".png"
) -> dict[str, np.ndarray]:
    """root/<class folder>/<prefix>_<i>.png for each folder; returns the pixels per folder."""
    rng = np.random.default_rng(seed)
    out = {}
    for folder, n in counts.items():
        out[folder] = formats_noise(rng, n)
        for i, px in enumerate(out[folder]):
            formats_write_png(root / folder / f"{prefix}_{i:03d}{ext}", px)
    return out


def formats_csv(path: Path, rows: list[tuple[int, np.ndarray, str]], icml: bool = False) -> Path:
    """A FER2013 CSV (``icml=True``: the icml_face_data.csv header with leading spaces)."""
    with open(path, "w") as f:
        f.write("emotion, Usage, pixels\n" if icml else "emotion,pixels,Usage\n")
        for label, px, usage in rows:
            text = " ".join(map(str, px.reshape(-1).tolist()))
            f.write(f"{label},{usage},{text}\n" if icml else f"{label},{text},{usage}\n")
    return path


# ----------------------------------------------------------------------------- image folders
def test_imagefolder_aliases_and_order(tmp_path):
    px = formats_class_tree(tmp_path / "train", {"Happiness": 3, "anger": 2, "fearful": 1})
    formats_class_tree(tmp_path / "valid", {"happy": 1, "neutral": 2}, seed=1)
    assert detect_format(tmp_path) == "imagefolder"
    assert list_splits(tmp_path) == ["train", "valid"]
    ds = load_split(tmp_path, "train", cache_dir=False)
    angry, fear, happy = EMOTIONS.index("angry"), EMOTIONS.index("fear"), EMOTIONS.index("happy")
    assert ds.labels.tolist() == [angry] * 2 + [fear] + [happy] * 3  # class order, then name
    assert ds.images.shape == (6, 1, 48, 48) and ds.images.dtype == torch.uint8
    expected = np.concatenate([px["anger"], px["fearful"], px["Happiness"]])
    assert torch.equal(ds.images[:, 0], torch.from_numpy(expected))
    assert str(tmp_path) in ds.source and "train" in ds.source
    # split synonyms: "val" finds "valid", "training" finds "train"
    assert load_split(tmp_path, "val", cache_dir=False).class_counts() == [0, 0, 0, 1, 0, 0, 2]
    assert len(load_split(tmp_path, "Training", cache_dir=False)) == 6


def test_imagefolder_without_split_level(tmp_path):
    formats_class_tree(tmp_path, {"sad": 2, "Surprised": 1})
    assert detect_format(tmp_path) == "imagefolder"
    assert list_splits(tmp_path) == ["all", "train", "test"]  # train/test derived from all
    ds = load_split(tmp_path, "all", cache_dir=False)
    assert ds.class_counts() == [0, 0, 0, 0, 2, 1, 0]


def test_recursive_search_and_non_images_ignored(tmp_path):
    formats_class_tree(tmp_path / "train", {"happy": 1})
    deep = tmp_path / "train" / "happy" / "sub" / "deep.png"
    formats_write_png(deep, np.zeros((48, 48), np.uint8))
    (tmp_path / "train" / "happy" / "notes.txt").write_text("not an image")
    assert len(load_split(tmp_path, "train", cache_dir=False)) == 2


def test_streaming_for_large_images(tmp_path):
    formats_class_tree(tmp_path / "train", {"happy": 2, "sad": 1})
    ds = load_split(tmp_path, "train", image_size=96, channels=3)
    assert ds.images is None and len(ds.paths) == 3
    assert ds.get_batch([0, 2]).shape == (2, 3, 96, 96)
    forced = load_split(tmp_path, "train", image_size=96, in_memory=True, cache_dir=False)
    assert forced.images.shape == (3, 1, 96, 96)
    small = load_split(tmp_path, "train", in_memory=False)
    assert small.paths is not None
    assert torch.equal(small.get_batch(range(3)), load_split(tmp_path, "train", cache_dir=False).images)


# ----------------------------------------------------------------------------- FER2013 CSV
@pytest.mark.parametrize("icml", [False, True])
def test_csv_splits_by_usage(tmp_path, icml):
    rng = np.random.default_rng(0)
    px = formats_noise(rng, 6)
    usages = ["Training", "Training", "PublicTest", "PrivateTest", "Training", "PublicTest"]
    labels = [3, 0, 6, 1, 5, 2]
    name = "icml_face_data.csv" if icml else "fer2013.csv"
    f = formats_csv(tmp_path / name, list(zip(labels, px, usages)), icml=icml)
    for path in (f, tmp_path):  # the file, or the folder holding it
        assert detect_format(path) == "fer2013_csv"
        assert list_splits(path) == ["Training", "PublicTest", "PrivateTest"]
    train = load_split(f, "train")
    assert train.labels.tolist() == [3, 0, 5]
    assert torch.equal(train.images[:, 0], torch.from_numpy(px[[0, 1, 4]]))
    assert load_split(f, "PublicTest").labels.tolist() == [6, 2]
    assert load_split(f, "test").labels.tolist() == [6, 2]
    for val in ("val", "valid", "validation"):  # no alias makes a test split a validation split
        with pytest.raises(ValueError, match=f"unknown split '{val}'"):
            load_split(f, val)
    assert load_split(f, "private").labels.tolist() == [1]
    rgb = load_split(f, "train", image_size=24, channels=3)
    assert rgb.images.shape == (3, 3, 24, 24)
    assert torch.equal(rgb.images[:, 0], rgb.images[:, 2])


def test_csv_and_folders_give_identical_tensors(tmp_path):
    """The same pixels through the CSV reader and the image-folder reader agree exactly."""
    rng = np.random.default_rng(7)
    folders = tmp_path / "fer2013"
    rows = []
    for split_dir, usage, n in (("train", "Training", 3), ("test", "PublicTest", 2), ("test", "PrivateTest", 1)):
        for label, cls in enumerate(EMOTIONS):  # class order, then file name = reader order
            for i, px in enumerate(formats_noise(rng, n)):
                formats_write_png(folders / split_dir / cls / f"{usage}_{i:04d}.png", px)
                rows.append((label, px, usage))
    csv = formats_csv(tmp_path / "fer2013.csv", rows)
    assert detect_format(folders) == "fer2013_folders"
    assert list_splits(folders) == ["train", "test", "PublicTest", "PrivateTest"]
    for split in ("train", "PublicTest", "PrivateTest"):
        for channels in (1, 3):
            a = load_split(csv, split, channels=channels)
            b = load_split(folders, split, channels=channels, cache_dir=tmp_path / "cache")
            assert torch.equal(a.labels, b.labels), split
            assert torch.equal(a.images, b.images), split
    test = load_split(folders, "test", cache_dir=False)
    assert len(test) == 7 * 3 and test.class_counts() == [3] * 7


def test_fer2013_folders_prefix_split_must_select_files(tmp_path):
    formats_class_tree(tmp_path / "train", {"happy": 2}, prefix="Training")
    formats_class_tree(tmp_path / "test", {"happy": 2}, prefix="PublicTest")
    assert detect_format(tmp_path) == "fer2013_folders"
    assert list_splits(tmp_path) == ["train", "test", "PublicTest"]
    assert len(load_split(tmp_path, "public", cache_dir=False)) == 2
    with pytest.raises(ValueError, match="unknown split 'val'"):
        load_split(tmp_path, "val", cache_dir=False)
    with pytest.raises(ValueError, match="PrivateTest"):
        load_split(tmp_path, "PrivateTest", fmt="fer2013_folders", cache_dir=False)


# ----------------------------------------------------------------------------- RAF-DB
@pytest.mark.parametrize("list_at_root", [False, True])
def test_rafdb_label_mapping(tmp_path, list_at_root):
    rng = np.random.default_rng(3)
    names = {
        "train_00001.jpg": 1,
        "train_00002.jpg": 4,
        "train_00003.jpg": 6,
        "train_00004.jpg": 7,
        "test_0001.jpg": 3,
        "test_0002.jpg": 2,
        "test_0003.jpg": 5,
    }
    label_file = tmp_path / ("list_patition_label.txt" if list_at_root else "EmoLabel/list_patition_label.txt")
    label_file.parent.mkdir(parents=True, exist_ok=True)
    label_file.write_text("".join(f"{n} {lab}\n" for n, lab in names.items()))
    for n in names:
        stem = n.rsplit(".", 1)[0]
        rgb = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
        path = tmp_path / "Image" / "aligned" / f"{stem}_aligned.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path, quality=95)
    assert detect_format(tmp_path) == "rafdb"
    assert list_splits(tmp_path) == ["train", "test"]
    train = load_split(tmp_path, "train", cache_dir=False)
    idx = EMOTIONS.index
    # 1 surprise, 4 happiness, 6 anger, 7 neutral -> sorted by canonical class
    expected = [idx("surprise"), idx("happy"), idx("angry"), idx("neutral")]
    assert train.labels.tolist() == sorted(expected)
    test = load_split(tmp_path, "test", image_size=100, channels=3, in_memory=False)
    assert sorted(test.labels.tolist()) == sorted([idx("disgust"), idx("fear"), idx("sad")])
    assert test.get_batch([0]).shape == (1, 3, 100, 100)
    os.remove(tmp_path / "Image" / "aligned" / "test_0002_aligned.jpg")
    with pytest.raises(ValueError, match="test_0002"):
        load_split(tmp_path, "test", cache_dir=False)


# ----------------------------------------------------------------------------- detection, info
def test_detect_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        detect_format(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_split(tmp_path / "nowhere", "train")
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "misc").mkdir()
    with pytest.raises(ValueError, match="looked for"):
        detect_format(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_split(tmp_path, "train", fmt="nope")
    assert list(FORMATS) == [
        "ferplus",
        "affectnet",
        "fer2013_csv",
        "rafdb",
        "fer2013_folders",
        "imagefolder",
    ]  # the detection order
    assert all(f.description for f in FORMATS.values())


def test_data_info_counts_without_decoding(tmp_path):
    formats_class_tree(tmp_path / "train", {"happy": 3, "disgust": 1})
    formats_class_tree(tmp_path / "test", {"happy": 1, "fear": 1})
    (tmp_path / "train" / "happy" / "img_000.png").write_bytes(b"corrupt")  # never decoded
    info = data_info(tmp_path)
    assert info["format"] == "imagefolder" and info["classes"] == list(EMOTIONS)
    assert info["splits"]["train"]["counts"]["happy"] == 3
    assert info["splits"]["train"]["total"] == 4 and info["splits"]["train"]["imbalance"] is None
    assert list(data_info(tmp_path, "test")["splits"]) == ["test"]
    text = format_info(info)
    assert "disgust" in text and "train" in text
    out = save_count_chart(info, tmp_path / "chart" / "counts.png")
    assert out.stat().st_size > 0


# ----------------------------------------------------------------------------- bad input
def test_corrupt_image_names_the_file(tmp_path):
    formats_class_tree(tmp_path / "train", {"happy": 2})
    bad = tmp_path / "train" / "happy" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg.*cannot decode image"):
        load_split(tmp_path, "train", cache_dir=False)
    with pytest.raises(ValueError, match="broken.jpg"):
        decode_image(bad, 48, 1)
    streamed = load_split(tmp_path, "train", image_size=96)
    with pytest.raises(ValueError, match="broken.jpg"):
        streamed.get_batch(range(len(streamed)))


def test_csv_errors_name_file_and_problem(tmp_path):
    missing = tmp_path / "a.csv"
    missing.write_text("emotion,Usage\n0,Training\n")
    with pytest.raises(ValueError, match=r"a\.csv.*missing column.*pixels"):
        load_split(missing, "train", fmt="fer2013_csv")
    px = formats_noise(np.random.default_rng(0), 3)
    short = tmp_path / "b.csv"
    formats_csv(short, [(0, px[0], "Training"), (1, px[1, :40], "Training")])
    with pytest.raises(ValueError, match=r"b\.csv: line 3: expected 2304 pixel values"):
        load_split(short, "train")
    label = tmp_path / "c.csv"
    formats_csv(label, [(0, px[0], "Training"), (7, px[1], "Training")])
    with pytest.raises(ValueError, match=r"c\.csv: line 3: emotion label '7' out of range"):
        load_split(label, "train")
    for bad in ("300", "x"):
        value = tmp_path / "d.csv"
        value.write_text(
            "emotion,pixels,Usage\n"
            + f"0,{' '.join(['1'] * 2304)},Training\n"
            + f"0,{' '.join(['1'] * 2303 + [bad])},Training\n"
        )
        with pytest.raises(ValueError, match=r"d\.csv: line 3: pixel values must be integers"):
            load_split(value, "train")
    ok = formats_csv(tmp_path / "e.csv", [(0, px[0], "Training")])
    with pytest.raises(ValueError, match="valid splits are Training"):
        load_split(ok, "PrivateTest")


def test_class_folder_errors(tmp_path):
    formats_class_tree(tmp_path / "train", {"happy": 1, "contempt": 1})
    with pytest.raises(ValueError, match="contempt"):
        load_split(tmp_path, "train", cache_dir=False)
    other = tmp_path / "other"
    formats_class_tree(other / "train", {"happy": 1})
    (other / "train" / "sad").mkdir()
    with pytest.raises(ValueError, match=r"sad.*empty"):
        load_split(other, "train", cache_dir=False)


def test_unknown_split_lists_valid_ones(tmp_path):
    formats_class_tree(tmp_path / "train", {"happy": 1})
    formats_class_tree(tmp_path / "test", {"happy": 1})
    with pytest.raises(ValueError, match="unknown split 'holdout'.*test, train"):
        load_split(tmp_path, "holdout")


# ----------------------------------------------------------------------------- label spaces, identities
def test_integer_labels_outside_the_label_space_are_dropped_and_counted(tmp_path):
    px = formats_noise(np.random.default_rng(1), 5)
    f = formats_csv(tmp_path / "fer2013.csv", list(zip([3, 4, 6, 3, 0], px, ["Training"] * 5)))
    ds = load_split(f, "train", classes=["neutral", "happy"])
    assert ds.class_names == ("neutral", "happy") and ds.labels.tolist() == [1, 0, 1]
    assert torch.equal(ds.images[:, 0], torch.from_numpy(px[[0, 2, 3]]))
    assert ds.dropped == {"sad": 1, "angry": 1}
    assert ds.ids == [f"{os.path.abspath(f)}:{n}" for n in (2, 4, 5)]  # <csv file>:<line>
    sub = ds.subset([2, 0])
    assert sub.ids == [ds.ids[2], ds.ids[0]] and sub.class_names == ds.class_names
    info = data_info(f, classes=["neutral", "happy"])
    assert info["classes"] == ["neutral", "happy"]
    assert info["splits"]["Training"]["dropped"] == {"angry": 1, "sad": 1}


def test_data_info_names_missing_classes(tmp_path):
    formats_class_tree(tmp_path / "train", {"happy": 2, "sad": 1})
    info = data_info(tmp_path)
    assert info["splits"]["train"]["missing"] == ["angry", "disgust", "fear", "surprise", "neutral"]
    assert "train: no images of angry, disgust, fear, surprise, neutral" in format_info(info)


def test_rafdb_has_no_validation_alias(tmp_path):
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 4\ntest_0001.jpg 1\n")
    for name in ("train_00001_aligned.jpg", "test_0001_aligned.jpg"):
        formats_write_png(tmp_path / "Image" / "aligned" / name, np.zeros((48, 48), np.uint8))
    assert load_split(tmp_path, "testing", cache_dir=False).labels.tolist() == [EMOTIONS.index("surprise")]
    with pytest.raises(ValueError, match="unknown split 'val'; valid splits are train, test"):
        load_split(tmp_path, "val", cache_dir=False)
    ds = load_split(tmp_path, "train", image_size=64, channels=3, cache_dir=False)
    assert ds.images.shape == (1, 3, 64, 64) and ds.ids == [str((tmp_path / "Image/aligned/train_00001_aligned.jpg"))]
