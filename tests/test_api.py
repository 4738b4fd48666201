"""The Python API (docs/python-api.md): ``ct_core.load_config`` and ``ct_core.train`` with their
result, callbacks and files; a user's model given directly or by ``model.factory`` (and the
errors a bad factory gives ``ct train`` and ``ct-sweep run --dry-run``); generators by import
path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import ct_core
from tests.helpers import gaussian_dataset

ROOT = Path(__file__).resolve().parents[1]
MOONS = str(ROOT / "configs" / "base" / "moons.yaml")
USER_MODELS = Path(__file__).parent / "user_models"
TINY = [
    "data.n_train=200",
    "data.n_val=60",
    "data.n_test=60",
    "train.epochs=3",
    "train.nce=40",
    "train.batch_size=50",
    "generator.T=10",
]


@pytest.fixture
def user_models(monkeypatch):
    monkeypatch.syspath_prepend(str(USER_MODELS))
    import ct_test_models

    return ct_test_models


def test_importing_ct_core_loads_no_torch():
    code = "import sys, ct_core; ct_core.load_config({}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_config_takes_a_file_or_a_dict_with_overrides():
    a = ct_core.load_config(MOONS, overrides=["train.epochs=7", "generator.tau=0.9"])
    raw = yaml.safe_load(Path(MOONS).read_text())
    b = ct_core.load_config(raw, overrides={"train.epochs": 7, "generator.tau": 0.9})
    assert a == b and a.train.epochs == 7
    with pytest.raises(ct_core.ConfigError, match="generator.tau"):
        ct_core.load_config(raw, overrides=["generator.tau=2"])


def test_train_returns_the_model_history_and_metrics_and_saves_what_ct_train_writes(tmp_path):
    from ct_core.cli import main

    cfg = ct_core.load_config(MOONS, TINY)
    result = ct_core.train(cfg)
    assert isinstance(result.model, torch.nn.Module) and not result.model.training
    assert list(result.history["epoch"]) == [1, 2, 3]
    assert {"loss", "div", "val_acc", "mature"} <= set(result.history.columns)
    assert 0 <= result.metrics["test_acc"] <= 1 and result.metrics["epochs"] == 3
    saved = result.save(tmp_path / "api")
    assert main(["train", MOONS, *sum((["--set", s] for s in TINY), []), "--out",
                 str(tmp_path / "cli"), "--quiet"]) == 0  # fmt: skip
    files = {"config.yaml", "model.pt", "history.csv", "metrics.json", "checkpoint.pt"}
    files.add("encoder.json")  # moons' columns x1, x2 (MNIST alone has none)
    assert {p.name for p in saved.iterdir()} == files
    assert {p.name for p in (tmp_path / "cli").iterdir()} == files
    # the same training: the same weights and the same history (but for its timings)
    from ct_core.models import load_model

    a, _ = load_model(saved)
    b, _ = load_model(tmp_path / "cli")
    for (n, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), n
    cli_metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert set(cli_metrics) == set(result.metrics)
    assert cli_metrics["test_acc"] == result.metrics["test_acc"]


def test_a_callback_sees_every_epoch_and_returning_true_stops_training():
    cfg = ct_core.load_config(MOONS, [*TINY, "train.epochs=10"])
    seen = []

    def watch(record, trainer):
        seen.append((record["epoch"], trainer.epoch))

    def stop_at_4(record, trainer):
        return record["epoch"] >= 4

    result = ct_core.train(cfg, callbacks=[stop_at_4, watch])
    assert seen == [(1.0, 1), (2.0, 2), (3.0, 3), (4.0, 4)]  # every callback ran, also at 4
    assert len(result.history) == 4 and result.checkpoint["epoch"] == 4
    rest = ct_core.train(cfg, checkpoint=result.checkpoint)
    assert list(rest.history["epoch"]) == list(range(1, 11))
    full = ct_core.train(cfg)
    for v, w in zip(rest.model.state_dict().values(), full.model.state_dict().values()):
        assert torch.equal(v, w)


def test_a_users_module_is_trained_in_place_and_equals_its_factory_run(user_models):
    data = gaussian_dataset(n=300, d=3)
    cfg = ct_core.load_config(
        {"seed": 4, "model": {"factory": "ct_test_models:residual_mlp"}},
        ["train.epochs=2", *TINY[4:]],
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        net = user_models.residual_mlp(n_features=3, n_classes=2)
    given = ct_core.train(cfg, model=net, data=data)
    assert given.model is net
    by_factory = ct_core.train(cfg, data=data)
    assert isinstance(by_factory.model, user_models.ResidualMLP)
    for v, w in zip(net.state_dict().values(), by_factory.model.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6)


def test_a_saved_factory_model_loads_by_importing_its_factory(user_models, tmp_path):
    from ct_core.models import load_model

    cfg = ct_core.load_config(MOONS, [*TINY, "model.factory=ct_test_models:residual_mlp"])
    result = ct_core.train(cfg)
    model, loaded_cfg = load_model(result.save(tmp_path))
    assert isinstance(model, user_models.ResidualMLP) and loaded_cfg == cfg
    x = result.data.X_test
    assert torch.equal(model(x), result.model(x))


@pytest.mark.parametrize(
    ("factory", "words"),
    [
        ("ct_no_such_module:net", "cannot be imported"),
        ("ct_test_models:no_such_function", "cannot be imported"),
        ("ct_test_models:NOT_CALLABLE", "is not callable"),
        ("ct_test_models:not_a_module", "returned a dict, not a torch.nn.Module"),
        ("ct_test_models:wrong_shape", "(2, 3)"),
        ("ct_test_models:with_batchnorm", "BatchNorm1d"),
        ("not a path", "must be 'package.module:function'"),
    ],
)
def test_a_bad_factory_is_one_error_naming_model_factory_before_training(
    user_models, tmp_path, capsys, factory, words
):
    from ct_core.cli import main as ct
    from ct_sweeps.cli import main as ct_sweep

    sets = sum((["--set", s] for s in [*TINY, f"model.factory={factory}"]), [])
    assert ct(["train", MOONS, *sets, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: model.factory") and words in err[0], err
    assert not (tmp_path / "out" / "history.csv").exists()

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "factory",
                "base": MOONS,
                "overrides": {**_dotted(TINY), "model.factory": factory},
                "search": {"algorithm": "grid", "metric": "val_acc", "mode": "max"},
                "space": {"seed": [1, 2]},
            }
        )
    )
    assert ct_sweep(["run", str(sweep), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(e.startswith("error: ") and "model.factory" in e and words in e for e in err), err


def _dotted(sets: list[str]) -> dict:
    return {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)}


def test_a_generator_named_by_import_path_validates_and_trains(user_models):
    from ct_core.generators import generator_info

    cfg = ct_core.load_config(MOONS, [*TINY, "generator.type=ct_test_models:squared_cost"])
    assert generator_info(cfg.generator.type).family == "feature"
    result = ct_core.train(cfg)
    assert result.history["ce_steps"].notna().all()
    with pytest.raises(ct_core.ConfigError, match="generator.type 'ct_test_models:nope'"):
        ct_core.load_config(MOONS, ["generator.type=ct_test_models:nope"])
