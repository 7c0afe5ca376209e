"""Dataset readers (dicc.data.formats): layouts, label mapping, CSV/folder agreement, detection and
errors; AffectNet, FERPlus, CK+ and flat class folders, each on a tiny generated fixture."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_helpers import class_tree, fer2013_csv, noise, write_image
from dicc.data.classes import EMOTIONS, EMOTIONS8
from dicc.data.decode import decode_image
from dicc.data.formats import FORMATS, detect_format, list_splits, load_split, split_summary
from dicc.data.formats.ferplus import target_distribution
from dicc.data.info import data_info, format_info, save_count_chart

I7, I8 = EMOTIONS.index, EMOTIONS8.index


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


# ----------------------------------------------------------------------------- AffectNet
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
)


def affectnet_tree(root: Path, rows: dict[str, list[int]], lists_dir: str = "") -> dict[str, list[str]]:
    """Manually_Annotated_Images/<sub>/<name>.jpg (RGB, 80x64) + <lists_dir>/{training,validation}.csv."""
    rng = np.random.default_rng(0)
    files = {}
    for split, codes in rows.items():
        csv = root / lists_dir / ("training.csv" if split == "train" else "validation.csv")
        csv.parent.mkdir(parents=True, exist_ok=True)
        lines, files[split] = [AFFECTNET_HEADER], []
        for i, code in enumerate(codes):
            rel = f"{100 + i % 3}/{split}{i:04d}.jpg"
            write_image(root / "Manually_Annotated_Images" / rel, rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
            landmarks = '"1.5;2.5;3.5"' if i % 2 else "1.5;2.5;3.5"  # quoted or not: both occur
            lines.append(f"{rel},10,12,50,40,{landmarks},{code},0.25,-0.5\n")
            files[split].append(rel)
        csv.write_text("".join(lines))
    return files


def test_affectnet_codes_label_space_and_dropped_counts(tmp_path):
    # 0 neutral, 1 happy, 6 anger, 7 contempt, 8 none, 9 uncertain, 10 non-face
    codes = [1, 0, 6, 7, 8, 9, 10, 1]
    affectnet_tree(tmp_path, {"train": codes, "test": [3, 5, 4]}, lists_dir="Manually_Annotated_file_lists")
    assert detect_format(tmp_path) == "affectnet"
    assert list_splits(tmp_path) == ["train", "test"]
    ds = load_split(tmp_path, "train", image_size=32, channels=3, cache_dir=False)
    assert ds.class_names == EMOTIONS
    assert ds.labels.tolist() == [I7("angry"), I7("happy"), I7("happy"), I7("neutral")]  # class order
    assert ds.images.shape == (4, 3, 32, 32)
    assert ds.dropped == {"contempt": 1, "none": 1, "uncertain": 1, "non-face": 1}
    assert all(os.path.isabs(i) and i.endswith(".jpg") for i in ds.ids)
    eight = load_split(tmp_path, "train", classes="emotions8", in_memory=False, image_size=96, channels=3)
    assert eight.class_names == EMOTIONS8 and eight.class_counts()[I8("contempt")] == 1
    assert eight.dropped == {"none": 1, "uncertain": 1, "non-face": 1}
    assert eight.paths is not None and eight.get_batch([0]).shape == (1, 3, 96, 96)
    test = load_split(tmp_path, "test", cache_dir=False)  # test = validation.csv
    assert sorted(test.labels.tolist()) == sorted([I7("surprise"), I7("disgust"), I7("fear")])
    info = data_info(tmp_path)
    assert info["splits"]["train"]["dropped"] == {"contempt": 1, "non-face": 1, "none": 1, "uncertain": 1}
    assert "left out 4 (contempt 1, non-face 1, none 1, uncertain 1)" in format_info(info)


def test_affectnet_bad_rows_name_file_and_line(tmp_path):
    affectnet_tree(tmp_path, {"train": [1, 2]})
    csv = tmp_path / "training.csv"
    csv.write_text(csv.read_text() + '100/x.jpg,1,1,1,1,"1;2",11,0,0\n')
    with pytest.raises(ValueError, match=r"training\.csv: line 4: expression '11' out of range"):
        load_split(tmp_path, "train")
    affectnet_tree(tmp_path, {"train": [1, 2]})
    os.remove(tmp_path / "Manually_Annotated_Images" / "101" / "train0001.jpg")
    with pytest.raises(ValueError, match=r"train0001\.jpg: image listed in .*training\.csv not found"):
        load_split(tmp_path, "train", image_size=96)
    assert split_summary(tmp_path, "train").labels.tolist() == [I7("happy"), I7("sad")]  # counting reads no image


# ----------------------------------------------------------------------------- FERPlus
def test_ferplus_vote_rules():
    # majority: single votes removed, then more than half of what is left
    assert target_distribution([6, 0, 1, 1, 0, 0, 0, 0, 2, 0], "majority") == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert target_distribution([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "majority") is None  # 4 of 9: no majority
    assert target_distribution([2, 0, 0, 0, 0, 0, 0, 0, 8, 0], "majority")[8] == 1  # unknown wins
    # crossentropy: the largest counts up to 75 % of the votes, at most three emotions
    assert target_distribution([0, 0, 6, 0, 0, 0, 4, 0, 0, 0], "crossentropy") == [0, 0, 0.6, 0, 0, 0, 0.4, 0, 0, 0]
    assert target_distribution([4, 0, 0, 0, 0, 0, 0, 0, 4, 2], "crossentropy") is None  # unknown ties: 40 %
    assert target_distribution([5, 0, 3, 2, 0, 0, 0, 0, 0, 0], "probability") == [5 / 8, 0, 3 / 8, 0, 0, 0, 0, 0, 0, 0]
    assert target_distribution([4, 0, 3, 3, 0, 0, 0, 0, 0, 0], "crossentropy") == [0.4, 0, 0.3, 0.3, 0, 0, 0, 0, 0, 0]
    # multi-target: every emotion with at least 30 % of the votes
    assert target_distribution([5, 0, 0, 0, 3, 2, 0, 0, 0, 0], "multi_target") == [5 / 8, 0, 0, 0, 3 / 8, 0, 0, 0, 0, 0]


FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
# (Usage, image name, votes): FERPlus's neutral, happiness, surprise, sadness, anger, disgust, fear,
# contempt, unknown, NF
FERPLUS_ROWS = [
    ("Training", "fer0000000.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]),  # happy
    ("Training", "fer0000001.png", [0, 0, 6, 0, 0, 0, 4, 0, 0, 0]),  # surprise (soft: .6 / .4 fear)
    ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),  # unnamed: excluded by FERPlus
    ("Training", "fer0000003.png", [2, 0, 0, 0, 0, 0, 0, 8, 0, 0]),  # contempt
    ("PublicTest", "fer0000004.png", [0, 0, 0, 0, 0, 0, 0, 0, 2, 8]),  # not a face
    (
        "Training",
        "fer0000005.png",
        [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],
    ),  # no majority (crossentropy: neutral 4/7, anger 3/7)
    ("PrivateTest", "fer0000006.png", [0, 0, 0, 9, 1, 0, 0, 0, 0, 0]),  # sad
]


def ferplus_csv_tree(root: Path) -> np.ndarray:
    px = noise(np.random.default_rng(5), len(FERPLUS_ROWS))
    fer2013_csv(root / "fer2013.csv", [(3, p, usage) for p, (usage, _, _) in zip(px, FERPLUS_ROWS)])
    (root / "fer2013new.csv").write_text(
        FERPLUS_HEADER + "".join(f"{u},{n},{','.join(map(str, v))}\n" for u, n, v in FERPLUS_ROWS)
    )
    return px


def test_ferplus_csv_majority_and_soft_labels(tmp_path):
    px = ferplus_csv_tree(tmp_path)
    assert detect_format(tmp_path) == "ferplus"  # before fer2013_csv: the folder has both files
    assert detect_format(tmp_path / "fer2013new.csv") == "ferplus"
    assert list_splits(tmp_path) == ["Training", "PublicTest", "PrivateTest"]
    ds = load_split(tmp_path, "train")
    assert ds.labels.tolist() == [I7("happy"), I7("surprise")]
    assert torch.equal(ds.images[:, 0], torch.from_numpy(px[[0, 1]]))
    assert ds.dropped == {"contempt": 1, "unnamed": 1, "no agreement": 1}
    plain = load_split(tmp_path / "fer2013.csv", "Training", fmt="fer2013_csv")
    assert ds.ids == plain.ids[:2]  # the same samples as FER2013's rows
    eight = load_split(tmp_path, "Training", classes="emotions8")
    assert eight.labels.tolist() == [I8("happy"), I8("surprise"), I8("contempt")]
    soft = load_split(tmp_path, "train", fmt="ferplus:mode=crossentropy,soft_labels=true")
    assert soft.labels.tolist() == [I7("happy"), I7("surprise"), I7("neutral")]
    s = soft.extras["soft_labels"]
    assert s.shape == (3, 7) and s.dtype == torch.float32
    assert torch.allclose(s.sum(1), torch.ones(3))
    assert s[1, I7("surprise")].item() == pytest.approx(0.6) and s[1, I7("fear")].item() == pytest.approx(0.4)
    assert s[2, I7("neutral")].item() == pytest.approx(4 / 7) and s[2, I7("angry")].item() == pytest.approx(3 / 7)
    assert "soft_labels" not in ds.extras
    assert load_split(tmp_path, "test").labels.tolist() == [I7("sad")]  # test = PrivateTest (FER2013Test)
    assert load_split(tmp_path, "val", options={"mode": "majority"}).dropped == {"not a face": 1}
    assert data_info(tmp_path, "train")["splits"]["Training"]["dropped"] == ds.dropped


def test_ferplus_errors(tmp_path):
    ferplus_csv_tree(tmp_path)
    with pytest.raises(ValueError, match="unknown option 'modes'.*valid options: mode"):
        load_split(tmp_path, "train", fmt="ferplus:modes=majority")
    with pytest.raises(ValueError, match="ferplus:mode='vote'.*majority, crossentropy"):
        load_split(tmp_path, "train", fmt="ferplus:mode=vote")
    new = tmp_path / "fer2013new.csv"
    new.write_text(new.read_text().replace("PrivateTest,fer0000006", "Training,fer0000006"))
    with pytest.raises(ValueError, match="do not line up: data row 7"):
        load_split(tmp_path, "train")
    new.write_text(FERPLUS_HEADER + "Training,fer0000000.png,1,2,x,0,0,0,0,0,0,0\n")
    with pytest.raises(ValueError, match=r"fer2013new\.csv: line 2: vote counts must be numbers"):
        load_split(tmp_path, "train")


def test_ferplus_generated_folders(tmp_path):
    rng = np.random.default_rng(1)
    labels = {
        "FER2013Train": [
            ("fer0000000.png", [0, 0, 0, 9, 1, 0, 0, 0, 0, 0]),  # sad
            ("fer0000001.png", [0, 7, 3, 0, 0, 0, 0, 0, 0, 0]),  # happy (.7/.3)
            ("fer0000002.png", [0, 0, 0, 0, 0, 0, 0, 0, 10, 0]),
        ],  # unknown
        "FER2013Test": [("fer0000009.png", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
    }
    for folder, rows in labels.items():
        for name, _ in rows:
            write_image(tmp_path / "data" / folder / name, noise(rng, 1)[0])
        (tmp_path / "data" / folder / "label.csv").write_text(
            "".join(f"{n},{','.join(map(str, v))}\n" for n, v in rows)
        )
    assert detect_format(tmp_path) == "ferplus"
    assert list_splits(tmp_path) == ["Training", "PrivateTest"]
    ds = load_split(tmp_path, "train", fmt="ferplus:mode=crossentropy,soft_labels=1", cache_dir=False)
    assert ds.labels.tolist() == [I7("happy"), I7("sad")]
    assert [Path(i).name for i in ds.ids] == ["fer0000001.png", "fer0000000.png"]
    assert ds.extras["soft_labels"][0, I7("happy")].item() == pytest.approx(0.7)
    assert ds.extras["soft_labels"][0, I7("surprise")].item() == pytest.approx(0.3)
    assert ds.extras["soft_labels"][1, I7("sad")].item() == 1.0  # the single anger vote is an outlier
    assert ds.dropped == {"unknown": 1}
    streamed = load_split(tmp_path, "test", image_size=96)
    assert streamed.paths is not None and streamed.labels.tolist() == [I7("neutral")]
    with pytest.raises(ValueError, match="unknown split 'val'.*Training, PrivateTest"):
        load_split(tmp_path, "val")


# ----------------------------------------------------------------------------- CK+ and flat folders
CK_FOLDERS = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")


def ck_tree(root: Path) -> None:
    """CK+48's layout: 7 class folders (contempt, no neutral), S<subject>_<seq>_<frame>.png."""
    rng = np.random.default_rng(2)
    for c, folder in enumerate(CK_FOLDERS):
        for subject in range(c % 3 + 2):
            for frame in range(3):
                write_image(root / folder / f"S{100 + subject * 7 + c:03d}_00{c}_0000001{frame}.png", noise(rng, 1)[0])


