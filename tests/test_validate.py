"""dicc.validate: every bad setting is one line naming the key and what is valid, before any
data is read or any file is written; values read from the command line as YAML; a method's own
cross-section rules come from its strategy (Strategy.check_config)."""

import pytest
import torch

import dicc.training_run as training_run
from helpers import _cli, _one_error_line, TINY


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
        # the training controls and metrics
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


def test_method_rules_across_sections_are_the_strategys_hook():
    from dicc.config import load_config
    from dicc.strategies import available_strategies
    from dicc.strategies.base import Strategy

    cfg = load_config(None, ["method.name=dicc", "augment.mixup=0.2"])
    Strategy.check_config(cfg)  # the default has no rule
    for name, cls in available_strategies().items():
        if name != "dicc":
            cls.check_config(cfg)
    with pytest.raises(ValueError, match="augment.mixup with method dicc"):
        available_strategies()["dicc"].check_config(cfg)
