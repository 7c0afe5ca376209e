"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

from dicc import EMOTIONS
from dicc.checkpoint import FORMAT, VERSION, save_atomic
from dicc.models import create_model
from dicc.strategies import create_strategy

COUNTS = [40, 8, 20, 120, 60, 30, 90]


def make_checkpoint(
    path: Path,
    method: str = "ce",
    *,
    counts=COUNTS,
    width: int = 4,
    mean: float = 0.5,
    std: float = 0.25,
    seed: int = 0,
    options: dict | None = None,
    state: dict | None = None,
) -> Path:
    """A checkpoint in the format ``dicc.engine._state`` writes, with a tiny random model;
    ``state`` updates the strategy's state dict."""
    torch.manual_seed(seed)
    strategy = create_strategy(method, counts, options)
    if state:
        strategy.load_state_dict({**strategy.state_dict(), **state})
    model = create_model("vgg_fer", strategy.num_outputs, width=width, head_type=strategy.head_type)
    with torch.no_grad():  # make the random head decisive, so probabilities are far from uniform
        model.head.weight.mul_(50)
        model.head.bias.copy_(torch.linspace(-1.5, 1.5, strategy.num_outputs))
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": 1,
        "step": 1,
        "best_val": None,
        "config": {},
        "class_names": list(EMOTIONS),
        "class_counts": list(counts),
        "model": model.state_dict(),
        "model_spec": {
            "name": "vgg_fer",
            "width": width,
            "num_outputs": strategy.num_outputs,
            "head_type": strategy.head_type,
            "in_channels": 1,
            "image_size": 48,
            "dropout": 0.0,
        },
        "normalization": {"mean": mean, "std": std, "image_size": 48, "channels": 1},
        "strategy": {"name": method, "options": options or {}, "state": strategy.state_dict()},
    }
    return save_atomic(ckpt, path)


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` (created) refuses new files and folders while the block runs: chmod 0o555,
    and where that does not stop writes (root), ``os.open`` for writing and ``os.mkdir`` inside
    it raise ``EROFS`` as on a read-only file system (what ``tempfile.mkstemp``,
    ``Path.mkdir`` and ``torch.save`` to a new file go through)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    mp = pytest.MonkeyPatch()
    try:
        probe = folder / ".probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:  # permissions do not bind this user: fail the writes as a read-only file system does
            probe.unlink()
            root = os.path.realpath(folder)

            def inside(path) -> bool:
                return os.path.realpath(os.fspath(path)).startswith(root + os.sep)

            def refuse(path):
                return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

            real_open, real_mkdir = os.open, os.mkdir

            def fake_open(path, flags, *args, **kwargs):
                if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
                    raise refuse(path)
                return real_open(path, flags, *args, **kwargs)

            def fake_mkdir(path, *args, **kwargs):
                if inside(path):
                    raise refuse(path)
                return real_mkdir(path, *args, **kwargs)

            mp.setattr(os, "open", fake_open)
            mp.setattr(os, "mkdir", fake_mkdir)
        yield folder
    finally:
        mp.undo()
        folder.chmod(0o755)


# -- dicc serve in a subprocess --------------------------------------------------------------
def start_server(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """``dicc serve ARGS --port 0`` in a subprocess; returns it and its address once it listens."""
    import dicc

    src = Path(dicc.__file__).resolve().parents[1]  # the dicc these tests import, also in the subprocess
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dicc", "serve", *args, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    line = proc.stdout.readline()  # printed once the socket listens (pytest's timeout bounds the wait)
    if not line.startswith("dicc serve: http://"):
        proc.kill()
        raise AssertionError(f"the server did not start: {line!r} {log.read_text()}")

    def drain() -> None:  # the rest of its stdout (its log) is read and kept, so that the pipe never fills
        with proc.stdout:
            log.with_suffix(".out").write_text(proc.stdout.read())

    proc.drain = threading.Thread(target=drain, daemon=True)
    proc.drain.start()
    return proc, line.split()[2].rstrip("/")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)  # Ctrl-C: finish what is being served, then stop
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.drain.join(10)


_HOLD = """
import sys
from dicc.runlock import claim
with claim(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def held_by_another_process(path: Path) -> Iterator[subprocess.Popen]:
    """``path`` claimed (:func:`dicc.runlock.claim`) by another process for the block, which is
    then killed with SIGKILL (the test may kill it earlier: ``proc.kill()``)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


# `dicc train` on the built-in data, as small as it goes (a long-tailed subset, width 4)
TINY = [
    "--set",
    "data.longtail=[24,8,24,64,32,16,48]",
    "--set",
    "model.width=4",
    "--set",
    "train.batch_size=32",
    "--no-progress",
]


def _cli(args, capsys):
    """``dicc ARGS`` in-process: exit status, stdout, stderr's lines."""
    from dicc.cli import main

    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip().splitlines()


def _one_error_line(err, *fragments):
    assert len(err) == 1, err
    for f in fragments:
        assert f in err[0], (f, err[0])


def interrupt_after_epoch_1(cfg, monkeypatch) -> None:
    """``fit(cfg)`` stopped by a KeyboardInterrupt at the second epoch's validation (epoch 1's
    checkpoint written), as Ctrl-C would; ``fit(cfg, resume=True)`` then continues it."""
    import pytest

    import dicc.engine as engine

    real, calls = engine.evaluate, {"n": 0}

    def interrupt_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", interrupt_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        engine.fit(cfg, log=lambda *a: None)
    monkeypatch.setattr(engine, "evaluate", real)
