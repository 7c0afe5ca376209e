"""train.log behind one interface (dicc.loggers): a missing package is one line before anything is
written; MLflow (file store in the run directory) and W&B (offline) receive every record, and a
resumed run continues the tracker's run. The tracker tests skip without their package."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import dicc.engine as engine
from dicc.cli import main
from dicc.engine import fit
from dicc.loggers import check_logger, scalar_name

LDAM = ["method.name=ldam_drw", "train.epochs=2"]  # two epochs and an event (drw_on at epoch 2)


def _records(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_scalar_names():
    assert scalar_name("val_mean_class_accuracy") == "val/mean_class_accuracy"
    assert scalar_name("train_accuracy") == "train/accuracy" and scalar_name("lr") == "lr"


@pytest.mark.parametrize("kind, package", [("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_a_missing_package_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, kind, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ValueError, match=rf"^train.log={kind}: {package} is not installed \(pip install {package}\)$"):
        check_logger(kind)
    out = tmp_path / "run"
    code = main(["train", "--set", f"train.log={kind}", "--epochs", "1", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"dicc train: error: train.log={kind}: {package} is not installed (pip install {package})"
    ]
    assert not out.exists()


def test_mlflow_file_store_in_the_run_directory_and_resume(tiny_config, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # set by dicc for its file store; restored after
    real, calls = engine.evaluate, {"n": 0}

    def interrupt(*args, **kwargs):  # dies in the validation of epoch 2: epoch 1 was logged
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    cfg = tiny_config(*LDAM, "train.log=mlflow")
    monkeypatch.setattr(engine, "evaluate", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, log=lambda *a: None)
    monkeypatch.setattr(engine, "evaluate", real)
    res = fit(cfg, resume=True, log=lambda *a: None)
    store = res.run_dir / "mlflow"
    run_id = (store / "run_id").read_text()
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    exp = client.get_experiment_by_name("dicc")
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [run_id]  # the resume continued it
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["method.name"] == "ldam_drw" and run.data.params["train.log"] == "mlflow"
    lines = [r for r in _records(res.run_dir) if "train_loss" in r]
    for key in ("train_accuracy", "train_loss", "val_mean_class_accuracy", "lr"):
        hist = client.get_metric_history(run_id, scalar_name(key))
        assert [(m.step, m.value) for m in hist] == [(r["epoch"], pytest.approx(r[key])) for r in lines], key
    event = next(r for r in _records(res.run_dir) if r.get("event") == "drw_on")
    path = client.download_artifacts(run_id, "events/0002_drw_on.json", str(res.run_dir / "dl"))
    assert json.loads(Path(path).read_text()) == event


def test_wandb_offline_run_in_the_run_directory(tiny_config, monkeypatch, capfd):
    pytest.importorskip("wandb")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):  # keep wandb's own files out of $HOME
        monkeypatch.setenv(var, str(Path(tiny_config().train.out).parent / var.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    capfd.readouterr()
    res = fit(tiny_config(*LDAM, "train.log=wandb"), log=lambda *a: None)
    out, err = capfd.readouterr()
    assert out == "" and "wandb" not in err.lower()  # the library prints nothing
    run_id = (res.run_dir / "wandb" / "run_id").read_text()
    (log,) = (res.run_dir / "wandb" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    data = log.read_bytes()
    for key in (b"train/accuracy", b"val/mean_class_accuracy", b"event/drw_on", b"ldam_drw"):
        assert key in data, key
    assert torch.load(res.run_dir / "checkpoints/last.pt", weights_only=True)["epoch"] == 2
