"""Second stages on a finished run (cRT, tau-normalisation, post-hoc logit adjustment) and the
training options that compose with every method (label smoothing, mixup, test-time views)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from dicc.checkpoint import load_checkpoint, model_from_checkpoint
from dicc.cli import main
from dicc.data.build import build_run_data
from dicc.data.transforms import mix_batch, tta_views
from dicc.engine import evaluate, fit
from dicc.losses import create_loss
from dicc.rebalance import check_stage, rebalance, tau_normalized


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished tiny CE run and a DICC run (their best checkpoints are the stages' inputs)."""
    from dicc.config import load_config

    root = tmp_path_factory.mktemp("parents")
    base = [
        "data.longtail=[24,8,24,64,32,16,48]",
        "data.val=holdout",
        "model.width=4",
        "train.epochs=2",
        "train.batch_size=32",
        "train.progress=false",
    ]
    ce = fit(load_config(None, [*base, f"train.out={root / 'ce'}"]), log=lambda *a: None)
    dicc = fit(
        load_config(
            None,
            [
                *base,
                "method.name=dicc",
                "method.options.warmup_epochs=1",
                "method.options.n_init=1",
                f"train.out={root / 'dicc'}",
            ],
        ),
        log=lambda *a: None,
    )
    return {"ce": ce.run_dir, "dicc": dicc.run_dir}


def test_tau_normalisation_by_hand():
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    assert torch.allclose(tau_normalized(w, 1.0), torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]]))
    assert torch.allclose(tau_normalized(w, 0.5)[0], w[0] / math.sqrt(5))
    assert torch.equal(tau_normalized(w, 0.0), w)
    # rows 0-1 form one class: both divided by their mean norm (5 + 2) / 2
    assert torch.allclose(tau_normalized(w, 1.0, [range(0, 2), range(2, 3)])[:2], w[:2] / 3.5)


def test_stage_options_are_checked():
    with pytest.raises(ValueError, match="unknown name 'nope'; valid: crt, tau_norm, logit_adjust"):
        check_stage({"name": "nope"})
    with pytest.raises(ValueError, match="stage crt: unknown option"):
        check_stage({"name": "crt", "tau": 1})
    with pytest.raises(ValueError, match="space must be parent or subclass"):
        check_stage({"name": "tau_norm", "space": "both"})


def _same_as_evaluate(run_dir, final):
    ckpt = load_checkpoint(run_dir)
    model, strategy = model_from_checkpoint(ckpt)
    cfg = ckpt["config"]
    from dicc.config import Config, from_dict

    data = build_run_data(from_dict(Config, cfg).data)
    again = evaluate(model, strategy, data.test, mean=ckpt["normalization"]["mean"], std=ckpt["normalization"]["std"])
    assert again["confusion_matrix"] == final["confusion_matrix"]


def test_tau_norm_chooses_tau_on_validation_and_drops_the_bias(parent, tmp_path):
    out = tmp_path / "ce+tau"
    final = rebalance(parent["ce"], {"name": "tau_norm", "taus": [0.0, 0.5, 1.0]}, out, log=lambda *a: None)
    rec = json.loads((out / "stage.json").read_text())
    scores = rec["val_mean_class_accuracy"]
    assert set(map(float, scores)) == {0.0, 0.5, 1.0}
    tau = rec["chosen"]["tau"]
    assert scores[str(tau)] == max(scores.values())
    before = load_checkpoint(parent["ce"] / "checkpoints" / "best.pt")["model"]
    after = load_checkpoint(out)["model"]
    assert torch.allclose(after["head.weight"], tau_normalized(before["head.weight"], tau))
    assert torch.equal(after["head.bias"], torch.zeros_like(after["head.bias"]))
    for k in before:
        if not k.startswith("head."):
            assert torch.equal(before[k], after[k]), k
    assert rec["val"]["mean_class_accuracy"] == pytest.approx(scores[str(tau)])
    _same_as_evaluate(out, final)


