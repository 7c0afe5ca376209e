"""Inference: face detection on real photos, the Recognizer API, and the ``dicc predict`` CLI."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from dicc import EMOTIONS  # noqa: E402
from dicc.data.decode import decode_image  # noqa: E402
from dicc.faces import FaceDetector, crop_faces, expand_box, face_pixels, prepare_faces  # noqa: E402
from dicc.predict import Recognizer, add_predict_parser, iter_video_frames, run_predict  # noqa: E402
from dicc.strategies import Strategy  # noqa: E402
from dicc.strategies.base import _REGISTRY  # noqa: E402

from helpers import make_checkpoint  # noqa: E402

RECORD_KEYS = {"file", "frame", "time_s", "face", "face_id", "box", "score", "landmarks", "dominant", "emotions"}
LANDMARK_COLUMNS = [f"{n}_{c}" for n in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right") for c in "xy"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def ckpt(workdir) -> Path:
    return make_checkpoint(workdir / "ce.pt", mean=0.45, std=0.3)


@pytest.fixture(scope="module")
def rec(ckpt) -> Recognizer:
    return Recognizer.from_checkpoint(ckpt, device="cpu")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()  # 512x512 RGB, one frontal face around x 177, y 66, 95 px wide


@pytest.fixture(scope="module")
def group_photo(astronaut) -> np.ndarray:
    """Three copies of the astronaut's head side by side (one mirrored): three faces."""
    crop = astronaut[6:221, 117:332]
    return np.ascontiguousarray(np.concatenate([crop, crop[:, ::-1], crop], axis=1))


@pytest.fixture(scope="module")
def files(workdir, astronaut, group_photo) -> dict[str, Path]:
    d = workdir / "inputs"
    (d / "sub").mkdir(parents=True)
    out = {
        "astronaut": d / "astronaut.png",
        "group": d / "sub" / "group.png",
        "blank": d / "blank.png",
        "bad": d / "broken.jpg",
        "face48": d / "face48.png",
    }
    Image.fromarray(astronaut).save(out["astronaut"])
    Image.fromarray(group_photo).save(out["group"])
    Image.fromarray(np.full((120, 160), 128, np.uint8)).save(out["blank"])
    out["bad"].write_bytes(b"this is not a JPEG")
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    Image.fromarray(gray[56:186, 167:282]).resize((48, 48)).save(out["face48"])
    return out


@pytest.fixture(scope="module")
def video(workdir, astronaut) -> Path:
    """7 frames at 10 fps of the astronaut's head, shifted a little each frame (MJPG in AVI)."""
    path = workdir / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    assert writer.isOpened()
    for i in range(7):
        frame = astronaut[0:256, 60 + 4 * i : 316 + 4 * i, ::-1]
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    return path


def _check_face(face: dict, detected: bool = True) -> None:
    assert set(face) == {"box", "score", "landmarks", "emotions", "dominant"}
    if detected:  # the Haar cascade's score: in (0, 1], no landmarks
        assert 0 < face["score"] <= 1 and face["landmarks"] is None
    else:
        assert face["score"] is None and face["landmarks"] is None
    assert list(face["emotions"]) == list(EMOTIONS)
    probs = np.array(list(face["emotions"].values()))
    assert np.all(probs >= 0) and abs(probs.sum() - 1) < 1e-5
    assert face["dominant"] == EMOTIONS[int(probs.argmax())]
    assert all(isinstance(v, int) for v in face["box"])


# -- faces.py ----------------------------------------------------------------------------------
def test_detector_finds_the_astronaut(astronaut):
    boxes = FaceDetector().detect(astronaut)
    assert boxes.shape == (1, 4)
    x, y, w, h = boxes[0]
    assert 150 < x < 210 and 40 < y < 100 and 70 < w < 130 and 70 < h < 130


