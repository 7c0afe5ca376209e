"""Video timelines: face ids across frames, smoothing, summaries, JSON Lines / CSV, bad frames, camera, Ctrl-C."""

from __future__ import annotations

import argparse
import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from dicc import EMOTIONS  # noqa: E402
from dicc.predict import (  # noqa: E402
    RECORD_KEYS,
    EmaSmoother,
    IouTracker,
    Recognizer,
    VideoReader,  # noqa: E402
    add_predict_parser,
    run_predict,
    summarize,
)
from dicc.predict import inputs as inputs_module  # noqa: E402
from dicc.predict.video import FaceSummary, iou_matrix  # noqa: E402

from helpers import make_checkpoint  # noqa: E402

FPS, N_FRAMES, W, H = 10.0, 10, 320, 240


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def ckpt(workdir) -> Path:
    return make_checkpoint(workdir / "ce.pt")


@pytest.fixture(scope="module")
def rec(ckpt) -> Recognizer:
    return Recognizer.from_checkpoint(ckpt, device="cpu")


def _frames() -> list[np.ndarray]:
    """Two real faces (the astronaut's head, and it mirrored) on a grey background: face A in the
    top row moves right, face B in the bottom row moves left, 8 px a frame."""
    head = np.asarray(Image.fromarray(skdata.astronaut()[6:221, 117:332]).resize((100, 100)))
    frames = []
    for i in range(N_FRAMES):
        f = np.full((H, W, 3), 120, np.uint8)
        ax, bx = 10 + 8 * i, 210 - 8 * i
        f[15:115, ax : ax + 100] = head
        f[130:230, bx : bx + 100] = head[:, ::-1]
        frames.append(f)
    return frames


def _write(path: Path, frames) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(workdir) -> Path:
    return _write(workdir / "two_faces.avi", _frames())


@pytest.fixture(scope="module")
def broken_video(workdir, video) -> Path:
    """The same clip with frame 3's JPEG data zeroed: OpenCV cannot decode that frame."""
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == N_FRAMES
    data[starts[3] : starts[3] + 2000] = bytes(2000)
    path = workdir / "broken_frame.avi"
    path.write_bytes(bytes(data))
    return path


def run_cli(argv) -> int:
    parser = argparse.ArgumentParser(prog="dicc")
    add_predict_parser(parser.add_subparsers(dest="command", required=True))
    return run_predict(parser.parse_args(["predict", *map(str, argv)]))


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- the pieces ----------------------------------------------------------------------------------
def test_iou_and_tracker_keep_ids_while_boxes_move():
    assert iou_matrix([[0, 0, 10, 10]], [[5, 0, 10, 10], [20, 20, 5, 5]]).tolist() == [[50 / 150, 0.0]]
    t = IouTracker(iou=0.3, max_missed=1)
    assert t.update([[0, 0, 50, 50], [100, 0, 50, 50]]) == [0, 1]
    assert t.update([[110, 5, 50, 50], [8, 2, 50, 50]]) == [1, 0]  # moved a little, listed in another order
    assert t.update([[300, 300, 40, 40]]) == [2]  # a new face; 0 and 1 missed once
    assert t.update([[12, 4, 50, 50], [300, 302, 40, 40]]) == [0, 2]  # 0 comes back within max_missed
    assert t.ended == [1]  # 1 missed twice: its track ended
    assert t.update([[110, 5, 50, 50]]) == [3]  # ... so it comes back as a new face
    assert t.update([[14, 4, 50, 50]]) == [0] and t.ended == [2]
    with pytest.raises(ValueError, match="iou"):
        IouTracker(iou=0)


def test_tracker_follows_a_fast_face_by_its_centre():
    t, strict = IouTracker(), IouTracker(max_shift=0)
    assert t.update([[0, 0, 40, 40]]) == strict.update([[0, 0, 40, 40]]) == [0]
    assert t.update([[30, 0, 40, 40]]) == [0] and strict.update([[30, 0, 40, 40]]) == [1]  # IoU 0.14, 0.75 widths
    assert t.update([[90, 0, 40, 40]]) == [1]  # 1.5 widths away: another face
    assert t.update([[95, 0, 100, 100]]) == [2]  # near, but 2.5x the size: another face


