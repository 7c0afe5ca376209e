"""int8 quantisation of an ONNX export: it runs, keeps the export's metadata, and stays close to
the fp32 graph it came from."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from dicc.export import export_onnx  # noqa: E402
from dicc.predict import Recognizer  # noqa: E402
from dicc.quantize import quantize_onnx  # noqa: E402

from helpers import make_checkpoint  # noqa: E402


def _faces(n, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(1, 1, 48, 48))
    return np.clip(base + rng.normal(0, 40, size=(n, 1, 48, 48)), 0, 255).astype(np.uint8)


def test_int8_graph_keeps_metadata_and_follows_the_fp32_graph(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", width=8)
    fp32 = tmp_path / "m.onnx"
    export_onnx(ckpt, fp32)
    info = quantize_onnx(fp32, tmp_path / "m8.onnx", _faces(64, 0))
    assert info["calibration_faces"] == 64 and info["path"].is_file()
    a, b = Recognizer.from_onnx(fp32), Recognizer.from_onnx(tmp_path / "m8.onnx")
    assert a.class_names == b.class_names and (a.mean, a.std, a.image_size) == (b.mean, b.std, b.image_size)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m8.onnx")).metadata_props}
    assert meta["quantization"].startswith("int8 static QDQ, 64 calibration faces")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m8.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    faces = _faces(40, 1)  # other faces than the calibration's
    pa, pb = a.classify(faces), b.classify(faces)
    assert pb.shape == pa.shape and np.allclose(pb.sum(1), 1, atol=1e-5)
    assert np.abs(pa - pb).max() < 0.15  # quantisation noise, not another model
    assert (pa.argmax(1) == pb.argmax(1)).mean() >= 0.8


def test_bad_calibration_faces_are_refused(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt", width=4)
    export_onnx(ckpt, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"expected uint8 \[N, 1, 48, 48\], got float32"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", _faces(4, 0).astype(np.float32))
    with pytest.raises(ValueError, match="none given"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", _faces(4, 0)[:0])
    assert not (tmp_path / "q.onnx").exists()


def test_a_pixels_graph_is_calibrated_on_pixels(tmp_path):
    # the graph that folds the normalisation in takes 0..255: calibrated on normalised faces its
    # int8 ranges would be wrong (about 4x the quantisation error of the normalised graph's)
    ckpt = make_checkpoint(tmp_path / "m.pt", width=8)
    calib, faces = _faces(64, 0), _faces(40, 1)
    errors = {}
    for kind in ("normalized", "pixels"):
        fp32, int8 = tmp_path / f"{kind}.onnx", tmp_path / f"{kind}8.onnx"
        export_onnx(ckpt, fp32, input=kind)
        quantize_onnx(fp32, int8, calib)
        pa, pb = Recognizer.from_onnx(fp32).classify(faces), Recognizer.from_onnx(int8).classify(faces)
        errors[kind] = float(np.abs(pa - pb).max())
    assert errors["pixels"] <= 2 * errors["normalized"] + 1e-3, errors
