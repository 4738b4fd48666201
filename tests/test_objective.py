"""The CT loss terms against hand-computed gradients on a tiny linear model (Eq. 1–3, ridge), per
setting of a pack: each setting's terms use its own pairs only (padding masked)."""

import pytest
import torch
from torch import nn

from ct_core.config import TrainConfig
from ct_core.objective import (
    Weights,
    adversarial_loss,
    contrastive_divergence,
    ct_loss,
    energy,
    ridge,
)


def _linear():
    m = nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.5, -1.0], [0.25, 2.0]]))
        m.bias.copy_(torch.tensor([0.1, -0.2]))
    return m


X_CF = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]])  # one setting, two pairs
X_POS = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])
TARGET = torch.tensor([[1, 0]])


def _grad(fn):
    m = _linear()
    fn(m).sum().backward()
    return m.weight.grad, m.bias.grad


def _energies(m, x_cf, x_pos, target):
    return energy(m(x_cf), target), energy(m(x_pos), target)


def test_energy_is_minus_the_target_logit():
    logits = torch.tensor([[[1.0, 2.0], [3.0, -4.0]]])
    assert torch.equal(energy(logits, TARGET), torch.tensor([[-2.0, -3.0]]))


def test_contrastive_divergence_gradient():
    gw, gb = _grad(lambda m: contrastive_divergence(*_energies(m, X_CF, X_POS, TARGET)))
    # d/dW_y of mean(W_y·x' − W_y·x+) = mean over pairs of (x' − x+) in row y
    want = torch.zeros(2, 2)
    for j in range(2):
        want[TARGET[0, j]] += (X_CF[0, j] - X_POS[0, j]) / 2
    assert torch.allclose(gw, want) and torch.allclose(gb, torch.zeros(2))


def test_ridge_gradient():
    m0 = _linear()
    gw, gb = _grad(lambda m: ridge(*_energies(m, X_CF, X_POS, TARGET)))
    want_w, want_b = torch.zeros(2, 2), torch.zeros(2)
    with torch.no_grad():
        for j in range(2):
            y = TARGET[0, j]
            for x in (X_CF[0, j], X_POS[0, j]):
                logit = m0(x)[y]
                want_w[y] += 2 * logit * x / 2
                want_b[y] += 2 * logit / 2
    assert torch.allclose(gw, want_w) and torch.allclose(gb, want_b)


def test_adversarial_loss_gradient_is_cross_entropy_against_true_labels():
    y_true = torch.tensor([[0, 1]])
    m0 = _linear()
    gw, gb = _grad(lambda m: adversarial_loss(m(X_CF), y_true))
    with torch.no_grad():
        p = torch.softmax(m0(X_CF[0]), 1)
        err = p - torch.nn.functional.one_hot(y_true[0], 2).float()
        want_w = err.T @ X_CF[0] / 2
    assert torch.allclose(gw, want_w, atol=1e-6) and torch.allclose(gb, err.mean(0), atol=1e-6)


def test_each_setting_averages_over_its_own_pairs_only():
    """A second setting with one real pair and one padded row: its terms are those of its pair
    alone, whatever the padded row holds."""
    m = _linear()
    x_cf = torch.cat([X_CF, torch.tensor([[[3.0, 1.0], [1e6, -1e6]]])])
    x_pos = torch.cat([X_POS, torch.tensor([[[0.5, 0.5], [7.0, 7.0]]])])
    target = torch.tensor([[1, 0], [0, 1]])
    mask = torch.tensor([[True, True], [True, False]])
    with torch.no_grad():
        div = contrastive_divergence(*_energies(m, x_cf, x_pos, target), mask)
        reg = ridge(*_energies(m, x_cf, x_pos, target), mask)
        alone = _energies(m, x_cf[1:, :1], x_pos[1:, :1], target[1:, :1])
        first = contrastive_divergence(*_energies(m, X_CF, X_POS, TARGET))
    assert torch.allclose(div, torch.cat([first, contrastive_divergence(*alone)]))
    assert torch.allclose(reg[1:], ridge(*alone))


def test_ct_loss_weights_the_terms_as_the_objective_says_per_setting():
    xb, yb = torch.tensor([[0.5, 0.5]]), torch.tensor([1])
    m = _linear()
    x_ae, y_f = X_CF * 0.5, torch.tensor([[0, 1]])
    cfgs = [
        TrainConfig(lambda_div=0.3, lambda_reg=0.2, lambda_adv=0.7),
        TrainConfig(lambda_div=0.3, lambda_reg=0.2, lambda_adv=0.7, objective="energy"),
    ]
    w = Weights.from_configs(cfgs)
    inputs = torch.cat([xb[None], X_CF, X_POS, x_ae], dim=1).expand(2, -1, -1)
    total, terms = ct_loss(m(inputs), yb, w, TARGET.expand(2, -1), y_f.expand(2, -1))
    cl = torch.nn.functional.cross_entropy(m(xb), yb)
    div = contrastive_divergence(*_energies(m, X_CF, X_POS, TARGET))[0]
    reg = ridge(*_energies(m, X_CF, X_POS, TARGET))[0]
    adv = adversarial_loss(m(x_ae), y_f)[0]
    assert torch.allclose(total[0], cl + 0.3 * div + 0.2 * reg + 0.7 * adv)
    assert torch.allclose(total[1], cl + 0.3 * div + 0.2 * reg)  # "energy": no adversarial term
    assert set(terms) == {"class_loss", "div", "reg", "adv"} and terms["adv"][1] == 0


def test_ablation_objectives_switch_terms_off():
    def w(obj):
        x = Weights.from_configs([TrainConfig(objective=obj)])
        return [float(x.div), float(x.reg), float(x.adv)]

    assert w("vanilla") == [0, 0, 0]
    assert w("energy") == pytest.approx([0.5, 0.1, 0])
    assert w("adversarial") == pytest.approx([0, 0, 0.25])
    assert w("full") == pytest.approx([0.5, 0.1, 0.25])
