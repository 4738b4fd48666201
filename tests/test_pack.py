"""Packed training (ct_core.pack): K settings in one vectorised process reproduce K plain Trainer
runs, resume from Trainer-format checkpoints, reject incompatible settings and isolate failures."""

import functools
import math

import pytest
import torch

import ct_core.pack as pack_mod
from ct_core.config import parse_config
from ct_core.constraints import INCREASE, NONE, infer_domain
from ct_core.generators import REVISE, make_generator, search, train_vae
from ct_core.pack import PackedTrainer, can_pack, check_packable, pack_key
from ct_core.packed_search import PackedSearchSpec, packed_search, stacked_forward
from ct_core.training import NonFiniteLossError, Trainer
from tests.helpers import gaussian_dataset

TIME_KEYS = ("time_search", "time_train", "time_eval", "seconds")


def _cfg(
    seed=1,
    objective="full",
    gen="ecco",
    T=20,
    tau=0.75,
    epochs=3,
    optimizer="adam",
    g=None,
    ev=None,
    **tr,
):
    t = {
        "epochs": epochs,
        "nce": 120,
        "batch_size": 30,
        "device": "cpu",
        "objective": objective,
        "optimizer": optimizer,
    }
    t.update(tr)
    gen_cfg = {"type": gen, "T": T, "tau": tau, **(g or {})}
    return parse_config({"seed": seed, "train": t, "generator": gen_cfg, "evaluation": ev or {}})


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
    # REVISE packs only with REVISE (latent vs feature-space search) sharing one VAE
    revise = _cfg(gen="revise")
    assert can_pack(revise) and not can_pack(_cfg(gen="revise", shuffle=True))
    with pytest.raises(ValueError, match="generator.type 'ecco' vs 'revise'"):
        check_packable([a, revise])
    with pytest.raises(ValueError, match="generator.vae_latent differs"):
        check_packable([revise, _cfg(gen="revise", g={"vae_latent": 3})])
    check_packable(_revise_mix())  # objective, T, τ, λ_cost, step size, ε and seed may differ
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


# ---------------------------------------------------------------------------- REVISE packs


def _revise_mix(epochs=3):
    """Four REVISE settings sharing the VAE and differing in objective, T, τ, λ_cost, step size,
    ε, maturity rule, nce, burn-in, validation metrics and seed (train.lr 0.02 so that some
    searches converge)."""
    vae = {"vae_epochs": 20}
    kw = dict(gen="revise", epochs=epochs, lr=0.02)
    return [
        _cfg(1, "full", T=25, tau=0.6, g=vae, **kw),
        _cfg(2, "vanilla", g=vae, **kw),
        _cfg(
            3,
            "energy",
            T=30,
            tau=0.75,
            g={**vae, "lambda_cost": 0.01, "lr": 0.2},
            **kw,
            lambda_reg=0.3,
            epsilon=0.5,
            mature="converged_or_exhausted",
        ),
        _cfg(
            4,
            "full",
            T=40,
            tau=0.55,
            g=vae,
            nce=200,
            burnin=0.4,
            lambda_adv=0.5,
            **kw,
            eval_every=2,
            ev={"n_val_individuals": 20, "n_target_samples": 50},
        ),
    ]


def test_a_mixed_revise_pack_equals_the_plain_trainer_per_setting():
    # an increase-only feature: the decoded points are projected onto it (ct_core.generators)
    data = gaussian_dataset(n=600, d=2, mutability=torch.tensor([INCREASE, 0], dtype=torch.int8))
    cfgs = _revise_mix()
    packed = PackedTrainer(cfgs, data=data)
    epochs = list(packed.run())
    for k, cfg in enumerate(cfgs):
        plain = Trainer(cfg, data=data)
        plain.fit()
        _assert_same(plain, packed, k, atol=1e-6)  # mature / ce_steps to 1e-6: the same flags
        assert plain.generator.vae is packed.vae  # one VAE, the cached one
    last = epochs[-1]
    assert 0 < last[0]["mature"] < 1 and 0 < last[3]["mature"] < 1  # converged and exhausted rows
    assert all(math.isnan(recs[1]["mature"]) for recs in epochs)  # vanilla: no search
    assert math.isnan(epochs[0][3]["mature"])  # burn-in: round(0.4·3) = 1 epoch
    # validation metrics every 2 epochs and at the last one, as Trainer computes them
    assert ["val_implausibility" in recs[3] for recs in epochs] == [False, True, True]
    assert "val_implausibility" not in last[0]


