"""Packed training (ct_core.pack): K settings in one vectorised process reproduce K plain Trainer
runs, resume from Trainer-format checkpoints, reject incompatible settings and isolate failures."""

import math

import pytest
import torch

import ct_core.pack as pack_mod
from ct_core.config import parse_config
from ct_core.pack import PackedTrainer, can_pack, check_packable, pack_key
from ct_core.training import NonFiniteLossError, Trainer
from tests.helpers import gaussian_dataset

TIME_KEYS = ("time_search", "time_train", "time_eval", "seconds")


def _cfg(seed=1, objective="full", gen="ecco", T=20, tau=0.75, epochs=3, optimizer="adam", **tr):
    t = {
        "epochs": epochs,
        "nce": 120,
        "batch_size": 30,
        "device": "cpu",
        "objective": objective,
        "optimizer": optimizer,
    }
    t.update(tr)
    return parse_config({"seed": seed, "train": t, "generator": {"type": gen, "T": T, "tau": tau}})


def _mixed(optimizer="adam", epochs=3):
    """Four settings differing in objective, generator, T, τ, λ's, nce, burn-in and seed."""
    kw = dict(optimizer=optimizer, epochs=epochs)
    return [
        _cfg(1, "full", "ecco", T=25, tau=0.75, **kw),
        _cfg(2, "vanilla", **kw),
        _cfg(3, "energy", "generic", T=30, tau=0.9, lambda_reg=0.3, **kw),
        _cfg(4, "full", "ecco", T=50, tau=0.6, nce=200, burnin=0.4, lambda_adv=0.5, **kw),
    ]


def _assert_same(plain: Trainer, packed: PackedTrainer, k: int, atol=1e-5):
    for name, v in plain.model.state_dict().items():
        p = packed.models()[k].state_dict()[name]
        assert torch.allclose(v, p, atol=atol), (k, name, (v - p).abs().max())
    assert len(plain.history) == len(packed.histories[k])
    for r, q in zip(plain.history, packed.histories[k]):
        assert set(r) == set(q) - {"failed"}
        for key in r:
            if key in TIME_KEYS:
                continue
            if math.isnan(r[key]):
                assert math.isnan(q[key]), (k, key)
            else:
                assert q[key] == pytest.approx(r[key], abs=atol), (k, r["epoch"], key)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_pack_of_mixed_settings_equals_the_plain_trainer_per_setting(optimizer):
    data = gaussian_dataset(n=600, d=2)
    cfgs = _mixed(optimizer)
    packed = PackedTrainer(cfgs, data=data)
    epochs = list(packed.run())
    assert len(epochs) == 3 and all(len(recs) == 4 for recs in epochs)
    for k, cfg in enumerate(cfgs):
        plain = Trainer(cfg, data=data)
        plain.fit()
        _assert_same(plain, packed, k)
    # vanilla never searched, the burn-in setting only after round(0.4·3) = 1 epoch
    assert all(math.isnan(recs[1]["mature"]) for recs in epochs)
    assert [math.isnan(recs[3]["mature"]) for recs in epochs] == [True, False, False]


def test_three_class_data_and_amsgrad_also_match():
    data = gaussian_dataset(n=600, d=3, seed=5)
    data.y_train = torch.arange(data.y_train.shape[0]) % 3
    data.X_train = data.X_train + data.y_train[:, None].float()
    data.y_val = torch.arange(data.y_val.shape[0]) % 3
    data.n_classes = 3
    cfgs = [_cfg(7, optimizer="amsgrad"), _cfg(8, "adversarial", "generic", optimizer="amsgrad")]
    packed = PackedTrainer(cfgs, data=data)
    packed.fit()
    for k, cfg in enumerate(cfgs):
        plain = Trainer(cfg, data=data)
        plain.fit()
        _assert_same(plain, packed, k)


