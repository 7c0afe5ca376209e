"""The questions of the FER2013 benchmark, answered from a results.csv of `dicc compare`.

    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/results/results.csv
    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/results/results.csv \
        --parity benchmarks/fer2013_lt/parity/results.csv          # the precision parity table
    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/results/results.csv \
        --clean benchmarks/fer2013_lt/dicc_clean/results.csv       # DICC's feature source, both ways

Per setting: (1) each DICC entry minus CE in test accuracy, mean class accuracy and macro-F1,
paired by seed (same seed = same long-tailed subset, validation split and initialisation),
against the DICC paper's +1.73 accuracy points on FER2013; (2) each DICC entry minus the method
it is built on (dicc+bsm - balanced_softmax, dicc+resample - resample): what the sub-classes
add; (3) the best baseline by *validation* mean class accuracy (never chosen on the test split)
and how each DICC entry compares with it; the best DICC entry against the best non-DICC entry,
both chosen on validation, second stages included; the same second stage (cRT, tau-norm,
post-hoc LA) on DICC's backbone against CE's; (4) how stable each DICC entry's sub-classes are
between consecutive re-clusterings (the ``recluster`` events of each run's ``metrics.jsonl``,
found through the ``run_dir`` column; of a re-clustering that a resumed run logged again, the
last record). Differences are mean ± sample std over the paired seeds, in points.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict

from dicc.compare import read_metrics

PAPER_GAIN = 1.73  # DICC over its baseline on FER2013, accuracy points (the paper's abstract)
# each DICC entry of grid.yaml and the method it adds sub-classes to (same loss / sampler)
ON_TOP_OF = {
    "dicc": "ce",
    "dicc+loss": "balanced_softmax",
    "dicc+loss+soft": "balanced_softmax",
    "dicc+bsm": "balanced_softmax",
    "dicc+resample": "resample",
}
# the same second stage on DICC's features and on CE's: do DICC's features carry more?
SAME_STAGE = [
    ("dicc+crt", "ce+crt"),
    ("dicc+tau_norm", "ce+tau_norm"),
    ("dicc+tau_norm_parent", "ce+tau_norm"),
    ("dicc+posthoc_la", "ce+posthoc_la"),
]


def is_dicc(label: str) -> bool:
    return label == "dicc" or label.startswith("dicc+")


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    m = statistics.mean(values)
    return f"{m:+.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def stability(run_dir: str) -> tuple[float, float] | None:
    """Mean share of a split class's samples that keep their sub-class from one re-clustering to
    the next, and mean NMI between the two assignments, over a run's re-clusterings and split
    classes (None when the run left no metrics.jsonl or never re-clustered after its split).
    A re-clustering that a killed and resumed run logged twice counts once: its last record."""
    agree, nmi = [], []
    for r in read_metrics(run_dir):
        if r.get("event") == "recluster":
            agree += r.get("agreement", {}).values()
            nmi += r.get("nmi", {}).values()
    return (statistics.mean(agree), statistics.mean(nmi)) if agree and nmi else None


def read_csv(path: str) -> dict[tuple[str, str], dict[int, dict]]:
    runs: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for r in csv.DictReader(open(path)):
        runs[r["setting"], r["method"]][int(r["seed"])] = {
            k: float(r[k]) for k in ("val_mean_class_accuracy", "accuracy", "mean_class_accuracy", "macro_f1")
        }
    return runs


def parity(
    grid_csv: str,
    other_csv: str,
    names: tuple[str, str] = ("auto (grid)", "fp32 contiguous"),
    metrics: tuple[str, ...] = ("accuracy", "mean_class_accuracy"),
) -> str:
    """The same runs two ways (the grid's runs and another grid's, e.g. the parity grid's fp32
    runs): mean ± std over seeds of each, the paired difference, and whether it lies within the
    seed-to-seed spread (|mean difference| <= the larger of the two stds)."""
    a, b = read_csv(grid_csv), read_csv(other_csv)
    out = [
        f"| setting / method | n | metric | {names[0]} | {names[1]} | paired difference | within seed spread |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for key in sorted(set(a) & set(b)):
        seeds = sorted(set(a[key]) & set(b[key]))
        for metric in metrics:
            x = [100 * a[key][k][metric] for k in seeds]
            y = [100 * b[key][k][metric] for k in seeds]
            d = [u - v for u, v in zip(x, y)]
            sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
            within = abs(statistics.mean(d)) <= max(sd(x), sd(y))
            out.append(
                f"| {key[0]} / {key[1]} | {len(seeds)} | {metric.replace('_', ' ')} | "
                f"{statistics.mean(x):.2f} ± {sd(x):.2f} | {statistics.mean(y):.2f} ± {sd(y):.2f} | "
                f"{_ms(d)} | {'yes' if within else 'no'} |"
            )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--reference", default="ce", help="the method DICC is compared with first (default ce)")
    ap.add_argument("--parity", metavar="CSV", help="compare with the same runs in another precision (parity.yaml)")
    ap.add_argument(
        "--clean", metavar="CSV", help="compare with the dicc runs on a clean feature pass (dicc_clean.yaml)"
    )
    args = ap.parse_args()
    if args.parity:
        print(parity(args.csv, args.parity))
        return 0
    if args.clean:
        names = ("feature_source train (grid)", "feature_source clean")
        print(parity(args.csv, args.clean, names, ("val_mean_class_accuracy", "accuracy", "mean_class_accuracy")))
        return 0
    runs = read_csv(args.csv)
    run_dirs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in csv.DictReader(open(args.csv)):
        run_dirs[r["setting"], r["method"]].append(r["run_dir"])
    settings = list(dict.fromkeys(s for s, _ in runs))
    lines = []
    for s in settings:
        methods = [m for (t, m) in runs if t == s]
        lines += [f"## {s}", ""]

        def paired(a: str, b: str, key: str) -> list[float]:
            seeds = sorted(set(runs[s, a]) & set(runs[s, b]))
            return [100 * (runs[s, a][k][key] - runs[s, b][k][key]) for k in seeds]

        def mean(m: str, key: str) -> float:
            return statistics.mean(100 * v[key] for v in runs[s, m].values())

        ref = args.reference
        diccs = [m for m in methods if is_dicc(m)]

        def table(pairs: list[tuple[str, str]], head: str) -> list[str]:
            out = [
                f"| {head} | n | Δ accuracy | Δ mean class acc. | Δ macro-F1 | Δ val MCA |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for m, b in pairs:
                if m in methods and b in methods:
                    d = paired(m, b, "accuracy")
                    out.append(
                        f"| {m} − {b} | {len(d)} | {_ms(d)} | {_ms(paired(m, b, 'mean_class_accuracy'))} | "
                        f"{_ms(paired(m, b, 'macro_f1'))} | {_ms(paired(m, b, 'val_mean_class_accuracy'))} |"
                    )
            return out + [""]

        lines += table([(m, ref) for m in diccs], f"vs {ref}, paired by seed")
        lines += [f"The DICC paper: +{PAPER_GAIN:.2f} accuracy points over its baseline on FER2013.", ""]
        lines += ["What the sub-classes add to the method each DICC entry is built on:", ""]
        lines += table([(m, ON_TOP_OF[m]) for m in diccs if m in ON_TOP_OF], "DICC entry − its base")
        baselines = [m for m in methods if not is_dicc(m)]
        if baselines:
            best = max(baselines, key=lambda m: mean(m, "val_mean_class_accuracy"))
            lines += [
                f"Best baseline by validation mean class accuracy: **{best}** "
                f"(val {mean(best, 'val_mean_class_accuracy'):.2f}, test MCA {mean(best, 'mean_class_accuracy'):.2f}, "
                f"test accuracy {mean(best, 'accuracy'):.2f}).",
                "",
                f"| vs {best} (paired by seed) | n | Δ val MCA | Δ test mean class acc. | Δ test accuracy |",
                "|---|---:|---:|---:|---:|",
            ]
            for m in diccs:
                lines.append(
                    f"| {m} | {len(paired(m, best, 'accuracy'))} | "
                    f"{_ms(paired(m, best, 'val_mean_class_accuracy'))} | "
                    f"{_ms(paired(m, best, 'mean_class_accuracy'))} | {_ms(paired(m, best, 'accuracy'))} |"
                )
            lines.append("")
        non = [m for m in methods if not is_dicc(m)]
        if diccs and non:
            bd = max(diccs, key=lambda m: mean(m, "val_mean_class_accuracy"))
            bn = max(non, key=lambda m: mean(m, "val_mean_class_accuracy"))
            lines += [
                f"Best DICC entry by validation mean class accuracy: **{bd}**; best non-DICC entry: **{bn}** "
                "(second stages included on both sides).",
                "",
            ]
            lines += table([(bd, bn)], "best DICC − best non-DICC")
        pairs = [(a, b) for a, b in SAME_STAGE if a in methods and b in methods]
        if pairs:
            lines += ["The same second stage on DICC's backbone and on CE's (classifier re-balanced the same way):", ""]
            lines += table(pairs, "DICC features − CE features")
        stab = {m: [x for x in map(stability, run_dirs[s, m]) if x is not None] for m in diccs}
        if any(stab.values()):
            lines += [
                "Sub-class stability between consecutive re-clusterings (per run: the mean over its "
                "re-clusterings and split classes; then mean and range over runs):",
                "",
                "| DICC entry | runs | samples keeping their sub-class (%) | NMI with the previous assignment |",
                "|---|---:|---:|---:|",
            ]
            for m, xs in stab.items():
                if xs:
                    a, n = [100 * x[0] for x in xs], [x[1] for x in xs]
                    lines.append(
                        f"| {m} | {len(xs)} | {statistics.mean(a):.1f} ({min(a):.1f}–{max(a):.1f}) | "
                        f"{statistics.mean(n):.2f} ({min(n):.2f}–{max(n):.2f}) |"
                    )
            lines.append("")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
