"""Run the FER2013 long-tail benchmark with several `dicc compare` workers at once (one GPU or
many cores), choosing DICC's options on the validation split first.

    python benchmarks/fer2013_lt/run_parallel.py --data PATH/fer2013 --workers 8

1. The baselines of grid.yaml start at once, in parallel with the DICC ablations (ablation.yaml).
2. When the ablations are done, the best variant of each family by mean *validation* mean class
   accuracy (never the test split) is written into grid.yaml's `dicc` and `dicc+loss` entries
   (and into selection.json), and those runs start.
3. Both reports are rewritten. Everything is resumable: finished runs are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent  # --dir overrides it (a copy of these files, for a dry test)


def compare(
    grid: Path, data: str, only: str, setting: str | None, extra: list[str], seed: int | None = None
) -> tuple[str, int, float]:
    cmd = [
        sys.executable,
        "-m",
        "dicc",
        "compare",
        str(grid),
        "--only",
        only,
        "--set",
        f"data.path={data}",
        "--set",
        "train.progress=false",
        "--no-report",
        *sum((["--set", e] for e in extra), []),
    ]
    if setting:
        cmd += ["--setting", setting]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    t = time.time()
    tag = f"{only}-{setting or 'all'}" + ("" if seed is None else f"-seed{seed}")
    log = HERE / "logs" / f"{grid.stem}-{tag}.log".replace("+", "_")
    log.parent.mkdir(exist_ok=True)
    with open(log, "a") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    return f"{grid.stem}:{only}:{setting}" + ("" if seed is None else f":seed{seed}"), code, time.time() - t


def labels(grid: dict) -> list[str]:
    return [m if isinstance(m, str) else m.get("label", m["name"]) for m in grid["methods"]]


def select(ablation_out: Path) -> dict:
    """Best variant per family ("d-": DICC with CE, "c-": DICC with an imbalance loss) by mean
    validation mean class accuracy over seeds."""
    scores: dict[str, list[float]] = {}
    for final in ablation_out.glob("*/*/seed*/final.json"):
        f = json.loads(final.read_text())
        scores.setdefault(final.parent.parent.name, []).append(f["best_val_mean_class_accuracy"])
    means = {k: statistics.mean(v) for k, v in scores.items()}
    best = {fam: max((k for k in means if k.startswith(fam)), key=means.get, default=None) for fam in ("d-", "c-")}
    return {
        "val_mean_class_accuracy": means,
        "n_seeds": {k: len(v) for k, v in scores.items()},
        "dicc": best["d-"],
        "dicc+loss": best["c-"],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--set", dest="extra", action="append", default=[])
    ap.add_argument("--dir", type=Path, default=None, help="folder holding grid.yaml and ablation.yaml")
    ap.add_argument(
        "--skip-ablation",
        action="store_true",
        help="keep grid.yaml's DICC options (chosen earlier) and run the grid only",
    )
    ap.add_argument(
        "--grid",
        default="grid.yaml",
        help="with --skip-ablation: the grid file to run (in --dir), e.g. ablation_cpu.yaml",
    )
    ap.add_argument("--setting", action="append", help="with --skip-ablation: only this setting (repeatable)")
    ap.add_argument("--only", action="append", help="with --skip-ablation: only this method label (repeatable)")
    args = ap.parse_args()
    global HERE
    HERE = (args.dir or HERE).resolve()
    grid_path, abl_path = HERE / (args.grid if args.skip_ablation else "grid.yaml"), HERE / "ablation.yaml"
    grid, abl = yaml.safe_load(grid_path.read_text()), yaml.safe_load(abl_path.read_text())
    dicc_labels = ("dicc", "dicc+loss")
    jobs = [(abl_path, lab, None) for lab in labels(abl)]
    base_jobs = [(grid_path, lab, s) for s in grid["settings"] for lab in labels(grid) if lab not in dicc_labels]
    t0 = time.time()
    if not args.skip_ablation and (args.grid != "grid.yaml" or args.setting or args.only):
        ap.error("--grid, --setting and --only go with --skip-ablation")
    for wanted, valid, what in (
        (args.setting, list(grid["settings"]), "--setting"),
        (args.only, labels(grid), "--only"),
    ):
        bad = [w for w in wanted or [] if w not in valid]
        if bad:
            ap.error(f"{what} {', '.join(bad)}: not in {grid_path.name}; valid: {', '.join(valid)}")
    failed = []

    def report(fut) -> None:
        name, code, secs = fut.result()
        print(name, code, secs, flush=True)
        if code != 0:
            failed.append(name)

    if args.skip_ablation:  # setting by setting, in the grid's method order, one job per run
        out = Path(grid["out"])
        todo = [
            (lab, s, seed)
            for s in grid["settings"]
            if not args.setting or s in args.setting
            for lab in labels(grid)
            if not args.only or lab in args.only
            for seed in grid["seeds"]
            if not (out / s / lab / f"seed{seed}" / "final.json").is_file()
        ]
        print(f"{len(todo)} run(s) to train", flush=True)
        with ThreadPoolExecutor(args.workers) as pool:
            futs = [pool.submit(compare, grid_path, args.data, lab, s, args.extra, seed) for lab, s, seed in todo]
            for f in futs:
                report(f)
        subprocess.call(
            [
                sys.executable,
                "-m",
                "dicc",
                "compare",
                str(grid_path),
                "--report-only",
                "--set",
                f"data.path={args.data}",
            ],
            stdout=subprocess.DEVNULL,
        )
        print(f"done in {time.time() - t0:.0f}s" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
        return 1 if failed else 0
    with ThreadPoolExecutor(args.workers) as pool:
        abl_futs = [pool.submit(compare, g, args.data, lab, s, args.extra) for g, lab, s in jobs]
        base_futs = [pool.submit(compare, g, args.data, lab, s, args.extra) for g, lab, s in base_jobs]
        for f in abl_futs:
            report(f)
        sel = select(Path(abl["out"]))
        entries = {m["label"]: m for m in grid["methods"] if isinstance(m, dict)}
        for lab in dicc_labels:
            variant = next(m for m in abl["methods"] if m["label"] == sel[lab])
            entries[lab]["options"] = dict(variant["options"])
            sel[f"{lab}_options"] = dict(variant["options"])
        (HERE / "selection.json").write_text(json.dumps(sel, indent=2))
        text = grid_path.read_text()
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        grid_path.write_text(header + yaml.safe_dump(grid, sort_keys=False, width=110))
        print("selected on validation:", json.dumps({k: sel[k] for k in dicc_labels}), flush=True)
        dicc_futs = [
            pool.submit(compare, grid_path, args.data, lab, s, args.extra)
            for lab in dicc_labels
            for s in grid["settings"]
        ]
        for f in base_futs + dicc_futs:
            report(f)
    for g in (abl_path, grid_path):
        subprocess.call(
            [sys.executable, "-m", "dicc", "compare", str(g), "--report-only", "--set", f"data.path={args.data}"],
            stdout=subprocess.DEVNULL,
        )
    print(f"done in {time.time() - t0:.0f}s" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
