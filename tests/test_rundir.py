"""The run directory's writes: a run killed right after any one of an epoch's writes
and resumed ends exactly as the uninterrupted run (tests/fault_worker.py kills it for real, with
SIGKILL, after each write in turn); best.pt is reconciled with what last.pt records; a disk that
fills up, or a folder that cannot be written, is one line naming the file."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dicc.atomic as atomic
import dicc.checkpoint as checkpoint
from dicc.cli import main
from dicc.rundir import RunDirectory
from helpers import TINY

HERE = Path(__file__).resolve().parent


def _epoch_lines(run: Path) -> list[dict]:
    drop = ("time_epoch", "time_train", "time_hook")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in lines]


def test_a_kill_after_any_write_of_an_epoch_then_resume_ends_as_the_uninterrupted_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "fault_worker.py"), str(tmp_path), *TINY, "--epochs", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "faults.json").read_text())
    killed_after = [p["write"]["file"].split(" ")[0] for p in report["points"]]
    # every kind of write an epoch and the end of a run make is a kill point
    for name in ("metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt", "metrics.csv", "final.json"):
        assert name in killed_after, (name, killed_after)
    ref = tmp_path / "ref"
    final = json.loads((ref / "final.json").read_text())
    best_epoch = torch.load(ref / "checkpoints" / "best.pt", weights_only=True)["epoch"]
    assert final["epoch"] == best_epoch
    for point in report["points"]:
        run = tmp_path / f"k{point['after']}"
        assert point["killed"] and point["resume_rc"] == 0, point
        assert json.loads((run / "final.json").read_text()) == final, point
        assert _epoch_lines(run) == _epoch_lines(ref), point
        assert (run / "metrics.csv").read_text().count("\n") == (ref / "metrics.csv").read_text().count("\n")
        last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
        best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
        assert last["best_epoch"] == best["epoch"] == best_epoch, point


def _crash_between_last_and_best(tmp_path, capsys):
    """A 2-epoch run whose second epoch is made the best, killed (simulated) between its last.pt
    and best.pt: last.pt says epoch 2 is the best, best.pt still holds epoch 1."""
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--set", "data.val=null", "--out", str(out)]) == 0
    capsys.readouterr()
    rd = RunDirectory(out)
    first = torch.load(rd.last, weights_only=True)
    assert first["epoch"] == 2 and first["best_epoch"] == 2
    return out, rd


def test_resume_copies_last_over_a_best_one_selection_behind(tmp_path, capsys):
    out, rd = _crash_between_last_and_best(tmp_path, capsys)
    stale = torch.load(rd.last, weights_only=True)
    stale.update(epoch=1, best_epoch=1)
    checkpoint.save_atomic(stale, rd.best)  # best.pt one selection behind
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert torch.load(rd.best, weights_only=True)["epoch"] == 2
    assert json.loads((out / "final.json").read_text())["epoch"] == 2


def test_checkpoints_that_cannot_be_reconciled_are_one_line(tmp_path, capsys):
    out, rd = _crash_between_last_and_best(tmp_path, capsys)
    last = torch.load(rd.last, weights_only=True)
    checkpoint.save_atomic({**last, "best_epoch": 1}, rd.last)  # names epoch 1, best.pt holds 2
    before = rd.best.read_bytes()
    assert main(["train", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "best.pt holds epoch 2" in err[0] and "records epoch 1 as the best" in err[0], err
    assert rd.best.read_bytes() == before


def test_a_full_disk_is_one_line_and_the_last_epoch_is_kept(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}

    class Full:  # a file on a disk that is full: a write names no file, as the OS's
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_open(file, mode="r", *a, **k):  # the disk fills up while epoch 2's last.pt is written
        f = open(file, mode, *a, **k)
        if Path(file).name.startswith(".last.pt."):
            calls["n"] += 1
            if calls["n"] == 2:
                return Full(f)
        return f

    monkeypatch.setattr(atomic, "open", full_open, raising=False)
    code = main(["train", *TINY, "--epochs", "3", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    last = out / "checkpoints" / "last.pt"
    for fragment in (f"{last}: No space left on device", f"{last} holds the last finished epoch", "--resume"):
        assert fragment in err[0], (fragment, err[0])
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert not [p.name for p in out.rglob("*.tmp")]
    monkeypatch.delattr(atomic, "open")
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "final.json").read_text())["epoch"] in (1, 2, 3)


def test_a_write_to_a_full_device_names_the_file(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    (tmp_path / "run").mkdir()
    os.symlink("/dev/full", tmp_path / "run" / "metrics.jsonl")
    with pytest.raises(OSError) as err:
        RunDirectory(tmp_path / "run").log({"epoch": 1, "train_loss": 1.0})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "run" / "metrics.jsonl")


def test_atomic_writes_follow_symlinks_and_never_replace_a_device(tmp_path, capsys):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    os.symlink(target, link)
    checkpoint.write_text_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    checkpoint.write_text_atomic(os.devnull, "x")  # written in place, not replaced by a file
    assert not Path(os.devnull).is_file()
    if not os.path.exists("/dev/full"):
        return
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--confusion", "/dev/full"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "dicc evaluate: error: /dev/full: No space left on device (free some space or choose another location)"
    ]
    assert Path("/dev/full").is_char_device()
