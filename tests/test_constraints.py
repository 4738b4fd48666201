"""Domain and mutability constraints."""

import pytest
import torch

from ct_core.config import ConfigError
from ct_core.constraints import (
    BOTH,
    DECREASE,
    INCREASE,
    NONE,
    clamp_domain,
    infer_domain,
    mask_step,
    project_mutability,
    protect_immutable,
    resolve_mutability,
)


def test_inferred_domain_is_mean_pm_two_sd_widened_to_the_observed_range():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [10.0, 1.0]])
    lo, hi = infer_domain(x, nsd=2.0)
    mu, sd = x.mean(0), x.std(0)
    assert torch.allclose(lo, torch.minimum(mu - 2 * sd, x.min(0).values))
    assert torch.allclose(hi, torch.maximum(mu + 2 * sd, x.max(0).values))
    lo3, hi3 = infer_domain(x, nsd=3.0)
    assert (lo3 <= lo).all() and (hi3 >= hi).all()
    assert (x >= lo).all() and (x <= hi).all()


def test_clamp_keeps_points_inside_the_domain():
    lo, hi = torch.tensor([0.0, -1.0]), torch.tensor([1.0, 1.0])
    x = torch.tensor([[2.0, -3.0], [0.5, 0.5]])
    assert torch.equal(clamp_domain(x, (lo, hi)), torch.tensor([[1.0, -1.0], [0.5, 0.5]]))


def test_mask_step_per_mutability_code():
    m = torch.tensor([BOTH, INCREASE, DECREASE, NONE], dtype=torch.int8)
    delta = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
    assert torch.equal(mask_step(delta, m), torch.tensor([[-1.0, 0, -1.0, 0], [1.0, 1.0, 0, 0]]))


def test_projection_reaches_only_what_the_constraints_allow():
    m = torch.tensor([BOTH, INCREASE, DECREASE, NONE], dtype=torch.int8)
    x0 = torch.zeros(1, 4)
    x = torch.tensor([[-2.0, -2.0, 2.0, 2.0]])
    assert torch.equal(project_mutability(x, x0, m), torch.tensor([[-2.0, 0.0, 0.0, 0.0]]))


def test_protect_immutable_moves_x_plus_to_x_prime_where_it_may_not_move():
    m = torch.tensor([BOTH, INCREASE, DECREASE, NONE], dtype=torch.int8)
    x_cf = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    x_pos = torch.zeros(2, 4)
    out = protect_immutable(x_cf, x_pos, m)
    # none: always x'; increase: x' where x' > x+; decrease: x' where x' < x+
    assert torch.equal(out, torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, -1.0, -1.0]]))
    assert torch.equal(x_pos, torch.zeros(2, 4)), "inputs are not mutated"


def test_features_are_resolved_by_index_name_or_categorical_group():
    names = ["age", "sex=F", "sex=M", "income"]
    m = resolve_mutability(names, immutable=["sex"], increase_only=["age"], decrease_only=[3])
    assert m.tolist() == [INCREASE, NONE, NONE, DECREASE]
    with pytest.raises(ConfigError, match=r"data.immutable: unknown feature 'height'"):
        resolve_mutability(names, immutable=["height"])
    with pytest.raises(ConfigError, match="out of range"):
        resolve_mutability(names, immutable=[7])
