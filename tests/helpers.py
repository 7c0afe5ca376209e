"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
