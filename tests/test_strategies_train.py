"""Every registered method trains on the built-in data and its state survives a checkpoint."""

import json

import pytest
import torch

from dicc.checkpoint import load_checkpoint, model_from_checkpoint
from dicc.cli import main
from dicc.engine import fit
from dicc.strategies import available_strategies

SHORT_RUN = {"dicc": ["method.options.warmup_epochs=1"], "ldam_drw": ["method.options.drw_epoch=1"]}


@pytest.mark.parametrize("name", sorted(available_strategies()))
def test_every_method_trains_and_round_trips(name, tiny_config):
    cfg = tiny_config(f"method.name={name}", *SHORT_RUN.get(name, []))
    res = fit(cfg, log=lambda *a: None)
    assert res.final is not None and res.final["method"] == name
    ckpt = load_checkpoint(res.run_dir / "checkpoints" / "last.pt")
    model, strategy = model_from_checkpoint(ckpt)
    saved = ckpt["strategy"]["state"]
    again = strategy.state_dict()
    assert json.dumps(_plain(saved), sort_keys=True) == json.dumps(_plain(again), sort_keys=True)
    assert model.head.out_features == strategy.num_outputs


def _plain(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def test_methods_command_lists_every_method(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, cls in available_strategies().items():
        assert name in out and cls.summary in out


def test_unknown_method_is_an_error_listing_valid_ones(tmp_path, capsys):
    code = main(["train", "--method", "nope", "--out", str(tmp_path / "r"), "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "balanced_softmax" in err


def test_unknown_method_option_is_an_error(tmp_path, capsys):
    code = main(["train", "--method", "focal", "--set", "method.options.gama=2", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "gamma" in capsys.readouterr().err