def test_resume_from_state_dicts_equals_uninterrupted_training_on_both_paths():
    data = gaussian_dataset()
    cfgs = _mixed(epochs=4)
    full = PackedTrainer(cfgs, data=data)
    full.fit()
    first = PackedTrainer(cfgs, data=data)
    for recs in first.run():
        if recs[0]["epoch"] == 2:
            break
    states = first.state_dicts()
    assert all(s["epoch"] == 2 for s in states)
    second = PackedTrainer(cfgs, data=data, checkpoints=states)
    second.fit()
    for a, b in zip(full.state_dicts(), second.state_dicts()):
        for name in a["model"]:
            assert torch.equal(a["model"][name], b["model"][name])
        strip = [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in a["history"]]
        assert strip == [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in b["history"]]
    # a packed checkpoint is a Trainer checkpoint: the plain path continues it
    for k in (0, 3):
        plain = Trainer(cfgs[k], data=data, checkpoint=states[k])
        assert plain.epoch == 2
        plain.fit()
        _assert_same(plain, full, k)


def test_models_are_ordinary_modules_with_the_packed_predictions():
    data = gaussian_dataset()
    packed = PackedTrainer(_mixed(epochs=1), data=data)
    packed.fit()
    stacked = packed.forward(data.X_val)
    for k, m in enumerate(packed.models()):
        assert isinstance(m, torch.nn.Sequential)
        assert torch.allclose(m(data.X_val), stacked[k], atol=1e-6)


def test_incompatible_settings_are_rejected_naming_the_field():
    a = _cfg()
    with pytest.raises(ValueError, match="train.lr differs"):
        check_packable([a, _cfg(lr=0.01)])
    with pytest.raises(ValueError, match="train.batch_size differs"):
        PackedTrainer([a, _cfg(batch_size=20)], data=gaussian_dataset())
    b = parse_config({"model": {"hidden": [16]}, "train": {"device": "cpu", "epochs": 3}})
    with pytest.raises(ValueError, match="model.hidden differs"):
        check_packable([a, b])
    revise = parse_config({"generator": {"type": "revise"}})
    assert not can_pack(revise)
    with pytest.raises(ValueError, match="generator.type 'revise'"):
        check_packable([revise])
    with pytest.raises(ValueError, match="train.shuffle"):
        check_packable([_cfg(shuffle=True)])
    # what may differ does not enter the key
    assert pack_key(a) == pack_key(_mixed()[3]) == pack_key(_cfg(9, "vanilla", "generic"))


def test_a_pack_of_vanilla_settings_runs_no_search(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("vanilla settings must not search")

    monkeypatch.setattr(pack_mod, "packed_search", boom)
    packed = PackedTrainer([_cfg(1, "vanilla"), _cfg(2, "vanilla")], data=gaussian_dataset())
    assert all(math.isnan(r["mature"]) for recs in packed.run() for r in recs)


def test_a_failing_setting_is_isolated_and_the_others_equal_their_plain_runs():
    data = gaussian_dataset()
    bad = _cfg(5, lambda_class=1e39)  # overflows float32: every batch's loss is inf
    cfgs = [_cfg(1), bad, _cfg(3, "vanilla")]
    with pytest.raises(NonFiniteLossError):
        Trainer(bad, data=data).fit()
    packed = PackedTrainer(cfgs, data=data)
    epochs = list(packed.run())
    assert "non-finite" in epochs[0][1]["failed"]
    assert epochs[0][1]["skipped_batches"] == 12
    assert epochs[1][1] is None and epochs[2][1] is None
    assert packed.failed[1] is not None and "failed" in packed.state_dicts()[1]
    for k in (0, 2):
        plain = Trainer(cfgs[k], data=data)
        plain.fit()
        _assert_same(plain, packed, k)


def test_non_finite_batches_are_skipped_and_counted_like_the_plain_trainer():
    data = gaussian_dataset()
    data.X_train = data.X_train.clone()
    data.X_train[3, 0] = float("nan")  # poisons batch 0 (and sweeps that draw row 3)
    cfgs = [_cfg(1, "vanilla", epochs=2), _cfg(2, epochs=2)]
    packed = PackedTrainer(cfgs, data=data)
    packed.fit()
    for k, cfg in enumerate(cfgs):
        plain = Trainer(cfg, data=data)
        plain.fit()
        assert [r["skipped_batches"] for r in packed.histories[k]] == [
            r["skipped_batches"] for r in plain.history
        ]
        _assert_same(plain, packed, k)