def test_posthoc_logit_adjustment_is_kept_in_the_checkpoint(parent, tmp_path):
    out = tmp_path / "ce+la"
    final = rebalance(parent["ce"], {"name": "logit_adjust", "tau": 1.0}, out, log=lambda *a: None)
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["eval"]["logit_adjust"] == 1.0
    model, strategy = model_from_checkpoint(ckpt)
    counts = torch.tensor(ckpt["class_counts"], dtype=torch.float64)
    z = torch.randn(4, 7)
    assert torch.allclose(strategy.parent_logits(z), z - (counts / counts.sum()).log().float())
    _same_as_evaluate(out, final)
    # the CLI option on any method does the same at training time
    code = main(
        [
            "train",
            "--set",
            "data.longtail=[24,8,24,64,32,16,48]",
            "--set",
            "model.width=4",
            "--epochs",
            "1",
            "--set",
            "eval.logit_adjust=1.0",
            "--no-progress",
            "--out",
            str(tmp_path / "t"),
        ]
    )
    assert code == 0
    assert load_checkpoint(tmp_path / "t")["config"]["eval"]["logit_adjust"] == 1.0


@pytest.mark.parametrize(
    "which, space, outputs", [("ce", "parent", 7), ("dicc", "parent", 7), ("dicc", "subclass", None)]
)
def test_crt_retrains_a_new_head_on_the_frozen_backbone(parent, tmp_path, which, space, outputs):
    out = tmp_path / f"{which}+crt-{space}"
    final = rebalance(
        parent[which],
        {"name": "crt", "epochs": 3, "views": 2, "space": space, "checkpoint": "last"},
        out,
        log=lambda *a: None,
    )
    before = load_checkpoint(parent[which] / "checkpoints" / "last.pt")
    after = load_checkpoint(out)
    for k, v in before["model"].items():
        if not k.startswith("head."):
            assert torch.equal(v, after["model"][k]), k
    n_out = outputs or before["model_spec"]["num_outputs"]
    assert after["model"]["head.weight"].shape[0] == n_out == after["model_spec"]["num_outputs"]
    assert after["strategy"]["name"] == ("ce" if space == "parent" else "dicc")
    # the record names the parent's method, not the CE head's (a dicc parent said "ce+crt")
    assert final["method"] == json.loads((out / "final.json").read_text())["method"] == f"{which}+crt"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    _same_as_evaluate(out, final)


def test_crt_subclass_space_needs_dicc(parent, tmp_path):
    with pytest.raises(ValueError, match="space=subclass needs a DICC run"):
        rebalance(parent["ce"], {"name": "crt", "space": "subclass"}, tmp_path / "x", log=lambda *a: None)


def test_rebalance_cli(parent, tmp_path, capsys):
    out = tmp_path / "cli"
    # the stages are the registry's: an unknown one is one line listing them, nothing written
    assert main(["rebalance", str(parent["ce"]), "--stage", "nope", "--out", str(out)]) == 2
    assert "stage: unknown name 'nope'; valid: crt, tau_norm, logit_adjust" in capsys.readouterr().err
    assert not out.exists()
    assert main(["rebalance", str(parent["ce"]), "--stage", "tau_norm", "--set", "taus=[0,1]", "--out", str(out)]) == 0
    assert (out / "final.json").is_file() and "tau_norm" in capsys.readouterr().out
    assert (out / "reliability_test.png").is_file()
    # the same stage again into its own finished directory: redone, not refused as another run's
    assert main(["rebalance", str(parent["ce"]), "--stage", "tau_norm", "--set", "taus=[0,1]", "--out", str(out)]) == 0


def _files(d):
    return sorted((p.relative_to(d).as_posix(), p.read_bytes()) for p in d.rglob("*") if p.is_file())


def test_rebalance_out_held_by_another_process_is_refused_before_anything_is_written(parent, tmp_path, capsys):
    from helpers import held_by_another_process

    out = tmp_path / "stage"
    out.mkdir()
    (out / "stage.json").write_text("{}")  # the other process's stage, under way
    with held_by_another_process(out) as other:
        before = _files(out)
        args = ["rebalance", str(parent["ce"]), "--stage", "logit_adjust", "--out", str(out)]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{out}: process {other.pid} is using this run directory" in err[0], err
        assert _files(out) == before
    assert main(args) == 0  # the holder is gone (killed): the stage is made anew
    assert (out / "final.json").is_file()