def test_ema_smoother_per_face():
    s = EmaSmoother(0.25)
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    np.testing.assert_allclose(s.update([7], a), a)  # the first frame is itself
    np.testing.assert_allclose(s.update([7, 8], np.concatenate([b, b])), [[0.75, 0.25], [0.0, 1.0]])
    np.testing.assert_allclose(s.update([7], b), [[0.5625, 0.4375]])
    s.forget([7])
    np.testing.assert_allclose(s.update([7], a), a)
    np.testing.assert_allclose(EmaSmoother(1.0).update([0], b), b)
    with pytest.raises(ValueError, match="alpha"):
        EmaSmoother(1.5)


def test_summary_shares_and_segments():
    f = FaceSummary(4)
    onehot = np.eye(7)
    for k, c in enumerate([3, 3, 4, 3, 3]):  # happy, happy, sad, happy, happy
        f.add(2 * k, round(0.2 * k, 6), onehot[c] * 0.7 + 0.1 / 2)
    s = summarize(f, EMOTIONS)
    assert s["face_id"] == 4 and s["frames"] == 5 and s["first_s"] == 0.0 and s["last_s"] == pytest.approx(0.8)
    assert s["dominant"] == "happy" and s["shares"]["happy"] == 0.8 and s["shares"]["sad"] == 0.2
    assert sum(s["shares"].values()) == pytest.approx(1)
    assert [(g["dominant"], g["start_s"], g["end_s"], g["frames"]) for g in s["segments"]] == [
        ("happy", 0.0, 0.2, 2),
        ("sad", 0.4, 0.4, 1),
        ("happy", 0.6, pytest.approx(0.8), 2),
    ]


def test_video_reader_counts_undecodable_frames(video, broken_video):
    good = VideoReader(video, every=1)
    assert [f.index for f in good] == list(range(N_FRAMES)) and good.bad_frames == 0
    bad = VideoReader(broken_video, every=1)
    frames = list(bad)
    assert [f.index for f in frames] == [0, 1, 2, 4, 5, 6, 7, 8, 9] and bad.bad_frames == 1
    assert [f.time_s for f in frames][3] == pytest.approx(0.4)  # the frames after it keep their times
    every2 = VideoReader(broken_video, every=2)
    assert [f.index for f in every2] == [0, 2, 4, 6, 8] and every2.bad_frames == 0  # frame 3 was not wanted


# -- Recognizer.predict_video ------------------------------------------------------------------------
def test_face_ids_stay_with_their_faces_as_they_move(rec, video):
    run = rec.predict_video(video)
    frames = list(run)
    assert [r["frame"] for r in frames] == list(range(N_FRAMES))
    assert [r["time_s"] for r in frames] == pytest.approx([i / FPS for i in range(N_FRAMES)])
    top, bottom = [], []
    for r in frames:
        assert len(r["faces"]) == 2
        for face in r["faces"]:
            (top if face["box"][1] < 120 else bottom).append((face["face_id"], face["box"][0]))
    assert {i for i, _ in top} == {0} and {i for i, _ in bottom} == {1}  # one id each, all along
    assert [x for _, x in top] == sorted(x for _, x in top) and top[-1][1] - top[0][1] > 60  # A moved right
    assert [x for _, x in bottom] == sorted((x for _, x in bottom), reverse=True)  # B moved left
    summary = run.summary()
    assert [s["face_id"] for s in summary] == [0, 1] and all(s["frames"] == N_FRAMES for s in summary)
    assert run.bad_frames == 0 and run.frames_read == N_FRAMES


