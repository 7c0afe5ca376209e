"""The Recognizer's fast path: classify at batch 1 makes one backend call (test-time views stacked
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


# -- the default path: the bundled ONNX graph where it is shipped, else the checkpoint ----
def _with_tta(path, tta: str):
    from dicc.checkpoint import save_atomic

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt["config"] = {"eval": {"tta": tta}}
    return save_atomic(ckpt, path)


@pytest.fixture
def assets(tmp_path, monkeypatch):
    """A temporary assets folder standing in for dicc/assets: a tiny default_model.pt (eval.tta
    flip, so a hard-coded view count would show) and, once :func:`ship_onnx` ran, its .onnx."""
    from dicc import checkpoint

    folder = tmp_path / "assets"
    folder.mkdir()
    pt = _with_tta(make_checkpoint(folder / "default_model.pt", mean=0.45, std=0.3), "flip")
    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL", pt)
    monkeypatch.setattr(checkpoint, "DEFAULT_ONNX", folder / "default_model.onnx")
    return folder


def _ship_onnx(folder):
    from dicc.export import export_onnx

    return export_onnx(folder / "default_model.pt", folder / "default_model.onnx", input="pixels")["path"]


def test_default_is_the_checkpoint_while_no_onnx_graph_is_shipped(assets):
    from dicc.predict.backends import TorchBackend
    from dicc.predict.recognizer import default_model_file

    assert default_model_file() == assets / "default_model.pt"
    for rec in (Recognizer.load(), Recognizer.load("default", device="cpu")):
        assert isinstance(rec.backend, TorchBackend) and rec.source == str(assets / "default_model.pt")
        assert rec.tta == "flip"  # the checkpoint's own eval.tta, nothing hard-coded


def test_default_is_the_onnx_graph_where_shipped_and_onnxruntime_imports(assets, monkeypatch):
    pytest.importorskip("onnxruntime")
    from dicc.predict.backends import OnnxBackend
    from dicc.predict.recognizer import default_model_file

    onnx_file = _ship_onnx(assets)
    assert default_model_file() == default_model_file("auto") == default_model_file("cpu") == onnx_file
    assert default_model_file("cuda") == assets / "default_model.pt"  # the graph runs on the CPU
    rec = Recognizer.load(device="auto", amp="auto")  # what `dicc predict` passes: ignored for a graph
    assert isinstance(rec.backend, OnnxBackend) and rec.source == str(onnx_file)
    assert rec.input_kind == "pixels" and rec.tta == "flip"  # the metadata's, from the checkpoint
    faces = _faces(3, seed=4)
    ref = Recognizer.from_checkpoint(assets / "default_model.pt", device="cpu")
    np.testing.assert_allclose(rec.classify(faces), ref.classify(faces), atol=1e-5)
    assert Recognizer.load(tta="none").tta == "none"  # TTA stays an option
    # onnxruntime not importable: the checkpoint, with no error
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    assert default_model_file() == assets / "default_model.pt"
    assert Recognizer.load().source == str(assets / "default_model.pt")


def test_predict_photo_video_and_export_default_take_the_default_path(assets, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    cv2 = pytest.importorskip("cv2")
    import json

    import onnx

    from dicc import cli
    from dicc.checkpoint import ASSETS

    # `dicc export default OUT.onnx`: the bundled checkpoint, its own test-time augmentation, pixels in
    assert cli.main(["export", "default", str(assets / "default_model.onnx")]) == 0
    meta = {p.key: p.value for p in onnx.load(str(assets / "default_model.onnx")).metadata_props}
    assert meta["input"] == "pixels" and meta["tta"] == "flip"
    loaded = []
    real = Recognizer.from_onnx.__func__
    monkeypatch.setattr(Recognizer, "from_onnx", classmethod(lambda cls, p, **o: loaded.append(p) or real(cls, p, **o)))
    photo = ASSETS / "sample_face.jpg"  # the real sample photo: one face
    capsys.readouterr()
    assert cli.main(["predict", str(photo), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [len(r["emotions"]) for r in records] == [7] and loaded == [assets / "default_model.onnx"]
    frame = cv2.imread(str(photo))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (frame.shape[1], frame.shape[0]))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    assert cli.main(["predict", str(clip), "--jsonl", str(tmp_path / "clip.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "clip.jsonl").read_text().splitlines() if line.strip()]
    assert len(loaded) == 2 and len(lines) == 3
    video = list(Recognizer.load().predict_video(str(clip)))
    assert len(video) == 3 and all(len(r["faces"]) == 1 for r in video) and len(loaded) == 3


def test_onnxruntime_is_a_base_dependency_and_the_wheel_takes_onnx_assets():
    tomllib = pytest.importorskip("tomllib")
    from fnmatch import fnmatch
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    base = [r.split(">")[0].split("=")[0].strip() for r in pyproject["project"]["dependencies"]]
    assert "onnxruntime" in base
    assert "onnx" in pyproject["project"]["optional-dependencies"]  # the extra still installs
    patterns = pyproject["tool"]["setuptools"]["package-data"]["dicc"]
    assert any(fnmatch("assets/default_model.onnx", p) for p in patterns)


def test_the_onnx_paths_print_no_warning(tmp_path):
    """As tests/test_detectors.py checks for the .pt path: read-only pixels through both ONNX
    input kinds and every test-time augmentation, in a fresh process with warnings as errors."""
    pytest.importorskip("onnxruntime")
    import subprocess
    import sys

    from dicc.export import export_onnx

    ckpt = make_checkpoint(tmp_path / "m.pt")
    for kind in ("pixels", "normalized"):
        export_onnx(ckpt, tmp_path / f"{kind}.onnx", input=kind)
    script = f"""
import numpy as np
from dicc.predict import Recognizer
faces = np.random.default_rng(0).integers(0, 256, (3, 1, 48, 48), dtype=np.uint8)
faces.flags.writeable = False
for kind in ("pixels", "normalized"):
    for tta in ("none", "flip", "crops"):
        rec = Recognizer.load({str(tmp_path)!r} + f"/{{kind}}.onnx", tta=tta)
        assert rec.classify(faces).shape == (3, 7)
        assert len(rec(faces[0, 0], detect=False)) == 1
"""
    done = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr
