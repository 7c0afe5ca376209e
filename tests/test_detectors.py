"""Face detectors (haar, mtcnn) on real photos that scikit-image ships, and landmark alignment."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")
skimage = pytest.importorskip("skimage")
pytest.importorskip("facenet_pytorch")
from skimage import data as skdata  # noqa: E402

from dicc.faces import (  # noqa: E402
    TEMPLATE,
    Detections,
    HaarDetector,
    MtcnnDetector,
    create_detector,
    crop_geometry,  # noqa: E402
    eye_angle,
    landmark_crop,
)
from dicc.predict import Recognizer, add_predict_parser, run_predict  # noqa: E402

from helpers import make_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def mtcnn() -> MtcnnDetector:
    return MtcnnDetector()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()  # one frontal face, eyes near (205, 102) and (247, 104)


def rotate(image: np.ndarray, angle: float, center=None) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(center or (w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def lfw() -> list[np.ndarray]:
    """The first 12 faces of scikit-image's LFW subset (25x25 gray crops), upscaled 4x and padded
    with their border, so a detector sees a whole head: 200x200."""
    faces = np.load(os.path.join(os.path.dirname(skimage.__file__), "data", "lfw_subset.npy"))[:12]
    out = []
    for f in faces:
        up = Image.fromarray((f * 255).round().astype(np.uint8)).resize((100, 100), Image.Resampling.BICUBIC)
        out.append(np.pad(np.asarray(up), 50, mode="edge"))
    return out


def test_mtcnn_finds_the_astronaut_with_landmarks(mtcnn, astronaut):
    found = mtcnn.detect_faces(astronaut)
    assert isinstance(found, Detections) and len(found) == 1
    x, y, w, h = found.boxes[0]
    assert 160 < x < 200 and 40 < y < 90 and 70 < w < 110 and 90 < h < 130
    assert found.scores[0] > 0.99 and found.boxes.dtype == np.int64
    (lx, ly), (rx, _), (nx, ny), (_, mly), _ = found.landmarks[0]
    assert x < lx < nx < rx < x + w and ly < ny < mly  # eyes, then nose, then mouth, inside the box
    assert abs(eye_angle(found.landmarks[0])) < 6


def test_detectors_agree_on_photos_and_find_nothing_in_blanks(mtcnn, astronaut):
    crop = astronaut[6:221, 117:332]
    group = np.ascontiguousarray(np.concatenate([crop, crop[:, ::-1], crop], axis=1))
    for det in (HaarDetector(), mtcnn):
        boxes = det.detect(group)
        assert len(boxes) == 3 and list(boxes[:, 0]) == sorted(boxes[:, 0])
        assert det.detect(np.full((120, 160, 3), 128, np.uint8)).shape == (0, 4)
        assert det.detect(np.asarray(Image.fromarray(astronaut).convert("L"))).shape == (1, 4)  # grayscale


def test_mtcnn_batches_frames_of_one_size_and_handles_mixed_sizes(mtcnn, astronaut, lfw):
    images = [astronaut, lfw[0], astronaut[:, ::-1].copy(), lfw[1], np.zeros((64, 64, 3), np.uint8)]
    together = mtcnn.detect_many(images)
    alone = [mtcnn.detect_faces(im) for im in images]
    assert [len(f) for f in together] == [1, 1, 1, 1, 0]
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_lfw_faces_counts_upright_and_rotated(mtcnn, lfw):
    """Upright, both detectors find (nearly) every LFW face; turned by 25 degrees the cascade
    misses most of them and MTCNN still finds them."""
    haar = HaarDetector()
    upright_haar = sum(len(f) == 1 for f in haar.detect_many(lfw))
    upright_mtcnn = sum(len(f) == 1 for f in mtcnn.detect_many(lfw))
    turned = [rotate(f, 25) for f in lfw]
    turned_haar = sum(len(f) > 0 for f in haar.detect_many(turned))
    turned_mtcnn = sum(len(f) == 1 for f in mtcnn.detect_many(turned))
    assert upright_haar >= 11 and upright_mtcnn >= 11
    assert turned_mtcnn >= 7 and turned_haar <= 2  # measured: 9 and 0 of 12


def test_crop_geometry_follows_the_template():
    # eyes 40 px apart at y = 100, tilted by 30 degrees about their midpoint (200, 100)
    a = math.radians(30)
    d = np.array([math.cos(a), math.sin(a)]) * 20
    mid = np.array([200.0, 100.0])
    down = np.array([-math.sin(a), math.cos(a)])
    mouth = mid + down * 40 * TEMPLATE.eye_mouth / TEMPLATE.eye_distance
    lm = np.array([mid - d, mid + d, mid + down * 20, mouth - d / 2, mouth + d / 2])
    centre, side, angle = crop_geometry(lm)
    assert angle == pytest.approx(30) and side == pytest.approx(40 / TEMPLATE.eye_distance)
    np.testing.assert_allclose(centre, mid + down * (0.5 - TEMPLATE.eye_y) * side)
    centre0, side0, angle0 = crop_geometry(lm, rotate=False)
    assert angle0 == 0 and side0 == pytest.approx(side)
    np.testing.assert_allclose(centre0, mid + np.array([0, 1]) * (0.5 - TEMPLATE.eye_y) * side)
    # a face turned sideways (eyes close together): the eye-mouth distance sets the size
    narrow = lm.copy()
    narrow[0], narrow[1] = mid - d / 4, mid + d / 4
    assert crop_geometry(narrow)[1] == pytest.approx(side)


def test_alignment_levels_the_eyes_and_undoes_a_rotation(mtcnn, astronaut):
    eyes = (226, 103)
    upright, turned = astronaut, rotate(astronaut, 25, eyes)  # cv2: positive = counter-clockwise
    lm0, lm = mtcnn.detect_faces(upright).landmarks[0], mtcnn.detect_faces(turned).landmarks[0]
    assert eye_angle(lm) == pytest.approx(eye_angle(lm0) - 25, abs=4)
    aligned0, aligned = landmark_crop(upright, lm0), landmark_crop(turned, lm)
    framed = landmark_crop(turned, lm, rotate=False)
    assert aligned.shape[:2] == (aligned.shape[0], aligned.shape[0]) and framed.shape == aligned.shape
    big = lambda im: np.asarray(Image.fromarray(im).resize((160, 160)))  # noqa: E731
    again = mtcnn.detect_faces(big(aligned))
    assert len(again) == 1 and abs(eye_angle(again.landmarks[0])) < 5  # the eyes come out level
    # the crop of the turned photo looks like the crop of the upright one; unrotated, it does not
    a0 = big(aligned0).astype(float)
    err_aligned = np.abs(big(aligned).astype(float) - a0).mean()
    err_framed = np.abs(big(framed).astype(float) - a0).mean()
    assert err_aligned < 20 and err_framed > 3 * err_aligned  # measured: 14 and 49 grey levels
    # the eyes sit where the template puts them
    (lx, ly), (rx, ry) = again.landmarks[0][:2] / 160
    assert (ly + ry) / 2 == pytest.approx(TEMPLATE.eye_y, abs=0.06)
    assert rx - lx == pytest.approx(TEMPLATE.eye_distance, abs=0.08)


def test_recognizer_with_mtcnn_and_align_modes(tmp_path, astronaut):
    ckpt = make_checkpoint(tmp_path / "ce.pt")
    recs = {
        m: Recognizer.from_checkpoint(ckpt, device="cpu", detector="mtcnn", align=m) for m in ("rotate", "frame", "box")
    }
    turned = rotate(astronaut, 25, (226, 103))
    out = {m: r.extract_faces(turned) for m, r in recs.items()}
    assert all(len(b) == 1 for b, _ in out.values())
    assert all(np.array_equal(out["rotate"][0], b) for b, _ in out.values())  # same reported box
    assert not np.array_equal(out["rotate"][1], out["frame"][1])
    assert not np.array_equal(out["frame"][1], out["box"][1])
    faces = recs["rotate"].predict_batch([astronaut, turned, np.zeros((50, 80, 3), np.uint8)])
    assert [len(f) for f in faces] == [1, 1, 0]
    assert Recognizer.from_checkpoint(ckpt, device="cpu", align=True).align == "rotate"
    assert Recognizer.from_checkpoint(ckpt, device="cpu", align=False).align == "box"
    with pytest.raises(ValueError, match="align"):
        Recognizer.from_checkpoint(ckpt, device="cpu", align="tilt")


def test_detector_registry_and_a_missing_extra(monkeypatch, astronaut):
    assert isinstance(create_detector("haar"), HaarDetector) and isinstance(create_detector("MTCNN"), MtcnnDetector)
    det = HaarDetector(min_neighbors=3)
    assert create_detector(det) is det
    with pytest.raises(ValueError, match="haar, mtcnn"):
        create_detector("yolo")
    with pytest.raises(ValueError, match="min_score"):
        MtcnnDetector(min_score=2).load()
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # "import facenet_pytorch" raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'facenet-pytorch>=2.5.3,<2.6'"):
        MtcnnDetector().detect(astronaut)


def _cli(argv) -> int:
    parser = argparse.ArgumentParser(prog="dicc")
    add_predict_parser(parser.add_subparsers(dest="command", required=True))
    return run_predict(parser.parse_args(["predict", *map(str, argv)]))


def test_cli_detector_mtcnn_finds_the_faces(tmp_path, astronaut, capsys, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "ce.pt")
    photo = tmp_path / "photo.jpg"
    crop = astronaut[6:221, 117:332]
    Image.fromarray(np.concatenate([crop, rotate(crop, 30)], axis=1)).save(photo, quality=95)
    assert _cli([ckpt, photo, "--detector", "mtcnn", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["face"] for r in recs] == [0, 1] and recs[0]["box"][0] < recs[1]["box"][0]
    assert _cli([ckpt, photo, "--json"]) == 0  # the cascade misses the turned face
    assert [r["face"] for r in json.loads(capsys.readouterr().out)] == [0]
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    assert _cli([ckpt, photo, "--detector", "mtcnn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'facenet-pytorch>=2.5.3,<2.6'" in err[0]


# -- detector scores, landmarks in the records, NMS for the cascade -------------------------
def _lfw_face(k: int) -> np.ndarray:
    """LFW face ``k`` of scikit-image's subset as the ``lfw`` fixture makes them (200x200)."""
    f = np.load(os.path.join(os.path.dirname(skimage.__file__), "data", "lfw_subset.npy"))[k]
    up = Image.fromarray((f * 255).round().astype(np.uint8)).resize((100, 100), Image.Resampling.BICUBIC)
    return np.pad(np.asarray(up), 50, mode="edge")


