"""dicc.training_run (built, or restored from a checkpoint): a resume takes the run's own config
and refuses other settings, cuts the log back to the checkpoint, and ends bit for bit where the
uninterrupted run ends, with every training control on."""

import json
from pathlib import Path

import pytest
import torch

import dicc.engine as engine
from dicc.engine import fit
from helpers import _cli, _one_error_line, TINY


def test_resume_takes_the_runs_config_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "ce"
    assert _cli(["train", *TINY, "--epochs", "2", "--out", str(out)], capsys)[0] == 0
    config, final = (out / "config.yaml").read_bytes(), (out / "final.json").read_bytes()
    code, _, err = _cli(
        ["train", "--out", str(out), "--resume", "--method", "balanced_softmax", "--set", "optim.lr=0.5"], capsys
    )
    assert code == 2
    _one_error_line(err, "--resume", "method.name: 'ce' -> 'balanced_softmax'", "optim.lr: 0.05 -> 0.5")
    code, _, err = _cli(["train", "--out", str(out), "--resume", "--set", "model.width=8"], capsys)
    assert code == 2
    _one_error_line(err, "model.width: 4 -> 8")
    # the training controls change the result; only the tracker (train.log) may differ
    code, _, err = _cli(
        ["train", "--out", str(out), "--resume", "--set", "train.ema=0.99", "--set", "train.accumulate=2"], capsys
    )
    assert code == 2
    _one_error_line(err, "train.accumulate: 1 -> 2", "train.ema: None -> 0.99")
    assert (out / "config.yaml").read_bytes() == config and (out / "final.json").read_bytes() == final
    # only --out: the run's own settings; keys that cannot change the result may differ
    code, text, _ = _cli(
        ["train", "--out", str(out), "--resume", "--set", "train.threads=1", "--set", "train.progress=false"], capsys
    )
    assert code == 0 and "resuming" in text
    assert (out / "config.yaml").read_bytes() == config


def test_resume_cuts_the_log_back_and_numbers_epochs_from_one(tiny_config, monkeypatch):
    cfg = tiny_config(
        "method.name=dicc", "method.options.warmup_epochs=1", "method.options.n_init=1", "train.epochs=4", out="cut"
    )
    full = fit(
        tiny_config(
            "method.name=dicc",
            "method.options.warmup_epochs=1",
            "method.options.n_init=1",
            "train.epochs=4",
            out="full",
        ),
        log=lambda *a: None,
    )
    real, calls = engine.evaluate, {"n": 0}

    def interrupt(*args, **kwargs):  # dies in the validation pass of epoch 3, twice
        calls["n"] += 1
        if calls["n"] in (3, 4):
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", interrupt)
    for resume in (False, True):
        with pytest.raises(KeyboardInterrupt):
            fit(cfg, resume=resume, log=lambda *a: None)
    monkeypatch.setattr(engine, "evaluate", real)
    fit(cfg, resume=True, log=lambda *a: None)

    def records(d):
        return [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]

    cut, whole = records(cfg.train.out), records(full.run_dir)
    keys = [(r.get("event"), r["epoch"]) for r in cut]
    assert len(keys) == len(set(keys)), keys  # nothing logged twice
    assert keys == [(r.get("event"), r["epoch"]) for r in whole]
    assert [k for k in keys if k[0] == "recluster"] == [("recluster", e) for e in (2, 3, 4)]
    assert [k[1] for k in keys if k[0] is None] == [1, 2, 3, 4]
    assert (Path(cfg.train.out) / "metrics.csv").read_text().count("\n") == 5


def test_resume_with_every_training_control_on_is_bit_identical(tiny_config, monkeypatch):
    """EMA + gradient clipping + accumulation + early stopping + the step schedule, on DICC (its head
    split rewrites the average too, its feature bank is per batch): killed in the validation of
    epoch 3 and resumed, the run ends with the uninterrupted run's weights (trained and averaged),
    log and test, bit for bit."""
    on = [
        "method.name=dicc",
        "method.options.warmup_epochs=1",
        "method.options.n_init=1",
        "train.epochs=5",
        "train.ema=0.8",
        "train.grad_clip=0.5",
        "train.accumulate=2",
        "train.early_stop=2",
        "optim.schedule=step",
        "optim.milestones=[2,4]",
    ]
    full = fit(tiny_config(*on, out="full"), log=lambda *a: None)
    real, calls = engine.evaluate, {"n": 0}

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", interrupt)
    cfg = tiny_config(*on, out="cut")
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, log=lambda *a: None)
    monkeypatch.setattr(engine, "evaluate", real)
    assert torch.load(Path(cfg.train.out) / "checkpoints/last.pt", weights_only=True)["epoch"] == 2
    resumed = fit(cfg, resume=True, log=lambda *a: None)
    a = torch.load(full.run_dir / "checkpoints/last.pt", weights_only=True)
    b = torch.load(resumed.run_dir / "checkpoints/last.pt", weights_only=True)
    for part in ("model", "raw_model"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert (a["step"], a["best_epoch"], a["early_stop_epoch"]) == (b["step"], b["best_epoch"], b["early_stop_epoch"])
    assert torch.equal(a["strategy"]["state"]["pseudo"], b["strategy"]["state"]["pseudo"])

    def lines(d):
        return [
            {k: v for k, v in json.loads(x).items() if not k.startswith("time")}
            for x in (Path(d) / "metrics.jsonl").read_text().splitlines()
        ]

    assert lines(full.run_dir) == lines(resumed.run_dir)
    for k in ("confusion_matrix", "ece", "top2_accuracy", "epoch", "early_stop_epoch"):
        assert full.final[k] == resumed.final[k], k
    assert full.final["early_stop_epoch"] == 3  # the stop came in the epoch the resumed run redid
