"""Packs (ct_core.training.PackTrainer): K settings trained as one computation give each setting
what it gets trained alone (a pack of one, ``Trainer``), for every generator (Generic, ECCo,
REVISE, one defined in this file) and model (MLP, LeNet, a user's residual network); they resume
from checkpoints, reject settings that cannot share a pack and isolate failures."""

import math
from pathlib import Path

import pytest
import torch

from ct_core.config import parse_config
from ct_core.constraints import INCREASE, NONE, infer_domain
from ct_core.generators import REVISE, make_generator, register_generator, search, train_vae
from ct_core.generators import unregister_generator as _unregister
from ct_core.packability import check_packable, pack_key
from ct_core.stack import ModelStack
from ct_core.training import NonFiniteLossError, PackTrainer, Trainer
from tests.helpers import gaussian_dataset

TIME_KEYS = ("time_search", "time_train", "time_eval", "seconds")
USER_MODELS = Path(__file__).parent / "user_models"


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
    model=None,
    data=None,
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
    raw = {"seed": seed, "train": t, "generator": gen_cfg, "evaluation": ev or {}}
    raw.update({k: v for k, v in (("model", model), ("data", data)) if v is not None})
    return parse_config(raw)


def _mixed(optimizer="adam", epochs=3):
    """Four settings differing in objective, generator, T, τ, λ's, nce, burn-in and seed."""
    kw = dict(optimizer=optimizer, epochs=epochs)
    return [
        _cfg(1, "full", "ecco", T=25, tau=0.75, **kw),
        _cfg(2, "vanilla", **kw),
        _cfg(3, "energy", "generic", T=30, tau=0.9, lambda_reg=0.3, **kw),
        _cfg(4, "full", "ecco", T=50, tau=0.6, nce=200, burnin=0.4, lambda_adv=0.5, **kw),
    ]


def _assert_same(plain: Trainer, packed: PackTrainer, k: int, atol=1e-5):
    for name, v in plain.model.state_dict().items():
        p = packed.models()[k].state_dict()[name]
        assert torch.allclose(v, p, atol=atol), (k, name, (v - p).abs().max())
    assert len(plain.history) == len(packed.histories[k])
    for r, q in zip(plain.history, packed.histories[k]):
        assert set(r) == set(q)
        for key in set(r) - set(TIME_KEYS) - {"failed"}:
            if math.isnan(r[key]):
                assert math.isnan(q[key]), (k, key)
            else:
                assert q[key] == pytest.approx(r[key], abs=atol), (k, r["epoch"], key)


def _alone(cfg, data, **kw) -> Trainer:
    plain = Trainer(cfg, data=data, **kw)
    plain.fit()
    return plain


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_pack_of_mixed_settings_equals_each_setting_trained_alone(optimizer):
    data = gaussian_dataset(n=600, d=2)
    cfgs = _mixed(optimizer)
    packed = PackTrainer(cfgs, data=data)
    epochs = list(packed.run())
    assert len(epochs) == 3 and all(len(recs) == 4 for recs in epochs)
    for k, cfg in enumerate(cfgs):
        _assert_same(_alone(cfg, data), packed, k)
    # vanilla never searched, the burn-in setting only after round(0.4·3) = 1 epoch
    assert all(math.isnan(recs[1]["mature"]) for recs in epochs)
    assert [math.isnan(recs[3]["mature"]) for recs in epochs] == [True, False, False]


def test_three_class_data_amsgrad_and_shuffled_batches_also_match():
    data = gaussian_dataset(n=600, d=3, seed=5)
    data.y_train = torch.arange(data.y_train.shape[0]) % 3
    data.X_train = data.X_train + data.y_train[:, None].float()
    data.y_val = torch.arange(data.y_val.shape[0]) % 3
    data.n_classes = 3
    cfgs = [
        _cfg(7, optimizer="amsgrad", shuffle=True),
        _cfg(8, "adversarial", "generic", optimizer="amsgrad"),
        _cfg(9, "vanilla", optimizer="amsgrad", shuffle=True),
    ]
    packed = PackTrainer(cfgs, data=data)
    packed.fit()
    for k, cfg in enumerate(cfgs):
        _assert_same(_alone(cfg, data), packed, k)


