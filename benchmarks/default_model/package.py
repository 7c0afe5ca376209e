"""Package the bundled model: the long run's best checkpoint, with the choices choose.py made on
validation, as ``src/dicc/assets/default_model.pt`` (a plain weights_only checkpoint without
optimizer state), its ONNX graph ``src/dicc/assets/default_model.onnx`` (what the default path
runs), and its model card ``src/dicc/assets/MODEL_CARD.md`` with PublicTest metrics.

    python benchmarks/default_model/package.py --run benchmarks/default_model/student \\
        --selection benchmarks/default_model/student_selection.json --data PATH/fer2013

fp16 storage is used only if it changes no validation prediction's class (measured here and
written into the card); otherwise the weights stay fp32. The ONNX graph is int8 (onnxruntime
static quantisation, calibrated on ``--calibration`` training faces, never validation or test
faces) only if that costs at most 0.3 points of validation accuracy against the fp32 checkpoint;
otherwise it is the fp32 export.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


ASSETS = Path(__file__).resolve().parents[2] / "src" / "dicc" / "assets"
TRAINED_BY = "bash benchmarks/default_model/train.sh PATH/fer2013"
KEEP = (
    "format",
    "version",
    "epoch",
    "class_names",
    "class_counts",
    "model",
    "model_spec",
    "normalization",
    "strategy",
    "config",
    "environment",
)


def main() -> None:
    from dicc.checkpoint import load_checkpoint, model_from_checkpoint, save_atomic, write_text_atomic
    from dicc.config import Config, from_dict
    from dicc.data.build import build_run_data
    from dicc.inference import evaluate, predict_parent_logits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--selection", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=str(ASSETS / "default_model.pt"))
    ap.add_argument("--onnx", default=str(ASSETS / "default_model.onnx"))
    ap.add_argument("--calibration", type=int, default=512, help="training faces that calibrate the int8 graph")
    ap.add_argument("--max-drop", type=float, default=0.003, help="int8's largest validation accuracy loss kept")
    ap.add_argument("--trained-by", help="the command that trained it, for the card")
    ap.add_argument("--card-only", action="store_true", help="rewrite MODEL_CARD.md from the packaged --out")
    args = ap.parse_args()
    if args.card_only:
        shipped = load_checkpoint(args.out)
        cfg = from_dict(Config, shipped["config"])
        write_text_atomic(ASSETS / "MODEL_CARD.md", model_card(shipped, cfg, shipped["model_card"], Path(args.out)))
        return
    run, sel = Path(args.run), json.loads(Path(args.selection).read_text())
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    slim = {k: ckpt[k] for k in KEEP if k in ckpt}
    cfg = from_dict(Config, ckpt["config"])
    cfg.data.path = None  # a user's machine has its own copy of the data
    cfg.train.out = "default"
    cfg.eval.logit_adjust = sel["logit_adjust"]
    cfg.eval.tta = sel["tta"]
    slim["config"] = cfg.to_dict()
    dcfg = from_dict(Config, ckpt["config"]).data
    dcfg.path = args.data
    data = build_run_data(dcfg)
    norm = ckpt["normalization"]

    def metrics_of(state: dict, ds):
        model, strategy = model_from_checkpoint(state)
        return evaluate(model, strategy, ds, mean=norm["mean"], std=norm["std"], tta=cfg.eval.tta)

    fp32 = {**slim, "model": {k: v.float() if v.is_floating_point() else v for k, v in slim["model"].items()}}
    half = {**slim, "model": {k: v.half() if v.is_floating_point() else v for k, v in slim["model"].items()}}
    preds = []
    for state in (fp32, half):
        m, s = model_from_checkpoint(state)
        preds.append(
            predict_parent_logits(m, s, data.val, mean=norm["mean"], std=norm["std"], tta=cfg.eval.tta).argmax(1)
        )
    changed = int((preds[0] != preds[1]).sum())
    use_half = changed == 0
    chosen = half if use_half else fp32
    test = metrics_of(chosen, data.test)
    val = metrics_of(chosen, data.val)
    card = {
        "storage": "fp16" if use_half else "fp32",
        "fp16_changed_val_predictions": changed,
        "val": {k: val[k] for k in ("accuracy", "mean_class_accuracy", "macro_f1")},
        "test_publictest": {k: test[k] for k in ("accuracy", "mean_class_accuracy", "macro_f1", "num_samples")},
        "test_recall": {c: test["per_class"][c]["recall"] for c in test["per_class"]},
        "selection": {k: sel[k] for k in ("tta", "logit_adjust")},
        "epoch": ckpt.get("epoch"),
        "source_run": str(run),
        "git_commit": (ckpt.get("environment") or {}).get("git_commit"),
    }
    if args.trained_by:
        card["trained_by"] = args.trained_by
    card["onnx"] = package_onnx(chosen, data, cfg.eval.tta, Path(args.onnx), args.calibration, args.max_drop)
    chosen["model_card"] = card
    save_atomic(chosen, args.out)
    (run / "package.json").write_text(json.dumps({**card, "test_confusion": test["confusion_matrix"]}, indent=2))
    write_text_atomic(ASSETS / "MODEL_CARD.md", model_card(ckpt, cfg, card, Path(args.out)))
    print(json.dumps(card, indent=1))


def _onnx_metrics(path: Path, ds, tta: str) -> dict:
    """Metrics of an ONNX file on a dataset's (pre-cropped) faces, through Recognizer.classify."""
    import torch

    from dicc.metrics import confusion_matrix, metrics_from_confusion
    from dicc.predict import Recognizer

    rec = Recognizer.from_onnx(path, threads=2, tta=tta)
    probs = rec.classify(ds.images.numpy())
    cm = confusion_matrix(ds.labels, torch.from_numpy(probs).argmax(1), ds.num_classes)
    return metrics_from_confusion(cm, ds.class_names)