def test_non_max_suppression_agrees_with_opencv_and_merges_nested_boxes():
    from dicc.faces import non_max_suppression

    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.integers(0, 200, (12, 2))
        boxes = np.concatenate([xy, rng.integers(20, 80, (12, 1)).repeat(2, 1)], 1)
        scores = rng.random(12)
        want = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), 0.0, 0.3)
        got = non_max_suppression(boxes, scores, iou=0.3, cover=None)
        assert sorted(got.tolist()) == sorted(np.asarray(want).reshape(-1).tolist())
    nested = [[0, 0, 100, 100], [20, 20, 50, 50]]  # IoU 0.25, all of the small box inside the big one
    assert non_max_suppression(nested, [0.9, 0.8], iou=0.3, cover=None).tolist() == [0, 1]
    assert non_max_suppression(nested, [0.9, 0.8]).tolist() == [0]
    assert non_max_suppression(nested, [0.7, 0.8]).tolist() == [1]  # the better score stays
    assert non_max_suppression([[0, 0, 50, 50], [60, 0, 50, 50]], [0.5, 0.9]).tolist() == [1, 0]  # apart: both


def test_haar_nms_merges_a_face_found_twice_and_keeps_two_real_faces(astronaut):
    face = _lfw_face(65)  # the cascade finds this LFW face twice: the face and a box over its forehead
    raw, merged = HaarDetector(nms_iou=None).detect_faces(face), HaarDetector().detect_faces(face)
    assert len(raw) == 2 and len(merged) == 1
    keep = int(np.argmax(raw.scores))
    assert merged.boxes.tolist() == [raw.boxes[keep].tolist()] and merged.scores[0] == raw.scores[keep]
    x, y, w, h = merged.boxes[0]
    assert 40 <= x <= 60 and 40 <= y <= 60 and 80 <= w <= 110  # the face, 50..150 in the padded image
    crop = astronaut[6:221, 117:332]
    two = HaarDetector().detect_faces(np.ascontiguousarray(np.concatenate([crop, crop[:, ::-1]], axis=1)))
    assert len(two) == 2 and two.boxes[0, 0] + two.boxes[0, 2] < two.boxes[1, 0]  # two faces, side by side