def test_resume_from_state_dicts_equals_uninterrupted_training_packed_and_alone():
    data = gaussian_dataset()
    cfgs = _mixed(epochs=4)
    full = PackTrainer(cfgs, data=data)
    full.fit()
    first = PackTrainer(cfgs, data=data)
    for recs in first.run():
        if recs[0]["epoch"] == 2:
            break
    states = first.state_dicts()
    assert all(s["epoch"] == 2 for s in states)
    second = PackTrainer(cfgs, data=data, checkpoints=states)
    second.fit()
    for a, b in zip(full.state_dicts(), second.state_dicts()):
        for name in a["model"]:
            assert torch.equal(a["model"][name], b["model"][name])
        strip = [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in a["history"]]
        assert strip == [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in b["history"]]
    # a setting's checkpoint from a pack continues alone, and the other way round
    for k in (0, 3):
        plain = _alone(cfgs[k], data, checkpoint=states[k])
        _assert_same(plain, full, k)
    alone = Trainer(cfgs[0], data=data)
    for rec in alone.run():
        if rec["epoch"] == 2:
            break
    rejoined = PackTrainer(cfgs, data=data, checkpoints=[alone.state_dict(), *states[1:]])
    rejoined.fit()
    _assert_same(_alone(cfgs[0], data), rejoined, 0)


def test_models_are_ordinary_modules_with_the_packed_predictions():
    data = gaussian_dataset()
    packed = PackTrainer(_mixed(epochs=1), data=data)
    packed.fit()
    with torch.no_grad():
        stacked = packed.stack(data.X_val)
    for k, m in enumerate(packed.models()):
        assert isinstance(m, torch.nn.Sequential) and not m.training
        assert torch.allclose(m(data.X_val), stacked[k], atol=1e-6)


def test_incompatible_settings_are_rejected_naming_the_field():
    a = _cfg()
    with pytest.raises(ValueError, match="train.lr differs"):
        check_packable([a, _cfg(lr=0.01)])
    with pytest.raises(ValueError, match="train.batch_size differs"):
        PackTrainer([a, _cfg(batch_size=20)], data=gaussian_dataset())
    b = parse_config({"model": {"hidden": [16]}, "train": {"device": "cpu", "epochs": 3}})
    with pytest.raises(ValueError, match="model.hidden differs"):
        check_packable([a, b])
    # REVISE packs only with REVISE (latent vs feature-space search) sharing one VAE
    revise = _cfg(gen="revise")
    with pytest.raises(ValueError, match="generator.type 'ecco' vs 'revise'"):
        check_packable([a, revise])
    with pytest.raises(ValueError, match="generator.vae_latent differs"):
        check_packable([revise, _cfg(gen="revise", g={"vae_latent": 3})])
    check_packable(_revise_mix())  # objective, T, τ, λ_cost, step size, ε and seed may differ
    # what may differ does not enter the key: generator type within feature space, shuffling
    assert pack_key(a) == pack_key(_mixed()[3]) == pack_key(_cfg(9, "vanilla", "generic"))
    assert pack_key(a) == pack_key(_cfg(shuffle=True))


def test_a_pack_of_vanilla_settings_runs_no_search(monkeypatch):
    import ct_core.counterfactuals as cf

    def boom(*a, **k):
        raise AssertionError("vanilla settings must not search")

    monkeypatch.setattr(cf, "search", boom)
    packed = PackTrainer([_cfg(1, "vanilla"), _cfg(2, "vanilla")], data=gaussian_dataset())
    assert all(math.isnan(r["mature"]) for recs in packed.run() for r in recs)