def _pixel_backend(x: np.ndarray) -> np.ndarray:
    """Probabilities that follow the crop's pixels (the test checkpoint's decisive head gives
    nearly the same one-hot answer for every frame): softmax of 7 horizontal bands' means."""
    z = 10 * x[:, 0, :42].reshape(len(x), 7, -1).mean(2)
    e = np.exp(z - z.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def test_smoothing_is_an_ema_per_face(video):
    rec = Recognizer(_pixel_backend, EMOTIONS, mean=0.5, std=0.25, image_size=48, channels=1)
    raw = {
        (r["frame"], f["face_id"]): np.array(list(f["emotions"].values()))
        for r in rec.predict_video(video)
        for f in r["faces"]
    }
    smooth = {
        (r["frame"], f["face_id"]): np.array(list(f["emotions"].values()))
        for r in rec.predict_video(video, smooth=0.4)
        for f in r["faces"]
    }
    for fid in (0, 1):
        want = raw[(0, fid)]
        for k in range(N_FRAMES):
            want = raw[(k, fid)] if k == 0 else 0.4 * raw[(k, fid)] + 0.6 * want
            np.testing.assert_allclose(smooth[(k, fid)], want, atol=1e-6)
    assert any(np.abs(smooth[k] - raw[k]).max() > 1e-3 for k in raw)  # the faces' probabilities do vary


def test_frames_go_through_the_network_in_batches(ckpt, video):
    rec = Recognizer.from_checkpoint(ckpt, device="cpu", batch_size=64)
    sizes, backend = [], rec.backend
    rec.backend = lambda x: (sizes.append(len(x)), backend(x))[1]
    assert len(list(rec.predict_video(video, chunk=4))) == N_FRAMES
    assert sizes == [8, 8, 4]  # 4 frames x 2 faces per forward pass


# -- the command line ------------------------------------------------------------------------------
def test_cli_video_timeline_csv_jsonl_and_summary(ckpt, video, tmp_path, capsys):
    out, summary = tmp_path / "timeline.csv", tmp_path / "summary.json"
    assert run_cli([ckpt, video, "--csv", out, "--every", "2", "--summary", summary, "--smooth", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "face 0: 5 frames" in err and "face 1: 5 frames" in err
    rows = _read_csv(out)
    assert list(rows[0])[:5] == ["file", "frame", "time_s", "face", "face_id"]
    assert list(rows[0])[10:18] == [*EMOTIONS, "score"]
    assert [(r["frame"], r["time_s"]) for r in rows[::2]] == [(str(i), str(i / FPS)) for i in range(0, N_FRAMES, 2)]
    assert {r["face_id"] for r in rows if int(r["y"]) < 120} == {"0"}
    assert {r["face_id"] for r in rows if int(r["y"]) >= 120} == {"1"}
    faces = json.loads(summary.read_text())
    assert [(s["file"], s["face_id"], s["frames"]) for s in faces] == [(str(video), 0, 5), (str(video), 1, 5)]
    assert set(faces[0]) >= {"dominant", "shares", "mean", "segments", "first_s", "last_s"}
    jl = tmp_path / "timeline.jsonl"
    assert run_cli([ckpt, video, "--jsonl", jl, "--every", "2", "--smooth", "0.5"]) == 0
    lines = [json.loads(line) for line in jl.read_text().splitlines()]
    assert all(set(r) == set(RECORD_KEYS) for r in lines) and len(lines) == len(rows)
    for r, row in zip(lines, rows):
        assert (r["frame"], r["time_s"], r["face_id"]) == (int(row["frame"]), float(row["time_s"]), int(row["face_id"]))
        assert r["emotions"]["happy"] == pytest.approx(float(row["happy"]))


def test_cli_bad_frames_are_counted_and_an_unopenable_video_is_one_line(ckpt, broken_video, video, tmp_path, capsys):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video")
    out = tmp_path / "out.csv"
    assert run_cli([ckpt, broken_video, fake, video, "--csv", out]) == 1
    err = capsys.readouterr().err
    assert "broken_frame.avi: 1 frame(s) could not be decoded" in err
    assert len([line for line in err.splitlines() if "fake.mp4" in line]) == 1
    rows = _read_csv(out)
    broken = sorted({int(r["frame"]) for r in rows if r["file"] == str(broken_video)})
    assert broken == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert len([r for r in rows if r["file"] == str(video)]) == 2 * N_FRAMES  # the video after the bad one


class _CameraFromFile:
    """Stands in for ``cv2.VideoCapture(index)``: the frames of a video file, over and over, and
    a Ctrl-C (SIGINT) while the ``interrupt_at``-th frame is read."""

    def __init__(self, path, interrupt_at: int) -> None:
        self.path, self.interrupt_at, self.reads = str(path), interrupt_at, 0
        self.cap = cv2.VideoCapture(self.path)

    def isOpened(self) -> bool:
        return self.cap.isOpened()

    def get(self, prop):
        return 0.0 if prop == cv2.CAP_PROP_FRAME_COUNT else self.cap.get(prop)

    def read(self):
        self.reads += 1
        if self.reads == self.interrupt_at:
            signal.raise_signal(signal.SIGINT)
        ok, frame = self.cap.read()
        if not ok:
            self.cap.release()
            self.cap = cv2.VideoCapture(self.path)
            ok, frame = self.cap.read()
        return ok, frame

    def grab(self) -> bool:
        return self.read()[0]

    def release(self) -> None:
        self.cap.release()


def test_cli_camera_until_ctrl_c_leaves_complete_outputs(ckpt, video, tmp_path, capsys, monkeypatch):
    opened = []

    def fake_open(source):
        opened.append(source)
        return _CameraFromFile(video, interrupt_at=13) if isinstance(source, int) else cv2.VideoCapture(source)

    monkeypatch.setattr(inputs_module, "open_capture", fake_open)
    out, summary = tmp_path / "camera.csv", tmp_path / "camera.json"
    previous = signal.getsignal(signal.SIGINT)
    assert run_cli([ckpt, "--camera", "0", "--csv", out, "--summary", summary, "--smooth", "0.5"]) == 0
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is put back
    assert opened == [0]
    err = capsys.readouterr().err
    assert "interrupted" in err and "wrote 26 rows" in err
    with open(out, newline="") as f:
        raw = list(csv.reader(f))
    assert all(len(r) == len(raw[0]) for r in raw)  # every row complete
    rows = _read_csv(out)
    assert [int(r["frame"]) for r in rows[::2]] == list(range(13))  # the frame read during Ctrl-C is the last
    assert {r["file"] for r in rows} == {"camera:0"}
    times = [float(r["time_s"]) for r in rows[::2]]
    assert times == sorted(times) and times[0] >= 0
    faces = json.loads(summary.read_text())
    # the clip restarts after 10 frames: the faces jump back and come in as new ones
    assert [(s["file"], s["face_id"], s["frames"]) for s in faces] == [
        ("camera:0", 0, 10),
        ("camera:0", 1, 10),
        ("camera:0", 2, 3),
        ("camera:0", 3, 3),
    ]


def test_cli_ctrl_c_during_files_stops_after_the_frame(ckpt, video, files_photo, tmp_path, capsys, monkeypatch):
    def fake_open(source):
        cap = _CameraFromFile(video, interrupt_at=4)
        cap.get = cap.cap.get  # a file: its frame count is known
        return cap

    monkeypatch.setattr(inputs_module, "open_capture", fake_open)
    out = tmp_path / "files.jsonl"
    assert run_cli([ckpt, video, files_photo, "--jsonl", out]) == 130
    assert "interrupted" in capsys.readouterr().err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 0, 1, 1, 2, 2, 3, 3]  # the photo after the video was not started


@pytest.fixture
def files_photo(tmp_path) -> Path:
    path = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(path)
    return path


def test_cli_needs_an_input_or_a_camera(ckpt):
    with pytest.raises(ValueError, match="--camera"):
        run_cli([ckpt])
    with pytest.raises(ValueError, match="--smooth"):
        run_cli([ckpt, "x.mp4", "--smooth", "0"])


def test_cli_a_camera_that_cannot_be_opened_is_one_line(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inputs_module, "open_capture", lambda source: cv2.VideoCapture())  # opens nothing
    assert run_cli([ckpt, "--camera", "2", "--csv", tmp_path / "none.csv"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "camera:2" in line]
    assert err == ["dicc predict: camera:2: cannot open the camera; skipped"]
    assert not (tmp_path / "none.csv").exists()  # nothing was processed: nothing written
    assert list(tmp_path.iterdir()) == []  # nor a temporary file left behind


def test_an_mp4_file_gives_the_same_timeline_as_the_avi(rec, workdir):
    """An .mp4 (MPEG-4 part 2, the codec OpenCV's own FFmpeg writes without extra libraries)
    through the same reader: every frame, its time, both faces with their ids."""
    path = workdir / "two_faces.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    for f in _frames():
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()
    assert path.read_bytes()[4:8] == b"ftyp"  # a real MP4 container
    frames = list(rec.predict_video(path))
    assert [r["frame"] for r in frames] == list(range(N_FRAMES))
    assert [r["time_s"] for r in frames] == pytest.approx([i / FPS for i in range(N_FRAMES)])
    assert all(sorted(face["face_id"] for face in r["faces"]) == [0, 1] for r in frames)


# -- frames without a face, faces that leave and come back, frame skipping -------------
def _head() -> np.ndarray:
    return np.asarray(Image.fromarray(skdata.astronaut()[6:221, 117:332]).resize((100, 100)))


def _gap_frames(n: int = 14, gap=range(8, 11), x0: int = 10, step: int = 4) -> list[np.ndarray]:
    """One real face moving right ``step`` px a frame on a grey background; the frames in
    ``gap`` are black (a cut, or someone who stepped away)."""
    head, frames = _head(), []
    for i in range(n):
        f = np.zeros((H, W, 3), np.uint8) if i in gap else np.full((H, W, 3), 120, np.uint8)
        if i not in gap:
            f[15:115, x0 + step * i : x0 + step * i + 100] = head
        frames.append(f)
    return frames


@pytest.fixture(scope="module")
def gap_video(workdir) -> Path:
    """14 frames at 10 fps; frames 8-10 black: the face is gone for 0.4 s between sightings."""
    return _write(workdir / "gap.avi", _gap_frames())


@pytest.mark.parametrize("detector", ["haar", "mtcnn"])
@pytest.mark.parametrize("smooth", [1.0, 0.5])
def test_frames_without_a_face_do_not_end_the_video(ckpt, gap_video, detector, smooth):
    if detector == "mtcnn":
        pytest.importorskip("facenet_pytorch")
    rec = Recognizer.from_checkpoint(ckpt, device="cpu", detector=detector)
    run = rec.predict_video(gap_video, smooth=smooth, chunk=16)  # the gap and the faces in one chunk
    frames = list(run)
    assert [r["frame"] for r in frames] == list(range(14))  # the video goes on after the gap
    assert [len(r["faces"]) for r in frames] == [1] * 8 + [0] * 3 + [1] * 3
    assert {f["face_id"] for r in frames for f in r["faces"]} == {0}  # back within --track-gap: same id
    [summary] = run.summary()
    assert summary["frames"] == 11 and summary["first_s"] == 0.0 and summary["last_s"] == pytest.approx(1.3)
    assert [s["frames"] for s in summary["segments"]] == [8, 3]  # the gap ends a segment
    face = frames[0]["faces"][0]
    assert 0 < face["score"] <= 1
    assert (face["landmarks"] is None) == (detector == "haar")


def test_smoothing_restarts_when_a_face_comes_back(gap_video):
    rec = Recognizer(_pixel_backend, EMOTIONS, mean=0.5, std=0.25, image_size=48, channels=1)
    raw = {
        r["frame"]: np.array(list(r["faces"][0]["emotions"].values()))
        for r in rec.predict_video(gap_video)
        if r["faces"]
    }
    smooth = {
        r["frame"]: np.array(list(r["faces"][0]["emotions"].values()))
        for r in rec.predict_video(gap_video, smooth=0.4)
        if r["faces"]
    }
    assert sorted(raw) == sorted(smooth) == [*range(8), 11, 12, 13]
    want = raw[0]
    for k in [*range(8), 11, 12, 13]:
        want = raw[k] if k in (0, 11) else 0.4 * raw[k] + 0.6 * want  # frame 11: a new average
        np.testing.assert_allclose(smooth[k], want, atol=1e-6)
    assert np.abs(raw[11] - (0.4 * raw[11] + 0.6 * smooth[7])).max() > 1e-3  # restarting made a difference


def test_track_gap_is_in_seconds_and_follows_every(ckpt, gap_video):
    rec = Recognizer.from_checkpoint(ckpt, device="cpu")

    def ids(**kw):
        return [f["face_id"] for r in rec.predict_video(gap_video, **kw) for f in r["faces"]]

    assert ids() == [0] * 11
    assert ids(track_gap=0.3) == [0] * 8 + [1] * 3  # 0.4 s between sightings: longer than the gap allowed
    assert ids(track_gap=0.4) == [0] * 11
    # every 2nd frame: frames 0-6, then 12 (0.6 s after frame 6): the same seconds, half the frames
    assert ids(every=2, track_gap=0.5) == [0] * 4 + [1]
    assert ids(every=2, track_gap=0.6) == [0] * 5
    assert ids(max_missed=2) == [0] * 8 + [1] * 3  # a count of processed frames instead (3 missed)


def test_a_face_that_comes_back_elsewhere_is_a_new_face(ckpt, workdir):
    """Gone for 0.4 s, then back on the other side of the frame: not near where it was."""
    head, frames = _head(), _gap_frames(n=12, gap=range(6, 9))
    for i in range(9, 12):
        frames[i] = np.full((H, W, 3), 120, np.uint8)
        frames[i][120:220, 200:300] = head
    rec = Recognizer.from_checkpoint(ckpt, device="cpu")
    run = rec.predict_video(_write(workdir / "elsewhere.avi", frames))
    assert [f["face_id"] for r in run for f in r["faces"]] == [0] * 6 + [1] * 3


def test_tracker_with_times_ends_tracks_by_seconds_and_widens_with_the_time_between_frames():
    t = IouTracker(max_gap_s=0.5, max_speed=6.0)
    assert t.update([[0, 0, 40, 40]], 0.0) == [0]
    assert t.update([], 0.2) == [] and t.ended == []
    assert t.update([[2, 0, 40, 40]], 0.5) == [0] and t.returned == [0]  # 0.5 s: within the gap
    assert t.update([[4, 0, 40, 40]], 0.6) == [0] and t.returned == []
    assert t.update([], 1.0) == [] and t.ended == []
    assert t.update([[4, 0, 40, 40]], 1.2) == [1] and t.ended == [0]  # 0.6 s since it was seen: a new face
    # the allowed movement: max_shift (1 box width) between close frames, more after a longer step
    t = IouTracker(max_speed=6.0)
    assert t.allowed_shift(None) == 1.0
    t.update([[0, 0, 40, 40]], 0.0)
    assert t.allowed_shift(0.1) == 1.0 and t.allowed_shift(0.4) == pytest.approx(2.4)
    assert t.update([[80, 0, 40, 40]], 0.4) == [0]  # 2 widths in 0.4 s
    assert IouTracker().update([[0, 0, 40, 40]], 0.0) == [0]
    old = IouTracker()  # no speed (as before): 2 widths is another face
    old.update([[0, 0, 40, 40]], 0.0)
    assert old.update([[80, 0, 40, 40]], 0.4) == [1]
    with pytest.raises(ValueError, match="max_gap_s"):
        IouTracker(max_gap_s=-1)


def test_ema_smoother_takes_a_frame_without_faces():
    s = EmaSmoother(0.5)
    assert s.update([], np.zeros((0, 7), np.float32)).shape == (0, 7)
    assert EmaSmoother(1.0).update([], np.zeros((0, 7))).shape == (0, 7)
    with pytest.raises(ValueError, match="face ids"):
        s.update([1, 2], np.zeros((3, 7)))


def _moving_pair(n: int = 50, step: int = 8) -> list[np.ndarray]:
    """Two real faces 640 px apart moving towards each other in two rows, ``step`` px a frame."""
    head, frames = _head(), []
    for i in range(n):
        f = np.full((240, 640, 3), 120, np.uint8)
        ax, bx = 10 + step * i, 530 - step * i
        f[15:115, ax : ax + 100] = head
        f[130:230, bx : bx + 100] = head[:, ::-1]
        frames.append(f)
    return frames


def test_cli_every_10_keeps_two_moving_faces_as_two_ids(ckpt, workdir, tmp_path):
    """25 fps, the faces (boxes ~50 px) move 8 px a frame: 80 px, 1.6 box widths, between
    processed frames with --every 10 (one box width used to be the limit: 10 ids)."""
    path = workdir / "pair25.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 240))
    for f in _moving_pair():
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()
    out = tmp_path / "pair.csv"
    assert run_cli([ckpt, path, "--every", "10", "--csv", out]) == 0
    rows = _read_csv(out)
    assert [int(r["frame"]) for r in rows[::2]] == [0, 10, 20, 30, 40]
    assert {r["face_id"] for r in rows if int(r["y"]) < 120} == {"0"}
    assert {r["face_id"] for r in rows if int(r["y"]) >= 120} == {"1"}


def test_cli_faceless_frames_csv_has_no_row_and_jsonl_a_frame_record(ckpt, gap_video, tmp_path, capsys):
    csv_out, jl, summary = tmp_path / "gap.csv", tmp_path / "gap.jsonl", tmp_path / "gap.json"
    assert run_cli([ckpt, gap_video, "--csv", csv_out, "--summary", summary, "--smooth", "0.5"]) == 0
    rows = _read_csv(csv_out)
    assert [int(r["frame"]) for r in rows] == [*range(8), 11, 12, 13]  # no row for frames 8-10
    assert {r["face_id"] for r in rows} == {"0"}
    assert [(s["face_id"], s["frames"]) for s in json.loads(summary.read_text())] == [(0, 11)]
    assert run_cli([ckpt, gap_video, "--jsonl", jl, "--every", "2"]) == 0
    lines = [json.loads(line) for line in jl.read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 2, 4, 6, 8, 10, 12]
    assert lines[4] == {"file": str(gap_video), "frame": 8, "time_s": 0.8, "faces": []}
    assert lines[5] == {"file": str(gap_video), "frame": 10, "time_s": 1.0, "faces": []}
    assert all(set(r) == set(RECORD_KEYS) and r["face_id"] == 0 for r in lines if r["frame"] not in (8, 10))
    assert "face 0: 5 frames" in capsys.readouterr().err


def test_cli_camera_whose_viewer_steps_away(ckpt, gap_video, tmp_path, capsys, monkeypatch):
    """A camera (through the open_capture seam) whose frames 8-10 are black, on a clock that
    ticks 0.1 s per frame; --track-gap in seconds of that clock."""
    import types

    clock = iter(np.arange(0, 100, 0.1))
    monkeypatch.setattr(inputs_module, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock))))
    monkeypatch.setattr(inputs_module, "open_capture", lambda source: _CameraFromFile(gap_video, interrupt_at=15))
    out = tmp_path / "camera.jsonl"
    assert run_cli([ckpt, "--camera", "0", "--jsonl", out, "--smooth", "0.5"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(15))  # the 15th read came with Ctrl-C
    assert [("faces" in r) for r in lines[:14]] == [False] * 8 + [True] * 3 + [False] * 3
    assert {r["face_id"] for r in lines[:14] if "faces" not in r} == {0}  # the 15th: the clip starts over
    out2 = tmp_path / "camera2.jsonl"
    clock = iter(np.arange(0, 100, 0.1))
    assert run_cli([ckpt, "--camera", "0", "--jsonl", out2, "--track-gap", "0.2"]) == 0
    ids = [r["face_id"] for r in map(json.loads, out2.read_text().splitlines()) if "faces" not in r]
    assert ids[:8] == [0] * 8 and set(ids[8:11]) == {1}  # gone longer than 0.2 s: a new face
    with pytest.raises(ValueError, match="--track-gap"):
        run_cli([ckpt, "--camera", "0", "--track-gap", "-1"])
