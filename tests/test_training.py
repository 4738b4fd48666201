"""The CT epoch loop of one setting (Algorithm 1): sampling, maturity, burn-in, non-finite
losses, resume, and Proposition 3.1 on protected features."""

import io
import math

import pytest
import torch

from ct_core.config import parse_config
from ct_core.constraints import BOTH, NONE
from ct_core.training import RECORD_KEYS, NonFiniteLossError, Trainer
from tests.helpers import gaussian_dataset


def _cfg(**train):
    t = {"epochs": 3, "nce": 120, "batch_size": 30, "device": "cpu"}
    t.update(train)
    return parse_config({"train": t, "generator": {"T": 20, "tau": 0.75}})


def test_targets_differ_from_the_prediction_and_x_plus_comes_from_the_target_class():
    data = gaussian_dataset(n=600, d=2)
    tr = Trainer(_cfg(), data=data)
    ces = tr.counterfactuals(200)
    x_pos, target = ces.x_pos[0], ces.target[0]
    # every x+ (before protection there is none here) is a training point of class y+
    rows = (x_pos[:, None, :] == data.X_train[None]).all(-1)
    assert rows.any(1).all()
    src = rows.float().argmax(1)
    assert torch.equal(data.y_train[src], target)
    assert ces.x_cf.shape == (1, 200, 2)


def test_targets_are_never_the_predicted_class_multiclass():
    data = gaussian_dataset(n=600, d=3)
    data.y_train = data.y_train % 3 + (torch.arange(len(data.y_train)) % 3 == 0).long()
    data.y_train = data.y_train.clamp_max(2)
    data.n_classes = 3
    tr = Trainer(_cfg(), data=data)
    g = tr.rng.get_state()
    ces = tr.counterfactuals(300)
    tr.rng.set_state(g)
    idx = torch.randperm(data.X_train.shape[0], generator=tr.rng)[:300]
    with torch.no_grad():
        pred = tr.model(data.X_train[idx]).argmax(1)
    assert (ces.target[0] != pred).all()
    assert set(ces.target[0].tolist()) <= {0, 1, 2}


def test_only_converged_counterfactuals_are_mature_and_others_become_x_plus():
    data = gaussian_dataset()
    tr = Trainer(_cfg(), data=data)
    ces = tr.counterfactuals(150)
    res, mature = ces.result, ces.mature[0]
    assert torch.equal(mature, res.converged[0])
    assert torch.equal(ces.x_cf[0][~mature], ces.x_pos[0][~mature])
    assert torch.equal(ces.x_cf[0][mature], res.x_cf[0][mature])
    alt = Trainer(_cfg(mature="converged_or_exhausted"), data=data)
    ces2 = alt.counterfactuals(150)
    assert torch.equal(ces2.mature, ces2.result.converged | ces2.result.exhausted)


def test_vanilla_and_burnin_epochs_generate_no_counterfactuals():
    data = gaussian_dataset()
    recs = list(Trainer(_cfg(objective="vanilla"), data=data).run())
    assert all(math.isnan(r["mature"]) and r["div"] == 0 for r in recs)
    recs = list(Trainer(_cfg(epochs=4, burnin=0.5), data=data).run())
    assert [math.isnan(r["mature"]) for r in recs] == [True, True, False, False]


def test_records_carry_the_documented_metrics():
    rec = next(Trainer(_cfg(), data=gaussian_dataset()).run())
    assert set(RECORD_KEYS) <= set(rec)
    assert rec["epoch"] == 1 and 0 <= rec["mature"] <= 1 and rec["ce_steps"] <= 20


def test_resume_from_a_checkpoint_equals_uninterrupted_training():
    data = gaussian_dataset()
    cfg = _cfg(epochs=4, shuffle=True)
    full = Trainer(cfg, data=data)
    full.fit()
    first = Trainer(cfg, data=data)
    for rec in first.run():
        if rec["epoch"] == 2:
            break
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # checkpoints hold no arbitrary pickle
    second = Trainer(cfg, data=data, checkpoint=state)
    assert second.epoch == 2
    second.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k

    def strip(h):
        return [{k: v for k, v in r.items() if not k.startswith(("time_", "seconds"))} for r in h]

    assert strip(second.history) == strip(full.history)


def test_validation_metrics_leave_training_alone_and_reuse_the_same_points():
    data = gaussian_dataset()
    plain = Trainer(_cfg(epochs=3, shuffle=True), data=data)
    plain.fit()
    evaluated = Trainer(_cfg(epochs=3, shuffle=True, eval_every=1), data=data)
    evaluated.fit()
    for k, v in plain.model.state_dict().items():  # eval_every changes nothing in the model
        assert torch.equal(v, evaluated.model.state_dict()[k]), k
    assert all("val_validity" in r for r in evaluated.history)
    # the same points each epoch: a model that did not change scores the same
    from ct_core.evaluation import validation_metrics

    a, b = (validation_metrics(evaluated.model, data, evaluated.cfg) for _ in range(2))
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a), (a, b)


def test_a_non_finite_batch_is_skipped_and_counted():
    data = gaussian_dataset()
    data.X_train = data.X_train.clone()
    data.X_train[3, 0] = float("nan")  # poisons batch 0 only
    recs = list(Trainer(_cfg(objective="vanilla", epochs=2), data=data).run())
    assert [r["skipped_batches"] for r in recs] == [1, 1]
    assert all(math.isfinite(r["loss"]) for r in recs)


def test_a_run_whose_loss_stays_non_finite_stops_with_a_clear_error():
    data = gaussian_dataset()
    data.X_train = torch.full_like(data.X_train, float("inf"))
    with pytest.raises(NonFiniteLossError, match="non-finite .* in all 12 mini-batches"):
        list(Trainer(_cfg(objective="vanilla"), data=data).run())


def _relative_sensitivity(model: torch.nn.Module) -> float:
    """|Δw| for the protected feature relative to the mutable one (class 1 minus class 0)."""
    w = model[0].weight.detach()
    dw = (w[1] - w[0]).abs()
    return float(dw[0] / dw[1])


def test_proposition_3_1_protection_lowers_sensitivity_to_an_immutable_feature():
    """Linear softmax model on Gaussian classes with a shared diagonal covariance: protecting an
    immutable feature in the contrastive term lowers the model's relative sensitivity to it."""
    cfg = parse_config(
        {
            "model": {"type": "linear"},
            "train": {
                "objective": "energy",
                "epochs": 15,
                "nce": 600,
                "batch_size": 30,
                "lambda_div": 1.0,
                "lambda_reg": 0.01,
                "device": "cpu",
            },
            "generator": {"type": "generic", "T": 30, "tau": 0.75},
        }
    )
    ratios = {}
    for protect in (False, True):
        m = torch.tensor([NONE, BOTH], dtype=torch.int8) if protect else None
        data = gaussian_dataset(n=1500, d=2, shift=3.0, seed=3, mutability=m)
        ratios[protect] = _relative_sensitivity(Trainer(cfg, data=data).fit())
    assert ratios[True] < ratios[False] * 0.8, ratios