def test_a_failing_setting_is_isolated_and_the_others_equal_their_runs_alone():
    data = gaussian_dataset()
    bad = _cfg(5, lambda_class=1e39)  # overflows float32: every batch's loss is inf
    cfgs = [_cfg(1), bad, _cfg(3, "vanilla")]
    with pytest.raises(NonFiniteLossError):
        Trainer(bad, data=data).fit()
    packed = PackTrainer(cfgs, data=data)
    epochs = list(packed.run())
    assert "non-finite" in epochs[0][1]["failed"]
    assert epochs[0][1]["skipped_batches"] == 12
    assert epochs[1][1] is None and epochs[2][1] is None
    assert packed.failed[1] is not None and "failed" in packed.state_dicts()[1]
    for k in (0, 2):
        _assert_same(_alone(cfgs[k], data), packed, k)


def test_non_finite_batches_are_skipped_and_counted_as_alone():
    data = gaussian_dataset()
    data.X_train = data.X_train.clone()
    data.X_train[3, 0] = float("nan")  # poisons batch 0 (and sweeps that draw row 3)
    cfgs = [_cfg(1, "vanilla", epochs=2), _cfg(2, epochs=2)]
    packed = PackTrainer(cfgs, data=data)
    packed.fit()
    for k, cfg in enumerate(cfgs):
        plain = _alone(cfg, data)
        assert [r["skipped_batches"] for r in packed.histories[k]] == [
            r["skipped_batches"] for r in plain.history
        ]
        _assert_same(plain, packed, k)


# ---------------------------------------------------------------------------- generators


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


def test_a_mixed_revise_pack_equals_each_setting_trained_alone():
    # an increase-only feature: the decoded points are projected onto it
    data = gaussian_dataset(n=600, d=2, mutability=torch.tensor([INCREASE, 0], dtype=torch.int8))
    cfgs = _revise_mix()
    packed = PackTrainer(cfgs, data=data)
    epochs = list(packed.run())
    for k, cfg in enumerate(cfgs):
        plain = _alone(cfg, data)
        _assert_same(plain, packed, k, atol=1e-6)  # mature / ce_steps to 1e-6: the same flags
        assert plain.generator.vae is packed.generator.vae  # one VAE, the cached one
    last = epochs[-1]
    assert 0 < last[0]["mature"] < 1 and 0 < last[3]["mature"] < 1  # converged and exhausted rows
    assert all(math.isnan(recs[1]["mature"]) for recs in epochs)  # vanilla: no search
    assert math.isnan(epochs[0][3]["mature"])  # burn-in: round(0.4·3) = 1 epoch
    # validation metrics every 2 epochs and at the last one
    assert ["val_implausibility" in recs[3] for recs in epochs] == [False, True, True]
    assert "val_implausibility" not in last[0]


@pytest.fixture
def squared_cost():
    """A generator defined here, as a user would: a penalty function and a registration."""

    @register_generator("squared_cost")
    def squared(x, x0, logits, target, t, w):
        return w["lambda_cost"] * (x - x0).square().sum(-1)

    yield "squared_cost"
    _unregister("squared_cost")


def test_a_generator_defined_in_a_test_file_trains_the_same_packed_and_alone(squared_cost):
    """It packs with the other feature-space generators (each setting its own penalty)."""
    data = gaussian_dataset()
    cfgs = [
        _cfg(1, gen=squared_cost, g={"lambda_cost": 0.05}),
        _cfg(2, gen="ecco"),
        _cfg(3, gen=squared_cost, g={"lambda_cost": 0.2}, tau=0.6),
    ]
    packed = PackTrainer(cfgs, data=data)
    packed.fit()
    for k, cfg in enumerate(cfgs):
        _assert_same(_alone(cfg, data), packed, k)
    # its penalty is what the search minimises: a large weight keeps every search at its factual
    free, held = (_cfg(1, gen=squared_cost, g={"lambda_cost": lam}, tau=0.6) for lam in (0.0, 1.0))
    weights = PackTrainer([free, held], data=data)
    weights.fit()
    matured = [sum(r["mature"] for r in h) for h in weights.histories]
    assert matured[0] > 0 and matured[1] == 0


# ---------------------------------------------------------------------------- models


