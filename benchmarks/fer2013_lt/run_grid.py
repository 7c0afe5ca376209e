"""Run a grid (default: grid.yaml) with several single-run `dicc compare` workers at once.

    python benchmarks/fer2013_lt/run_grid.py --data PATH/fer2013 --workers 2 [--set train.threads=1]

Seed by seed (so whole seeds finish early): first every unfinished run of the trained entries,
one process per run, ``--workers`` at a time; then the derived runs of that seed (second stages
on the finished parents, seconds to a minute each). Then the report is rewritten.
Resumable: finished runs are skipped, interrupted ones continue from their last checkpoint.
Each run's log goes to benchmarks/fer2013_lt/logs/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def job(grid: Path, data: str, label: str, setting: str, seed: int, extra: list[str]) -> tuple[str, int, float]:
    cmd = [
        sys.executable,
        "-m",
        "dicc",
        "compare",
        str(grid),
        "--only",
        label,
        "--setting",
        setting,
        "--seed",
        str(seed),
        "--set",
        f"data.path={data}",
        "--set",
        "train.progress=false",
        "--no-report",
        *sum((["--set", e] for e in extra), []),
    ]
    log = HERE / "logs" / f"{grid.stem}-{label}-{setting}-seed{seed}.log".replace("+", "_")
    log.parent.mkdir(exist_ok=True)
    t = time.time()
    with open(log, "a") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    return f"{setting}/{label}/seed{seed}", code, time.time() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--grid", type=Path, default=HERE / "grid.yaml")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="override for the trained runs")
    ap.add_argument("--only", action="append", help="only these labels (repeatable)")
    ap.add_argument("--setting", action="append", help="only these settings (repeatable)")
    args = ap.parse_args()
    grid = yaml.safe_load(args.grid.read_text())
    out = Path(grid["out"])
    entries = [m if isinstance(m, dict) else {"label": m, "name": m} for m in grid["methods"]]
    trained = [e.get("label", e.get("name")) for e in entries if "after" not in e]
    derived = [e["label"] for e in entries if "after" in e]

    def todo(labels, seed):
        return [
            (lab, s, seed)
            for s in grid["settings"]
            for lab in labels
            if (not args.only or lab in args.only)
            and (not args.setting or s in args.setting)
            and not (out / s / lab / f"seed{seed}" / "final.json").is_file()
        ]

    t0, failed = time.time(), []
    for seed in grid["seeds"]:  # a whole seed (its trained runs, then their second stages) at a time
        for phase, labels, workers, extra in (("train", trained, args.workers, args.extra), ("derive", derived, 1, [])):
            runs = todo(labels, seed)
            print(f"seed {seed} {phase}: {len(runs)} run(s)", flush=True)
            with ThreadPoolExecutor(workers) as pool:
                for name, code, secs in pool.map(lambda r: job(args.grid, args.data, *r, extra), runs):
                    print(f"{name} rc={code} {secs:.0f}s", flush=True)
                    if code != 0:
                        failed.append(name)
    subprocess.call(
        [sys.executable, "-m", "dicc", "compare", str(args.grid), "--report-only", "--set", f"data.path={args.data}"],
        stdout=subprocess.DEVNULL,
    )
    print(f"done in {time.time() - t0:.0f}s" + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
