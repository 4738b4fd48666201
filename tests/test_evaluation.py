"""Evaluation metrics: known answers on hand-made inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ct_core.evaluation import (
    accuracy,
    cost,
    fgsm,
    implausibility,
    implausibility_by_target,
    integrated_gradients_sensitivity,
    macro_f1,
    mmd_unbiased,
    pgd,
    redundancy,
    robust_accuracy,
    robust_accuracy_table,
    validity,
)

torch.set_num_threads(1)


def linear_model(w: list[list[float]], b: list[float] | None = None) -> nn.Module:
    """A linear classifier with fixed weights ``(K, D)``."""
    W = torch.tensor(w)
    m = nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        m.weight.copy_(W)
        m.bias.copy_(torch.tensor(b) if b is not None else torch.zeros(W.shape[0]))
    return m


def test_validity_is_a_threshold_on_the_target_probability():
    p = torch.tensor([0.2, 0.5, 0.94, 0.95, 0.99])
    assert validity(p, 0.5).tolist() == [False, True, True, True, True]
    assert validity(p, 0.95).tolist() == [False, False, False, True, True]


def test_cost_is_the_l1_distance_per_row():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    x_cf = torch.tensor([[3.0, -4.0], [1.0, 1.0]])
    assert cost(x, x_cf).tolist() == [7.0, 0.0]


def test_implausibility_is_the_mean_l1_distance_to_target_samples():
    x_cf = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    targets = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    # row 0: (2 + 1) / 2; row 1: (1 + 2) / 2
    assert implausibility(x_cf, targets).tolist() == [1.5, 1.5]


def test_implausibility_by_target_uses_the_right_class():
    X = torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 10.0], [10.0, 10.0]])
    y = torch.tensor([0, 0, 1, 1])
    x_cf = torch.tensor([[10.0, 10.0], [10.0, 10.0]])
    ip = implausibility_by_target(x_cf, torch.tensor([1, 0]), X, y, n_samples=50)
    assert ip.tolist() == [0.0, 20.0]


def test_redundancy_is_the_share_of_unchanged_features():
    x = torch.zeros(2, 4)
    x_cf = torch.tensor([[0.0, 1.0, 0.0, 1e-7], [1.0, 1.0, 1.0, 1.0]])
    assert redundancy(x, x_cf).tolist() == [0.75, 0.0]


def test_mmd_of_a_sample_with_itself_is_zero_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100, 2, generator=g)
    assert mmd_unbiased(X, X, 1.0, max_samples=None) == pytest.approx(0.0, abs=0.03)
    near = mmd_unbiased(X, X + 0.5, 1.0, max_samples=None)
    far = mmd_unbiased(X, X + 3.0, 1.0, max_samples=None)
    assert 0 < near < far


def test_mmd_is_unbiased_and_clamped():
    g = torch.Generator().manual_seed(1)
    vals = [
        mmd_unbiased(
            torch.randn(30, 2, generator=g), torch.randn(30, 2, generator=g), 1.0, clamp=False
        )
        for _ in range(200)
    ]
    mean = sum(vals) / len(vals)
    sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    assert any(v < 0 for v in vals)  # the unbiased estimate goes negative ...
    assert abs(mean) < 3 * sd / len(vals) ** 0.5  # ... and is zero on average
    X, Y = torch.randn(30, 2, generator=g), torch.randn(30, 2, generator=g)
    assert mmd_unbiased(X, Y, 1.0, clamp=True) == max(0.0, mmd_unbiased(X, Y, 1.0, clamp=False))


def test_mmd_subsamples_and_needs_two_points():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(500, 3, generator=g)
    v = mmd_unbiased(X, X + 5, 5.0, max_samples=100, generator=g)
    assert v > 0
    assert math.isnan(mmd_unbiased(X[:1], X, 5.0))


def test_accuracy_and_macro_f1():
    y = torch.tensor([0, 0, 1, 1])
    p = torch.tensor([0, 1, 1, 1])
    assert accuracy(y, p) == 0.75
    # class 0: P=1, R=.5, F1=2/3; class 1: P=2/3, R=1, F1=.8
    assert macro_f1(y, p) == pytest.approx((2 / 3 + 0.8) / 2)


def _blobs(n: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(2, (n,), generator=g)
    X = torch.randn(n, 2, generator=g) * 0.3 + (2.0 * y[:, None] - 1.0) * torch.tensor([0.3, 0.0])
    return X, y


def test_robust_accuracy_at_zero_is_clean_accuracy_and_falls_with_eps():
    X, y = _blobs()
    model = linear_model([[-1.0, 0.0], [1.0, 0.0]])
    clean = accuracy(y, model(X).argmax(1))
    for attack in ("fgsm", "pgd"):
        accs = robust_accuracy(model, X, y, [0.0, 0.05, 0.2, 0.5], attack)
        assert accs[0] == pytest.approx(clean)
        assert all(a >= b for a, b in zip(accs, accs[1:]))
        assert accs[-1] < clean - 0.3
    table = robust_accuracy_table(model, X, y)
    assert set(table["attack"]) == {"fgsm", "pgd"} and len(table) == 20


def test_fgsm_moves_every_feature_by_eps():
    X, y = _blobs(20)
    model = linear_model([[-1.0, 2.0], [1.0, -2.0]])
    xa = fgsm(model, X, y, 0.1)
    assert torch.allclose((xa - X).abs(), torch.full_like(X, 0.1))


def test_pgd_stays_in_the_linf_ball():
    X, y = _blobs(50)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    xa = pgd(model, X, y, 0.07, generator=torch.Generator().manual_seed(0))
    assert (xa - X).abs().max() <= 0.07 + 1e-6
    assert (xa - X).abs().max() > 0.03


def test_integrated_gradients_sensitivity_is_lower_for_an_ignored_feature():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(300, 3, generator=g)
    model = linear_model([[1.0, 0.0, 0.5], [-1.0, 0.0, -0.5]])
    y = model(X).argmax(1)
    ignored = integrated_gradients_sensitivity(
        model, X, y, [1], n_rounds=8, n_samples=100, n_steps=10
    )
    used = integrated_gradients_sensitivity(model, X, y, [0], n_rounds=8, n_samples=100, n_steps=10)
    assert ignored["lo"] <= ignored["median"] <= ignored["hi"]
    assert used["median"] > ignored["median"]
    assert len(ignored["rounds"]) == 8


def test_integrated_gradients_on_2d_data_is_zero_for_an_ignored_feature():
    X, _ = _blobs(200)
    model = linear_model([[1.0, 0.0], [-1.0, 0.0]])
    y = model(X).argmax(1)
    r = integrated_gradients_sensitivity(model, X, y, [1], n_rounds=4, n_samples=100, n_steps=10)
    assert r["median"] == pytest.approx(0.0, abs=1e-6)
