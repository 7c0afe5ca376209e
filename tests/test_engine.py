import json
from pathlib import Path

import pytest
import torch

import dicc.engine as engine
import dicc.training_run as training_run
from dicc.checkpoint import load_checkpoint, model_from_checkpoint, save_atomic, write_text_atomic
from dicc.engine import evaluate, fit, learning_rate
from dicc.engine import make_optimizer as engine_make_optimizer
from dicc.config import OptimConfig, load_config
from dicc.data.build import build_run_data


def test_run_directory_contents(tiny_config):
    cfg = tiny_config("data.image_size=auto")
    given = cfg.to_dict()
    res = fit(cfg, log=lambda *a: None)
    d = res.run_dir
    assert cfg.to_dict() == given  # "auto" values are resolved into a copy: the run's config.yaml
    cfg = load_config(d / "config.yaml")
    assert given["data"]["image_size"] == "auto" and cfg.data.image_size == 48
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


# -- training controls ------------------------------------------------------------------
def _records(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_grad_clip_bounds_the_norm(tiny_config, monkeypatch):
    """Every optimiser step sees the gradient scaled by min(1, c / ||g||) (torch's clip, checked by
    hand on the gradients before and after), so its norm is at most c; the epoch line's
    train_grad_norm is the mean norm before clipping."""
    real, seen = torch.nn.utils.clip_grad_norm_, []

    def spy(params, max_norm, *a, **k):
        params = list(params)
        before = [p.grad.detach().clone() for p in params]
        out = real(params, max_norm, *a, **k)
        seen.append((before, [p.grad.detach().clone() for p in params], float(out)))
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    clip = 0.3
    res = fit(tiny_config("train.grad_clip=0.3", "optim.lr=0.2"), log=lambda *a: None)
    assert seen and any(norm > clip for *_, norm in seen), "no gradient above the bound: the check would be vacuous"
    for before, after, norm in seen:
        by_hand = torch.sqrt(sum((g.double() ** 2).sum() for g in before))
        assert norm == pytest.approx(float(by_hand), rel=1e-5)
        scale = min(1.0, clip / (float(by_hand) + 1e-6))
        for b, a in zip(before, after):
            assert torch.allclose(a, b * scale, atol=1e-7)
        assert float(torch.sqrt(sum((g.double() ** 2).sum() for g in after))) <= clip * (1 + 1e-5)
    per_epoch = len(seen) // 2
    lines = [r for r in _records(res.run_dir) if "train_loss" in r]
    assert lines[0]["train_grad_norm"] == pytest.approx(sum(n for *_, n in seen[:per_epoch]) / per_epoch, rel=1e-6)


class _NoBatchNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
        )
        self.fc = torch.nn.Linear(16, 7)

    def forward(self, x):
        return self.fc(self.body(x))