def test_haar_boxes_are_opencvs_and_the_score_is_the_last_stages_sum(astronaut):
    classifier = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    crop = astronaut[6:221, 117:332]
    group = np.ascontiguousarray(np.concatenate([crop, crop[:, ::-1], crop], axis=1))
    for image in (astronaut, group, _lfw_face(0), _lfw_face(65)):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        plain = np.asarray(classifier.detectMultiScale(gray, 1.1, 5, minSize=(30, 30))).reshape(-1, 4)
        boxes, _, weights = classifier.detectMultiScale3(gray, 1.1, 5, minSize=(30, 30), outputRejectLevels=True)
        found = HaarDetector(nms_iou=None).detect_faces(image)
        assert found.boxes.tolist() == sorted(plain.tolist())  # the same boxes as before scores
        order = np.lexsort((np.asarray(boxes)[:, 1], np.asarray(boxes)[:, 0]))
        want = 1 / (1 + np.exp(-2 * np.asarray(weights, np.float64).reshape(-1)[order]))
        np.testing.assert_allclose(found.scores, want, rtol=1e-6)
        assert found.landmarks is None and ((0 < found.scores) & (found.scores <= 1)).all()


def test_records_carry_the_detectors_score_and_landmarks(mtcnn, astronaut, tmp_path, capsys):
    from dicc.faces import LANDMARK_NAMES

    ckpt = make_checkpoint(tmp_path / "ce.pt")
    rec = Recognizer.from_checkpoint(ckpt, device="cpu", detector=mtcnn)
    found = mtcnn.detect_faces(astronaut)
    [face] = rec(astronaut)
    assert face["score"] == pytest.approx(float(found.scores[0]))
    assert list(face["landmarks"]) == list(LANDMARK_NAMES)
    np.testing.assert_allclose([face["landmarks"][n] for n in LANDMARK_NAMES], found.landmarks[0], atol=1e-4)
    (lx, ly), (rx, _) = face["landmarks"]["left_eye"], face["landmarks"]["right_eye"]
    assert lx < rx and face["box"][1] < ly < face["landmarks"]["mouth_left"][1]
    assert rec.predict_batch([astronaut])[0][0]["landmarks"] == face["landmarks"]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 256))
    for i in range(3):
        writer.write(np.ascontiguousarray(astronaut[0:256, 60 + 4 * i : 316 + 4 * i, ::-1]))
    writer.release()
    frames = list(rec.predict_video(video))
    assert all(set(f["faces"][0]["landmarks"]) == set(LANDMARK_NAMES) and f["faces"][0]["score"] > 0.9 for f in frames)
    # the command line: --json, --jsonl and the CSV columns carry the same numbers
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo)
    assert _cli([ckpt, photo, "--detector", "mtcnn", "--json"]) == 0
    [r] = json.loads(capsys.readouterr().out)
    assert r["score"] == pytest.approx(face["score"], abs=1e-6)
    assert all(r["landmarks"][n] == pytest.approx(face["landmarks"][n], abs=0.01) for n in LANDMARK_NAMES)
    assert _cli([ckpt, photo, "--detector", "mtcnn", "--jsonl", tmp_path / "t.jsonl"]) == 0
    assert json.loads((tmp_path / "t.jsonl").read_text()) == r
    assert _cli([ckpt, photo, "--detector", "mtcnn", "--csv", tmp_path / "t.csv"]) == 0
    import csv

    [row] = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert float(row["score"]) == r["score"]
    assert [[float(row[f"{n}_x"]), float(row[f"{n}_y"])] for n in LANDMARK_NAMES] == [
        r["landmarks"][n] for n in LANDMARK_NAMES
    ]
    assert _cli([ckpt, photo, "--json"]) == 0  # haar: a score, no landmarks
    [h] = json.loads(capsys.readouterr().out)
    assert 0.99 < h["score"] <= 1 and h["landmarks"] is None


