"""One run per run directory: dicc.runlock's OS file lock. A second `dicc train` into
the directory of a run that is training is refused in one line before it writes anything, the
first run's files stay as they were, and kill -9 of the first leaves no stale claim. An --out
that cannot be a directory is one line before anything is created."""

import json
import os
import subprocess
import sys
import time

import pytest

from dicc.cli import main
from dicc.runlock import LOCK_NAME, RunDirectoryBusy, claim
from helpers import held_by_another_process, TINY


# `dicc train` whose second validation never ends: it holds its run directory, epoch 1 written
SLOW = """
import sys, time
import dicc.engine as engine

real, calls = engine._validate, [0]


def slow(run, record):
    calls[0] += 1
    if calls[0] == 2:
        time.sleep(3600)
    return real(run, record)


engine._validate = slow
from dicc.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_a_second_run_into_a_running_runs_directory_is_refused_and_kill_9_frees_it(tmp_path, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", SLOW, "train", *TINY, "--epochs", "3", "--seed", "1", "--out", str(out)]
    first = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    try:
        started = time.monotonic()
        while not (out / "checkpoints" / "last.pt").exists():  # epoch 1 is written; the run goes on
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() - started < 600, "the first run wrote no checkpoint in 10 minutes"
            time.sleep(0.1)
        kept = [out / "config.yaml", out / "environment.json", out / "checkpoints" / "last.pt"]
        before = [p.read_bytes() for p in kept]
        for args in (
            ["train", *TINY, "--epochs", "2", "--seed", "2", "--out", str(out)],
            ["train", "--out", str(out), "--resume"],
        ):
            assert main(args) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"{out}: process {first.pid} is using this run directory" in err[0], err
        assert [p.read_bytes() for p in kept] == before
        first.kill()  # kill -9: the OS releases the lock with the process
        first.wait()
    finally:
        first.kill()
        first.wait()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "final.json").read_text())["seed"] == 1
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_claims_are_exclusive_across_processes_and_reentrant_within_one(tmp_path):
    run = tmp_path / "run"
    with held_by_another_process(run) as holder:
        with pytest.raises(RunDirectoryBusy, match=f"process {holder.pid} is using this run directory"):
            with claim(run):
                pass
        holder.kill()
        holder.wait()
        with claim(run), claim(run):  # freed by the kill; a second claim in this process nests
            assert (run / LOCK_NAME).read_text().strip() == str(os.getpid())
    with claim(run):  # released when the block ended
        pass


def test_a_failed_claim_leaves_no_directory_it_created(tmp_path):
    with pytest.raises(KeyError):
        with claim(tmp_path / "a" / "b"):
            raise KeyError("refused")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyError):
        with claim(tmp_path / "kept"):
            raise KeyError("refused")
    assert (tmp_path / "kept").is_dir()


@pytest.mark.parametrize(
    "make, fragments",
    [
        (lambda t: (t / "afile").write_text("x") and t / "afile", ["afile: exists and is not a directory"]),
        (lambda t: t / ("a" * 300), ["a name in this path is 300 bytes long", "at most 255 bytes per name"]),
        (lambda t: (t / "f").write_text("x") and t / "f" / "run", [f"{os.sep}f{os.sep}run", "Not a directory"]),
    ],
)
def test_an_out_that_cannot_be_a_directory_is_one_line(tmp_path, capsys, make, fragments):
    out = make(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and "Errno" not in err[0], err
    for f in fragments:
        assert f in err[0], (f, err[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_an_out_that_cannot_be_written_is_one_line_and_nothing_is_written(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: the OS's answer for a read-only folder, simulated
        import pathlib

        real = pathlib.Path.mkdir

        def mkdir(self, *a, **k):
            if self.parent == ro:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *a, **k)

        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    else:
        ro.chmod(0o555)
    try:
        assert main(["train", *TINY, "--epochs", "1", "--out", str(ro / "run")]) == 2
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"dicc train: error: {ro / 'run'}: Permission denied (not writable (or readable) by this user: "
        "choose another location)"
    ], err
    assert list(ro.iterdir()) == []