def test_detector_orders_faces_left_to_right_and_finds_none_in_a_blank(group_photo):
    boxes = FaceDetector().detect(group_photo)
    assert len(boxes) == 3
    assert list(boxes[:, 0]) == sorted(boxes[:, 0])
    assert (np.diff(boxes[:, 0]) > boxes[:-1, 2]).all()  # side by side, not overlapping
    assert FaceDetector().detect(np.full((100, 100), 128, np.uint8)).shape == (0, 4)


def test_detector_parameters_and_missing_cascade(astronaut, tmp_path):
    assert FaceDetector(min_size=200).detect(astronaut).shape == (0, 4)  # the face is ~95 px
    with pytest.raises(FileNotFoundError, match="cascade"):
        FaceDetector(cascade=tmp_path / "nope.xml").detect(astronaut)
    with pytest.raises(ValueError, match="scale_factor"):
        FaceDetector(scale_factor=1.0).detect(astronaut)


def test_missing_opencv_is_a_clear_error_and_precropped_faces_do_not_need_it(monkeypatch, rec, astronaut):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "cv2", None)  # "import cv2" raises ImportError
    with pytest.raises(ImportError, match="opencv-python-headless<5"):
        FaceDetector().detect(astronaut)
    faces = rec(astronaut[100:200, 150:250], detect=False)  # no OpenCV needed
    assert len(faces) == 1 and faces[0]["box"] == [0, 0, 100, 100]
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="5.0.0"))  # no cascades
    with pytest.raises(ImportError, match="opencv-python-headless<5"):
        FaceDetector().detect(astronaut)


def test_crop_margin_is_clipped_and_pixels_match_training_decode(files):
    assert expand_box((10, 20, 100, 50), 0.1, 500, 500) == (0, 15, 120, 60)
    assert expand_box((450, 480, 40, 40), 0.5, 500, 500) == (430, 460, 70, 40)
    crops = crop_faces(np.zeros((100, 100), np.uint8), [[0, 0, 50, 50], [60, 60, 40, 40]], margin=0.2)
    assert [c.shape for c in crops] == [(60, 60), (48, 48)]
    rgb = np.asarray(Image.open(files["astronaut"]).convert("RGB"))
    assert np.array_equal(face_pixels(rgb, 48, 1), decode_image(files["astronaut"], 48, 1).numpy())
    x = prepare_faces([rgb], 48, 1, 0.5, 0.25)
    want = (decode_image(files["astronaut"], 48, 1).float() / 255 - 0.5) / 0.25
    assert x.dtype == np.float32 and torch.equal(torch.from_numpy(x[0]), want)


# -- the Recognizer API ------------------------------------------------------------------------
def test_recognizer_one_face_in_the_astronaut(rec, astronaut):
    faces = rec(astronaut)
    assert len(faces) == 1
    _check_face(faces[0])
    x, y, w, h = faces[0]["box"]
    assert 150 < x < 210 and 40 < y < 100 and 70 < w < 130