def test_lenet_packs_on_mnist_and_equals_each_setting_trained_alone():
    from ct_core.data import load_dataset

    small = {"name": "mnist", "n_train": 120, "n_val": 40, "n_test": 40}
    kw = dict(model={"type": "lenet"}, data=small, epochs=2, nce=40, batch_size=60, T=5)
    cfgs = [_cfg(1, tau=0.6, **kw), _cfg(2, "vanilla", **kw), _cfg(3, gen="generic", **kw)]
    data = load_dataset(cfgs[0].data)
    packed = PackTrainer(cfgs, data=data)
    packed.fit()
    for k, cfg in enumerate(cfgs):
        _assert_same(_alone(cfg, data), packed, k, atol=1e-4)


@pytest.fixture
def user_models(monkeypatch):
    monkeypatch.syspath_prepend(str(USER_MODELS))
    import ct_test_models

    return ct_test_models


def test_a_users_residual_network_packs_from_its_factory_and_as_given_modules(user_models):
    data = gaussian_dataset(n=300, d=3)
    factory = {"factory": "ct_test_models:residual_mlp"}
    cfgs = [_cfg(1, model=factory), _cfg(2, "vanilla", model=factory), _cfg(3, model=factory)]
    packed = PackTrainer(cfgs, data=data)
    packed.fit()
    for k, cfg in enumerate(cfgs):
        _assert_same(_alone(cfg, data), packed, k)
    # the factory is called under each setting's seed: the same initial weights as a module
    # built the same way and handed to the trainer, which trains that very module
    mine = []
    with torch.random.fork_rng():
        for c in cfgs:
            torch.manual_seed(c.seed)
            mine.append(user_models.residual_mlp(n_features=3, n_classes=2))
    given = PackTrainer(cfgs, data=data, models=mine)
    trained = given.fit()
    assert all(a is b for a, b in zip(trained, mine))
    for k in range(3):
        for name, v in packed.models()[k].state_dict().items():
            assert torch.allclose(v, mine[k].state_dict()[name], atol=1e-6), name


def test_a_model_with_batch_norm_is_rejected_with_the_reason():
    bn = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="BatchNorm1d at '1'.*LayerNorm"):
        ModelStack([bn])


# ---------------------------------------------------------------------------- the search


@pytest.fixture(scope="module")
def search_problem():
    """Three confident MLPs on two 3-D clusters, their targets and a VAE of the data."""
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
def test_a_search_of_k_settings_equals_each_settings_search_alone(search_problem, family, compact):
    """Per-setting T, τ, λ's, step size and ε; padded rows; constraints; with and without
    compaction of the working block (which must not change any result)."""
    x0, target, models, vae = search_problem
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
    gcs = [c.generator for c in cfgs]
    valid = torch.ones(target.shape, dtype=torch.bool)
    valid[0, 60:] = False  # padding rows of a setting with fewer counterfactuals
    if family == "latent":
        pack_gen = REVISE(vae, [g.lambda_cost for g in gcs])
    else:
        pack_gen = make_generator(gcs)
    res = search(
        ModelStack(models),
        x0,
        target,
        pack_gen,
        T=[g.T for g in gcs],
        tau=[g.tau for g in gcs],
        lr=[g.lr for g in gcs],
        valid=valid,
        domain=domain,
        mutability=mut,
        epsilon=[c.train.epsilon for c in cfgs],
        compact=compact,
    )
    for k, (c, gc) in enumerate(zip(cfgs, gcs)):
        n = int(valid[k].sum())
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


def test_validation_metrics_of_a_pack_equal_those_of_each_model_alone():
    """Three confident 3-class MLPs with per-setting evaluation sections (points, T, τ, λ's,
    step size, constraints), with and without compaction; each generator ends in the state the
    single-model call leaves."""
    from ct_core.evaluation import pack_validation_metrics, validation_metrics

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
        got = pack_validation_metrics(ModelStack(models), data, cfgs, rngs, compact=compact)
        for k, (w, r) in enumerate(zip(want, got)):
            assert set(w) == set(r)
            for key in w:
                assert r[key] == pytest.approx(w[key], abs=1e-5, nan_ok=True), (k, key)
            assert torch.equal(rngs[k].get_state(), want_states[k]), k