def test_ckplus_needs_a_label_space_with_contempt(tmp_path):
    ck_tree(tmp_path / "CK+48")
    root = tmp_path / "CK+48"
    assert detect_format(root) == "imagefolder"
    with pytest.raises(
        ValueError,
        match=r"'contempt' \(class folder .*contempt\) is not in the label space; "
        r"valid classes are angry, disgust.*neutral.*emotions8",
    ):
        load_split(root, "all", cache_dir=False)
    eight = load_split(root, "all", classes="emotions8", cache_dir=False)
    assert eight.class_names == EMOTIONS8 and eight.missing_classes() == ["neutral"]
    info = data_info(root, classes="emotions8")
    assert info["splits"]["all"]["missing"] == ["neutral"]
    assert "all: no images of neutral" in format_info(info)
    space = list(CK_FOLDERS)  # the user's own list, in the user's order, names canonicalised
    ds = load_split(root, "train", classes=space, cache_dir=False)
    assert ds.class_names == ("angry", "contempt", "disgust", "fear", "happy", "sad", "surprise")
    assert ds.missing_classes() == []
    # subject-independent split: no subject (file-name prefix) in both train and test
    kw = dict(fmt="imagefolder:group=prefix,test_fraction=0.3", classes=space, cache_dir=False)
    train, test = load_split(root, "train", **kw), load_split(root, "test", **kw)
    subjects = lambda d: {Path(i).name.split("_")[0] for i in d.ids}  # noqa: E731
    assert not subjects(train) & subjects(test) and len(train) + len(test) == len(eight)
    assert 0.15 < len(test) / (len(train) + len(test)) < 0.45