def package_onnx(chosen: dict, data, tta: str, out: Path, calibration: int, max_drop: float) -> dict:
    """The ONNX graph of the packaged checkpoint at ``out``: int8 when it keeps the validation
    accuracy within ``max_drop`` of the fp32 graph's, else fp32. Returns what the card says."""
    import tempfile

    import torch

    from dicc.checkpoint import save_atomic
    from dicc.export import export_onnx
    from dicc.quantize import quantize_onnx

    with tempfile.TemporaryDirectory() as tmp:
        pt, fp32, int8 = Path(tmp) / "m.pt", Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        save_atomic(chosen, pt)
        export_onnx(pt, fp32, input="pixels")  # the normalisation folded into the graph
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(data.train), generator=g)[:calibration]
        quantize_onnx(fp32, int8, data.train.images[pick].numpy())
        scores = {}
        for name, path in (("fp32", fp32), ("int8", int8)):
            scores[name] = {
                split: _onnx_metrics(path, ds, tta) for split, ds in (("val", data.val), ("test", data.test))
            }
        drop = scores["fp32"]["val"]["accuracy"] - scores["int8"]["val"]["accuracy"]
        kind = "int8" if drop <= max_drop else "fp32"
        out.write_bytes((int8 if kind == "int8" else fp32).read_bytes())
    keys = ("accuracy", "mean_class_accuracy", "macro_f1")
    return {
        "file": out.name,
        "graph": kind,
        "calibration_faces": int(calibration),
        "int8_val_accuracy_drop": round(float(drop), 6),
        "max_drop": max_drop,
        **{f"{n}_{split}": {k: m[k] for k in keys} for n, d in scores.items() for split, m in d.items()},
        "test_recall_shipped": {c: scores[kind]["test"]["per_class"][c]["recall"] for c in data.test.class_names},
    }


def distilled(cfg) -> str:
    """The card's line on knowledge distillation (empty for a model trained without it)."""
    d = getattr(cfg, "distill", None)
    if d is None or not d.teacher:
        return ""
    names = ", ".join(f"`{Path(t).name}`" for t in d.teacher)
    what = (
        "their mean probabilities on every training batch, augmented as the student sees it"
        if getattr(d, "targets", "images") == "augmented"
        else f"their mean `{d.tta}` test-time probabilities on every training image"
    )
    start = f"; initialised from `{Path(cfg.model.pretrained).name}`" if cfg.model.pretrained else ""
    return (
        f"- **Distilled** from {names} ({what}), temperature {d.temperature}, weight {d.weight} beside the\n"
        f"  cross-entropy on the labels{start}.\n"
    )


