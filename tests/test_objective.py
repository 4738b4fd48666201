"""The CT loss terms against hand-computed gradients on a tiny linear model (Eq. 1–3, ridge)."""

import torch
from torch import nn

from ct_core.config import TrainConfig
from ct_core.objective import (
    Weights,
    adversarial_loss,
    contrastive_divergence,
    energy,
    ridge,
    total_loss,
)


def _linear():
    m = nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.5, -1.0], [0.25, 2.0]]))
        m.bias.copy_(torch.tensor([0.1, -0.2]))
    return m


X_CF = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
X_POS = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
TARGET = torch.tensor([1, 0])


def _grad(fn):
    m = _linear()
    fn(m).backward()
    return m.weight.grad, m.bias.grad


def test_energy_is_minus_the_target_logit():
    logits = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    assert torch.equal(energy(logits, TARGET), torch.tensor([-2.0, -3.0]))


def test_contrastive_divergence_gradient():
    gw, gb = _grad(lambda m: contrastive_divergence(m(X_CF), m(X_POS), TARGET))
    # d/dW_y of mean(W_y·x' − W_y·x+) = mean over pairs of (x' − x+) in row y
    want = torch.zeros(2, 2)
    for j in range(2):
        want[TARGET[j]] += (X_CF[j] - X_POS[j]) / 2
    assert torch.allclose(gw, want) and torch.allclose(gb, torch.zeros(2))


def test_ridge_gradient():
    m0 = _linear()
    gw, gb = _grad(lambda m: ridge(m(X_CF), m(X_POS), TARGET))
    want_w, want_b = torch.zeros(2, 2), torch.zeros(2)
    with torch.no_grad():
        for j in range(2):
            y = TARGET[j]
            for x in (X_CF[j], X_POS[j]):
                logit = m0(x)[y]
                want_w[y] += 2 * logit * x / 2
                want_b[y] += 2 * logit / 2
    assert torch.allclose(gw, want_w) and torch.allclose(gb, want_b)


def test_adversarial_loss_gradient_is_cross_entropy_against_true_labels():
    y_true = torch.tensor([0, 1])
    m0 = _linear()
    gw, gb = _grad(lambda m: adversarial_loss(m(X_CF), y_true))
    with torch.no_grad():
        p = torch.softmax(m0(X_CF), 1)
        err = p - torch.nn.functional.one_hot(y_true, 2).float()
        want_w = err.T @ X_CF / 2
    assert torch.allclose(gw, want_w, atol=1e-6) and torch.allclose(gb, err.mean(0), atol=1e-6)


def test_total_loss_weights_the_terms_as_the_objective_says():
    xb, yb = torch.tensor([[0.5, 0.5]]), torch.tensor([1])
    m = _linear()
    x_ae, y_f = X_CF * 0.5, torch.tensor([0, 1])
    w = Weights.from_config(TrainConfig(lambda_div=0.3, lambda_reg=0.2, lambda_adv=0.7))
    total, terms = total_loss(m, xb, yb, w, X_CF, X_POS, TARGET, x_ae, y_f)
    want = (
        torch.nn.functional.cross_entropy(m(xb), yb)
        + 0.3 * contrastive_divergence(m(X_CF), m(X_POS), TARGET)
        + 0.2 * ridge(m(X_CF), m(X_POS), TARGET)
        + 0.7 * adversarial_loss(m(x_ae), y_f)
    )
    assert torch.allclose(total, want)
    assert set(terms) == {"class_loss", "div", "reg", "adv"}


def test_ablation_objectives_switch_terms_off():
    def w(obj):
        return Weights.from_config(TrainConfig(objective=obj))

    assert (w("vanilla").div, w("vanilla").reg, w("vanilla").adv) == (0, 0, 0)
    assert (w("energy").div, w("energy").reg, w("energy").adv) == (0.5, 0.1, 0)
    assert (w("adversarial").div, w("adversarial").reg, w("adversarial").adv) == (0, 0, 0.25)
    assert (w("full").div, w("full").reg, w("full").adv) == (0.5, 0.1, 0.25)
