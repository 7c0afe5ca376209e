"""Runs that cannot drift and mistakes caught early (issue 12): resume from the run's own config,
the log cut back on resume, one clear line for every bad input before anything is written, and
the hold-out a run selected on can be evaluated."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dicc.engine as engine
import dicc.training_run as training_run
from dicc.checkpoint import save_atomic
from dicc.cli import main
from dicc.engine import fit

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
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip().splitlines()


def _one_error_line(err, *fragments):
    assert len(err) == 1, err
    for f in fragments:
        assert f in err[0], (f, err[0])


# -- resume --------------------------------------------------------------------------------------
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


# -- errors early and in one line ------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "train.batch_size=0"], ["train.batch_size: expected an integer >= 1, got 0"]),
        (["--epochs", "0"], ["train.epochs: expected an integer >= 1, got 0"]),
        (["--set", "optim.schedule=linear"], ["optim.schedule: unknown schedule 'linear'", "onecycle"]),
        (["--method", "nope"], ["method.name: unknown method 'nope'", "balanced_softmax"]),
        (["--set", "train.device=cuda"], ["train.device=cuda", "CUDA is not available"]),
        (["--set", "optim.name=adam"], ["optim.name: unknown optimizer 'adam'"]),
        (["--set", "model.width=7", "--set", "model.name=resnet18"], ["model.width=7", "resnet18", "fixed width"]),
        (["--set", "data.val=test"], ["data.val='test' is the test split"]),
        (
            ["--method", "dicc", "--set", "method.options.size=0.5", "--set", "method.options.k_max=50"],
            ["sub-classes than they have images", "disgust (8 images"],
        ),
        # the training controls and metrics of issue 29
        (["--set", "train.ema=1"], ["train.ema: expected a number > 0 and < 1, got 1"]),
        (["--set", "train.grad_clip=0"], ["train.grad_clip: expected a number > 0, got 0"]),
        (["--set", "train.accumulate=0"], ["train.accumulate: expected an integer >= 1, got 0"]),
        (["--set", "train.early_stop=0"], ["train.early_stop: expected an integer >= 1, got 0"]),
        (["--set", "train.early_stop=3", "--set", "data.val=null"], ["train.early_stop: needs a validation split"]),
        (["--set", "optim.schedule=step"], ["optim.milestones: schedule step needs increasing epochs", "None"]),
        (["--set", "optim.schedule=step", "--set", "optim.milestones=[5,3]"], ["optim.milestones", "[5, 3]"]),
        (["--set", "optim.milestones=[3]"], ["optim.milestones=[3] is only used by optim.schedule=step"]),
        (["--set", "optim.gamma=0"], ["optim.gamma: expected a number > 0 and <= 1, got 0"]),
        (["--set", "optim.momentum=0"], ["optim.nesterov=true needs optim.momentum > 0"]),
        (["--set", "eval.shot_thresholds=[20,100]"], ["eval.shot_thresholds: expected [many, few]", "[20, 100]"]),
        (["--set", "train.log=comet"], ["train.log: unknown logger 'comet'", "mlflow, wandb"]),
        (["--method", "dicc", "--set", "method.options.k_max=abc"], ["method.options.k_max: expected int, got 'abc'"]),
        (["--longtail", "[1,2"], ["--longtail '[1,2': not a list or mapping (line 1, column 5", "exp:IF"]),
        (["--longtail", "exp:-5"], ["data.longtail='exp:-5': imbalance factor must be >= 1, got -5"]),
    ],
)
def test_bad_settings_are_one_line_and_nothing_is_written(tmp_path, capsys, monkeypatch, args, fragments):
    if torch.cuda.is_available() and "train.device=cuda" in args:
        pytest.skip("this machine has CUDA")
    data_read = {"n": 0}
    real = training_run.build_run_data

    def counting(*a, **k):
        data_read["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(training_run, "build_run_data", counting)
    out = tmp_path / "run"
    code, _, err = _cli(["train", *TINY, "--out", str(out), *args], capsys)
    assert code == 2
    _one_error_line(err, *fragments)
    assert not out.exists()
    if not fragments[0].startswith(("sub-classes", "data.longtail=")):  # these need the class counts
        assert data_read["n"] == 0


def test_values_yaml_reads_as_strings_and_default_widths(tmp_path, capsys):
    from dicc.config import load_config
    from dicc.validate import check_config

    cfg = load_config(None, ["method.name=logit_adjust", "method.options.tau=5e-1"])
    assert cfg.method.options["tau"] == 0.5
    check_config(cfg)
    cfg = load_config(None, ["model.name=resnet18"])  # the default width is the model's own
    check_config(cfg)
    from dicc.models import create_model

    assert create_model("resnet18", 7, width=cfg.model.width).feature_dim == 512


def test_checkpoint_problems_are_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(["train", *TINY, "--epochs", "1", "--out", str(out)], capsys)[0] == 0
    good = out / "checkpoints" / "best.pt"
    ckpt = torch.load(good, weights_only=True)
    cases = {}
    missing = dict(ckpt)
    del missing["model_spec"]
    cases["missing"] = (save_atomic(missing, tmp_path / "missing.pt"), ["lacks model_spec"])
    newer = dict(ckpt, version=99)
    cases["version"] = (save_atomic(newer, tmp_path / "v99.pt"), ["format version 99", "reads versions 1 to 1"])
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated"] = (cut, ["cut.pt", "truncated or corrupt"])
    nan = dict(ckpt, model={k: v.clone() for k, v in ckpt["model"].items()})
    nan["model"]["head.bias"][2] = float("nan")
    nan["model"]["body.0.0.weight"][0, 0, 0, 0] = float("inf")
    cases["nan"] = (save_atomic(nan, tmp_path / "nan.pt"), ["nan.pt: body.0.0.weight (and 1 more tensors)", "NaN"])
    from dicc.models import create_model

    wide = dict(ckpt, model=create_model("vgg_fer", 7, width=8).state_dict())
    cases["width"] = (
        save_atomic(wide, tmp_path / "w8.pt"),
        ["w8.pt: the weights do not fit", "(vgg_fer, width 4)", "is [8, 1, 3, 3] in the file, [4, 1, 3, 3] in the"],
    )
    for name, (path, fragments) in cases.items():
        code, _, err = _cli(["evaluate", str(path)], capsys)
        assert code == 2, name
        _one_error_line(err, *fragments)
    code, _, err = _cli(["evaluate", str(out), "--batch-size", "0"], capsys)
    assert code == 2
    _one_error_line(err, "--batch-size: expected an integer >= 1, got 0")
    # a resume from a checkpoint of another width names the file and the first tensor
    save_atomic(dict(wide, optimizer=ckpt["optimizer"]), out / "checkpoints" / "last.pt")
    code, _, err = _cli(["train", "--out", str(out), "--resume"], capsys)
    assert code == 2
    _one_error_line(err, "last.pt: does not fit this run's model (body.0.0.weight is [8, 1, 3, 3] in the file")


def test_evaluate_holdout_is_the_split_the_run_selected_on(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(["train", *TINY, "--epochs", "2", "--out", str(out)], capsys)[0] == 0
    final = json.loads((out / "final.json").read_text())
    code, text, _ = _cli(["evaluate", str(out), "--split", "holdout", "--json"], capsys)
    assert code == 0
    m = json.loads(text)
    assert m["mean_class_accuracy"] == pytest.approx(final["best_val_mean_class_accuracy"], abs=1e-12)
    val_lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "val_accuracy" in x]
    assert m["num_samples"] > 0 and m["accuracy"] in [r["val_accuracy"] for r in val_lines]


def test_class_absent_from_the_split_is_named_in_the_output(tmp_path, capsys):
    from dicc.metrics import format_metrics, metrics_from_confusion

    cm = torch.zeros(3, 3, dtype=torch.long)
    cm[0, 0], cm[1, 1] = 5, 3
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["absent_classes"] == ["c"]
    assert "not in this split: c" in format_metrics(m)


def test_ctrl_c_exits_130_with_the_resume_command(tmp_path):
    """The child starts with SIGINT ignored, as a shell's background job (or a CI runner) starts
    it: the CLI restores the default handler. SIGINT is sent once the child has written its first
    checkpoint, whatever the time that takes; it then trains on (10,000 epochs) until it stops."""
    out = tmp_path / "run"
    exe = shutil.which("dicc", path=str(Path(sys.executable).parent)) or shutil.which("dicc")
    cmd = [exe, "train", *TINY, "--epochs", "10000", "--out", str(out)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        started = time.monotonic()
        while not (out / "checkpoints" / "last.pt").exists():  # ready: an epoch is done
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() - started < 600, "no checkpoint in 10 minutes"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        try:  # (it stops within milliseconds; the bound only keeps a child that ignores it from hanging the suite)
            _, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the child ignored SIGINT: the CLI did not restore its default handler")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"dicc train --out {out} --resume" in lines[0], stderr
    assert "Traceback" not in stderr


def test_cli_reads_5e_1_as_a_number_and_resnet18_takes_its_own_width(tmp_path, capsys):
    """Through `dicc train`: method.options.tau=5e-1 trains with tau 0.5, and model.name=resnet18
    trains at the model's own width (model.width: null)."""
    import yaml

    small = [
        "--set",
        "data.longtail=[8,4,8,8,8,4,8]",
        "--set",
        "data.test_split=null",
        "--epochs",
        "1",
        "--no-progress",
    ]
    out = tmp_path / "la"
    args = ["train", "--method", "logit_adjust", "--set", "method.options.tau=5e-1", "--set", "model.width=4"]
    assert main([*args, *small, "--out", str(out)]) == 0, capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["method"]["options"]["tau"] == 0.5
    out = tmp_path / "r18"
    r18 = ["train", "--set", "model.name=resnet18", "--set", "data.val=null", *small, "--out", str(out)]
    assert main(r18) == 0, capsys.readouterr().err
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["model_spec"]["name"] == "resnet18" and ckpt["model"]["head.weight"].shape == (7, 512)
