"""dicc.strategies.baselines: options, sampling, evaluation logits, DRW switch, checkpoints."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from dicc.losses import effective_number_weights
from dicc.strategies import EpochContext, available_strategies, create_strategy

COUNTS = [400, 100, 25, 5]
#: the strategies of dicc.strategies.baselines, as registered
BASELINES = [n for n, cls in available_strategies().items() if cls.__module__ == "dicc.strategies.baselines"]


def _labels(counts=COUNTS) -> torch.Tensor:
    return torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])


def _ctx(epoch: int, epochs: int, log=None) -> EpochContext:
    return EpochContext(
        epoch=epoch,
        epochs=epochs,
        model=nn.Identity(),
        device=torch.device("cpu"),
        extract_features=lambda: (torch.zeros(0), torch.zeros(0)),
        log=log or (lambda record: None),
    )


def _batch(seed=0, b=12, c=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g), torch.randint(0, c, (b,), generator=g)


def _ce(logits, targets):
    return nn.functional.cross_entropy(logits, targets).item()


def test_all_baselines_registered_with_summaries_and_docs():
    strategies = available_strategies()
    assert set(BASELINES) == {"reweight", "resample", "focal", "ldam_drw", "balanced_softmax", "logit_adjust"}
    for name in BASELINES:
        cls = strategies[name]
        assert cls.name == name and cls.summary and cls.__doc__


@pytest.mark.parametrize("name", BASELINES)
def test_loss_is_a_finite_scalar_with_gradient(name):
    strategy = create_strategy(name, COUNTS)
    logits, targets = _batch()
    z = logits.clone().requires_grad_()
    out = strategy.loss(z, targets, torch.arange(len(targets)))
    out.backward()
    assert out.dim() == 0 and torch.isfinite(out) and torch.isfinite(z.grad).all()
    assert strategy.num_outputs == len(COUNTS)
    assert strategy.parent_logits(logits).shape == logits.shape


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("reweight", {"scheme": "sqrt"}, "valid: inverse, effective"),
        ("reweight", {"betta": 0.9}, r"unknown option\(s\) betta; valid: beta, reduction, scheme"),
        ("reweight", {"beta": 2.0}, "beta"),
        ("resample", {"scheme": "square"}, "valid: balanced, sqrt"),
        ("focal", {"alpha": "balanced"}, "valid: none, inverse, effective"),
        ("focal", {"gamma": -1.0}, "gamma"),
        ("ldam_drw", {"drw_start": 160}, "drw_epoch"),
        ("ldam_drw", {"drw_epoch": -1}, "drw_epoch"),
        ("ldam_drw", {"s": 0}, "s must"),
        ("logit_adjust", {"mode": "both"}, "valid: posthoc, loss"),
        ("balanced_softmax", {"tau": 1.0}, r"unknown option\(s\) tau"),
    ],
)
def test_bad_options_fail_clearly(name, options, match):
    with pytest.raises(ValueError, match=match):
        create_strategy(name, COUNTS, options)


# -- reweight / focal --------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["effective", "inverse"])
def test_reweight_uses_class_weights(scheme):
    strategy = create_strategy("reweight", COUNTS, {"scheme": scheme, "beta": 0.99})
    n = np.array(COUNTS, dtype=float)
    raw = 1 / n if scheme == "inverse" else (1 - 0.99) / (1 - 0.99**n)
    w = raw * len(n) / raw.sum()
    logits, targets = _batch(1)
    rows = nn.functional.cross_entropy(logits, targets, reduction="none").double().numpy()
    expected = np.mean(w[targets.numpy()] * rows)
    assert strategy.loss(logits, targets, None).item() == pytest.approx(expected, rel=1e-5)


def test_focal_defaults_and_alpha():
    strategy = create_strategy("focal", COUNTS)
    assert strategy.options.gamma == 2.0 and strategy.options.alpha is None
    logits, targets = _batch(2)
    p = torch.softmax(logits, 1)[torch.arange(len(targets)), targets].double()
    plain = (-((1 - p) ** 2) * p.log()).mean().item()
    assert strategy.loss(logits, targets, None).item() == pytest.approx(plain, rel=1e-5)
    weighted = create_strategy("focal", COUNTS, {"alpha": "effective"})
    w = effective_number_weights(COUNTS, 0.9999)[targets]
    assert weighted.loss(logits, targets, None).item() == pytest.approx(
        (w * -((1 - p) ** 2) * p.log()).mean().item(), rel=1e-5
    )


# -- resample ----------------------------------------------------------------------------------
def test_resample_balanced_draw_has_uniform_class_frequencies():
    labels = _labels()
    strategy = create_strategy("resample", COUNTS)
    draws = torch.cat([strategy.epoch_indices(labels, epoch, seed=3) for epoch in range(40)])
    assert len(strategy.epoch_indices(labels, 0, seed=3)) == len(labels)
    observed = torch.bincount(labels[draws], minlength=4).double().numpy()
    expected = np.full(4, len(draws) / 4)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 16.27  # chi-square, 3 dof, p = 0.001


def test_resample_sqrt_draw_follows_sqrt_counts():
    labels = _labels()
    strategy = create_strategy("resample", COUNTS, {"scheme": "sqrt"})
    draws = torch.cat([strategy.epoch_indices(labels, epoch, seed=4) for epoch in range(40)])
    observed = torch.bincount(labels[draws], minlength=4).double().numpy()
    share = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()
    expected = share * len(draws)
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 16.27


def test_resample_reproducible_and_varies_with_epoch_and_seed():
    labels = _labels()
    strategy = create_strategy("resample", COUNTS)
    a = strategy.epoch_indices(labels, 2, seed=7)
    assert torch.equal(a, create_strategy("resample", COUNTS).epoch_indices(labels, 2, seed=7))
    assert not torch.equal(a, strategy.epoch_indices(labels, 3, seed=7))
    assert not torch.equal(a, strategy.epoch_indices(labels, 2, seed=8))


def test_resample_shards_partition_the_global_draw():
    labels = _labels()
    strategy = create_strategy("resample", COUNTS)
    full = strategy.epoch_indices(labels, 1, seed=5)
    world = 3
    shards = [strategy.epoch_indices(labels, 1, seed=5, rank=r, world_size=world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    # disjoint positions of the same global draw, covering it (padded by wrapping)
    per_rank = len(shards[0])
    padded = torch.cat([full, full[: per_rank * world - len(full)]])
    interleaved = torch.stack(shards, dim=1).flatten()
    assert torch.equal(interleaved, padded)


def test_resample_trains_with_plain_ce():
    strategy = create_strategy("resample", COUNTS)
    logits, targets = _batch(3)
    assert strategy.loss(logits, targets, None).item() == pytest.approx(_ce(logits, targets), rel=1e-6)


# -- LDAM-DRW ----------------------------------------------------------------------------------
def test_ldam_drw_uses_cosine_head_and_scaled_evaluation_logits():
    strategy = create_strategy("ldam_drw", COUNTS)
    assert strategy.head_type == "cosine"
    cos = torch.rand(3, 4) * 2 - 1
    assert torch.allclose(strategy.parent_logits(cos), 30.0 * cos)


@pytest.mark.parametrize(
    "epochs, options, switch",
    [
        (200, {}, 160),
        (10, {}, 8),
        (10, {"drw_start": 0.5}, 5),
        (10, {"drw_epoch": 3}, 3),
        (10, {"drw_start": 0.0}, 0),
        (7, {"drw_start": 0.3}, 2),
    ],
)
def test_ldam_drw_switches_weights_at_the_drw_epoch(epochs, options, switch):
    strategy = create_strategy("ldam_drw", COUNTS, options)
    records = []
    for epoch in range(epochs):
        strategy.on_epoch_start(_ctx(epoch, epochs, records.append))
        assert strategy.drw_active == (epoch >= switch), epoch
        if epoch >= switch:
            assert torch.allclose(strategy.criterion.weight, effective_number_weights(COUNTS, 0.9999).float())
        else:
            assert strategy.criterion.weight is None
    assert [r["epoch"] for r in records if r.get("event") == "drw_on"] == [switch + 1]  # 1-based


def test_ldam_drw_loss_before_and_after_switch():
    strategy = create_strategy("ldam_drw", COUNTS, {"drw_epoch": 1, "s": 10.0, "max_m": 0.5})
    logits, targets = _batch(5)
    cos = torch.tanh(logits)
    n = np.array(COUNTS, dtype=float)
    m = n**-0.25
    m = m * 0.5 / m.max()
    z = cos.clone().double()
    z[torch.arange(len(targets)), targets] -= torch.from_numpy(m)[targets]
    rows = nn.functional.cross_entropy(10.0 * z, targets, reduction="none")
    strategy.on_epoch_start(_ctx(0, 4))
    assert strategy.loss(cos, targets, None).item() == pytest.approx(rows.mean().item(), rel=1e-5)
    strategy.on_epoch_start(_ctx(1, 4))
    w = effective_number_weights(COUNTS, 0.9999)[targets]
    # normalised by the batch's weights, as the authors' code (F.cross_entropy(..., weight=w))
    assert strategy.loss(cos, targets, None).item() == pytest.approx(((w * rows).sum() / w.sum()).item(), rel=1e-5)
    plain = create_strategy("ldam_drw", COUNTS, {"drw_epoch": 1, "s": 10.0, "max_m": 0.5, "reduction": "mean"})
    plain.on_epoch_start(_ctx(1, 4))
    assert plain.loss(cos, targets, None).item() == pytest.approx((w * rows).mean().item(), rel=1e-5)


def test_ldam_drw_phase_effective_step_by_hand():
    """Cao et al.'s code re-weights from epoch 160 of 200, where its step schedule drops the lr to
    0.1 of the peak, and normalises the weighted loss by the weights. On our one-cycle schedule
    (20 epochs, warm-up 0.15) the "auto" start is the first epoch whose lr is at most 0.1 of the
    peak, and the DRW loss keeps the unweighted loss's scale."""
    from dicc.config import OptimConfig
    from dicc.engine import learning_rate

    epochs, steps = 20, 83  # FER2013 IF=100: 10,739 images // batch 128
    optim = OptimConfig(lr=0.05, schedule="onecycle", warmup_fraction=0.15)

    def lr_at(e):
        return learning_rate(optim, e * steps, epochs * steps)

    def by_hand(frac):  # torch's OneCycleLR: cosine from lr down to lr / 25e4
        t = (frac - 0.15) / 0.85
        return 0.05 / 25e4 + (0.05 - 0.05 / 25e4) * (1 + math.cos(math.pi * t)) / 2

    assert lr_at(16) == pytest.approx(by_hand(16 / 20)) and by_hand(16 / 20) / 0.05 == pytest.approx(0.1305, abs=1e-4)
    assert by_hand(17 / 20) / 0.05 == pytest.approx(0.0749, abs=1e-4)
    fer_if100 = [387, 43, 1077, 4300, 1796, 139, 2997]
    strategy = create_strategy("ldam_drw", fer_if100)
    assert strategy.drw_epoch_for(epochs, lr_at) == 17
    assert create_strategy("ldam_drw", fer_if100).drw_epoch_for(epochs, lambda e: 0.05) == 16  # constant: 0.8
    # the loss scale in the DRW phase: per-sample losses all equal to 1 give a batch loss of 1
    strategy.on_epoch_start(_ctx(17, epochs))
    assert strategy.drw_active
    y = torch.repeat_interleave(torch.arange(7), torch.tensor(fer_if100) // 43)  # the training class mix
    w = effective_number_weights(fer_if100, 0.9999)
    assert strategy.criterion.reduce(torch.ones(len(y)), y).item() == pytest.approx(1.0)
    old_scale = (w[y]).mean().item()  # the former (1/B) sum w_y l_y: about 0.14 on this mix
    assert old_scale == pytest.approx(0.14, abs=0.02)
    # effective step (lr x loss scale) at the DRW start, as a share of the peak step
    assert lr_at(17) / 0.05 * 1.0 == pytest.approx(0.0749, abs=1e-3)  # now
    assert by_hand(0.8) / 0.05 * old_scale == pytest.approx(0.018, abs=0.004)  # before: 2 % of the peak


def test_ldam_drw_switch_survives_a_checkpoint():
    strategy = create_strategy("ldam_drw", COUNTS, {"drw_epoch": 2})
    strategy.on_epoch_start(_ctx(2, 5))
    state = _roundtrip(strategy.state_dict())
    assert state == {"drw_active": True, "drw_epoch": 2}
    resumed = create_strategy("ldam_drw", COUNTS, {"drw_epoch": 2})
    assert not resumed.drw_active and resumed.criterion.weight is None
    resumed.load_state_dict(state)
    assert resumed.drw_active
    assert torch.equal(resumed.criterion.weight, strategy.criterion.weight)
    logits, targets = _batch(6)
    assert resumed.loss(logits, targets, None).item() == strategy.loss(logits, targets, None).item()


# -- balanced softmax / logit adjustment -------------------------------------------------------
def test_balanced_softmax_trains_with_log_prior_and_evaluates_raw_logits():
    strategy = create_strategy("balanced_softmax", COUNTS)
    logits, targets = _batch(7)
    shifted = logits + torch.tensor(COUNTS, dtype=torch.float).log()
    assert strategy.loss(logits, targets, None).item() == pytest.approx(_ce(shifted, targets), rel=1e-5)
    assert torch.equal(strategy.parent_logits(logits), logits)


def test_logit_adjust_posthoc_trains_ce_and_adjusts_evaluation_logits():
    strategy = create_strategy("logit_adjust", COUNTS, {"tau": 1.5})
    assert strategy.options.mode == "posthoc"
    logits, targets = _batch(8)
    assert strategy.loss(logits, targets, None).item() == pytest.approx(_ce(logits, targets), rel=1e-6)
    prior = torch.tensor(COUNTS, dtype=torch.float) / sum(COUNTS)
    assert torch.allclose(strategy.parent_logits(logits), logits - 1.5 * prior.log(), atol=1e-6)
    # rare classes gain: the adjustment is largest for the smallest class
    delta = strategy.parent_logits(torch.zeros(1, 4))[0]
    assert delta.argmax().item() == 3 and delta.argmin().item() == 0


def test_logit_adjust_loss_mode_adjusts_training_and_evaluates_raw_logits():
    strategy = create_strategy("logit_adjust", COUNTS, {"mode": "loss", "tau": 0.5})
    logits, targets = _batch(9)
    prior = torch.tensor(COUNTS, dtype=torch.float) / sum(COUNTS)
    expected = _ce(logits + 0.5 * prior.log(), targets)
    assert strategy.loss(logits, targets, None).item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(strategy.parent_logits(logits), logits)


# -- checkpoints -------------------------------------------------------------------------------
def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", BASELINES)
def test_state_dict_roundtrips_with_weights_only(name):
    strategy = create_strategy(name, COUNTS)
    strategy.on_epoch_start(_ctx(9, 10))
    state = strategy.state_dict()
    loaded = _roundtrip(state)
    assert loaded == state
    fresh = create_strategy(name, COUNTS)
    fresh.load_state_dict(loaded)
    assert fresh.state_dict() == state


def test_ldam_drw_auto_on_the_papers_step_schedule_is_epoch_160():
    """With optim.schedule=step and the paper's milestones [160, 180] of 200 epochs, "auto" starts
    re-weighting at the first decay, epoch 160, as the authors' code does."""
    from dicc.config import OptimConfig
    from dicc.engine import learning_rate

    epochs, steps = 200, 10
    optim = OptimConfig(lr=0.1, schedule="step", milestones=[160, 180], gamma=0.1, warmup_fraction=0.025)

    def lr_at(e):
        return learning_rate(optim, e * steps, epochs * steps, epochs)

    assert lr_at(159) == pytest.approx(0.1) and lr_at(160) == pytest.approx(0.01) and lr_at(180) == pytest.approx(1e-3)
    assert create_strategy("ldam_drw", COUNTS).drw_epoch_for(epochs, lr_at) == 160