def test_flat_folders_seeded_stratified_split(tmp_path):
    counts = {"happy": 20, "sad": 10, "disgust": 2, "fear": 1}
    class_tree(tmp_path, counts)
    assert list_splits(tmp_path) == ["all", "train", "test"]
    every = load_split(tmp_path, "all", cache_dir=False)
    train, test = load_split(tmp_path, "train", cache_dir=False), load_split(tmp_path, "test", cache_dir=False)
    assert not set(train.ids) & set(test.ids) and sorted(train.ids + test.ids) == sorted(every.ids)
    assert test.class_counts() == [0, 1, 0, 4, 2, 0, 0]  # round(0.2 n), >= 1 from 2, never all
    assert train.class_counts()[I7("fear")] == 1
    assert load_split(tmp_path, "test", cache_dir=False).ids == test.ids  # same seed, same split
    other = load_split(tmp_path, "test", fmt="imagefolder:split_seed=1", cache_dir=False)
    assert other.class_counts() == test.class_counts() and other.ids != test.ids
    half = load_split(tmp_path, "test", fmt="auto:test_fraction=0.5", cache_dir=False)
    assert half.class_counts() == [0, 1, 0, 10, 5, 0, 0]
    with pytest.raises(ValueError, match="test_fraction=.*between 0 and 1"):
        load_split(tmp_path, "test", fmt="imagefolder:test_fraction=2")
    with pytest.raises(ValueError, match="unknown option 'fraction'.*test_fraction"):
        load_split(tmp_path, "test", fmt="imagefolder:fraction=0.5")
    nested = tmp_path / "nested"
    class_tree(nested / "train", {"happy": 2})
    with pytest.raises(ValueError, match="test_fraction applies to a flat layout"):
        load_split(nested, "train", fmt="imagefolder:test_fraction=0.5")
    assert set(FORMATS["imagefolder"].options) == {"test_fraction", "split_seed", "group"}


def test_own_class_names_with_an_explicit_format(tmp_path):
    class_tree(tmp_path / "flat", {"pain": 4, "no_pain": 6})
    class_tree(tmp_path / "split" / "train", {"pain": 2, "no_pain": 2})
    kw = dict(fmt="imagefolder", classes=["no_pain", "pain"], cache_dir=False)
    assert list_splits(tmp_path / "flat", "imagefolder") == ["all", "train", "test"]
    flat = load_split(tmp_path / "flat", "train", **kw)
    assert flat.class_names == ("no_pain", "pain") and flat.class_counts() == [5, 3]
    assert load_split(tmp_path / "split", "train", **kw).class_counts() == [2, 2]
    with pytest.raises(ValueError, match="unknown class name 'pain'.*expected one of no_pain"):
        load_split(tmp_path / "flat", "all", fmt="imagefolder", classes=["no_pain"], cache_dir=False)
