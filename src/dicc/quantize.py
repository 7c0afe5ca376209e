"""int8 quantisation of an exported ONNX model (onnxruntime static quantisation).

:func:`quantize_onnx` takes a file from :func:`dicc.export.export_onnx` and calibration faces
(model-sized ``uint8 [N, C, S, S]``, e.g. training faces: never the faces it is evaluated on),
and writes a QDQ graph with per-channel int8 weights and uint8 activations whose ranges were
observed on the calibration faces (min/max). The file keeps the export's metadata (class
names, normalisation, test-time augmentation) plus ``quantization``, so
:meth:`dicc.predict.Recognizer.from_onnx` runs it as any export. Whether it is worth it is a
measurement: accuracy against the fp32 export on held-out faces, and speed
(``benchmarks/peer_fer.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .checkpoint import atomic_path


#: the operators computed in int8 (with their inputs' and outputs' quantisation); the rest stays float
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "MaxPool", "GlobalAveragePool", "AveragePool", "Relu", "Add", "Mul"]


class _Batches:
    """onnxruntime's CalibrationDataReader over normalised calibration batches."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int) -> None:
        self.name, self.x, self.batch, self.at = input_name, x, batch, 0

    def get_next(self):
        if self.at >= len(self.x):
            return None
        out = {self.name: self.x[self.at : self.at + self.batch]}
        self.at += self.batch
        return out

    def rewind(self) -> None:
        self.at = 0


def _calibration_inputs(fp32_path: Path, meta: dict, calibration) -> np.ndarray:
    """The calibration faces as the graph at ``fp32_path`` takes them (pixels, or normalised with
    its own mean/std); a ValueError naming what is wrong with the file or the faces."""
    import json

    from .faces import normalize_batch

    for key in ("mean", "std", "image_size", "channels"):
        if key not in meta:
            raise ValueError(f"{fp32_path}: the ONNX metadata lacks {key}; quantise a file from `dicc export`")
    size, channels = int(meta["image_size"]), int(meta["channels"])
    calibration = np.asarray(calibration)
    if calibration.dtype != np.uint8 or calibration.ndim != 4 or calibration.shape[1:] != (channels, size, size):
        raise ValueError(
            f"calibration faces: expected uint8 [N, {channels}, {size}, {size}], got "
            f"{calibration.dtype} {list(calibration.shape)}"
        )
    if not len(calibration):
        raise ValueError("calibration faces: none given")
    if meta.get("input", "normalized") == "pixels":  # the graph normalises: calibrate on the pixels
        return calibration.astype(np.float32)
    return normalize_batch(calibration, json.loads(meta["mean"]), json.loads(meta["std"]))


def quantize_onnx(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    *,
    batch: int = 64,
) -> dict:
    """Write the int8 version of the ONNX model at ``fp32_path`` to ``out_path`` (atomically).

    ``calibration``: ``uint8 [N, C, S, S]`` faces at the model's input size, normalised here
    with the file's own ``mean``/``std``. Returns ``{"path", "calibration_faces", "bytes"}``."""
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise ImportError(
            f"int8 quantisation needs onnx and onnxruntime: pip install onnx onnxruntime ({err})"
        ) from None
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    proto = onnx.load(str(fp32_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    x = _calibration_inputs(fp32_path, meta, calibration)
    input_name = proto.graph.input[0].name
    with tempfile.TemporaryDirectory() as tmpdir:
        prepared = Path(tmpdir) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        with atomic_path(out_path) as tmp:
            quantize_static(
                str(prepared),
                tmp,
                _Batches(input_name, x, batch),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                # the convolutions and the head compute in int8; the softmax and the sub-class
                # merge after them stay float (a quantised output would round probabilities to 1/255)
                op_types_to_quantize=QUANTIZED_OPS,
            )
            q = onnx.load(tmp)
            del q.metadata_props[:]
            for key, value in {**meta, "quantization": f"int8 static QDQ, {len(x)} calibration faces"}.items():
                entry = q.metadata_props.add()
                entry.key, entry.value = key, value
            q.producer_name = "dicc"
            onnx.save(q, tmp)
    return {"path": out_path, "calibration_faces": int(len(x)), "bytes": out_path.stat().st_size}


__all__ = ["quantize_onnx"]
