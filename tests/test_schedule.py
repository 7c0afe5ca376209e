"""The optimizer and the learning-rate schedule (dicc.schedule): the step schedule against hand
values, Nesterov on and off, AdamW's decoupled weight decay against a hand-computed step."""

import math

import pytest
import torch

from dicc.config import OptimConfig
from dicc.schedule import learning_rate, make_optimizer


def test_step_schedule_learning_rates_by_hand():
    # 6 epochs of 10 steps, lr 0.1, milestones [2, 4], gamma 0.1, no warm-up:
    # epochs 0-1 at 0.1, epochs 2-3 at 0.01, epochs 4-5 at 0.001 (torch's MultiStepLR per epoch)
    cfg = OptimConfig(lr=0.1, schedule="step", milestones=[2, 4], gamma=0.1, warmup_fraction=0.0)
    lrs = [learning_rate(cfg, s, 60, epochs=6) for s in range(60)]
    want = [0.1] * 20 + [0.1 * 0.1] * 20 + [0.1 * 0.1 * 0.1] * 20
    assert lrs == pytest.approx(want, rel=1e-12)
    # linear warm-up over 0.1 of the steps (6 steps): step s at 0.1 * (s / 60) / 0.1, then the steps
    cfg.warmup_fraction = 0.1
    lrs = [learning_rate(cfg, s, 60, epochs=6) for s in range(60)]
    assert lrs[:6] == pytest.approx([0.1 * s / 6 for s in range(6)], rel=1e-12)
    assert lrs[6:] == pytest.approx(want[6:], rel=1e-12)
    # a milestone at or past the last epoch never applies; gamma 0.5 with three milestones
    cfg = OptimConfig(lr=1.0, schedule="step", milestones=[1, 2, 3], gamma=0.5, warmup_fraction=0.0)
    assert [learning_rate(cfg, e * 7, 28, epochs=4) for e in range(4)] == [1.0, 0.5, 0.25, 0.125]
    with pytest.raises(ValueError, match="number of epochs"):
        learning_rate(cfg, 0, 28)


def test_nesterov_switch_and_adamw_defaults():
    w = [torch.nn.Parameter(torch.ones(3))]
    assert make_optimizer(OptimConfig(), w).defaults["nesterov"] is True  # today's behaviour
    assert make_optimizer(OptimConfig(nesterov=False), w).defaults["nesterov"] is False
    opt = make_optimizer(OptimConfig(name="adamw", lr=0.01, weight_decay=0.1), w)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)


def test_adamw_step_decouples_the_weight_decay():
    # one AdamW step by hand: p <- p - lr * wd * p - lr * m_hat / (sqrt(v_hat) + eps), with
    # m_hat = g and v_hat = g^2 after bias correction at step 1 (the decay is not in the gradient)
    p = torch.nn.Parameter(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
    g = torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64)
    lr, wd, eps = 0.01, 0.1, 1e-8
    opt = make_optimizer(OptimConfig(name="adamw", lr=lr, weight_decay=wd), [p])
    before = p.detach().clone()
    p.grad = g.clone()
    opt.step()
    want = before * (1 - lr * wd) - lr * g / (g.abs() + eps)
    assert torch.allclose(p.detach(), want, atol=1e-12)
    # plain SGD with Nesterov off: p - lr * (g + wd * p) on the first step (momentum buffer = grad)
    q = torch.nn.Parameter(before.clone())
    sgd = make_optimizer(OptimConfig(lr=lr, weight_decay=wd, nesterov=False), [q])
    q.grad = g.clone()
    sgd.step()
    assert torch.allclose(q.detach(), before - lr * (g + wd * before), atol=1e-12)
    assert math.isclose(float(q.detach()[2]), float(before[2]) * (1 - lr * wd))
