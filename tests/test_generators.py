"""The batched counterfactual search and the generators that plug into it: single searches
(K = 1, 2-D factuals), the penalties, and the registry ``generator.type`` is checked against."""

import pytest
import torch
from torch import nn

from ct_core.constraints import BOTH, INCREASE, NONE, infer_domain
from ct_core.generators import REVISE, ECCo, Generic, energy_schedule, search, train_vae


def _model(seed: int = 0, d: int = 2) -> nn.Module:
    """A fixed, smooth 2-class classifier: logits ±(x1 + x2) plus a small MLP wiggle."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 2))
    with torch.no_grad():
        m[2].weight.mul_(0.1)
        m[2].weight[0, :] += m[0].weight.sum(1) * 0 + 1.0
    return m


def _factuals(n=200, d=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g)


def _targets(model, x):
    with torch.no_grad():
        return 1 - model(x).argmax(1)


GENERATORS = [Generic(0.001), ECCo(0.001, 5.0, T=50)]


def test_energy_schedule_matches_the_reference():
    assert energy_schedule(1, 30) == pytest.approx(0.1 * 2**-0.9)
    assert energy_schedule(30, 30) == pytest.approx(0.1 * 31**-0.9)
    assert energy_schedule(1, 50) == pytest.approx(0.2 * 3**-0.9)
    assert energy_schedule(1, 5) == 0.0  # T = 5: a = round(T/25)/10 = 0, the penalty vanishes


@pytest.mark.parametrize("gen", GENERATORS, ids=lambda g: type(g).__name__)
def test_batched_search_equals_one_sample_at_a_time(gen):
    model = _model()
    x = _factuals(64)
    t = _targets(model, x)
    batch = search(model, x, t, gen, T=50, tau=0.9)
    for i in range(0, 64, 7):
        one = search(model, x[i : i + 1], t[i : i + 1], gen, T=50, tau=0.9)
        assert torch.allclose(one.x_cf, batch.x_cf[i : i + 1], atol=1e-6)
        assert torch.allclose(one.x_ae, batch.x_ae[i : i + 1], atol=1e-6)
        assert one.converged.item() == batch.converged[i].item()
        assert one.steps.item() == batch.steps[i].item()


@pytest.mark.parametrize("gen", GENERATORS, ids=lambda g: type(g).__name__)
def test_each_sample_stops_when_it_reaches_tau(gen):
    model = _model()
    x = _factuals(100)
    t = _targets(model, x)
    res = search(model, x, t, gen, T=60, tau=0.8)
    assert res.converged.any() and (res.p_target[res.converged] >= 0.8).all()
    assert (res.steps[~res.converged & ~res.initially_valid] == 60).all()
    # one step less than a sample needed leaves it unconverged; more steps change nothing
    k = int(res.steps[res.converged].min())
    short = search(model, x, t, gen, T=k - 1, tau=0.8) if k > 1 else None
    first = res.converged & (res.steps == k)
    if short is not None:
        assert not short.converged[first].any()
    longer = search(model, x, t, gen, T=80, tau=0.8)
    assert torch.equal(longer.x_cf[res.converged], res.x_cf[res.converged])


@pytest.mark.parametrize("gen", GENERATORS, ids=lambda g: type(g).__name__)
def test_constraints_bind_at_every_step(gen):
    model = _model(d=3)
    x = _factuals(150, d=3)
    t = _targets(model, x)
    lo, hi = infer_domain(x)
    lo[1], hi[1] = -0.5, 0.5  # a tight domain on feature 2
    x = torch.maximum(torch.minimum(x, hi), lo)
    m = torch.tensor([NONE, BOTH, INCREASE], dtype=torch.int8)
    res = search(model, x, t, gen, T=50, tau=0.99, domain=(lo, hi), mutability=m)
    assert torch.equal(res.x_cf[:, 0], x[:, 0]), "an immutable feature moved"
    assert (res.x_cf[:, 2] >= x[:, 2]).all(), "an increase-only feature decreased"
    assert ((res.x_cf >= lo) & (res.x_cf <= hi)).all(), "left the domain"
    assert (res.x_cf[:, 1:] != x[:, 1:]).any(), "the search moved nothing"


def test_revise_respects_mutability_on_the_decoded_point():
    model = _model(d=3)
    x = _factuals(300, d=3)
    t = _targets(model, x)
    vae = train_vae(x, epochs=5)
    m = torch.tensor([NONE, BOTH, INCREASE], dtype=torch.int8)
    lo, hi = infer_domain(x)
    res = search(model, x, t, REVISE(vae), T=30, tau=0.9, domain=(lo, hi), mutability=m)
    assert torch.equal(res.x_cf[:, 0], x[:, 0])
    assert (res.x_cf[:, 2] >= x[:, 2]).all()
    assert ((res.x_cf >= lo) & (res.x_cf <= hi)).all()


@pytest.mark.parametrize("strict", [False, True])
def test_adversarial_examples_are_the_last_state_inside_the_ball(strict):
    model = _model()
    x = _factuals(100)
    t = _targets(model, x)
    res = search(
        model, x, t, Generic(0.0), T=40, tau=0.99, lr=0.1, epsilon=0.3, epsilon_strict=strict
    )
    dist = (res.x_ae - x).abs().amax(1)
    assert (dist < 0.3).all() if strict else (dist <= 0.3).all()
    assert (dist > 0.2).any(), "nascent counterfactuals should get close to the ball's edge"
    # the search continued past the ball, so x_ae differs from the final counterfactual
    assert ((res.x_cf - x).abs().amax(1) > 0.3).any()


def test_factuals_already_at_tau_are_not_converged():
    model = _model()
    x = _factuals(50)
    with torch.no_grad():
        t = model(x).argmax(1)  # target = predicted class: already valid at tau = 0.5
    res = search(model, x, t, Generic(), T=10, tau=0.5)
    assert res.initially_valid.all() and not res.converged.any()
    assert (res.steps == 0).all() and torch.equal(res.x_cf, x)


def test_ecco_penalty_is_the_l1_cost_plus_the_scheduled_energy_term_per_setting():
    """Two settings in one penalty call: their own λ's and T (T = 5 switches the energy off)."""
    x0 = torch.zeros(2, 3, 2)
    x = torch.ones(2, 3, 2)
    logits = torch.tensor([[0.5, -1.0]]).expand(2, 3, 2)
    target = torch.ones(2, 3, dtype=torch.long)
    gen = ECCo(lambda_cost=[0.1, 0.2], lambda_energy=[2.0, 2.0], T=[50, 5], energy_reg=[0.5, 0.5])
    w = {n: v[:, None] for n, v in gen.weights.items()}
    pen = gen.penalty(x, x0, logits, target, 3, w)
    e = 1.0  # −logit of the target
    phi = energy_schedule(3, 50)
    assert pen[0].tolist() == pytest.approx([0.1 * 2 + 2.0 * phi * (e + 0.5 * e * e)] * 3)
    assert pen[1].tolist() == pytest.approx([0.2 * 2] * 3)


def test_generator_type_is_checked_against_the_registry_and_names_the_allowed_values():
    from ct_core.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"generator.type must be one of ecco, generic, revise"):
        parse_config({"generator": {"type": "gravitational"}})


def test_a_registered_penalty_function_is_a_generator_type():
    from ct_core.config import parse_config
    from ct_core.generators import (
        generator_info,
        make_generator,
        register_generator,
        unregister_generator,
    )

    @register_generator("test_l2")
    def l2(x, x0, logits, target, t, w):
        return w["lambda_cost"] * (x - x0).square().sum(-1)

    try:
        cfg = parse_config({"generator": {"type": "test_l2", "lambda_cost": 0.01}})
        assert generator_info("test_l2").family == "feature"
        gen = make_generator(cfg.generator)
        model = _model()
        x = _factuals(40)
        res = search(model, x, _targets(model, x), gen, T=30, tau=0.9)
        assert res.converged.any() and torch.isfinite(res.x_cf).all()
    finally:
        unregister_generator("test_l2")
