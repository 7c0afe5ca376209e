"""DICC's epoch time against cross-entropy's, side by side in one process.

Every variant is a full ``dicc.engine.fit`` on the same data with the same model and schedule;
the variants run one after the other, alternating, ``--repeats`` times (the order rotates each
repeat, so a slow spell of the machine does not always hit the same variant). Per variant the
table gives the mean over the epochs after the warm-up (the first split included) of the
``metrics.jsonl`` fields ``time_hook`` (DICC's feature pass and clustering), ``time_train``
(the training pass) and ``time_epoch`` (both plus the validation pass), the ratio of
``time_hook + time_train`` and of ``time_epoch`` to CE's (means of the per-repeat ratios, with
their range), the same run's ``(time_hook + time_train) / time_train`` (the hook's overhead
measured against the run's own training pass: insensitive to the machine getting slower or
faster between runs), and the validation mean class accuracy after the last epoch and at its best
(mean over repeats), so that a cheaper variant's quality cost is visible. For DICC variants
also: the mean NMI of each re-clustering with the previous one (over the split classes and
the rounds after the first: how stable the sub-classes are) and, on the built-in data, the
mean adjusted Rand index of the final pseudo-labels with the hidden styles
(``extras["style"]``, see ``synthetic_styles.md``).

Variants (``--variants``, comma-separated names):

* ``ce``: plain cross-entropy (the reference; always run);
* ``default``: DICC's default options (since this round ``feature_source=train``);
* ``clean``: DICC as specified, a clean feature pass + k-means at every epoch after warm-up;
* ``clean-sample``: the same, k-means on at most ``--sample`` samples per class;
* ``clean-every2`` / ``clean-every5``: re-clustering every 2 / 5 epochs;
* ``train``: ``feature_source=train``, the features kept from the training pass, every epoch.

    python benchmarks/dicc_overhead.py --out /tmp/overhead --set train.threads=1
    python benchmarks/dicc_overhead.py --out /tmp/overhead-fer --data /work/shared/data/fer2013 \\
        --config configs/fer2013-lt.yaml --epochs 6 --warmup 2 --repeats 1 --variants clean,train \\
        --set train.threads=1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from dicc.config import load_config
from dicc.engine import fit

VARIANTS = {
    "ce": ["method.name=ce"],
    "default": ["method.name=dicc"],  # DICC's defaults (feature_source=train since this round)
    "clean": ["method.name=dicc", "method.options.feature_source=clean"],
    "clean-sample": [
        "method.name=dicc",
        "method.options.feature_source=clean",
        "method.options.feature_sample={sample}",
    ],
    "clean-every2": ["method.name=dicc", "method.options.feature_source=clean", "method.options.recluster_every=2"],
    "clean-every5": ["method.name=dicc", "method.options.feature_source=clean", "method.options.recluster_every=5"],
    "train": ["method.name=dicc", "method.options.feature_source=train"],
}


def style_ari(run_dir: Path, styles) -> float | None:
    """Mean ARI of the last checkpoint's pseudo-labels with the hidden styles over split classes."""
    from sklearn.metrics import adjusted_rand_score

    from dicc.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")["strategy"]["state"]
    if styles is None or not state or not state.get("split"):
        return None
    labels, style = styles
    pseudo = state["pseudo"]
    aris = []
    for c in range(int(labels.max()) + 1):
        m = labels == c
        if len(torch.unique(pseudo[m])) > 1:
            aris.append(adjusted_rand_score(style[m].numpy(), pseudo[m].numpy()))
    return statistics.fmean(aris) if aris else None


