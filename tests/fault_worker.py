"""Worker for tests/test_rundir.py: a tiny run killed (SIGKILL) right after each of its writes
in turn, each then resumed.

``python fault_worker.py OUT TRAIN_ARG...`` trains ``OUT/ref`` uninterrupted through the command
line (``dicc.cli.main(["train", ...])``), recording every write the run directory makes: each
atomic file write (``dicc.atomic.atomic_path``: checkpoints, ``metrics.csv``, ``final.json``,
figures, ...) and each line appended to ``metrics.jsonl``. A write belongs to the epoch of the
last epoch line logged before it. Then, for every write of the last epoch that wrote
``best.pt`` and every write after the last epoch's (figures, ``final.json``), a forked child
trains ``OUT/k<i>`` and kills itself with SIGKILL right after write ``i``; the parent resumes
that run (``--resume``). What happened
goes to ``OUT/faults.json``: the reference's writes and, per kill point, how the child ended and
the resume's exit status. The data is built once (deterministic) and shared by all runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

import dicc.atomic as atomic
import dicc.rundir as rundir
import dicc.training_run as training_run
from dicc.cli import main

OUT = Path(sys.argv[1])
ARGS = sys.argv[2:]
torch.set_num_threads(1)

writes: list[dict] = []  # what the current process wrote, in order
state = {"epoch": 0, "kill_at": None, "root": None}


def _wrote(name: str) -> None:
    writes.append({"file": name, "epoch": state["epoch"]})
    if state["kill_at"] is not None and len(writes) == state["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)


_atomic_path = atomic.atomic_path


@contextmanager
def atomic_path(path):
    with _atomic_path(path) as tmp:
        yield tmp
    _wrote(str(Path(path).relative_to(state["root"])))


_log = rundir.RunDirectory.log


def log(self, record):
    _log(self, record)
    if "event" not in record:
        state["epoch"] = record["epoch"]
    _wrote(f"metrics.jsonl ({record.get('event', 'epoch')} {record['epoch']})")


atomic.atomic_path = atomic_path
rundir.RunDirectory.log = log

_build_run_data, _data = training_run.build_run_data, {}


def build_run_data(cfg, **k):
    key = repr(cfg)
    if key not in _data:
        _data[key] = _build_run_data(cfg, **k)
    return _data[key]


training_run.build_run_data = build_run_data


def train(out: Path, *extra: str) -> int:
    writes.clear()
    state.update(epoch=0, root=out)
    return main(["train", *ARGS, "--out", str(out), *extra])


assert train(OUT / "ref") == 0
reference = list(writes)
best_epoch = [w["epoch"] for w in reference if w["file"] == "checkpoints/best.pt"][-1]
end = max(i for i, w in enumerate(reference) if w["file"] == "metrics.csv") + 1  # then the run's last writes
points = [i + 1 for i, w in enumerate(reference) if w["epoch"] == best_epoch or i >= end]
report: dict = {"writes": reference, "points": []}
for i in points:
    out = OUT / f"k{i}"
    pid = os.fork()
    if pid == 0:
        state["kill_at"] = i
        train(out)
        os._exit(3)  # not killed: the test fails on it
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    resumed = train(out, "--resume")
    report["points"].append({"after": i, "write": reference[i - 1], "killed": killed, "resume_rc": resumed})
(OUT / "faults.json").write_text(json.dumps(report, indent=2))
