"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

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