def read_run(run_dir: Path, warmup: int) -> dict:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if "event" not in r]
    after = [r for r in epochs if r["epoch"] > warmup]  # 1-based: epoch warmup+1 holds the first split
    clusters = [r for r in recs if r.get("event") == "recluster"]
    mean = lambda key: statistics.fmean(r[key] for r in after)  # noqa: E731
    out = {
        "hook": mean("time_hook"),
        "train": mean("time_train"),
        "epoch": mean("time_epoch"),
        "val_mca_last": epochs[-1].get("val_mean_class_accuracy"),
        "val_mca_best": max((r.get("val_mean_class_accuracy") or 0.0) for r in epochs),
        "epochs_timed": len(after),
        "reclusters": len(clusters),
        "time_features": sum(r["time_features"] for r in clusters),
        "time_cluster": sum(r["time_cluster"] for r in clusters),
    }
    nmis = [v for r in clusters for v in r["nmi"].values()]
    out["nmi"] = statistics.fmean(nmis) if nmis else None
    out["hook_train"] = out["hook"] + out["train"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/dicc_overhead")
    ap.add_argument("--config", help="YAML config for every run (default: built-in data, library defaults)")
    ap.add_argument("--data", help="dataset root (default: the built-in synthetic data)")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3, help="DICC warm-up epochs; the timing starts after them")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sample", type=int, default=256, help="feature_sample of the clean-sample variant")
    ap.add_argument("--variants", default="default,clean,clean-sample,clean-every2,clean-every5")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for all runs")
    args = ap.parse_args()
    names = ["ce"] + [v for v in args.variants.split(",") if v and v != "ce"]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = [
        f"model.width={args.width}",
        f"train.epochs={args.epochs}",
        "train.progress=false",
        "data.test_split=null",
        f"method.options.warmup_epochs={args.warmup}",
    ]
    if args.data:
        base.append(f"data.path={args.data}")
    base += args.set

    results: dict[str, list[dict]] = {v: [] for v in names}
    styles = None  # (labels, style) of the training set; False: the data has no styles
    for rep in range(args.repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for v in order:
            run_dir = out / f"{v}-r{rep}"
            if not (run_dir / "metrics.jsonl").exists() or not (run_dir / "checkpoints" / "last.pt").exists():
                over = [o.format(sample=args.sample) for o in VARIANTS[v]]
                if v == "ce":  # CE has no DICC options
                    over_base = [b for b in base if not b.startswith("method.options.")]
                else:
                    over_base = base
                cfg = load_config(args.config, [*over_base, *over, f"train.out={run_dir}"])
                t = time.perf_counter()
                fit(cfg, log=lambda *a, **k: None)
                print(f"{run_dir}: {time.perf_counter() - t:.0f} s", flush=True)
            results[v].append(read_run(run_dir, args.warmup))
            if styles is not False:
                if styles is None:  # the training set of the runs, with its hidden styles if it has them
                    from dicc.data.build import build_run_data

                    train = build_run_data(load_config(args.config, base).data, need_test=False).train
                    st = train.extras.get("style") if train.extras else None
                    styles = (train.labels, st) if st is not None else False
                if styles:
                    results[v][-1]["style_ari"] = style_ari(run_dir, styles)

    ce = results["ce"]
    lines = [
        "| variant | time_hook (s) | time_train (s) | time_epoch (s) | (hook+train) / CE | epoch / CE | "
        "(hook+train) / train | val MCA last | val MCA best | re-clusterings | NMI with previous | style ARI |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary = {}
    for v in names:
        rs = results[v]
        r1 = [r["hook_train"] / c["hook_train"] for r, c in zip(rs, ce)]
        r2 = [r["epoch"] / c["epoch"] for r, c in zip(rs, ce)]
        r3 = [r["hook_train"] / r["train"] for r in rs]
        m = {
            k: statistics.fmean(r[k] for r in rs)
            for k in ("hook", "train", "epoch", "val_mca_last", "val_mca_best", "reclusters")
        }
        summary[v] = {
            **m,
            "ratio_hook_train": statistics.fmean(r1),
            "ratio_epoch": statistics.fmean(r2),
            "ratio_self": statistics.fmean(r3),
            "ratio_hook_train_range": [min(r1), max(r1)],
            "ratio_epoch_range": [min(r2), max(r2)],
            "per_repeat": rs,
        }
        for key in ("nmi", "style_ari"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            m[key] = summary[v][key] = statistics.fmean(vals) if vals else None
        rng = lambda r: f" ({min(r):.2f}-{max(r):.2f})" if len(r) > 1 else ""  # noqa: E731
        opt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(
            f"| {v} | {m['hook']:.2f} | {m['train']:.2f} | {m['epoch']:.2f} | "
            f"{statistics.fmean(r1):.3f}{rng(r1)} | {statistics.fmean(r2):.3f}{rng(r2)} | "
            f"{statistics.fmean(r3):.3f} | {100 * m['val_mca_last']:.2f} | {100 * m['val_mca_best']:.2f} | "
            f"{m['reclusters']:.0f} | "
            f"{opt(m['nmi'])} | {opt(m['style_ari'])} |"
        )
    table = "\n".join(lines)
    print(table)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "summary": summary, "table": table}, indent=2))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
