"""Does DICC find the hidden styles of the built-in data?

The built-in synthetic faces (``dicc.data.synthetic``) draw every expression in several styles
(happy: closed smile / open grin / laughing / smirk, ...); ``extras["style"]`` is each training
image's style, the ground-truth sub-class. This script trains DICC on the built-in data and, for
every class DICC splits, computes the adjusted Rand index (ARI, scikit-learn) between DICC's
final pseudo-labels (strategy state ``pseudo`` of the run's last checkpoint) and the styles.

References, each k-means with the same per-class ``k_c`` and the same clusterer settings:

* ``pixels``: k-means on the raw images (flattened, standardised per image, L2-normalised);
* ``untrained``: on the clean features of a freshly initialised network of the same shape;
* ``CE feats``: on the clean features of a plain cross-entropy run with the same settings
  (clustering after training, no sub-class training); ``--no-ce`` skips that run;
* ``DICC feats``: on the clean features of the DICC run's final network (the pseudo-labels
  were clustered at the start of the last epoch, on augmented/clean features per
  ``feature_source``).

``k_c`` comes from the run's sub-class plan (``size``, ``k_max``); where it differs from the
number of styles ARI cannot reach 1 even for a perfect merge of styles, so the table lists
both. Several ``--size`` values give several DICC runs (``median`` is the default plan).

    python benchmarks/synthetic_styles.py --out /tmp/styles --width 16 --epochs 14 --warmup 5 \\
        --size median --size 270 --set train.threads=1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from dicc.checkpoint import load_checkpoint, model_from_checkpoint
from dicc.clustering import SubclassClusterer
from dicc.config import load_config
from dicc.data.build import build_run_data
from dicc.data.synthetic import SYNTHETIC_STYLES
from dicc.engine import extract_features, fit
from dicc.models import model_from_spec


def cluster(features: torch.Tensor, labels: torch.Tensor, plan, opts: dict) -> torch.Tensor:
    fitted = SubclassClusterer(
        plan,
        backend=opts.get("backend", "torch"),
        n_init=int(opts.get("n_init", 3)),
        max_iter=int(opts.get("max_iter", 100)),
        seed=int(opts.get("seed", 0)),
        min_cluster_size=int(opts.get("min_cluster_size", 0)),
    ).fit(features, labels)
    return fitted.assign_.cpu()


def ari_per_class(assign: torch.Tensor, labels: torch.Tensor, style: torch.Tensor, classes) -> dict[int, float]:
    out = {}
    for c in classes:
        m = labels == c
        out[c] = float(adjusted_rand_score(style[m].numpy(), assign[m].numpy()))
    return out


def partitions(n: int, k: int):
    """Every way to put ``n`` items into exactly ``k`` non-empty groups (restricted growth strings)."""

    def grow(prefix, used):
        if len(prefix) == n:
            if used == k:
                yield list(prefix)
            return
        for g in range(min(used + 1, k)):
            yield from grow(prefix + [g], max(used, g + 1))

    yield from grow([], 0)


def merge_ceiling(style: torch.Tensor, k: int) -> float:
    """ARI of the best merge of the styles into ``k`` groups (1 when ``k`` >= the number of
    styles): what a clustering with ``k`` clusters that respects the styles can reach."""
    n_styles = int(style.max()) + 1
    if k >= n_styles:
        return 1.0
    s = style.numpy()
    return max(float(adjusted_rand_score(s, [p[i] for i in s])) for p in partitions(n_styles, k))


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    x = images.float().flatten(1)
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True).clamp_min(1e-6)
    return F.normalize(x, dim=1)


def run(base: list[str], out: Path, name: str, extra: list[str]) -> Path:
    run_dir = out / name
    if (run_dir / "final.json").exists():
        print(f"{run_dir}: done already, reusing it")
        return run_dir
    cfg = load_config(None, [*base, *extra, f"train.out={run_dir}"])
    t = time.perf_counter()
    fit(cfg, log=lambda *a, **k: None)
    print(f"{run_dir}: trained in {time.perf_counter() - t:.0f} s")
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/synthetic_styles")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--size", action="append", help="method.options.size of a DICC run (repeatable; default: median)")
    ap.add_argument("--no-ce", action="store_true", help="skip the cross-entropy reference run")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for all runs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = args.size or ["median"]
    base = [f"model.width={args.width}", f"train.epochs={args.epochs}", "train.progress=false", *args.set]

    results = {"command_args": vars(args), "runs": []}
    ce_feats = None
    if not args.no_ce:
        ce_dir = run(base, out, "ce", ["method.name=ce"])
        ckpt = load_checkpoint(ce_dir / "checkpoints" / "last.pt")
        ce_model, _ = model_from_checkpoint(ckpt)
        train = build_run_data(load_config(None, base).data, need_test=False).train
        norm = ckpt["normalization"]
        ce_feats, _ = extract_features(ce_model, train, mean=norm["mean"], std=norm["std"])
        results["ce_final"] = json.loads((ce_dir / "final.json").read_text())["mean_class_accuracy"]

    for size in sizes:
        extra = ["method.name=dicc", f"method.options.warmup_epochs={args.warmup}", f"method.options.size={size}"]
        run_dir = run(base, out, f"dicc-size{size}", extra)
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        model, strategy = model_from_checkpoint(ckpt)
        cfg = load_config(None, [*base, *extra])
        train = build_run_data(cfg.data, need_test=False).train
        if len(train) != len(strategy.pseudo):
            raise SystemExit(f"{run_dir}: pseudo-labels cover {len(strategy.pseudo)} images, training set {len(train)}")
        labels, style = train.labels, train.extras["style"]
        plan, names = strategy.plan, list(train.class_names)
        split = plan.split_classes
        opts = ckpt["strategy"]["options"] or {}
        norm = ckpt["normalization"]

        rows = {"DICC pseudo-labels": ari_per_class(strategy.pseudo, labels, style, split)}
        feats, _ = extract_features(model, train, mean=norm["mean"], std=norm["std"])
        rows["k-means, DICC run's final features"] = ari_per_class(
            cluster(feats, labels, plan, opts), labels, style, split
        )
        if ce_feats is not None:
            rows["k-means, CE run's final features"] = ari_per_class(
                cluster(ce_feats, labels, plan, opts), labels, style, split
            )
        torch.manual_seed(cfg.train.seed)  # the run's initialisation (fit seeds before building the model)
        init = model_from_spec(ckpt["model_spec"])
        ufeats, _ = extract_features(init, train, mean=norm["mean"], std=norm["std"])
        rows["k-means, untrained network's features"] = ari_per_class(
            cluster(ufeats, labels, plan, opts), labels, style, split
        )
        pix = pixel_features(train.get_batch(range(len(train))))
        rows["k-means, raw pixels"] = ari_per_class(cluster(pix, labels, plan, opts), labels, style, split)

        final = json.loads((run_dir / "final.json").read_text())
        table = [
            f"DICC run `size={size}` ({run_dir}); test mean class accuracy "
            f"{100 * final['mean_class_accuracy']:.2f}"
            + (f" (CE run: {100 * results['ce_final']:.2f})" if "ce_final" in results else ""),
            "",
            "| ARI per split class | " + " | ".join(f"{names[c]}" for c in split) + " |",
            "|---|" + "---:|" * len(split),
            "| k_c / hidden styles | "
            + " | ".join(f"{plan.k[c]} / {len(SYNTHETIC_STYLES[names[c]])}" for c in split)
            + " |",
            "| ceiling: best merge of the styles into k_c groups | "
            + " | ".join(f"{merge_ceiling(style[labels == c], plan.k[c]):.3f}" for c in split)
            + " |",
        ]
        for what, vals in rows.items():
            table.append(f"| {what} | " + " | ".join(f"{vals[c]:.3f}" for c in split) + " |")
        text = "\n".join(table)
        print(text + "\n")
        # which style each DICC sub-class holds (rows: sub-classes, columns: styles)
        comp = {}
        for c in split:
            r = plan.subclass_range(c)
            m = labels == c
            k_styles = len(SYNTHETIC_STYLES[names[c]])
            mat = torch.zeros(len(r), k_styles, dtype=torch.long)
            mat.index_put_(
                (strategy.pseudo[m] - r.start, style[m]), torch.ones(int(m.sum()), dtype=torch.long), accumulate=True
            )
            comp[names[c]] = {"styles": SYNTHETIC_STYLES[names[c]], "subclass_by_style": mat.tolist()}
            print(f"{names[c]}: sub-class x style counts ({', '.join(SYNTHETIC_STYLES[names[c]])})")
            for j, row in enumerate(mat.tolist()):
                print(f"  #{j}: {row}")
        print()
        results["runs"].append(
            {
                "size": size,
                "run_dir": str(run_dir),
                "k": {names[c]: plan.k[c] for c in split},
                "ari": {w: {names[c]: v[c] for c in split} for w, v in rows.items()},
                "composition": comp,
                "test_mean_class_accuracy": final["mean_class_accuracy"],
                "table": text,
            }
        )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
