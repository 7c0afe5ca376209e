"""The `dicc` command as a user meets it: `dicc methods -v` says what every option does; a run
trained with a relative --data evaluates, re-balances, draws its sub-classes and resumes from any
working directory, and still evaluates with --data once it and its data have moved; `dicc
subclasses` draws the latest sub-classes when best.pt is from DICC's warm-up; `evaluate --split
holdout` is the split the run selected on; Ctrl-C exits 130 naming the resume command; values
from the command line are read as YAML."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import dicc.engine as engine
from data_helpers import class_tree
from dicc.cli import main
from dicc.data.classes import EMOTIONS
from dicc.strategies import available_strategies, option_help
from helpers import _cli, TINY

SMALL = ["--set", "model.width=4", "--set", "train.batch_size=32", "--no-progress"]
DICC = ["--method", "dicc", "--set", "method.options.warmup_epochs=1", "--set", "method.options.n_init=1"]


# -- dicc methods -v -------------------------------------------------------------------------------
def test_every_option_of_every_method_says_what_it_does(capsys):
    code, out, _ = _cli(["methods", "-v"], capsys)
    assert code == 0
    lines = out.splitlines()
    for name, cls in available_strategies().items():
        helps = option_help(cls.Options)
        assert set(helps) == {f.name for f in dataclasses.fields(cls.Options)}
        for option, text in helps.items():
            assert text.strip() and "\n" not in text, (name, option)
            # printed on the option's own line, after its default
            assert any(ln.lstrip().startswith(f"{option} = ") and ln.endswith(text) for ln in lines), (name, option)
    assert "k_max = 4" in out and "the most sub-classes one class is split into" in out


# -- portable run directories ---------------------------------------------------------------------
def _faces(root: Path) -> Path:
    """An image folder (train/ and test/, one folder per emotion) of tiny noise faces, long-tailed
    in train so that DICC splits its largest classes."""
    train = {name: (40 if name in ("happy", "neutral") else 10) for name in EMOTIONS}
    class_tree(root / "train", train, seed=0)
    class_tree(root / "test", {name: 3 for name in EMOTIONS}, seed=1)
    return root


def test_a_run_works_from_any_directory_and_moved_with_data(tmp_path, monkeypatch, capsys):
    a, b, c = (tmp_path / x for x in "abc")
    for d in (a, b, c):
        d.mkdir()
    _faces(a / "faces")
    monkeypatch.chdir(a)
    code, _, err = _cli(["train", "--data", "faces", "--epochs", "2", "--out", "run", *SMALL, *DICC], capsys)
    assert code == 0, err
    saved = yaml.safe_load((a / "run" / "config.yaml").read_text())
    assert saved["data"]["path"] == str((a / "faces").resolve())  # recorded absolute
    best = torch.load(a / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert best["config"]["data"]["path"] == str((a / "faces").resolve())
    final = json.loads((a / "run" / "final.json").read_text())

    monkeypatch.chdir(b)  # another working directory: the run by a relative and an absolute path
    run = os.path.relpath(a / "run", b)
    for name in (run, str(a / "run")):
        code, out, err = _cli(["evaluate", name, "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["confusion_matrix"] == final["confusion_matrix"]
    code, _, err = _cli(["rebalance", run, "--stage", "logit_adjust", "--out", "rb"], capsys)
    assert code == 0, err
    assert (b / "rb" / "final.json").is_file()
    assert yaml.safe_load((b / "rb" / "config.yaml").read_text())["data"]["path"] == saved["data"]["path"]
    code, out, err = _cli(["subclasses", run, "--out", "g.png"], capsys)
    assert code == 0, err
    assert (b / "g.png").is_file()
    # --resume from here is accepted: by --out alone, and with --data given relative to here
    for extra in ([], ["--data", os.path.relpath(a / "faces", b)]):
        code, out, err = _cli(["train", "--out", run, "--resume", "--no-progress", *extra], capsys)
        assert code == 0 and "resuming" in out, err

    # the run and its data moved elsewhere: one line asking for --data, then evaluated with it
    shutil.move(a / "run", c / "run")
    shutil.move(a / "faces", c / "faces2")
    code, _, err = _cli(["evaluate", str(c / "run")], capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("dicc evaluate: error: ") and "--data" in err[0] and str(a / "faces") in err[0]
    code, out, err = _cli(["evaluate", str(c / "run"), "--data", str(c / "faces2"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["confusion_matrix"] == final["confusion_matrix"]


def test_a_run_that_recorded_a_relative_path_still_resumes_from_its_directory(tmp_path, monkeypatch, capsys):
    """Runs written before paths were recorded resolved keep resuming where they were trained."""
    _faces(tmp_path / "faces")
    monkeypatch.chdir(tmp_path)
    assert _cli(["train", "--data", "faces", "--epochs", "1", "--out", "run", *SMALL], capsys)[0] == 0
    config = tmp_path / "run" / "config.yaml"
    old = yaml.safe_load(config.read_text())
    old["data"]["path"] = "faces"
    config.write_text(yaml.safe_dump(old, sort_keys=False))
    code, out, err = _cli(["train", "--out", "run", "--resume", "--no-progress"], capsys)
    assert code == 0 and "resuming" in out, err


# -- dicc subclasses ----------------------------------------------------------------------------
def test_subclasses_use_last_pt_when_best_pt_is_from_the_warm_up(tmp_path, monkeypatch, capsys):
    """A tiny DICC run whose validation is best in epoch 1 (the warm-up, forced): best.pt has no
    sub-classes, last.pt has; the gallery is last.pt's, said in one line."""
    validate = engine._validate
    calls = []

    def best_in_epoch_one(run, record):
        calls.append(validate(run, record))
        return len(calls) == 1

    monkeypatch.setattr(engine, "_validate", best_in_epoch_one)
    run = tmp_path / "run"
    args = ["train", "--set", "data.longtail=[24,8,24,64,32,16,48]", "--epochs", "2", "--out", str(run)]
    assert _cli([*args, *SMALL, *DICC], capsys)[0] == 0
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == 1 and not best["strategy"]["state"]["split"]
    assert last["epoch"] == 2 and last["strategy"]["state"]["split"]

    code, out, err = _cli(["subclasses", str(run), "--out", str(tmp_path / "g.png")], capsys)
    assert code == 0, err
    said = [ln for ln in out.splitlines() if "predates" in ln]
    assert len(said) == 1 and "best.pt (epoch 1)" in said[0] and "last.pt (epoch 2)" in said[0], out
    code, _, err = _cli(["subclasses", str(run / "checkpoints" / "last.pt"), "--out", str(tmp_path / "l.png")], capsys)
    assert code == 0, err
    drawn, reference = (np.asarray(Image.open(tmp_path / f)) for f in ("g.png", "l.png"))
    assert np.array_equal(drawn, reference)  # the same gallery as last.pt's own
    # a checkpoint with none (best.pt given as a file) stays a one-line error
    code, _, err = _cli(["subclasses", str(run / "checkpoints" / "best.pt")], capsys)
    assert code == 2 and len(err) == 1 and "no sub-classes to draw" in err[0]


# -- dicc evaluate --split holdout, Ctrl-C, values from the command line ---------------------------
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
