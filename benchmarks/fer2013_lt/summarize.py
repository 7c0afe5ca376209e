"""The questions of the FER2013 benchmark, answered from a results.csv of `dicc compare`.

    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/results/results.csv
    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/results/results.csv \
        --parity benchmarks/fer2013_lt/parity/results.csv          # the precision parity table
    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/results/results.csv \
        --clean benchmarks/fer2013_lt/dicc_clean/results.csv       # DICC's feature source, both ways
    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/results/results.csv \
        --pilot benchmarks/fer2013_lt/contrastive/results.csv      # issue 25's pilot (IF=100, seed 0)
    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/results/results.csv \
        --retrained benchmarks/fer2013_lt/crt_parents/results.csv  # cRT's parents, recorded vs retrained
    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/crt_parents/results.csv \
        --add benchmarks/fer2013_lt/contrastive/results.csv        # issue 25's runs of one machine only
    python benchmarks/fer2013_lt/summarize.py benchmarks/fer2013_lt/crt_parents/results.csv \
        --add benchmarks/fer2013_lt/contrastive/results.csv \
        --longer benchmarks/fer2013_lt/long20/results.csv          # the same entries at 10 and 20 epochs

Per setting: (1) each DICC entry minus CE in test accuracy, mean class accuracy and macro-F1,
paired by seed (same seed = same long-tailed subset, validation split and initialisation),
against the DICC paper's +1.73 accuracy points on FER2013; (2) each DICC entry minus the method
it is built on (dicc+bsm - balanced_softmax, dicc+resample - resample): what the sub-classes
add; (3) the best baseline by *validation* mean class accuracy (never chosen on the test split)
and how each DICC entry compares with it; the best DICC entry against the best non-DICC entry,
both chosen on validation, second stages included; the same second stage (cRT, tau-norm,
post-hoc LA) on DICC's backbone against CE's; (4) issue 25's paired answers: the best DICC
entry against the best non-DICC entry (both by validation, second stages such as bsm+crt
included) and the contrastive DICC entry + cRT against bsm+crt, with the recall of fear and
disgust, the seeds each compared entry lacks, and the entry to use (best by validation); (5) how
stable each DICC entry's sub-classes are between consecutive re-clusterings (the ``recluster``
events of each run's ``metrics.jsonl``, found through the ``run_dir`` column; of a
re-clustering that a resumed run logged again, the last record). Differences are mean ± sample
std over the paired seeds, in points.
"""

from __future__ import annotations

import argparse
import csv
import math
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
    "dicc+bsm+crt": "bsm+crt",
}
# the same second stage on DICC's features and on CE's: do DICC's features carry more?
SAME_STAGE = [
    ("dicc+crt", "ce+crt"),
    ("dicc+tau_norm", "ce+tau_norm"),
    ("dicc+tau_norm_parent", "ce+tau_norm"),
    ("dicc+posthoc_la", "ce+posthoc_la"),
    ("dicc+bsm+crt", "bsm+crt"),
]
METRICS = ("val_mean_class_accuracy", "accuracy", "mean_class_accuracy", "macro_f1")
RECALLS = ("fear", "disgust")  # the rarest expressions after disgust's few images: issue 25 asks for both


def is_dicc(label: str) -> bool:
    return label == "dicc" or label.startswith("dicc+")


def is_contrastive(label: str) -> bool:
    """A DICC entry with the contrastive term (contrastive.yaml's labels: dicc+con_<variant>[+crt])."""
    return label.startswith("dicc+con")


def base_of(label: str) -> str | None:
    """The entry a DICC entry adds sub-classes to; a contrastive entry's head is trained with
    balanced softmax, so its base is balanced_softmax (and bsm+crt after cRT)."""
    if is_contrastive(label):
        return "bsm+crt" if label.endswith("+crt") else "balanced_softmax"
    return ON_TOP_OF.get(label)


def _ms(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]  # a column the CSV lacks
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


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _rows(paths) -> list[dict]:
    """The rows of one results.csv or of several (a later file's row replaces an earlier one's of
    the same setting, method and seed)."""
    rows = {}
    for path in [paths] if isinstance(paths, str) else paths:
        for r in csv.DictReader(open(path)):
            rows[r["setting"], r["method"], r["seed"]] = r
    return list(rows.values())


def read_csv(path) -> dict[tuple[str, str], dict[int, dict]]:
    """``runs[setting, method][seed]``: the run's metrics and ``recall_fear`` / ``recall_disgust``
    (NaN where the CSV has no such column)."""
    runs: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for r in _rows(path):
        runs[r["setting"], r["method"]][int(r["seed"])] = {
            k: _float(r.get(k)) for k in (*METRICS, *(f"recall_{c}" for c in RECALLS))
        }
    return runs