def test_recognizer_input_types_agree(rec, astronaut, files):
    ref = rec(astronaut)
    variants = [
        rec(files["astronaut"]),
        rec(str(files["astronaut"])),
        rec(Image.fromarray(astronaut)),
        rec(np.ascontiguousarray(astronaut[:, :, ::-1]), bgr=True),
        rec(astronaut.astype(np.float32) / 255),
    ]
    for faces in variants:
        assert len(faces) == 1 and faces[0]["box"] == ref[0]["box"]
        np.testing.assert_allclose(list(faces[0]["emotions"].values()), list(ref[0]["emotions"].values()), atol=1e-5)
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    faces = rec(gray)  # a grayscale array: same detection, same model input
    assert faces[0]["box"] == ref[0]["box"]
    np.testing.assert_allclose(list(faces[0]["emotions"].values()), list(ref[0]["emotions"].values()), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        rec(np.zeros((4, 4, 2), np.uint8))


def test_recognizer_several_faces_and_batch(rec, group_photo, astronaut):
    faces = rec(group_photo)
    assert len(faces) == 3
    for f in faces:
        _check_face(f)
    assert [f["box"][0] for f in faces] == sorted(f["box"][0] for f in faces)
    blank = np.full((100, 120, 3), 200, np.uint8)
    batch = rec.predict_batch([astronaut, group_photo, blank])
    assert [len(b) for b in batch] == [1, 3, 0]
    for single, batched in zip([rec(astronaut), faces, []], batch):
        assert [f["box"] for f in single] == [f["box"] for f in batched]
        for a, b in zip(single, batched):
            np.testing.assert_allclose(list(a["emotions"].values()), list(b["emotions"].values()), atol=1e-5)
    assert rec.predict_batch([]) == []


def test_recognizer_precropped_faces(rec, files, astronaut):
    face = np.asarray(Image.open(files["face48"]))
    faces = rec(face, detect=False)
    assert len(faces) == 1 and faces[0]["box"] == [0, 0, 48, 48]
    _check_face(faces[0], detected=False)
    from_file = rec(files["face48"], detect=False)
    assert from_file[0]["emotions"] == pytest.approx(faces[0]["emotions"], abs=1e-6)
    crop = astronaut[40:200, 150:260]  # a non-square RGB crop
    faces = rec(crop, detect=False)
    assert faces[0]["box"] == [0, 0, 110, 160]
    # a file with detect=False is decoded exactly as training decodes it
    boxes, pixels = rec.extract_faces(files["astronaut"], detect=False)
    assert boxes.tolist() == [[0, 0, 512, 512]]
    assert np.array_equal(pixels[0], decode_image(files["astronaut"], 48, 1).numpy())


def test_recognizer_probabilities_are_the_models(ckpt, rec, astronaut):
    """The checkpoint's normalisation and the strategy's parent_logits are what is applied."""
    from dicc.checkpoint import load_checkpoint, model_from_checkpoint

    model, strategy = model_from_checkpoint(load_checkpoint(ckpt))
    boxes, pixels = rec.extract_faces(astronaut)
    x = (torch.from_numpy(pixels).float() / 255 - 0.45) / 0.3
    with torch.no_grad():
        want = torch.softmax(strategy.parent_logits(model(x)), 1).numpy()
    got = np.array([list(f["emotions"].values()) for f in rec(astronaut)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert want.max() > 0.3  # the decisive random head: not a uniform distribution


class _GroupedStrategy(Strategy):
    """A DICC-like head: 11 outputs (sub-classes), merged per class with logsumexp."""

    name = "_test_grouped"
    SUB_TO_PARENT = [0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 6]

    @property
    def num_outputs(self) -> int:
        return len(self.SUB_TO_PARENT)

    def parent_logits(self, logits):
        groups = torch.nn.functional.one_hot(torch.tensor(self.SUB_TO_PARENT), 7).T.bool()
        return torch.stack([logits[:, g].logsumexp(1) for g in groups], 1)


@pytest.fixture
def grouped_strategy():
    _REGISTRY[_GroupedStrategy.name] = _GroupedStrategy
    yield _GroupedStrategy.name
    _REGISTRY.pop(_GroupedStrategy.name, None)


def test_recognizer_merges_subclasses(grouped_strategy, tmp_path, astronaut):
    path = make_checkpoint(tmp_path / "grouped.pt", grouped_strategy)
    rec = Recognizer.from_checkpoint(path, device="cpu")
    faces = rec(astronaut)
    assert len(faces) == 1
    _check_face(faces[0])  # 7 classes, not 11 sub-classes
    _, pixels = rec.extract_faces(astronaut)
    with torch.no_grad():
        sub = torch.softmax(rec.backend.model(torch.from_numpy(rec.preprocess(pixels))), 1)[0]
    want = [float(sub[[j for j, p in enumerate(_GroupedStrategy.SUB_TO_PARENT) if p == c]].sum()) for c in range(7)]
    np.testing.assert_allclose(list(faces[0]["emotions"].values()), want, atol=1e-5)


def test_recognizer_with_the_dicc_strategy(tmp_path, astronaut):
    state = {"split": True, "pseudo": torch.zeros(1, dtype=torch.long)}  # as after the first clustering
    path = make_checkpoint(tmp_path / "dicc.pt", "dicc", counts=[400, 40, 100, 900, 300, 200, 600], state=state)
    rec = Recognizer.from_checkpoint(path, device="cpu")
    assert rec.backend.model.head.out_features > 7
    faces = rec(astronaut)
    assert len(faces) == 1
    _check_face(faces[0])


def test_video_frames_every_n(video):
    frames = list(iter_video_frames(video, every=3))
    assert [(i, t) for i, t, _ in frames] == [(0, 0.0), (3, 0.3), (6, 0.6)]
    assert frames[0][2].shape == (256, 256, 3)
    assert len(list(iter_video_frames(video))) == 7


def test_predict_video_api(rec, video):
    out = list(rec.predict_video(video, every=2, chunk=2))
    assert [r["frame"] for r in out] == [0, 2, 4, 6]
    assert all(len(r["faces"]) == 1 for r in out)


# -- the command line ----------------------------------------------------------------------------
def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dicc")
    add_predict_parser(parser.add_subparsers(dest="command", required=True))
    return run_predict(parser.parse_args(["predict", *map(str, argv)]))


def test_cli_json_records(ckpt, files, capsys):
    rc = run_cli([ckpt, files["astronaut"], files["group"], files["blank"], "--json"])
    assert rc == 0
    records = json.loads(capsys.readouterr().out)
    assert all(set(r) == RECORD_KEYS for r in records if r["file"] != str(files["blank"]))
    by_file = {}
    for r in records:
        by_file.setdefault(Path(r["file"]).name, []).append(r)
    assert [r["face"] for r in by_file["astronaut.png"]] == [0]
    assert [r["face"] for r in by_file["group.png"]] == [0, 1, 2]
    assert by_file["blank.png"] == [{"file": str(files["blank"]), "frame": None, "time_s": None, "faces": []}]
    r = by_file["astronaut.png"][0]
    assert r["frame"] is None and r["time_s"] is None and r["face_id"] is None and len(r["box"]) == 4
    assert list(r["emotions"]) == list(EMOTIONS) and abs(sum(r["emotions"].values()) - 1) < 1e-4


def test_cli_folder_is_recursive_and_sorted_and_bad_files_are_skipped(ckpt, files, capsys):
    rc = run_cli([ckpt, files["astronaut"].parent, "--json"])
    captured = capsys.readouterr()
    assert rc == 1  # one input skipped, the others output
    assert "broken.jpg" in captured.err and "skipped" in captured.err
    names = [Path(r["file"]).relative_to(files["astronaut"].parent).as_posix() for r in json.loads(captured.out)]
    assert names == ["astronaut.png", "blank.png", "face48.png", "sub/group.png", "sub/group.png", "sub/group.png"]


def test_cli_all_inputs_bad(ckpt, files, tmp_path, capsys):
    rc = run_cli([ckpt, files["bad"], tmp_path / "missing.png", "--json"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "broken.jpg" in captured.err and "missing.png" in captured.err
    assert json.loads(captured.out) == []


def test_cli_csv(ckpt, files, tmp_path, capsys):
    out = tmp_path / "out" / "faces.csv"
    rc = run_cli([ckpt, files["group"], files["blank"], files["bad"], "--csv", out])
    assert rc == 1
    assert "broken.jpg" in capsys.readouterr().err
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    header = ["file", "frame", "time_s", "face", "face_id", "x", "y", "w", "h", "dominant", *EMOTIONS, "score"]
    assert rows[0] == [*header, *LANDMARK_COLUMNS]
    assert [r[3] for r in rows[1:]] == ["0", "1", "2", ""]  # the image without a face keeps one row
    assert rows[4][0] == str(files["blank"]) and rows[4][1:] == [""] * (len(rows[0]) - 1)
    assert all(0 < float(r[17]) <= 1 and r[18:] == [""] * 10 for r in rows[1:4])  # haar: a score, no landmarks
    probs = [float(v) for v in rows[1][10:17]]
    assert abs(sum(probs) - 1) < 1e-4 and rows[1][9] == EMOTIONS[int(np.argmax(probs))]


def test_cli_text_table(ckpt, files, capsys):
    rc = run_cli([ckpt, files["astronaut"], files["blank"]])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert lines[0].split()[:5] == ["file", "frame", "time_s", "face", "id"] and "neutral" in lines[0]
    assert len(lines) == 3 and "no face found" in lines[2] and str(files["blank"]) in lines[2]
    assert str(files["astronaut"]) in lines[1]


def test_cli_annotate(ckpt, files, tmp_path, capsys):
    out_dir = tmp_path / "annotated"
    rc = run_cli([ckpt, files["astronaut"], files["group"], files["blank"], "--annotate", out_dir, "--json"])
    assert rc == 0
    capsys.readouterr()
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    assert written == ["astronaut.png", "blank.png", "group.png"]
    original = np.asarray(Image.open(files["astronaut"]))
    drawn = cv2.imread(str(out_dir / "astronaut.png"))[:, :, ::-1]
    assert drawn.shape == original.shape and not np.array_equal(drawn, original)


def test_cli_no_detect(ckpt, files, capsys):
    rc = run_cli([ckpt, files["face48"], files["blank"], "--no-detect", "--json"])
    assert rc == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["box"] for r in records] == [[0, 0, 48, 48], [0, 0, 160, 120]]
    assert all(r["face"] == 0 for r in records)


def test_cli_video(ckpt, video, files, tmp_path, capsys):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    out_dir = tmp_path / "frames"
    rc = run_cli(
        [ckpt, video, fake, files["astronaut"], "--every", "3", "--json", "--annotate", out_dir, "--batch-size", "2"]
    )
    captured = capsys.readouterr()
    assert rc == 1 and "fake.mp4" in captured.err
    records = json.loads(captured.out)
    vid = [r for r in records if r["file"] == str(video)]
    assert [(r["frame"], r["time_s"], r["face"], r["face_id"]) for r in vid] == [
        (0, 0.0, 0, 0),
        (3, 0.3, 0, 0),
        (6, 0.6, 0, 0),
    ]
    assert records[-1]["file"] == str(files["astronaut"])  # input order is kept
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "astronaut.png",
        "clip_frame000000.jpg",
        "clip_frame000003.jpg",
        "clip_frame000006.jpg",
    ]


def test_cli_rejects_bad_options(ckpt, files):
    with pytest.raises(ValueError, match="--every"):
        run_cli([ckpt, files["astronaut"], "--every", "0"])
    with pytest.raises(SystemExit):  # --json and --csv are exclusive
        run_cli([ckpt, files["astronaut"], "--json", "--csv", "x.csv"])


def test_cli_is_wired_into_dicc_main(ckpt, files, capsys):
    from dicc import cli

    assert cli.main(["predict", str(ckpt), str(files["astronaut"]), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    missing = str(Path(ckpt).with_name("missing.pt"))  # names a model (.pt) that is not there
    assert cli.main(["predict", missing, str(files["astronaut"])]) == 2
    assert missing in capsys.readouterr().err


def test_recognizer_from_a_trained_run(tmp_path):
    """End to end: train one epoch on the built-in data, predict with the run directory."""
    from dicc.config import load_config
    from dicc.data.synthetic import make_synthetic
    from dicc.engine import fit

    cfg = load_config(
        None,
        [
            "train.epochs=1",
            f"train.out={tmp_path / 'run'}",
            "model.width=4",
            "train.progress=false",
            "data.test_split=null",
        ],
    )
    fit(cfg, log=lambda *a, **k: None)
    rec = Recognizer.from_checkpoint(tmp_path / "run", device="cpu")
    faces = make_synthetic(split="test", seed=0).images[:5, 0].numpy()
    out = rec.predict_batch(list(faces), detect=False)
    assert [len(f) for f in out] == [1] * 5
    for f in out:
        _check_face(f[0], detected=False)


# -- outputs never destroy inputs; output faults are one line ---------------------------
def main_cli(argv) -> int:
    from dicc import cli

    return cli.main(["predict", *map(str, argv)])


def _error_line(err: str) -> str:
    """The one line an output problem gives (and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len([line for line in lines if "error:" in line]) == 1, err
    return next(line for line in lines if "error:" in line)


@pytest.fixture
def photo_dir(tmp_path, astronaut) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(astronaut).save(d / "x.png")
    return d


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the model is loaded: a refusal must come before anything is read."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the outputs were refused")

    monkeypatch.setattr(Recognizer, "load", refuse)


@pytest.mark.parametrize("how", ["same", "relative", "symlink", "hardlink", "folder", "jsonl", "summary", "model"])
def test_cli_an_output_that_is_an_input_is_refused_before_anything_is_read(
    how, ckpt, photo_dir, tmp_path, capsys, monkeypatch
):
    photo = photo_dir / "x.png"
    model = tmp_path / "model.pt"
    model.write_bytes(Path(ckpt).read_bytes())
    before = {p: p.read_bytes() for p in (photo, model)}
    inputs, flag, target = [photo], "--csv", photo
    if how == "relative":
        monkeypatch.chdir(photo_dir)
        inputs, target = ["x.png"], "../photos/./x.png"
    elif how == "symlink":
        target = tmp_path / "link.csv"
        target.symlink_to(photo)
    elif how == "hardlink":
        target = tmp_path / "hard.csv"
        os.link(photo, target)
    elif how == "folder":
        inputs = [photo_dir]
    elif how in ("jsonl", "summary"):
        flag = f"--{how}"
    elif how == "model":
        flag, target = "--jsonl", model
    listing = sorted(tmp_path.rglob("*"))
    monkeypatch.setattr(Recognizer, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main_cli([model, *inputs, flag, target]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith(f"dicc predict: error: {flag} {target} is the input ") and "never replaces an input" in line
    assert {p: p.read_bytes() for p in before} == before  # nothing replaced, nothing cut
    assert sorted(tmp_path.rglob("*")) == listing  # nothing written


def test_cli_two_outputs_that_are_one_file_are_refused(ckpt, photo_dir, tmp_path, capsys, no_model):
    out = tmp_path / "out.csv"
    assert main_cli([ckpt, photo_dir, "--csv", out, "--summary", tmp_path / "." / "out.csv"]) == 2
    assert "are the same file" in _error_line(capsys.readouterr().err)
    assert not out.exists()


def test_cli_annotate_never_writes_over_an_input(ckpt, photo_dir, tmp_path, capsys, monkeypatch, no_model, video):
    """`cd photos && dicc predict y.png --annotate .` is refused (rather than writing the copy
    under another name beside the original, where the next run over the folder would take it
    as an input); so are frame copies that would replace an input, and a folder input."""
    photo = photo_dir / "x.png"
    data = photo.read_bytes()
    monkeypatch.chdir(photo_dir)
    assert main_cli([ckpt, "x.png", "--annotate", "."]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line == (
        "dicc predict: error: --annotate . would write x.png over the input x.png: an annotated copy never "
        "replaces an input; choose another folder"
    )
    monkeypatch.chdir(tmp_path)
    assert main_cli([ckpt, "photos", "--annotate", "."]) == 2  # photos/x.png -> ./photos/x.png
    assert "would write photos/x.png over the input photos/x.png" in _error_line(capsys.readouterr().err)
    clip = photo_dir / "clip.avi"
    clip.write_bytes(Path(video).read_bytes())
    (photo_dir / "clip_frame000003.jpg").write_bytes(data)  # named like a frame copy of clip.avi
    assert main_cli([ckpt, clip, photo_dir / "clip_frame000003.jpg", "--annotate", photo_dir]) == 2
    assert "clip_frame000003.jpg over the input" in _error_line(capsys.readouterr().err)
    assert photo.read_bytes() == data and sorted(p.name for p in photo_dir.iterdir()) == [
        "clip.avi",
        "clip_frame000003.jpg",
        "x.png",
    ]


def test_annotator_refuses_to_replace_a_protected_file(photo_dir, astronaut):
    from dicc.predict.outputs import Annotator
    from dicc.predict.targets import OutputError, file_id

    photo = photo_dir / "x.png"
    data = photo.read_bytes()
    ann = Annotator(photo_dir, protected={file_id(photo)})
    with pytest.raises(OutputError, match="it is an input"):
        ann.image(Path("x.png"), astronaut, [])
    ann.image(Path("y.png"), astronaut, [])  # any other name is written
    assert photo.read_bytes() == data and (photo_dir / "y.png").is_file()


def test_cli_nothing_processed_leaves_older_files_intact(ckpt, tmp_path, capsys):
    old = {tmp_path / "old.csv": "an older table\n", tmp_path / "old.json": "[1, 2]", tmp_path / "old.jsonl": "{}\n"}
    for path, text in old.items():
        path.write_text(text)
    assert (
        main_cli([ckpt, tmp_path / "nope.jpg", "--csv", tmp_path / "old.csv", "--summary", tmp_path / "old.json"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()  # nothing usable: one line, nothing opened
    assert len(err) == 1 and "nope.jpg: no such file or folder (nothing to predict; no output written)" in err[0]
    assert main_cli([ckpt, tmp_path / "nope.jpg", "--jsonl", tmp_path / "old.jsonl"]) == 2
    # an input that exists but cannot be read: the outputs were opened, and are dropped again
    (tmp_path / "bad.jpg").write_bytes(b"not a picture")
    assert (
        main_cli([ckpt, tmp_path / "bad.jpg", "--csv", tmp_path / "old.csv", "--summary", tmp_path / "old.json"]) == 2
    )
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "old.csv not written" in err
    (tmp_path / "bad.jpg").unlink()
    assert {p: p.read_text() for p in old} == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.csv", "old.json", "old.jsonl"]  # no temporary files


class _WatchedCapture:
    """A video file's frames; at every read, ``check()`` runs; ``fail_at``: the read that
    raises ``error`` (a second Ctrl-C is a KeyboardInterrupt raised anywhere)."""

    def __init__(self, path, check, fail_at=None, error=None) -> None:
        self.cap, self.check, self.fail_at, self.error, self.reads = (
            cv2.VideoCapture(str(path)),
            check,
            fail_at,
            error,
            0,
        )

    def __getattr__(self, name):
        return getattr(self.cap, name)

    def read(self):
        self.reads += 1
        self.check()
        if self.reads == self.fail_at:
            raise self.error
        return self.cap.read()


def test_cli_files_stream_into_a_temporary_file_renamed_at_the_end(ckpt, video, tmp_path, capsys, monkeypatch):
    from dicc.predict import inputs

    out = tmp_path / "t.csv"
    out.write_text("old\n")
    sizes = []

    def check():  # while the video runs, the old file is untouched and the rows go to a temporary file
        assert out.read_text() == "old\n"
        [tmp] = [p for p in tmp_path.iterdir() if p.name.startswith(".t.csv.")]
        sizes.append(tmp.stat().st_size)

    monkeypatch.setattr(inputs, "open_capture", lambda source: _WatchedCapture(source, check))
    assert run_cli([ckpt, video, "--csv", out, "--batch-size", "1"]) == 0  # a frame at a time
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0] > 0  # rows flushed as they come
    rows = list(csv.reader(out.open()))
    assert [r[1] for r in rows[1:]] == [str(i) for i in range(7)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
    monkeypatch.undo()
    assert run_cli([ckpt, video, "--jsonl", "-", "--every", "3"]) == 0  # '-': streamed to stdout
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["frame"] for r in lines] == [0, 3, 6] and not Path("-").exists()


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("a bug")])
def test_cli_second_ctrl_c_keeps_what_was_processed_and_an_error_keeps_the_older_file(
    error, ckpt, video, tmp_path, monkeypatch
):
    from dicc.predict import inputs

    out = tmp_path / "t.jsonl"
    out.write_text("old\n")
    monkeypatch.setattr(inputs, "open_capture", lambda source: _WatchedCapture(source, lambda: None, 4, error))
    with pytest.raises(type(error)):
        run_cli([ckpt, video, "--jsonl", out, "--batch-size", "1"])
    if isinstance(error, KeyboardInterrupt):  # the frames before it, each record whole
        assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == [0, 1, 2]
    else:  # an error keeps nothing: the older file as it was
        assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
@pytest.mark.parametrize("flag", ["--csv", "--jsonl"])
def test_cli_a_full_disk_is_one_line(flag, ckpt, files, capsys):
    assert main_cli([ckpt, files["astronaut"], flag, "/dev/full"]) == 2
    assert (
        _error_line(capsys.readouterr().err) == "dicc predict: error: cannot write /dev/full: No space left on device"
    )
    assert main_cli([ckpt, files["astronaut"], flag, "/dev/null"]) == 0  # a device is written, not replaced
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_cli_a_disk_that_fills_up_while_finishing_keeps_the_older_file(ckpt, files, tmp_path, capsys, monkeypatch):
    import errno

    from dicc.predict import targets

    out = tmp_path / "t.csv"
    out.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(targets.os, "fsync", full)
    assert main_cli([ckpt, files["astronaut"], "--csv", out]) == 2
    assert _error_line(capsys.readouterr().err) == f"dicc predict: error: cannot write {out}: No space left on device"
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


@pytest.mark.parametrize("flag", ["--csv", "--jsonl", "--summary", "--annotate", "--csv-in-subfolder"])
def test_cli_a_read_only_output_folder_is_one_line_and_nothing_is_written(flag, ckpt, files, tmp_path, capsys):
    from helpers import read_only

    folder = tmp_path / "ro"
    target = {"--annotate": folder, "--csv-in-subfolder": folder / "sub" / "t.csv"}.get(flag, folder / "out.txt")
    flag = flag.replace("-in-subfolder", "")
    with read_only(folder):
        rc = main_cli([ckpt, files["astronaut"], flag, target])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and str(folder) in line
    assert line.endswith(("Permission denied", "Read-only file system"))
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("flag", ["--csv", "--jsonl", "--summary", "--annotate"])
def test_cli_an_output_name_too_long_is_one_line(flag, ckpt, files, tmp_path, capsys):
    target = tmp_path / ("n" * 300)
    assert main_cli([ckpt, files["astronaut"], flag, target]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.endswith("File name too long") and str(target) in line
    assert list(tmp_path.iterdir()) == []


def test_cli_an_output_that_is_a_folder_is_one_line(ckpt, files, tmp_path, capsys):
    assert main_cli([ckpt, files["astronaut"], "--csv", tmp_path]) == 2
    assert (
        _error_line(capsys.readouterr().err)
        == f"dicc predict: error: cannot write {tmp_path}: it is a folder; name a file"
    )
    (tmp_path / "file").write_text("x")
    assert main_cli([ckpt, files["astronaut"], "--annotate", tmp_path / "file"]) == 2
    assert "it is a file, not a folder" in _error_line(capsys.readouterr().err)
