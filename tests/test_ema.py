"""The moving average of the weights (dicc.ema, train.ema) against a hand-rolled one."""

import pytest
import torch
from torch import nn

from dicc.ema import ModelEMA


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_ema_after_n_steps_equals_a_hand_rolled_average():
    model, decay = _net(), 0.9
    ema = ModelEMA(model, decay)
    ref = {k: v.detach().double().clone() for k, v in model.named_parameters()}  # starts at the initial weights
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(7):
        x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        ema.update(model)
        for k, p in model.named_parameters():
            ref[k] = decay * ref[k] + (1 - decay) * p.detach().double()
    averaged = dict(ema.module.named_parameters())
    for k, p in model.named_parameters():
        assert torch.allclose(averaged[k].double(), ref[k], atol=1e-6), k
        assert not averaged[k].requires_grad
    assert not torch.allclose(averaged["3.weight"], model[3].weight)  # an average, not a copy
    # BatchNorm's running statistics and counter are the trained model's, copied
    for a, b in zip(ema.module.buffers(), model.buffers()):
        assert torch.equal(a, b)
    assert int(ema.module[1].num_batches_tracked) == 7
    # the average is its own module: training the model never touched it except through update()
    assert ema.module is not model and all(a is not b for a, b in zip(ema.module.parameters(), model.parameters()))


def test_decay_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="train.ema"):
        ModelEMA(_net(), 1.0)