def test_predicting_prints_no_warning(tmp_path):
    """Read-only pixels (np.asarray of a PIL image, a memory map) used to make torch print a
    "non-writable array" UserWarning; it is printed once per process, so a fresh one checks it."""
    import subprocess

    ckpt = make_checkpoint(tmp_path / "ce.pt")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    script = f"""
import numpy as np
from PIL import Image
from dicc.predict import Recognizer
from dicc.faces import normalize_batch
face = np.asarray(Image.open({str(photo)!r}).convert("L").resize((48, 48)))
assert not face.flags.writeable
for tta in ("none", "flip", "crops"):
    rec = Recognizer.from_checkpoint({str(ckpt)!r}, device="cpu", tta=tta)
    rec(face, detect=False)
    _, pixels = rec.extract_faces(face, detect=False)
    assert not pixels.flags.writeable
    rec.classify(pixels)
    x = rec.preprocess(pixels)
    x.flags.writeable = False
    rec.predict_proba(x)
    rec({str(photo)!r})
normalize_batch(pixels, 0.5, 0.25)
from dicc import cli
assert cli.main(["predict", {str(ckpt)!r}, {str(photo)!r}, "--json"]) == 0
"""
    done = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr


def test_load_image_scales_16_bit_photos_as_training_decodes_them(tmp_path):
    """Issue 23: a 16-bit PNG was clipped in prediction (nearly every pixel 255); it is read as
    training reads it (dicc.data.decode.eight_bit), so a 16-bit face predicts as its 8-bit copy."""
    from dicc.faces import load_image

    face = np.asarray(Image.fromarray(skdata.astronaut()).convert("L"))[0:220, 150:330]
    wide = (face.astype(np.uint16) * 257).astype(np.uint16)  # the same picture in 16 bits
    Image.fromarray(wide).save(tmp_path / "f16.png")
    with Image.open(tmp_path / "f16.png") as im:
        assert im.mode.startswith("I;16")
    got = load_image(tmp_path / "f16.png")
    assert got.dtype == np.uint8 and np.array_equal(got, face)


