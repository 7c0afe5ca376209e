"""``dicc compare``: a grid of methods x seeds (x settings) from one YAML file, and its report.

Every run gets its own ordinary run directory (see :func:`dicc.engine.fit`), trained one
after the other in this process; derived entries (a second stage such as cRT applied to a
finished run, see :func:`dicc.rebalance.rebalance`) are made from their parent runs. The grid
is resumable: run it again and finished runs are skipped, interrupted ones continue from their
last checkpoint, so a grid larger than one sitting completes over several invocations.

The grid file's format is documented in :mod:`dicc.compare.grid`, the report's files in
:mod:`dicc.compare.report`. Modules, in the order a grid goes through them:

- ``grid``: the grid file's format; :func:`load_grid` parses and checks it.
- ``plan``: :func:`plan_runs`, the runs a grid means, each with its validated config.
- ``records``: what a run directory records (status, de-duplicated metrics.jsonl, training
  counts, whether it was made with the grid's config).
- ``run``: :func:`run_grid` trains, resumes and derives the unfinished runs.
- ``report`` and ``charts``: results.csv, results.md and the figures.
- ``cli``: the ``dicc compare`` subcommand.
"""

from .charts import save_confusion_grid, save_recall_chart
from .cli import add_compare_parser, run_compare
from .grid import DEFAULT_SETTING, Grid, MethodEntry, load_grid
from .plan import DerivedStage, GridRun, plan_runs
from .records import config_differences, epoch_records, read_metrics, run_status, train_counts
from .report import collect_results, mean_std, write_report
from .run import GridOutcome, run_grid

__all__ = [
    "DEFAULT_SETTING",
    "DerivedStage",
    "Grid",
    "GridOutcome",
    "GridRun",
    "MethodEntry",
    "add_compare_parser",
    "collect_results",
    "config_differences",
    "epoch_records",
    "load_grid",
    "mean_std",
    "plan_runs",
    "read_metrics",
    "run_compare",
    "run_grid",
    "run_status",
    "save_confusion_grid",
    "save_recall_chart",
    "train_counts",
    "write_report",
]
