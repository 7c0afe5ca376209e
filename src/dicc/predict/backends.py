"""Backends: a ``float32 [N, C, S, S]`` batch in, class probabilities ``[N, num_classes]`` out.

The batch is in the form the model takes (the Recognizer's ``input_kind``): normalised as in
training, or, for an ONNX graph exported with ``input="pixels"``, the pixels 0..255 (the graph
normalises). A backend is any callable with that signature; :class:`dicc.predict.Recognizer`
forwards its faces through one in chunks of ``batch_size`` (one call for a batch that fits).
:class:`TorchBackend` runs a checkpoint's model and merges a strategy's sub-classes (DICC) into
the parent classes with ``parent_logits``; :class:`OnnxBackend` runs a file from ``dicc
export``, whose graph already ends in the 7 probabilities.
"""

from __future__ import annotations

import numpy as np

#: what an ONNX graph's input is (its metadata's ``input``): the face's pixels 0..255 as float
#: (the normalisation is in the graph), or the normalised pixels ``(x / 255 - mean) / std``
INPUT_KINDS = ("pixels", "normalized")


def input_kind(meta: dict) -> str:
    """The ``input`` of an ONNX file's metadata: ``normalized`` when the key is absent (files
    exported before it existed); an unknown value is an error naming it."""
    kind = meta.get("input", "normalized")
    if kind not in INPUT_KINDS:
        raise ValueError(f"the ONNX metadata says input={kind!r}; valid: {', '.join(INPUT_KINDS)}")
    return kind


def auto_device(device) -> str:
    """``None`` / ``"auto"`` -> "cuda" when available, else "cpu"; anything else as given."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TorchBackend:
    """A torch model + strategy on ``device``, in the precision and memory format ``amp`` /
    ``channels_last`` resolve to there (:func:`dicc.precision.resolve_precision`: bf16 only on
    hardware that computes it natively)."""

    def __init__(self, model, strategy, device, amp: str = "auto", channels_last: str = "auto") -> None:
        import torch

        from ..precision import resolve_precision

        self.torch = torch
        self.device = torch.device(device)
        self.precision = resolve_precision(amp, channels_last, self.device, getattr(model, "convolutional", True))
        self.model = self.precision.prepare_model(model.to(self.device).eval())
        self.strategy = strategy

    def __repr__(self) -> str:
        return f"TorchBackend(device={str(self.device)!r}, {self.precision.describe()})"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode(), self.precision.autocast():
            # the merge runs on the CPU: [N, outputs] is tiny, and strategies keep their tensors there
            xt = self.precision.prepare_input(torch.from_numpy(np.require(x, requirements=("C", "W"))).to(self.device))
            logits = self.model(xt).float().cpu()
        return torch.softmax(self.strategy.parent_logits(logits), dim=1).numpy()


class OnnxBackend:
    """An onnxruntime session of a model exported by ``dicc export``."""

    def __init__(self, session) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_names = [session.get_outputs()[0].name]

    def __repr__(self) -> str:
        return f"OnnxBackend(providers={self.session.get_providers()})"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names, {self.input_name: x})[0]
