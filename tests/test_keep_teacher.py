"""benchmarks/default_model/keep.py: a teacher's checkpoint kept in git loses its optimizer state and
half its size, loads back as a dicc checkpoint, and scores faces as the full-precision weights do
(to fp16 rounding)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from dicc.checkpoint import DEFAULT_MODEL, load_checkpoint, model_from_checkpoint, save_atomic

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "default_model" / "keep.py"
pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="the bundled model is not in this checkout")


@pytest.fixture
def keep():
    spec = importlib.util.spec_from_file_location("keep", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kept_teacher_is_slim_half_and_scores_like_the_run(keep, tmp_path, monkeypatch):
    full = load_checkpoint("default")
    full = {k: v for k, v in full.items() if k != "_path"}
    # fp32 weights that fp16 cannot hold exactly (the bundled model may itself be stored in fp16)
    g = torch.Generator().manual_seed(1)
    full["model"] = {
        k: v.float() * (1 + 1e-3 * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v
        for k, v in full["model"].items()
    }
    # a training checkpoint: what a run's best.pt carries beside the weights
    full["optimizer"] = {"state": {0: {"momentum_buffer": torch.ones(1000, 1000)}}, "param_groups": []}
    full["rng"] = {"torch": torch.get_rng_state()}
    run = tmp_path / "teacher_run"
    (run / "checkpoints").mkdir(parents=True)
    save_atomic(full, run / "checkpoints" / "best.pt")

    monkeypatch.setattr(sys, "argv", ["keep.py", "--run", str(run), "--name", "t", "--out-dir", str(tmp_path / "w")])
    keep.main()
    kept_path = tmp_path / "w" / "t.pt"
    kept = load_checkpoint(kept_path)
    assert "optimizer" not in kept and "rng" not in kept
    assert all(v.dtype == torch.float16 for v in kept["model"].values() if v.is_floating_point())
    n_float = sum(v.numel() for v in full["model"].values() if v.is_floating_point())
    assert kept_path.stat().st_size < (run / "checkpoints" / "best.pt").stat().st_size
    assert kept_path.stat().st_size < 2 * n_float + 200_000  # two bytes a weight, plus the config

    x = torch.randn(16, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = torch.softmax(model_from_checkpoint(full)[0](x), 1)
        got = torch.softmax(model_from_checkpoint(kept)[0](x), 1)
    assert (got - ref).abs().max() < 5e-3
    assert not torch.equal(got, ref)  # the weights really were rounded
