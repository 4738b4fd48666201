"""Property-based checks of the constraint invariants the search relies on."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ct_core.constraints import (
    DECREASE,
    INCREASE,
    NONE,
    clamp_domain,
    mask_step,
    project_mutability,
    protect_immutable,
)

floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@st.composite
def problem(draw):
    n = draw(st.integers(1, 6))
    d = draw(st.integers(1, 5))
    vec = st.lists(floats, min_size=n * d, max_size=n * d)
    x0 = torch.tensor(draw(vec)).reshape(n, d)
    step = torch.tensor(draw(vec)).reshape(n, d)
    m = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=d, max_size=d)), dtype=torch.int8)
    return x0, step, m


@settings(max_examples=200, deadline=None)
@given(problem())
def test_masked_steps_respect_every_mutability_code(p):
    x0, step, m = p
    x = x0 + mask_step(step, m)
    assert torch.equal(x[:, m == NONE], x0[:, m == NONE])
    assert (x[:, m == INCREASE] >= x0[:, m == INCREASE]).all()
    assert (x[:, m == DECREASE] <= x0[:, m == DECREASE]).all()


@settings(max_examples=200, deadline=None)
@given(problem())
def test_projection_is_idempotent_and_feasible(p):
    x0, step, m = p
    y = project_mutability(x0 + step, x0, m)
    assert torch.equal(project_mutability(y, x0, m), y)
    assert torch.equal(y[:, m == NONE], x0[:, m == NONE])
    assert (y[:, m == INCREASE] >= x0[:, m == INCREASE]).all()


@settings(max_examples=200, deadline=None)
@given(problem())
def test_protected_pairs_have_no_differential_on_immutable_features(p):
    x_cf, x_pos, m = p
    out = protect_immutable(x_cf, x_pos, m)
    assert torch.equal(out[:, m == NONE], x_cf[:, m == NONE])
    # increase-only: x+ never lies below x' after protection (x' may not move further down)
    assert (out[:, m == INCREASE] >= x_cf[:, m == INCREASE]).all()
    assert (out[:, m == DECREASE] <= x_cf[:, m == DECREASE]).all()


@settings(max_examples=100, deadline=None)
@given(problem())
def test_clamping_lands_inside_the_domain(p):
    x, step, _ = p
    lo = torch.minimum(step[0], -step[0].abs())
    hi = lo + step[0].abs() + 1.0
    y = clamp_domain(x, (lo, hi))
    assert ((y >= lo) & (y <= hi)).all()
