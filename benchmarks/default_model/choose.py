"""The bundled model's choices, each made on the validation hold-out of FER2013 train/ (never test/).
(Named choose.py, not select.py: a script's folder comes first on sys.path, and select.py would
shadow the standard library's select module.)

    python benchmarks/default_model/choose.py pilot --pilot benchmarks/default_model/pilot --out recipe.json
    python benchmarks/default_model/choose.py overrides --recipe recipe.json      # --set flags for dicc train
    python benchmarks/default_model/choose.py posthoc --run benchmarks/default_model/run --out selection.json
    python benchmarks/default_model/choose.py teachers --member a=RUN_A --member b=CKPT_B --out teachers.json

Rules (written before the numbers were seen):

* augmentation: the pilot (``ce-basic`` vs ``ce-strong``, same budget) with the higher validation
  accuracy at its selected checkpoint;
* imbalance method (FER2013 itself is imbalanced): among the candidates with the chosen
  augmentation (``ce`` with post-hoc logit adjustment ``tau`` in 0..1.5, and ``balanced_softmax``),
  those whose validation accuracy is within 0.5 points of the best are "equal"; of those, the
  highest validation mean class accuracy wins;
* on the long run, the same rule picks the post-hoc ``tau`` and the test-time augmentation
  (none, flip, crops): among all (tta, tau) pairs within 0.5 points of the best validation
  accuracy, the highest validation mean class accuracy (ties: the cheaper tta, the smaller tau);
* the distillation teachers: of every non-empty set of the candidate runs (their members' mean
  probabilities with the targets' views), by the same rule (ties: the fewer members);
* the single-view student's post-hoc ``tau`` (``posthoc --tta none``): by the same rule.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TOLERANCE = 0.005  # "equal accuracy": within 0.5 points
TAUS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
TTA_COST = {"none": 1, "flip": 2, "crops": 10}


def _best_epoch(run: Path) -> dict:
    """The validation metrics of the checkpoint a run selected (its best epoch)."""
    final = json.loads((run / "final.json").read_text())
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rec = next(r for r in recs if r.get("epoch") == final["epoch"] and "val_accuracy" in r)
    return {
        "val_accuracy": rec["val_accuracy"],
        "val_mean_class_accuracy": rec["val_mean_class_accuracy"],
        "epoch": final["epoch"],
    }


def _pick(cands: list[dict]) -> dict:
    top = max(c["val_accuracy"] for c in cands)
    equal = [c for c in cands if c["val_accuracy"] >= top - TOLERANCE]
    return max(equal, key=lambda c: (c["val_mean_class_accuracy"], -c.get("cost", 0)))


def val_scores(run: Path, taus=TAUS, ttas=("none", "flip", "crops")) -> list[dict]:
    """Validation accuracy and mean class accuracy of the run's best checkpoint for every (tta,
    post-hoc tau) pair: one pass over the hold-out per tta, the prior adjustment on its logits."""
    import torch

    from dicc.checkpoint import load_checkpoint, model_from_checkpoint
    from dicc.config import Config, from_dict
    from dicc.data.build import build_run_data
    from dicc.inference import predict_parent_logits
    from dicc.metrics import confusion_matrix, metrics_from_confusion

    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    model, strategy = model_from_checkpoint(ckpt)
    val = build_run_data(from_dict(Config, ckpt["config"]).data, need_test=False).val
    counts = torch.tensor(ckpt["class_counts"], dtype=torch.float64)
    log_prior = (counts / counts.sum()).log().float()
    norm = ckpt["normalization"]
    out = []
    for tta in ttas:
        z = predict_parent_logits(model, strategy, val, mean=norm["mean"], std=norm["std"], tta=tta)
        for tau in taus:
            cm = confusion_matrix(val.labels, (z - tau * log_prior).argmax(1), len(ckpt["class_names"]))
            m = metrics_from_confusion(cm, ckpt["class_names"])
            out.append(
                {
                    "tta": tta,
                    "tau": tau,
                    "val_accuracy": m["accuracy"],
                    "val_mean_class_accuracy": m["mean_class_accuracy"],
                    "cost": TTA_COST[tta] + tau / 10,
                }
            )
    return out


def _val_probs(path: str, data_path: str | None, tta: str):
    """A checkpoint's class probabilities on the validation hold-out (its own config's hold-out,
    drawn from ``data_path``), as trained (no post-hoc adjustment), with the views ``tta``."""
    from dicc.checkpoint import load_checkpoint, model_from_checkpoint
    from dicc.config import Config, from_dict
    from dicc.data.build import build_run_data
    from dicc.inference import predict_parent_logits

    ckpt = load_checkpoint(path)
    model, strategy = model_from_checkpoint(ckpt)
    strategy = getattr(strategy, "inner", strategy)
    dcfg = from_dict(Config, ckpt["config"]).data
    if data_path:
        dcfg.path = data_path
    val = build_run_data(dcfg, need_test=False).val
    norm = ckpt["normalization"]
    z = predict_parent_logits(model, strategy, val, mean=norm["mean"], std=norm["std"], tta=tta)
    return z.softmax(1), val.labels, list(ckpt["class_names"])


def cmd_teachers(args) -> None:
    """The distillation teachers: every non-empty set of the candidates, scored on validation by
    its members' mean probabilities with the views the targets use (``--tta``), by the rule."""
    import itertools

    import torch

    from dicc.metrics import confusion_matrix, metrics_from_confusion

    members = dict(m.split("=", 1) for m in args.member)
    probs, labels, names = {}, None, None
    for name, path in members.items():
        p, y, cn = _val_probs(path, args.data, args.tta)
        if labels is not None and not torch.equal(y, labels):
            raise SystemExit(f"{name}: its hold-out differs from the others' (another data.subset_seed?)")
        probs[name], labels, names = p, y, cn
    cands = []
    for k in range(1, len(members) + 1):
        for subset in itertools.combinations(members, k):
            p = torch.stack([probs[n] for n in subset]).mean(0)
            m = metrics_from_confusion(confusion_matrix(labels, p.argmax(1), len(names)), names)
            cands.append(
                {
                    "members": list(subset),
                    "val_accuracy": m["accuracy"],
                    "val_mean_class_accuracy": m["mean_class_accuracy"],
                    "cost": len(subset),
                }
            )
    choice = _pick(cands)
    out = {"tta": args.tta, "teachers": [members[n] for n in choice["members"]], "choice": choice, "candidates": cands}
    Path(args.out).write_text(json.dumps(out, indent=2))
    for c in cands:
        print(f"{'+'.join(c['members']):40s} {100 * c['val_accuracy']:.2f} / {100 * c['val_mean_class_accuracy']:.2f}")
    print("chosen:", json.dumps(choice))


