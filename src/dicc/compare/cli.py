"""``dicc compare`` on the command line: its argument parser and what it runs."""

from __future__ import annotations

from .grid import load_grid
from .report import write_report
from .run import run_grid


def add_compare_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="run a grid of methods x seeds (x settings) and tabulate the results",
        description="Train every unfinished run of a grid file (finished runs are skipped, "
        "interrupted ones resumed; derived entries are made from their finished parent runs), then write "
        "results.csv, results.md and figures into the "
        "grid's out directory. See configs/compare-smoke.yaml and the docstring of dicc.compare.grid for "
        "the file format.",
    )
    p.add_argument("grid", help="grid YAML file (base, methods, seeds, settings, out)")
    p.add_argument(
        "--only",
        action="append",
        metavar="LABEL",
        help="only this method label (repeatable); a derived entry's parent runs must be finished "
        "already or selected too",
    )
    p.add_argument("--setting", action="append", metavar="NAME", help="only this setting (repeatable)")
    p.add_argument("--seed", type=int, action="append", metavar="N", help="only this seed (repeatable)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs and their status (derived runs with their parent run's); train nothing",
    )
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the finished runs")
    p.add_argument("--keep-going", action="store_true", help="go on with the next run when one fails")
    p.add_argument(
        "--no-report",
        action="store_true",
        help="train only; leave the report alone (for several compare processes on one grid: "
        "write it once at the end with --report-only)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override for every trained run, e.g. --set train.device=cuda (a derived "
        "run takes its config from its parent run)",
    )


def run_compare(args) -> int:
    if args.report_only:
        g = load_grid(args.grid, args.overrides)
        if not g.out.is_dir():
            raise FileNotFoundError(f"{args.grid}: out directory {g.out} does not exist yet (nothing has run)")
        write_report(g.out, command=g.command, log=print)
        return 0
    outcome = run_grid(
        args.grid,
        only=args.only,
        settings=args.setting,
        seeds=args.seed,
        overrides=args.overrides,
        dry_run=args.dry_run,
        keep_going=args.keep_going,
        report=not args.no_report,
    )
    return 0 if outcome.ok else 1