def mean_val(runs: dict, setting: str, label: str) -> float:
    """Mean validation MCA of an entry over the seeds it has (-inf when it has none)."""
    vals = [v["val_mean_class_accuracy"] for v in runs.get((setting, label), {}).values()]
    vals = [v for v in vals if not math.isnan(v)]
    return statistics.mean(vals) if vals else -math.inf


def best_by_validation(runs: dict, setting: str, labels: list[str]) -> str | None:
    """The entry of ``labels`` with the highest mean validation MCA (over its own seeds; the
    earlier entry on a tie), never chosen on the test split; None when none has rows."""
    have = [m for m in labels if runs.get((setting, m)) and mean_val(runs, setting, m) > -math.inf]
    return max(have, key=lambda m: mean_val(runs, setting, m)) if have else None


def paired(runs: dict, setting: str, a: str, b: str, key: str) -> tuple[list[int], list[float]]:
    """The seeds both entries have and ``a - b`` in points at each of them."""
    ra, rb = runs.get((setting, a), {}), runs.get((setting, b), {})
    seeds = sorted(set(ra) & set(rb))
    return seeds, [100 * (ra[k][key] - rb[k][key]) for k in seeds]


def _abs(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def _seeds(seeds) -> str:
    return ", ".join(map(str, sorted(seeds))) or "none"


ANSWER_KEYS = ("val_mean_class_accuracy", "mean_class_accuracy", "accuracy", "recall_fear", "recall_disgust")
ANSWER_HEAD = "val MCA | test MCA | test accuracy | fear recall | disgust recall"


def answers(runs: dict, setting: str, all_seeds: list[int]) -> list[str]:
    """Issue 25's paired answers for one setting, from whatever rows exist: the entries compared
    (with the seeds of ``all_seeds`` each lacks) and the differences paired by seed."""
    methods = [m for (t, m) in runs if t == setting]
    diccs = [m for m in methods if is_dicc(m)]
    non = [m for m in methods if not is_dicc(m)]
    bd, bn = best_by_validation(runs, setting, diccs), best_by_validation(runs, setting, non)
    con = best_by_validation(runs, setting, [m for m in diccs if is_contrastive(m) and m.endswith("+crt")])
    bsm_crt = "bsm+crt" if runs.get((setting, "bsm+crt")) else None
    overall = best_by_validation(runs, setting, methods)
    roles = [
        ("best DICC entry (validation)", bd),
        ("best non-DICC entry (validation)", bn),
        ("contrastive DICC + cRT", con),
        ("bsm+crt", bsm_crt),
    ]
    out = [
        "Issue 25, paired by seed: entries chosen by mean validation mean class accuracy over the "
        "seeds each has (second stages included), never on test; test numbers of the chosen entries.",
        "",
        f"| role | entry | seeds | missing seeds | {ANSWER_HEAD} |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for role, m in roles:
        if m is None:
            out.append(f"| {role} | not run | none | {_seeds(all_seeds)} | – | – | – | – | – |")
            continue
        rows = runs[setting, m]
        cells = " | ".join(_abs([100 * r[k] for r in rows.values()]) for k in ANSWER_KEYS)
        out.append(f"| {role} | {m} | {_seeds(rows)} | {_seeds(set(all_seeds) - set(rows))} | {cells} |")
    out += [
        "",
        f"| paired by seed | seeds | Δ {ANSWER_HEAD.replace(' | ', ' | Δ ')} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (ra, a), (rb, b) in ((roles[0], roles[1]), (roles[2], roles[3])):
        if a is None or b is None:
            out.append(f"| {a or ra + ' (not run)'} − {b or rb + ' (not run)'} | none | – | – | – | – | – |")
            continue
        seeds, _ = paired(runs, setting, a, b, "accuracy")
        cells = " | ".join(_ms(paired(runs, setting, a, b, k)[1]) for k in ANSWER_KEYS)
        out.append(f"| {a} − {b} | {_seeds(seeds)} | {cells} |")
    out += ["", f"Entry to use on {setting} (highest validation MCA of all entries): **{overall}**.", ""]
    return out


def parity(
    grid_csv: str,
    other_csv: str,
    names: tuple[str, str] = ("auto (grid)", "fp32 contiguous"),
    metrics: tuple[str, ...] = ("accuracy", "mean_class_accuracy"),
    keep=lambda key: True,
) -> str:
    """The same runs two ways (the grid's runs and another grid's, e.g. the parity grid's fp32
    runs): mean ± std over seeds of each, the paired difference, and whether it lies within the
    seed-to-seed spread (|mean difference| <= the larger of the two stds)."""
    a, b = read_csv(grid_csv), read_csv(other_csv)
    out = [
        f"| setting / method | n | metric | {names[0]} | {names[1]} | paired difference | within seed spread |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for key in sorted(k for k in set(a) & set(b) if keep(k)):
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


def pilot(
    grid_csv: str, pilot_csv: str, setting: str = "if100", seed: int = 0, references=("balanced_softmax", "bsm+crt")
) -> str:
    """The pilot's table (contrastive.yaml at one setting and seed): every entry's validation MCA,
    test MCA, test accuracy and fear / disgust recall, best validation first; the chosen entry
    (highest validation MCA, the earlier entry of the CSV on a tie) marked; ``references`` rows
    from the grid's CSV at the same seed below it, for scale (not candidates)."""
    runs, ref = read_csv(pilot_csv), read_csv(grid_csv)
    labels = [m for (t, m) in runs if t == setting and seed in runs[t, m]]
    one = {m: {seed: runs[setting, m][seed]} for m in labels}
    chosen = best_by_validation({(setting, m): v for m, v in one.items()}, setting, labels)
    order = sorted(labels, key=lambda m: -one[m][seed]["val_mean_class_accuracy"])
    out = [f"| {setting} seed {seed} | {ANSWER_HEAD} | |", "|---|---:|---:|---:|---:|---:|---|"]
    rows = [(m, one[m][seed], "**chosen**" if m == chosen else "") for m in order]
    rows += [(m, ref[setting, m][seed], "reference") for m in references if seed in ref.get((setting, m), {})]
    for m, r, note in rows:
        out.append(f"| {m} | " + " | ".join(f"{100 * r[k]:.2f}" for k in ANSWER_KEYS) + f" | {note} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument(
        "--add", metavar="CSV", action="append", default=[], help="rows of another results.csv too (repeatable)"
    )
    ap.add_argument("--reference", default="ce", help="the method DICC is compared with first (default ce)")
    ap.add_argument("--parity", metavar="CSV", help="compare with the same runs in another precision (parity.yaml)")
    ap.add_argument(
        "--clean", metavar="CSV", help="compare with the dicc runs on a clean feature pass (dicc_clean.yaml)"
    )
    ap.add_argument(
        "--retrained", metavar="CSV", help="the grid's runs against their retrained copies (crt_parents/results.csv)"
    )
    ap.add_argument("--pilot", metavar="CSV", help="the contrastive pilot's table (contrastive/results.csv)")
    ap.add_argument(
        "--longer", metavar="CSV", help="the same entries at a longer schedule (long20/results.csv), paired by seed"
    )
    args = ap.parse_args()
    if args.pilot:
        print(pilot(args.csv, args.pilot))
        return 0
    if args.parity:
        print(parity(args.csv, args.parity))
        return 0
    if args.retrained:  # the trained parents only: the +crt rows of results/ are copies of the other CSV's
        names = ("recorded (grid.yaml)", "retrained (crt_parents.yaml)")
        metrics = ("val_mean_class_accuracy", "accuracy", "mean_class_accuracy")
        print(parity(args.csv, args.retrained, names, metrics, keep=lambda k: not k[1].endswith("+crt")))
        return 0
    if args.longer:
        names = ("20 epochs", "10 epochs")  # the paired difference: what the longer schedule adds
        print(parity(args.longer, [args.csv, *args.add], names, ANSWER_KEYS))
        return 0
    if args.clean:
        names = ("feature_source train (grid)", "feature_source clean")
        print(parity(args.csv, args.clean, names, ("val_mean_class_accuracy", "accuracy", "mean_class_accuracy")))
        return 0
    runs = read_csv([args.csv, *args.add])
    run_dirs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in _rows([args.csv, *args.add]):
        run_dirs[r["setting"], r["method"]].append(r["run_dir"])
    settings = list(dict.fromkeys(s for s, _ in runs))
    all_seeds = sorted({k for v in runs.values() for k in v})
    lines = []
    for s in settings:
        methods = [m for (t, m) in runs if t == s]
        lines += [f"## {s}", ""]

        def pdiff(a: str, b: str, key: str) -> list[float]:
            return paired(runs, s, a, b, key)[1]

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
                    d = pdiff(m, b, "accuracy")
                    out.append(
                        f"| {m} − {b} | {len(d)} | {_ms(d)} | {_ms(pdiff(m, b, 'mean_class_accuracy'))} | "
                        f"{_ms(pdiff(m, b, 'macro_f1'))} | {_ms(pdiff(m, b, 'val_mean_class_accuracy'))} |"
                    )
            return out + [""]

        lines += table([(m, ref) for m in diccs], f"vs {ref}, paired by seed")
        lines += [f"The DICC paper: +{PAPER_GAIN:.2f} accuracy points over its baseline on FER2013.", ""]
        lines += ["What the sub-classes add to the method each DICC entry is built on:", ""]
        lines += table([(m, base_of(m)) for m in diccs if base_of(m)], "DICC entry − its base")
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
                    f"| {m} | {len(pdiff(m, best, 'accuracy'))} | "
                    f"{_ms(pdiff(m, best, 'val_mean_class_accuracy'))} | "
                    f"{_ms(pdiff(m, best, 'mean_class_accuracy'))} | {_ms(pdiff(m, best, 'accuracy'))} |"
                )
            lines.append("")
        lines += answers(runs, s, all_seeds)
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