def cmd_pilot(args) -> None:
    root = Path(args.pilot)
    runs = {p.parent.name: p for p in root.glob("*/*/seed0")}
    basic, strong = _best_epoch(runs["ce-basic"]), _best_epoch(runs["ce-strong"])
    aug = "strong" if strong["val_accuracy"] >= basic["val_accuracy"] else "basic"
    cands = [
        {
            "method": "ce",
            "tau": c["tau"],
            "val_accuracy": c["val_accuracy"],
            "val_mean_class_accuracy": c["val_mean_class_accuracy"],
        }
        for c in val_scores(runs[f"ce-{aug}"], ttas=("none",))
    ]
    if aug == "strong":
        b = _best_epoch(runs["bsm-strong"])
        cands.append({"method": "balanced_softmax", "tau": 0.0, **b})
    choice = _pick(cands)
    recipe = {
        "augmentation": aug,
        "method": choice["method"],
        "pilot": {
            "ce-basic": basic,
            "ce-strong": strong,
            **({"bsm-strong": _best_epoch(runs["bsm-strong"])} if "bsm-strong" in runs else {}),
        },
        "method_candidates": cands,
        "rule": __doc__.split("Rules", 1)[1].strip(),
    }
    Path(args.out).write_text(json.dumps(recipe, indent=2))
    print(json.dumps({k: recipe[k] for k in ("augmentation", "method")}))


def cmd_overrides(args) -> None:
    recipe = json.loads(Path(args.recipe).read_text())
    sets = [f"method.name={recipe['method']}"]
    if recipe["augmentation"] == "basic":
        sets += ["augment.rotate=0", "augment.scale=0", "augment.erase=0"]
    print(" ".join(f"--set {s}" for s in sets))


def cmd_posthoc(args) -> None:
    scores = val_scores(Path(args.run), ttas=tuple(args.tta))
    choice = _pick(scores)
    sel = {"tta": choice["tta"], "logit_adjust": choice["tau"] or None, "val": choice, "candidates": scores}
    Path(args.out).write_text(json.dumps(sel, indent=2))
    print(json.dumps({k: sel[k] for k in ("tta", "logit_adjust")}), json.dumps(choice))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pilot")
    p.add_argument("--pilot", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("overrides")
    p.add_argument("--recipe", required=True)
    p = sub.add_parser("posthoc")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tta", nargs="+", default=["none", "flip", "crops"], help="the views to choose among")
    p = sub.add_parser("teachers")
    p.add_argument("--member", action="append", required=True, help="NAME=CHECKPOINT (repeat)")
    p.add_argument("--data", help="FER2013 root (default: each checkpoint's own data.path)")
    p.add_argument("--tta", default="crops", help="the teachers' views (distill.tta)")
    p.add_argument("--out", required=True)
    args = ap.parse_args()
    {"pilot": cmd_pilot, "overrides": cmd_overrides, "posthoc": cmd_posthoc, "teachers": cmd_teachers}[args.cmd](args)


if __name__ == "__main__":
    main()