@pytest.mark.parametrize("where", ["parent", "above", "a run"])
def test_rebalance_never_clears_the_parent_or_another_run(parent, tmp_path, capsys, where):
    import shutil

    own = tmp_path / "runs" / "ce"
    shutil.copytree(parent["ce"], own)
    out = {"parent": own, "above": tmp_path / "runs", "a run": tmp_path / "other"}[where]
    if where == "a run":
        shutil.copytree(parent["ce"], out)
    before = [f for f in _files(tmp_path) if not f[0].endswith(".lock")]
    assert main(["rebalance", str(own), "--stage", "logit_adjust", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    fragment = "holds files a re-balancing stage does not write" if where == "a run" else "is or holds the parent run"
    assert len(err) == 1 and fragment in err[0], err
    assert [f for f in _files(tmp_path) if not f[0].endswith(".lock")] == before


# -- options every method composes with ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["ce", "balanced_softmax", "logit_adjust"])
def test_label_smoothing_is_ce_with_smoothed_targets(name):
    counts = [40, 8, 20, 120]
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(16, 4, generator=g), torch.randint(0, 4, (16,), generator=g)
    loss = create_loss(name, counts, label_smoothing=0.2)
    shift = torch.tensor(counts, dtype=torch.float).log() - math.log(sum(counts)) if name != "ce" else 0.0
    assert loss(z, y).item() == pytest.approx(F.cross_entropy(z + shift, y, label_smoothing=0.2).item(), rel=1e-5)


def test_label_smoothing_reaches_every_strategy_loss():
    from dicc.strategies import create_strategy

    y = torch.arange(8) % 7
    for name in ("ce", "focal", "balanced_softmax", "dicc"):
        s = create_strategy(name, [40, 8, 20, 120, 60, 30, 90])
        z = torch.randn(8, s.num_outputs)
        plain = s.loss(z, y, torch.arange(8)).item()
        s.set_label_smoothing(0.3)
        assert s.loss(z, y, torch.arange(8)).item() != pytest.approx(plain), name
    s = create_strategy("ce", [1] * 7)
    z = torch.randn(8, 7)
    s.set_label_smoothing(0.3)
    assert s.loss(z, y, None).item() == pytest.approx(F.cross_entropy(z, y, label_smoothing=0.3).item())


def test_mixup_mixes_pairs_and_trains(tiny_config):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 1, 4, 4)
    mixed, perm, lam = mix_batch(x, 0.4, g)
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(6))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    res = fit(tiny_config("augment.mixup=0.4", "train.epochs=1", "train.label_smoothing=0.1"), log=lambda *a: None)
    assert math.isfinite(res.final["accuracy"])


def test_mixup_with_dicc_training_features_is_refused(tmp_path, capsys):
    code = main(["train", "--method", "dicc", "--set", "augment.mixup=0.2", "--out", str(tmp_path / "r")])
    assert code == 2 and "feature_source=clean" in capsys.readouterr().err


def test_test_time_views():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    assert tta_views(x, "none")[0] is x
    a, b = tta_views(x, "flip")
    assert torch.equal(b, x.flip(-1))
    crops = tta_views(x, "crops", shift=1)
    assert len(crops) == 10 and all(v.shape == x.shape and v.dtype == x.dtype for v in crops)
    assert torch.equal(crops[0], x) and torch.equal(crops[1], x.flip(-1))
    assert torch.equal(crops[2][..., 1:, 1:], x[..., :-1, :-1])  # shifted down-right by one pixel


def test_evaluate_with_flip_averages_the_probabilities(parent):
    ckpt = load_checkpoint(parent["ce"])
    model, strategy = model_from_checkpoint(ckpt)
    from dicc.config import Config, from_dict
    from dicc.engine import predict_parent_logits

    ds = build_run_data(from_dict(Config, ckpt["config"]).data).test.subset(range(20))
    with torch.no_grad():
        x = (ds.images.float() / 255 - 0.5) / 0.25
        p = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    got = predict_parent_logits(model, strategy, ds, tta="flip").exp()
    assert torch.allclose(got, p, atol=1e-6)
    m = evaluate(model, strategy, ds, tta="flip")
    assert m["accuracy"] == pytest.approx(float((p.argmax(1) == ds.labels).float().mean()))