@pytest.fixture(scope="module")
def search_problem():
    """Three confident stacked MLPs on two 3-D clusters, their targets and a VAE of the data."""
    g = torch.Generator().manual_seed(0)
    K, N, D = 3, 80, 3
    x0 = torch.randn(K, N, D, generator=g)
    x0[:, ::2] += 2.0  # two clusters for the VAE to learn
    torch.manual_seed(1)
    models = [
        torch.nn.Sequential(torch.nn.Linear(D, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        for _ in range(K)
    ]
    with torch.no_grad():  # confident models, so that some searches converge
        for p in (p for m in models for p in m.parameters()):
            p.mul_(3.0)
    with torch.no_grad():
        target = 1 - torch.stack([m(x) for m, x in zip(models, x0)]).argmax(-1)
    return x0, target, models, train_vae(x0.flatten(0, 1), epochs=30)


@pytest.mark.parametrize("compact", [0.0, 0.75, 1.0])
@pytest.mark.parametrize("family", ["latent", "feature"])
def test_packed_search_equals_search_per_setting(search_problem, family, compact):
    """Per-setting T, τ, λ's, step size and ε; padded rows; constraints; with and without
    compaction of the working block (which must not change any result)."""
    x0, target, models, vae = search_problem
    params = [torch.stack(p).detach() for p in zip(*(m.parameters() for m in models))]
    act = torch.nn.ReLU()
    domain = infer_domain(x0.flatten(0, 1))
    mut = torch.tensor([NONE, 0, INCREASE], dtype=torch.int8)
    types = ["revise"] * 3 if family == "latent" else ["ecco", "generic", "ecco"]
    gens = [
        {"T": 30, "tau": 0.6, "lambda_cost": 0.001, "lr": 0.1, "lambda_energy": 5.0},
        {"T": 40, "tau": 0.9, "lambda_cost": 0.0, "lr": 0.3},
        {"T": 12, "tau": 0.55, "lambda_cost": 0.05, "lr": 0.5, "energy_decay": False},
    ]
    cfgs = [
        parse_config({"generator": {"type": ty, **s}, "train": {"epsilon": eps}})
        for ty, s, eps in zip(types, gens, [0.3, 0.5, 1.0])
    ]
    valid = torch.ones(target.shape, dtype=torch.bool)
    valid[0, 60:] = False  # padding rows of a setting with fewer counterfactuals
    res = packed_search(
        lambda x, ks: stacked_forward([p if ks is None else p[ks] for p in params], x, act),
        x0,
        target,
        valid,
        PackedSearchSpec.from_configs(cfgs, torch.device("cpu")),
        domain=domain,
        mutability=mut,
        vae=vae if family == "latent" else None,
        compact=compact,
    )
    for k, c in enumerate(cfgs):
        n = int(valid[k].sum())
        gc = c.generator
        gen = REVISE(vae, gc.lambda_cost) if family == "latent" else make_generator(gc)
        ref = search(
            models[k], x0[k, :n], target[k, :n], gen, T=gc.T, tau=gc.tau, lr=gc.lr,
            domain=domain, mutability=mut, epsilon=c.train.epsilon,
        )  # fmt: skip
        assert torch.equal(res.converged[k, :n], ref.converged), k
        assert torch.equal(res.initially_valid[k, :n], ref.initially_valid), k
        assert torch.equal(res.steps[k, :n], ref.steps), k
        for name in ("x_cf", "x_ae", "p_target"):
            got, want = getattr(res, name)[k, :n], getattr(ref, name)
            assert torch.allclose(got, want, atol=1e-6), (k, name, (got - want).abs().max())
    assert res.converged[valid].any() and res.exhausted[valid].any()
    assert torch.equal(res.x_cf[..., 0], x0[..., 0]), "an immutable feature moved"
    assert (res.x_cf[..., 2] >= x0[..., 2]).all(), "an increase-only feature decreased"


# ---------------------------------------------------------------------------- validation metrics


def _val_mix(family: str, epochs: int = 3) -> list:
    """Settings with validation metrics due at different epochs (``eval_every`` 1 or 2, and at the
    last), differing ``evaluation`` sections (points, T, τ, λ's, constraints), a vanilla setting
    and one that fails in its first epoch."""
    gen = {"feature": ["ecco", "generic"], "latent": ["revise", "revise"]}[family]
    g = {"vae_epochs": 20} if family == "latent" else {}
    kw = dict(epochs=epochs, lr=0.01, g=g)
    return [
        _cfg(1, "full", gen[0], T=25, eval_every=1, ev={"tau": 0.6}, **kw),
        _cfg(2, "vanilla", gen[1], eval_every=2, ev={"tau": 0.7, "n_val_individuals": 30}, **kw),
        _cfg(
            3,
            "energy",
            gen[1],
            T=30,
            tau=0.9,
            eval_every=1,
            ev={"T": 20, "tau": 0.65, "lambda_energies": [2.0], "constrained": True},
            **kw,
        ),
        _cfg(4, "full", gen[0], lambda_class=1e39, eval_every=1, **kw),  # fails in epoch 1
        _cfg(5, "vanilla", gen[0], **kw),  # no validation metrics
    ]


@pytest.mark.parametrize("family", ["feature", "latent"])
def test_packed_validation_equals_per_setting_validation_metrics(monkeypatch, family):
    """One packed validation search per epoch gives each setting the metrics (and leaves its
    generator in the state) that validation_metrics per setting gives, so training after it is
    unchanged and still equals the plain Trainer; failed and vanilla settings included."""
    from ct_core import evaluation

    data = gaussian_dataset(n=600, d=2, mutability=torch.tensor([INCREASE, 0], dtype=torch.int8))
    cfgs = _val_mix(family)
    calls = {"packed": 0, "single": 0}
    packed_fn, single_fn = evaluation.packed_validation_metrics, evaluation.validation_metrics

    def count(name, fn):
        @functools.wraps(fn)  # keeps the signature (PackedTrainer looks for ``rng``)
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return wrapped

    monkeypatch.setattr(evaluation, "packed_validation_metrics", count("packed", packed_fn))
    monkeypatch.setattr(evaluation, "validation_metrics", count("single", single_fn))
    batched = PackedTrainer(cfgs, data=data)
    epochs = list(batched.run())
    assert calls == {"packed": 3, "single": 0}  # one packed search per epoch with metrics due
    per_setting = PackedTrainer(cfgs, data=data)
    per_setting.batch_validation = False
    list(per_setting.run())
    assert calls == {"packed": 3, "single": 8}  # settings 0, 1, 2: 3 + 2 + 3 epochs

    assert "non-finite" in epochs[0][3]["failed"] and "val_validity" not in epochs[0][3]
    assert ["val_validity" in recs[1] for recs in epochs] == [False, True, True]
    assert not any("val_validity" in recs[4] for recs in epochs)
    vals = [recs[k]["val_validity"] for recs in epochs for k in (0, 2)]
    assert max(vals) > 0 and any(not math.isnan(recs[0]["val_mmd"]) for recs in epochs)
    for k in range(len(cfgs)):
        # validation draws the same numbers: the rest of training is bitwise the same
        assert torch.equal(batched.flat[k], per_setting.flat[k]), k
        assert torch.equal(batched.rngs[k].get_state(), per_setting.rngs[k].get_state()), k
        for r, q in zip(batched.histories[k], per_setting.histories[k]):
            assert set(r) == set(q)
            for key in set(r) - set(TIME_KEYS) - {"failed"}:
                if math.isnan(q[key]):
                    assert math.isnan(r[key]), (k, r["epoch"], key)
                else:
                    assert r[key] == pytest.approx(q[key], abs=1e-5), (k, r["epoch"], key)
    for k in (0, 1, 2, 4):  # and the plain Trainer
        plain = Trainer(cfgs[k], data=data)
        plain.fit()
        _assert_same(plain, batched, k, atol=1e-5)


def test_packed_validation_metrics_of_stacked_models_equal_validation_metrics():
    """The ct_core.evaluation function itself, on three confident 3-class MLPs: per-setting
    evaluation sections (points, T, τ, λ's, step size, constraints), with and without
    compaction; each generator ends in the state validation_metrics leaves."""
    from ct_core.evaluation import packed_validation_metrics, validation_metrics

    data = gaussian_dataset(n=600, d=3, seed=5, mutability=torch.tensor([NONE, 0, INCREASE]))
    for split in ("train", "val", "test"):
        y = torch.arange(getattr(data, f"y_{split}").shape[0]) % 3
        setattr(data, f"y_{split}", y)
        setattr(data, f"X_{split}", getattr(data, f"X_{split}") + 2.0 * y[:, None].float())
    data.n_classes = 3
    torch.manual_seed(0)
    models = [
        torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        for _ in range(3)
    ]
    with torch.no_grad():
        for p in (p for m in models for p in m.parameters()):
            p.mul_(3.0)
    params = [torch.stack(p).detach() for p in zip(*(m.parameters() for m in models))]
    act = torch.nn.ReLU()
    cfgs = [
        _cfg(1, ev={"tau": 0.7, "n_val_individuals": 50}),
        _cfg(2, ev={"T": 20, "tau": 0.8, "lambda_cost": 0.01, "constrained": True}),
        _cfg(3, "vanilla", "generic", g={"lr": 0.3}, ev={"lambda_energies": [], "tau": 0.6}),
    ]
    want, want_states = [], []
    for m, c in zip(models, cfgs):
        g = torch.Generator().manual_seed(c.seed)
        want.append(validation_metrics(m, data, c, rng=g))
        want_states.append(g.get_state())
    assert all(w["val_validity"] > 0 for w in want)
    for compact in (0.0, 0.75):
        rngs = [torch.Generator().manual_seed(c.seed) for c in cfgs]
        got = packed_validation_metrics(
            lambda x, ks: stacked_forward([p if ks is None else p[ks] for p in params], x, act),
            data,
            cfgs,
            rngs,
            compact=compact,
        )
        for k, (w, r) in enumerate(zip(want, got)):
            assert set(w) == set(r)
            for key in w:
                assert r[key] == pytest.approx(w[key], abs=1e-5, nan_ok=True), (k, key)
            assert torch.equal(rngs[k].get_state(), want_states[k]), k