def _weights_after_one_epoch(tmp_path, name, n, batch, accumulate):
    """The weights of a model without BatchNorm after one epoch on ``n`` images (no augmentation,
    constant lr: every step the same function of its samples), and the run's optimiser steps."""
    import dicc
    from dicc.data.synthetic import make_synthetic

    counts = [n - 6 * (n // 8)] + [n // 8] * 6
    ds = make_synthetic("train", counts=counts)
    torch.manual_seed(0)
    res = dicc.fit(
        train=(ds.images, ds.labels),
        model=_NoBatchNorm(),
        epochs=1,
        out=str(tmp_path / name),
        **{
            "data.val": None,
            "train.batch_size": batch,
            "train.accumulate": accumulate,
            "optim.schedule": "constant",
            "optim.lr": 0.5,
            "augment.crop_padding": 0,
            "augment.flip": False,
            "train.progress": False,
        },
    )
    steps = torch.load(res.run_dir / "checkpoints/last.pt", weights_only=True)["step"]
    return {k: v.detach().clone() for k, v in res.model.state_dict().items()}, steps


def test_accumulating_k_batches_is_one_step_on_their_union(tmp_path):
    """k micro-steps of batch b give the weights of one step of batch k*b (no BatchNorm: the
    gradient of the mean loss over k*b samples is the mean of the k batch means); an epoch whose
    batch count is not a multiple of k steps on its last group, divided by that group's size."""
    one, steps_one = _weights_after_one_epoch(tmp_path, "b32", 32, 32, 1)
    four, steps_four = _weights_after_one_epoch(tmp_path, "b8x4", 32, 8, 4)
    assert steps_one == steps_four == 1
    torch.manual_seed(0)
    init = _NoBatchNorm()  # the weights both started from (a step was taken)
    assert not torch.allclose(one["body.module.body.0.weight"], init.body[0].weight)
    for k in one:
        assert torch.allclose(one[k], four[k], atol=1e-6), k
    # 3 batches of 8 with accumulate 4: one step on a group of 3, as one batch of 24
    three, steps = _weights_after_one_epoch(tmp_path, "b8x4of3", 24, 8, 4)
    whole, _ = _weights_after_one_epoch(tmp_path, "b24", 24, 24, 1)
    assert steps == 1
    for k in whole:
        assert torch.allclose(three[k], whole[k], atol=1e-6), k
    # with accumulate 2 the same 3 batches are two steps: groups of 2 and 1
    assert _weights_after_one_epoch(tmp_path, "b8x2of3", 24, 8, 2)[1] == 2


def test_accumulate_leaves_ldam_drw_and_dicc_features_alone(tiny_config):
    """LDAM's "auto" DRW epoch is a function of the epoch (the schedule's fraction), and DICC keeps
    every batch's training features: both the same with accumulate 3 as with 1; the lr schedule
    counts optimiser steps."""
    runs = {}
    for k in (1, 3):
        ldam = fit(
            tiny_config("method.name=ldam_drw", "train.epochs=4", f"train.accumulate={k}", out=f"l{k}"), log=None
        )
        d = fit(
            tiny_config(
                "method.name=dicc",
                "method.options.warmup_epochs=1",
                "method.options.n_init=1",
                f"train.accumulate={k}",
                out=f"d{k}",
            ),
            log=None,
        )
        runs[k] = (_records(ldam.run_dir), _records(d.run_dir), torch.load(ldam.run_dir / "checkpoints/last.pt"))
    (l1, d1, c1), (l3, d3, c3) = runs[1], runs[3]
    assert [r["epoch"] for r in l1 if r.get("event") == "drw_on"] == [
        r["epoch"] for r in l3 if r.get("event") == "drw_on"
    ]
    assert [r["epoch"] for r in l1 if r.get("event") == "drw_on"] == [4]  # onecycle, 4 epochs: 0.8 -> epoch 4
    batches = c1["step"] // 4
    assert c3["step"] == 4 * -(-batches // 3)
    ev1, ev3 = ([r for r in d if r.get("event") == "recluster"] for d in (d1, d3))
    assert len(ev1) == len(ev3) == 1 and ev1[0]["features"] == ev3[0]["features"]
    assert ev3[0]["features"]["train"] > 0 and ev3[0]["features"]["older"] == 0


def test_ema_weights_after_n_steps_are_what_the_run_evaluates_and_saves(tiny_config, monkeypatch, capsys):
    """With train.ema the checkpoints' model is the hand-rolled average of the weights after each
    optimiser step (buffers copied), raw_model the trained weights; best.pt is selected, tested and
    evaluated by `dicc evaluate` with the average."""
    from dicc.cli import main

    made, steps = {}, []
    real_model, real_opt = training_run.create_model, training_run.make_optimizer

    def create_model(*a, **k):
        made["model"] = real_model(*a, **k)
        return made["model"]

    def make_optimizer(cfg, params):
        opt = real_opt(cfg, params)
        made["init"] = {k: v.detach().double().clone() for k, v in made["model"].named_parameters()}
        step = opt.step

        def recording_step(*a, **k):
            out = step(*a, **k)
            steps.append({k: v.detach().double().clone() for k, v in made["model"].named_parameters()})
            return out

        opt.step = recording_step
        return opt

    monkeypatch.setattr(training_run, "create_model", create_model)
    monkeypatch.setattr(training_run, "make_optimizer", make_optimizer)
    decay = 0.7
    res = fit(tiny_config(f"train.ema={decay}", "train.accumulate=2", "train.epochs=2"), log=lambda *a: None)
    ref = dict(made["init"])
    for w in steps:
        ref = {k: decay * ref[k] + (1 - decay) * w[k] for k in ref}
    last = torch.load(res.run_dir / "checkpoints/last.pt", weights_only=True)
    assert last["step"] == len(steps)
    for k in ref:
        assert torch.allclose(last["model"][k].double(), ref[k], atol=1e-6), k
        assert torch.equal(last["raw_model"][k].double(), steps[-1][k]), k
    buffers = [k for k in last["model"] if k not in ref]
    assert buffers and all(torch.equal(last["model"][k], last["raw_model"][k]) for k in buffers)
    assert not torch.allclose(last["model"]["head.weight"], last["raw_model"]["head.weight"])
    final = res.final
    assert final["weights"] == "ema"
    best = torch.load(res.run_dir / "checkpoints" / final["checkpoint"], weights_only=True)
    for k, v in res.model.state_dict().items():  # dicc.fit's model: the tested (averaged) weights
        assert torch.equal(v, best["model"][k]), k
    capsys.readouterr()
    assert main(["evaluate", str(res.run_dir), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    for k in ("confusion_matrix", "top2_accuracy", "few_shot_accuracy"):
        assert again[k] == final[k], k
    assert again["ece"] == pytest.approx(final["ece"], abs=1e-9)  # (channels_last in the run, not here)
    assert main(["evaluate", str(res.run_dir), "--split", "holdout", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_class_accuracy"] == pytest.approx(
        final["best_val_mean_class_accuracy"], abs=1e-12
    )
    # the text report names the new metrics; --reliability draws the diagram
    png = res.run_dir / "reliability_holdout.png"
    assert main(["evaluate", str(res.run_dir), "--split", "holdout", "--reliability", str(png)]) == 0
    text = capsys.readouterr().out
    assert "top-2 accuracy" in text and "ECE" in text and "few-shot" in text and png.stat().st_size > 1000
    assert (res.run_dir / "reliability_test.png").stat().st_size > 1000


def test_dicc_head_split_rewrites_the_moving_average_too(tiny_config, monkeypatch):
    import math

    from dicc.strategies.dicc import DICC

    checked = []
    split_head = DICC.split_head

    def spy(self, ctx):
        head = ctx.averaged.head
        w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
        split_head(self, ctx)
        for c in self.plan.split_classes:
            r = self.plan.subclass_range(c)
            for j in r:
                assert torch.equal(head.weight[j], w0[r.start])
                assert head.bias[j].item() == pytest.approx(b0[r.start].item() - math.log(len(r)), abs=1e-6)
            checked.append(c)

    monkeypatch.setattr(DICC, "split_head", spy)
    fit(
        tiny_config("method.name=dicc", "method.options.warmup_epochs=1", "method.options.n_init=1", "train.ema=0.9"),
        log=lambda *a: None,
    )
    assert checked


def test_early_stop_at_the_right_epoch_and_resume_trains_no_more(tiny_config, monkeypatch):
    """Validation mean class accuracies 0.2, 0.5, 0.4, 0.5, 0.3, ... with patience 3: the best is
    epoch 2 (0.5 equalled later is no improvement), epochs 3, 4, 5 bring nothing, so training stops
    after epoch 5 of 8; best.pt is epoch 2's."""
    script = iter([0.2, 0.5, 0.4, 0.5, 0.3, 0.9, 0.9, 0.9])
    real = engine.evaluate

    def scripted(model, strategy, ds, **kw):
        m = real(model, strategy, ds, **kw)
        if ds is not None and ds.source.endswith("(hold-out 0.1)"):
            m["mean_class_accuracy"] = next(script)
        return m

    monkeypatch.setattr(engine, "evaluate", scripted)
    cfg = tiny_config("train.epochs=8", "train.early_stop=3")
    res = fit(cfg, log=lambda *a: None)
    lines = _records(res.run_dir)
    assert [r["epoch"] for r in lines if "train_loss" in r] == [1, 2, 3, 4, 5]
    stops = [r for r in lines if r.get("event") == "early_stop"]
    assert stops == [
        {"event": "early_stop", "epoch": 5, "best_epoch": 2, "best_val_mean_class_accuracy": 0.5, "patience": 3}
    ]
    assert res.final["early_stop_epoch"] == 5 and res.final["epoch"] == 2
    assert json.loads((res.run_dir / "final.json").read_text())["early_stop_epoch"] == 5
    last = torch.load(res.run_dir / "checkpoints/last.pt", weights_only=True)
    assert (last["epoch"], last["early_stop_epoch"], last["best_epoch"]) == (5, 5, 2)

    # resuming the stopped run trains no epoch and gives the same test
    def no_training(run, epoch):
        raise AssertionError(f"resumed a stopped run and trained epoch {epoch + 1}")

    monkeypatch.setattr(engine, "_train_epoch", no_training)
    again = fit(cfg, resume=True, log=lambda *a: None)
    assert again.final["confusion_matrix"] == res.final["confusion_matrix"] and again.final["early_stop_epoch"] == 5
    assert _records(res.run_dir) == lines


def test_step_schedule_through_a_run(tiny_config):
    res = fit(
        tiny_config(
            "optim.schedule=step",
            "optim.milestones=[1,2]",
            "optim.gamma=0.5",
            "optim.warmup_fraction=0",
            "train.epochs=3",
        ),
        log=lambda *a: None,
    )
    assert [r["lr"] for r in _records(res.run_dir) if "lr" in r] == pytest.approx([0.05, 0.025, 0.0125])