def onnx_lines(card: dict) -> str:
    """The card's section on the ONNX graph the default path runs."""
    o = card.get("onnx")
    if not o:
        return ""
    t, v = o[f"{o['graph']}_test"], o[f"{o['graph']}_val"]
    drop = 100 * o["int8_val_accuracy_drop"]
    effect = f"it costs {drop:.2f} points of" if drop > 0 else f"it changes by {-drop:+.2f} points the"
    how = (
        f"int8 (onnxruntime static quantisation, QDQ, per-channel weights, calibrated on "
        f"{o['calibration_faces']} training faces; {effect} "
        f"validation accuracy of the fp32 graph, at most a {100 * o['max_drop']:.1f}-point loss allowed)"
        if o["graph"] == "int8"
        else f"fp32 (int8 cost {100 * o['int8_val_accuracy_drop']:.2f} points of validation accuracy, more "
        f"than the {100 * o['max_drop']:.1f} allowed)"
    )
    return (
        f"- **The default path** (`Recognizer.load()`, `dicc predict` where onnxruntime is installed) runs\n"
        f"  `{o['file']}`, {how}, one view a face. PublicTest through it: accuracy\n"
        f"  {100 * t['accuracy']:.2f}, mean class accuracy {100 * t['mean_class_accuracy']:.2f}, macro-F1 "
        f"{100 * t['macro_f1']:.2f} (validation {100 * v['accuracy']:.2f} / {100 * v['mean_class_accuracy']:.2f}).\n"
    )


def model_card(ckpt: dict, cfg, card: dict, path: Path) -> str:
    spec, norm = ckpt["model_spec"], ckpt["normalization"]
    a, o, t = cfg.augment, cfg.optim, cfg.train
    recall = " | ".join(f"{100 * card['test_recall'][c]:.1f}" for c in ckpt["class_names"])
    tm = card["test_publictest"]
    size = path.stat().st_size / 1e6
    return f"""# The bundled emotion model (`default`)

`dicc predict photo.jpg`, `Recognizer.load()`, `dicc evaluate default ...` and `dicc export default
m.onnx` use this model ({path.name}, {size:.1f} MB, weights stored in {card["storage"]}).

- **Task**: the 7 basic emotions of a face crop, as probabilities.
- **Label order** (output index 0-6): {", ".join(ckpt["class_names"])} (FER2013's order).
- **Input**: {norm["channels"]} channel (grayscale), {norm["image_size"]}x{norm["image_size"]} pixels,
  `(x / 255 - {norm["mean"]}) / {norm["std"]}`; `Recognizer` crops, converts and resizes faces
  itself.
- **Architecture**: `{spec["name"]}` width {spec["width"]} ({
        sum(
            v.numel()
            for k, v in ckpt["model"].items()
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
        ):,} parameters).
- **Training data**: FER2013 `train/` (Goodfellow et al., ICML 2013 challenge), 28,709 images, of
  which 10 % of every class were held out to select the checkpoint and every choice below; the
  test split (PublicTest, `test/`) was used only for the numbers in this card.
- **Recipe** (chosen on the validation hold-out: `benchmarks/default_model/README.md`): method
  `{cfg.method.name}`, {t.epochs} epochs, batch {t.batch_size}, SGD (Nesterov) lr {o.lr} one-cycle, weight
  decay {o.weight_decay}; augmentation: random crops after {a.crop_padding}-pixel padding (shifts),
  horizontal flips{", rotations of +-" + str(a.rotate) + " degrees" if a.rotate else ""}{
        ", zooms of +-" + str(a.scale) if a.scale else ""
    }{", random erasing p=" + str(a.erase) if a.erase else ""};
  post-hoc logit adjustment tau = {card["selection"]["logit_adjust"] or 0}; test-time augmentation: {
        card["selection"]["tta"]
    }.
{distilled(cfg)}- **Trained by**: `{card.get("trained_by", TRAINED_BY)}` (dicc's own
  engine, on a 2-core CPU; epoch {card["epoch"]} selected; git commit {card["git_commit"]}).
{onnx_lines(card)}
## PublicTest (3,589 images)

| accuracy | mean class accuracy | macro-F1 | {" | ".join("recall " + c for c in ckpt["class_names"])} |
|---:|---:|---:|{"---:|" * len(ckpt["class_names"])}
| {100 * tm["accuracy"]:.2f} | {100 * tm["mean_class_accuracy"]:.2f} | {100 * tm["macro_f1"]:.2f} | {recall} |

Validation (the hold-out): accuracy {100 * card["val"]["accuracy"]:.2f}, mean class accuracy
{100 * card["val"]["mean_class_accuracy"]:.2f}. fp16 storage changed {card["fp16_changed_val_predictions"]} of the
validation predictions.

## Limits and terms

FER2013 faces are 48x48 grayscale crops from web images, labelled by one annotator each (about
65 % human agreement on hard cases); the model inherits its biases (age, ethnicity, posed vs
spontaneous expressions) and is not fit for decisions about people. FER2013 was released for the
ICML 2013 representation-learning challenge for research use; its images come from web searches
and their copyright stays with their owners: check the dataset's terms before any commercial use
of a model trained on it. The model's weights are released under dicc's MIT license.
"""


if __name__ == "__main__":
    main()
