import json
from pathlib import Path

import pytest
import torch

import dicc.engine as engine
import dicc.training_run as training_run
from dicc.checkpoint import load_checkpoint, model_from_checkpoint, save_atomic, write_text_atomic
from dicc.engine import evaluate, fit, learning_rate
from dicc.engine import make_optimizer as engine_make_optimizer
from dicc.config import OptimConfig
from dicc.data.build import build_run_data


def test_run_directory_contents(tiny_config):
    cfg = tiny_config()
    res = fit(cfg, log=lambda *a: None)
    d = res.run_dir
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "environment.json",
        "final.json",
        "confusion_test.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (d / name).is_file(), name
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if "train_loss" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all("val_mean_class_accuracy" in r for r in epochs)
    final = json.loads((d / "final.json").read_text())
    assert final["num_samples"] == sum(final["per_class"][n]["support"] for n in final["per_class"])
    assert sum(map(sum, final["confusion_matrix"])) == final["num_samples"]
    assert 0 <= final["mean_class_accuracy"] <= 1
    assert final["train_class_counts"] == build_run_data(cfg.data).train.class_counts()
    # checkpoints load with weights_only=True and evaluate to the same numbers
    ckpt = torch.load(d / "checkpoints" / final["checkpoint"], weights_only=True)
    assert ckpt["epoch"] == final["epoch"]
    model, strategy = model_from_checkpoint(load_checkpoint(d))
    data = build_run_data(cfg.data)
    again = evaluate(model, strategy, data.test)
    assert again["confusion_matrix"] == final["confusion_matrix"]


def test_same_seed_same_numbers(tiny_config):
    runs = [
        fit(tiny_config(*extra, out=out), log=lambda *a: None)
        for out, extra in (("a", []), ("b", []), ("c", ["train.seed=1"]))
    ]
    weights = [torch.load(r.run_dir / "checkpoints/last.pt", weights_only=True)["model"]["head.weight"] for r in runs]
    assert runs[0].final["confusion_matrix"] == runs[1].final["confusion_matrix"]
    assert torch.equal(weights[0], weights[1])
    assert not torch.allclose(weights[0], weights[2])


def test_resume_continues_exactly(tiny_config, monkeypatch):
    full = fit(tiny_config("train.epochs=3", out="full"), log=lambda *a: None)

    real, calls = engine.evaluate, {"n": 0}

    def interrupt_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", interrupt_second_epoch)
    cfg = tiny_config("train.epochs=3", out="cut")
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, log=lambda *a: None)
    monkeypatch.setattr(engine, "evaluate", real)
    assert torch.load(cfg.train.out + "/checkpoints/last.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(FileExistsError, match="--resume"):
        fit(cfg, log=lambda *a: None)
    resumed = fit(cfg, resume=True, log=lambda *a: None)
    a = torch.load(full.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(resumed.run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.final["confusion_matrix"] == full.final["confusion_matrix"]


def test_atomic_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_atomic({"x": torch.ones(2)}, path)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        save_atomic({"x": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_text_written_atomically_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "final.json"
    write_text_atomic(path, '{"accuracy": 0.5}')

    def broken(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", broken)
    with pytest.raises(OSError):
        write_text_atomic(path, '{"accuracy": 0.9}')
    monkeypatch.undo()
    assert path.read_text() == '{"accuracy": 0.5}'
    assert [p.name for p in tmp_path.iterdir()] == ["final.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_dicc_split_gets_the_training_optimizer(tiny_config, monkeypatch):
    """The engine hands its optimizer to the strategy, so DICC's split can rewrite the head's
    optimizer state along with the head."""
    from dicc.strategies.dicc import DICC

    seen = []
    split_head = DICC.split_head

    def spy(self, ctx):
        seen.append(ctx.optimizer)
        return split_head(self, ctx)

    monkeypatch.setattr(DICC, "split_head", spy)
    made = []
    monkeypatch.setattr(training_run, "make_optimizer", lambda *a: made.append(engine_make_optimizer(*a)) or made[-1])
    fit(
        tiny_config("method.name=dicc", "method.options.warmup_epochs=1", "method.options.n_init=1"),
        log=lambda *a: None,
    )
    assert len(seen) == 1 and len(made) == 1 and seen[0] is made[0]
    assert any(st.get("momentum_buffer") is not None for st in made[0].state.values())


def test_dicc_with_subclass_sampler_trains_on_subclass_balanced_draws(tiny_config, monkeypatch):
    """The engine asks for the epoch's order after the re-clustering, so the sub-class draw
    of epoch 2 already uses the pseudo-labels made at its start."""
    from dicc.strategies.dicc import DICC

    orders = []
    epoch_indices = DICC.epoch_indices

    def spy(self, labels, epoch, seed, rank=0, world_size=1):
        out = epoch_indices(self, labels, epoch, seed, rank, world_size)
        orders.append((epoch, self.split, None if self.pseudo is None else self.pseudo[out]))
        return out

    monkeypatch.setattr(DICC, "epoch_indices", spy)
    res = fit(
        tiny_config(
            "method.name=dicc",
            "method.options.warmup_epochs=1",
            "method.options.n_init=1",
            "method.options.sampler=subclass",
            "train.epochs=2",
        ),
        log=lambda *a: None,
    )
    assert res.final is not None
    assert [(e, split) for e, split, _ in orders] == [(0, False), (1, True)]
    drawn = torch.bincount(orders[1][2])
    assert drawn.min() > 0 and drawn.max() < 3 * drawn.min()  # vs counts 8..64 per class without it


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a dicc checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_learning_rate_schedules(schedule):
    cfg = OptimConfig(lr=0.1, schedule=schedule, warmup_fraction=0.2)
    lrs = [learning_rate(cfg, s, 100) for s in range(100)]
    assert max(lrs) == pytest.approx(0.1, rel=0.02)
    if schedule != "constant":
        assert lrs[0] < 0.1 and lrs[-1] < 0.01
        peak = lrs.index(max(lrs))
        assert 15 <= peak <= 25
    with pytest.raises(ValueError, match="valid: onecycle, cosine, step, constant"):
        learning_rate(OptimConfig(schedule="linear"), 0, 10)