def test_a_detector_registered_with_its_options_is_a_cli_choice(tmp_path, monkeypatch, capsys):
    # a new detector is its class (with cli_options) and its entry in DETECTORS, nothing else
    from dicc.faces import DETECTORS, Detector
    from dicc.faces.detect import CliOption

    made = {}

    class WholeImage(Detector):
        name = "whole"
        cli_options = (CliOption("--whole-inset", "inset", int, 2, "whole: pixels left out at the border"),)
        takes_device = True

        def __init__(self, inset: int = 2, min_size: int = 1, device=None) -> None:
            made.update(inset=inset, min_size=min_size, device=device)
            self.inset = inset

        def detect_many(self, images):
            i = self.inset
            return [
                Detections(np.array([[i, i, im.shape[1] - 2 * i, im.shape[0] - 2 * i]]), np.ones(1)) for im in images
            ]

    monkeypatch.setitem(DETECTORS, "whole", WholeImage)
    ckpt = make_checkpoint(tmp_path / "ce.pt")
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(photo)
    assert _cli([ckpt, photo, "--detector", "whole", "--whole-inset", "5", "--min-face", "3", "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["box"] for r in recs] == [[5, 5, 70, 50]]
    assert made == {"inset": 5, "min_size": 3, "device": "auto"}
