"""Categorical features stay categorical: every counterfactual takes exactly one level of each
one-hot group, in the search itself (training, validation metrics, the protocol), while the
search can still change a category when the model asks for it."""

from pathlib import Path

import pytest
import torch
from torch import nn

from ct_core.config import ConfigError
from ct_core.constraints import NONE, onehot_index, project_onehot, resolve_mutability
from ct_core.generators import ECCo, Generic, search

# columns: num, city=a, city=b, city=c, num2
GROUPS = [[1, 2, 3]]
CREDIT = Path(__file__).resolve().parents[1] / "configs" / "base" / "credit.yaml"


def _is_onehot(x: torch.Tensor, groups=GROUPS) -> bool:
    for g in groups:
        block = x[..., g]
        if not (((block == 0) | (block == 1)).all() and (block.sum(-1) == 1).all()):
            return False
    return True


class CityModel(nn.Module):
    """Class 1 iff the city is ``c``: logits ``(0, 4·(city=c − 0.5) + 0.1·num)``."""

    def forward(self, x):
        z = 4 * (x[:, 3] - 0.5) + 0.1 * x[:, 0]
        return torch.stack([torch.zeros_like(z), z], 1)


def _factuals(n=50, level=1):
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 5)
    x[:, 0] = torch.randn(n, generator=g)
    x[:, 4] = torch.randn(n, generator=g)
    x[:, level] = 1.0
    return x


def test_projection_sets_each_group_to_its_largest_level_and_leaves_other_columns():
    idx = onehot_index([[1, 2, 3], [4, 5]])
    assert idx.tolist() == [[1, 2, 3], [4, 5, -1]]
    x = torch.tensor([[0.5, 0.2, 0.9, 0.4, -1.0, 2.0], [7.0, 1.0, 1.0, 0.0, 5.0, 5.0]])
    out = project_onehot(x, idx)
    assert out.tolist() == [[0.5, 0, 1, 0, 0, 1], [7.0, 1, 0, 0, 1, 0]]  # ties: the first level
    batched = project_onehot(x.expand(3, 2, 6), idx)  # (K, N, D)
    assert torch.equal(batched, out.expand(3, 2, 6))
    assert project_onehot(x, None) is x and onehot_index([]) is None


@pytest.mark.parametrize("gen", [Generic(0.001), ECCo(0.001, 5.0, T=50)])
def test_search_changes_the_category_when_the_model_asks_and_keeps_every_point_onehot(gen):
    x0 = _factuals()
    target = torch.ones(len(x0), dtype=torch.long)
    lo, hi = torch.full((5,), -3.0), torch.full((5,), 3.0)
    lo[1:4], hi[1:4] = 0.0, 1.0  # one-hot columns clamped to [0, 1]: the state is not
    kw = dict(T=50, tau=0.75, domain=(lo, hi), epsilon=0.3)
    res = search(CityModel(), x0, target, gen, onehot=onehot_index(GROUPS), **kw)
    assert res.converged.all()
    assert _is_onehot(res.x_cf) and _is_onehot(res.x_ae)
    assert (res.x_cf[:, 3] == 1).all(), "every counterfactual moved to city c"
    # the factual's own point was the last one within ε: a category switch moves a column by 1
    assert torch.equal(res.x_ae[:, 1:4], x0[:, 1:4])
    relaxed = search(CityModel(), x0, target, gen, **kw)
    assert not _is_onehot(relaxed.x_cf), "without the constraint the search blends levels"


def test_an_immutable_categorical_keeps_its_level():
    x0 = _factuals()
    m = resolve_mutability(["num", "city=a", "city=b", "city=c", "num2"], ["city"], (), (), GROUPS)
    res = search(
        CityModel(),
        x0,
        torch.ones(len(x0), dtype=torch.long),
        Generic(0.001),
        T=30,
        tau=0.75,
        mutability=m,
        onehot=onehot_index(GROUPS),
    )
    assert torch.equal(res.x_cf[:, 1:4], x0[:, 1:4]) and _is_onehot(res.x_cf)


def test_a_categorical_is_immutable_as_a_whole_or_not_at_all():
    names = ["num", "city=a", "city=b", "city=c", "num2"]
    assert resolve_mutability(names, ["city"], onehot_groups=GROUPS)[1:4].tolist() == [NONE] * 3
    with pytest.raises(ConfigError, match="data.increase_only: 'city' is categorical"):
        resolve_mutability(names, increase_only=["city"], onehot_groups=GROUPS)
    with pytest.raises(ConfigError, match="data.immutable: names some levels of .*'city'"):
        resolve_mutability(names, immutable=["city=a"], onehot_groups=GROUPS)
    # searched as continuous columns (keep_onehot off), levels may be constrained one by one
    assert resolve_mutability(names, immutable=["city=a"])[1] == NONE


@pytest.fixture(scope="module")
def credit():
    from ct_core.data import load_dataset

    return load_dataset({"name": "credit", "n_train": 400, "n_val": 100})


def test_credit_training_counterfactuals_validation_and_protocol_keep_categories(credit):
    from ct_core.config import load_config
    from ct_core.evaluation import validation_metrics
    from ct_core.protocol import draw_classes, evaluate_model
    from ct_core.training import Trainer

    assert credit.keep_onehot and credit.onehot is not None
    cfg = load_config(
        CREDIT,
        ["train.epochs=2", "train.nce=200", "evaluation.n_runs=2", "evaluation.n_individuals=20"],
    )
    trainer = Trainer(cfg, data=credit)
    trainer.fit()
    pairs = trainer.counterfactuals(200)
    assert _is_onehot(pairs.result.x_cf, credit.categorical_groups)
    assert _is_onehot(pairs.x_ae, credit.categorical_groups)
    draws = draw_classes(2, 20, 0)
    frame = evaluate_model(trainer.model, credit, cfg, draws, progress=False)
    cf = frame[[f"cf_{n}" for n in credit.feature_names]].to_numpy()
    assert _is_onehot(torch.tensor(cf), credit.categorical_groups)
    assert set(validation_metrics(trainer.model, credit, cfg)) >= {"val_validity", "val_cost"}


def test_keep_onehot_off_searches_one_hot_columns_as_continuous():
    from ct_core.data import load_dataset

    data = load_dataset({"name": "credit", "n_train": 400, "n_val": 100, "keep_onehot": False})
    assert data.onehot is None and data.categorical_groups
