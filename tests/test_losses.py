"""Each base loss against its paper's formula, re-computed independently here with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dicc.losses import (
    available_losses,
    class_weights,
    create_loss,
    effective_number_weights,
    inverse_frequency_weights,
    ldam_margins,
    loss_options,
)

COUNTS = [500, 120, 40, 8]


def _random_case(seed: int, b: int = 16, c: int = 4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, c, (b,), generator=g)
    return logits.float(), targets


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    for i, row in enumerate(z):
        m = max(row)
        out[i] = row - (m + math.log(sum(math.exp(v - m) for v in row)))
    return out


def _np_ce_rows(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    ls = _np_log_softmax(z)
    return np.array([-ls[i, y[i]] for i in range(len(y))])


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


# -- registry ----------------------------------------------------------------------------------
def test_registry_lists_all_losses_with_summaries():
    losses = available_losses()
    assert set(losses) >= {"ce", "weighted_ce", "focal", "ldam", "balanced_softmax", "logit_adjust"}
    assert all(isinstance(s, str) and s for s in losses.values())


def test_unknown_loss_and_option_errors_list_valid_ones():
    with pytest.raises(ValueError, match="valid: .*balanced_softmax.*focal"):
        create_loss("nope", COUNTS)
    with pytest.raises(ValueError, match=r"unknown option\(s\) gama; valid: beta, gamma, reduction, weight"):
        create_loss("focal", COUNTS, {"gama": 1.0})
    with pytest.raises(ValueError, match="valid: inverse, effective"):
        create_loss("ce", COUNTS, {"weight": "sqrt"})
    with pytest.raises(ValueError, match="reduction"):
        create_loss("ce", COUNTS, {"reduction": "sum"})
    with pytest.raises(ValueError, match="beta"):
        create_loss("weighted_ce", COUNTS, {"beta": 1.5})
    with pytest.raises(ValueError, match="gamma"):
        create_loss("focal", COUNTS, {"gamma": -1})
    with pytest.raises(ValueError, match="non-negative"):
        create_loss("ce", [3, -1])
    assert loss_options("ldam") == {"max_m": 0.5, "s": 30.0, "weight": None, "beta": 0.9999, "reduction": "mean"}


def test_logits_shape_is_checked():
    loss = create_loss("ce", COUNTS)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        loss(torch.zeros(2, 3), torch.tensor([0, 1]))


# -- class weights -----------------------------------------------------------------------------
def test_inverse_weights_hand_computed():
    # 1/n = [1/10, 1/40]; sum = 5/40 -> normalised to sum 2: [1.6, 0.4]
    w = inverse_frequency_weights([10, 40])
    assert torch.allclose(w, torch.tensor([1.6, 0.4], dtype=torch.float64))


def test_effective_weights_hand_computed():
    # beta = 0.5: (1-b)/(1-b^n) for n = 1, 2: 0.5/0.5 = 1, 0.5/0.75 = 2/3; sum to 2
    w = effective_number_weights([1, 2], beta=0.5)
    raw = np.array([1.0, 2 / 3])
    assert np.allclose(w.numpy(), raw * 2 / raw.sum())


def test_effective_weights_match_formula_and_limits():
    counts = np.array(COUNTS, dtype=float)
    for beta in (0.9, 0.99, 0.999, 0.9999):
        raw = np.array([(1 - beta) / (1 - beta**n) for n in counts])
        expected = raw * len(counts) / raw.sum()
        assert np.allclose(effective_number_weights(COUNTS, beta).numpy(), expected, rtol=1e-9)
    # beta = 0: uniform; beta -> 1: inverse frequency
    assert torch.allclose(effective_number_weights(COUNTS, 0.0), torch.ones(4, dtype=torch.float64))
    inverse = inverse_frequency_weights(COUNTS)
    assert torch.allclose(effective_number_weights(COUNTS, 1 - 1e-9), inverse, rtol=1e-5)
    assert torch.allclose(effective_number_weights(COUNTS, 1.0), inverse)
    assert torch.allclose(class_weights(COUNTS, "effective", 0.99), effective_number_weights(COUNTS, 0.99))


# -- cross-entropy and weighted cross-entropy --------------------------------------------------
def test_ce_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    targets = torch.tensor([0, 1])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 2
    assert create_loss("ce", [5, 5])(logits, targets).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ce_random_matches_reference(seed):
    logits, targets = _random_case(seed)
    expected = _np_ce_rows(_np(logits), targets.numpy()).mean()
    assert create_loss("ce", COUNTS)(logits, targets).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("scheme", ["inverse", "effective"])
@pytest.mark.parametrize("reduction", ["mean", "weighted_mean"])
def test_weighted_ce_matches_reference(scheme, reduction):
    beta = 0.999
    logits, targets = _random_case(3)
    n = np.array(COUNTS, dtype=float)
    raw = 1 / n if scheme == "inverse" else np.array([(1 - beta) / (1 - beta**k) for k in n])
    w = raw * len(n) / raw.sum()
    rows = _np_ce_rows(_np(logits), targets.numpy())
    wy = np.array([w[t] for t in targets.numpy()])
    expected = (wy * rows).mean() if reduction == "mean" else (wy * rows).sum() / wy.sum()
    loss = create_loss("weighted_ce", COUNTS, {"weight": scheme, "beta": beta, "reduction": reduction})
    assert loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_weighted_ce_hand_computed():
    # counts [10, 40] -> inverse weights [1.6, 0.4]; logits zero -> every row costs log 2
    loss = create_loss("weighted_ce", [10, 40], {"weight": "inverse"})
    got = loss(torch.zeros(2, 2), torch.tensor([0, 1])).item()
    assert got == pytest.approx((1.6 + 0.4) * math.log(2) / 2, rel=1e-6)


def test_explicit_weights_and_set_weight():
    loss = create_loss("ce", [1, 1, 1], {"weight": [1.0, 2.0, 0.0]})
    logits, targets = torch.zeros(3, 3), torch.tensor([0, 1, 2])
    assert loss(logits, targets).item() == pytest.approx(3 * math.log(3) / 3, rel=1e-6)
    loss.set_weight(None)
    assert loss.weight is None
    assert loss(logits, targets).item() == pytest.approx(math.log(3), rel=1e-6)
    with pytest.raises(ValueError, match="expected 3"):
        loss.set_weight([1.0, 2.0])


# -- focal -------------------------------------------------------------------------------------
def test_focal_hand_computed():
    # logits [0, ln 3]: p = [1/4, 3/4]. Target 0: -(3/4)^2 ln(1/4); target 1: -(1/4)^2 ln(3/4)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    expected = (-(0.75**2) * math.log(0.25) - (0.25**2) * math.log(0.75)) / 2
    got = create_loss("focal", [1, 1], {"gamma": 2.0})(logits, torch.tensor([0, 1])).item()
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_focal_random_matches_reference(gamma):
    logits, targets = _random_case(4)
    alpha = np.array([0.1, 0.2, 0.3, 0.4])
    ls = _np_log_softmax(_np(logits))
    rows = []
    for i, t in enumerate(targets.numpy()):
        p = math.exp(ls[i, t])
        rows.append(-alpha[t] * (1 - p) ** gamma * ls[i, t])
    loss = create_loss("focal", COUNTS, {"gamma": gamma, "weight": alpha.tolist()})
    assert loss(logits, targets).item() == pytest.approx(np.mean(rows), rel=1e-5)


def test_focal_gamma_zero_equals_ce_including_gradients():
    logits, targets = _random_case(5)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fl = create_loss("focal", COUNTS, {"gamma": 0.0})(a, targets)
    ce = create_loss("ce", COUNTS)(b, targets)
    fl.backward()
    ce.backward()
    assert fl.item() == pytest.approx(ce.item(), rel=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_focal_is_finite_for_confident_predictions():
    logits = torch.tensor([[200.0, 0.0]], requires_grad=True)
    loss = create_loss("focal", [1, 1], {"gamma": 0.5})(logits, torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


# -- LDAM --------------------------------------------------------------------------------------
def test_ldam_margins_formula():
    m = ldam_margins([10000, 16, 1], max_m=0.5)
    raw = np.array([10000**-0.25, 16**-0.25, 1.0])  # [0.1, 0.5, 1]
    assert np.allclose(m.numpy(), raw * 0.5 / raw.max())
    assert m.max().item() == pytest.approx(0.5)


def test_ldam_hand_computed():
    # counts [16, 1]: margins [0.25, 0.5]; s = 2. Row 1: target 0, z = [0.5, 0.5] -> s*[0.25, 0.5]
    # = [0.5, 1.0]; row 2: target 1, z = [0, 0] -> s*[0, -0.5] = [0, -1].
    loss = create_loss("ldam", [16, 1], {"max_m": 0.5, "s": 2.0})
    got = loss(torch.tensor([[0.5, 0.5], [0.0, 0.0]]), torch.tensor([0, 1])).item()
    expected = ((-0.5 + math.log(math.exp(0.5) + math.exp(1.0))) + (1.0 + math.log(1 + math.exp(-1.0)))) / 2
    assert got == pytest.approx(expected, rel=1e-6)


def test_ldam_random_matches_reference_with_weights():
    logits, targets = _random_case(6)
    logits = torch.tanh(logits)  # cosine-like logits
    max_m, s = 0.4, 10.0
    n = np.array(COUNTS, dtype=float)
    m = n**-0.25
    m = m * max_m / m.max()
    w = np.array([0.5, 1.0, 1.5, 2.0])
    z = _np(logits).copy()
    y = targets.numpy()
    for i in range(len(y)):
        z[i, y[i]] -= m[y[i]]
    rows = _np_ce_rows(s * z, y)
    expected = np.mean([w[y[i]] * rows[i] for i in range(len(y))])
    loss = create_loss("ldam", COUNTS, {"max_m": max_m, "s": s, "weight": w.tolist()})
    assert loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_ldam_margin_applies_only_to_true_class():
    counts = [100, 10, 1]
    logits = torch.tensor([[0.3, -0.2, 0.1]])
    target = torch.tensor([1])
    loss = create_loss("ldam", counts, {"max_m": 0.5, "s": 5.0})
    m_y = loss.margins[1].item()
    # equal to scaled CE on logits with only the target logit lowered by m_y
    shifted = logits.clone()
    shifted[0, 1] -= m_y
    ref = torch.nn.functional.cross_entropy(5.0 * shifted, target)
    assert loss(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)
    # and its gradient: s * (softmax(s * shifted) - onehot(y)); other classes see no margin
    z = logits.clone().requires_grad_()
    loss(z, target).backward()
    expected_grad = 5.0 * (torch.softmax(5.0 * shifted, dim=1) - torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.allclose(z.grad, expected_grad, atol=1e-6)
    # lowering a non-target logit by any amount is not what LDAM does
    wrong = logits.clone()
    wrong[0, 0] -= m_y
    assert loss(logits, target).item() != pytest.approx(
        torch.nn.functional.cross_entropy(5.0 * wrong, target).item(), rel=1e-4
    )


# -- balanced softmax and logit adjustment ----------------------------------------------------
def test_balanced_softmax_hand_computed():
    # counts [3, 1], z = 0: -log(n_y / sum n) -> target 0: -log(3/4), target 1: -log(1/4)
    loss = create_loss("balanced_softmax", [3, 1])
    got = loss(torch.zeros(2, 2), torch.tensor([0, 1])).item()
    assert got == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, rel=1e-6)


def test_balanced_softmax_random_matches_reference():
    logits, targets = _random_case(7)
    n = np.array(COUNTS, dtype=float)
    z, y = _np(logits), targets.numpy()
    rows = [
        -math.log(n[y[i]] * math.exp(z[i, y[i]]) / sum(n[j] * math.exp(z[i, j]) for j in range(4)))
        for i in range(len(y))
    ]
    assert create_loss("balanced_softmax", COUNTS)(logits, targets).item() == pytest.approx(np.mean(rows), rel=1e-5)


def test_balanced_softmax_uniform_counts_equals_ce():
    logits, targets = _random_case(8)
    bs = create_loss("balanced_softmax", [7, 7, 7, 7])(logits, targets)
    assert bs.item() == pytest.approx(create_loss("ce", COUNTS)(logits, targets).item(), rel=1e-6)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_logit_adjust_random_matches_reference(tau):
    logits, targets = _random_case(9)
    n = np.array(COUNTS, dtype=float)
    pi = n / n.sum()
    z = _np(logits) + tau * np.log(pi)[None, :]
    expected = _np_ce_rows(z, targets.numpy()).mean()
    loss = create_loss("logit_adjust", COUNTS, {"tau": tau})
    assert loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_logit_adjust_identities():
    logits, targets = _random_case(10)
    ce = create_loss("ce", COUNTS)(logits, targets).item()
    assert create_loss("logit_adjust", COUNTS, {"tau": 0.0})(logits, targets).item() == pytest.approx(ce, rel=1e-6)
    bs = create_loss("balanced_softmax", COUNTS)(logits, targets).item()
    assert create_loss("logit_adjust", COUNTS, {"tau": 1.0})(logits, targets).item() == pytest.approx(bs, rel=1e-6)


# -- plumbing ----------------------------------------------------------------------------------
def test_set_counts_recomputes_priors_margins_and_named_weights():
    loss = create_loss("ldam", [100, 1], {"weight": "inverse"})
    loss.set_counts([1, 100])
    assert torch.allclose(loss.margins, ldam_margins([1, 100]).float())
    assert torch.allclose(loss.weight, inverse_frequency_weights([1, 100]).float())
    assert torch.allclose(loss.log_prior, torch.tensor([1 / 101, 100 / 101]).log())
    with pytest.raises(ValueError, match="expected 2 counts"):
        loss.set_counts([1, 2, 3])


def test_zero_counts_are_treated_as_one():
    loss = create_loss("balanced_softmax", [0, 3])
    assert torch.isfinite(loss.log_prior).all()
    assert torch.isfinite(loss(torch.zeros(1, 2), torch.tensor([0])))


@pytest.mark.parametrize("name", ["ce", "weighted_ce", "focal", "ldam", "balanced_softmax", "logit_adjust"])
def test_half_precision_logits_and_gradients(name):
    logits, targets = _random_case(11)
    z = logits.to(torch.bfloat16).requires_grad_()
    out = create_loss(name, COUNTS)(z, targets)
    out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert z.grad is not None and torch.isfinite(z.grad.float()).all()
