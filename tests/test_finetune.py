"""Fine-tuning: training starts from an existing model's weights, given as a ct ``model.pt`` or
run directory, or an MLflow ``runs:/`` or ``models:/`` URI (a real sqlite store in tmp); the
source must fit the data and the config's model; burn-in applies; a sweep's ``init:`` starts every
setting of every pack from the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ct_core
from ct_core.cli import main
from ct_core.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
MOONS = ROOT / "configs" / "base" / "moons.yaml"
TINY = [
    "data.n_train=200",
    "data.n_val=50",
    "data.n_test=50",
    "train.epochs=2",
    "train.nce=50",
    "train.batch_size=50",
    "generator.T=5",
]


def cfg(*more: str):
    return load_config(MOONS, [*TINY, *more])


def same(a: torch.nn.Module, b: torch.nn.Module | dict, atol: float = 0.0) -> bool:
    sb = b if isinstance(b, dict) else b.state_dict()
    return all(torch.allclose(v, sb[k], atol=atol) for k, v in a.state_dict().items())


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A vanilla moons model saved as `ct train` saves it (seed 7, so not the default init)."""
    out = tmp_path_factory.mktemp("source") / "run"
    ct_core.train(cfg("seed=7", "train.objective=vanilla")).save(out)
    return out


@pytest.mark.parametrize("form", ["dir", "file"])
def test_training_starts_from_the_sources_weights(source, form):
    src = source if form == "dir" else source / "model.pt"
    still = ct_core.train(cfg("train.lr=1e-12"), model=str(src))  # Adam moves weights by ~lr
    saved, _ = ct_core.load_model(source)
    assert same(still.model, saved, atol=1e-6)
    assert not same(ct_core.train(cfg("train.lr=1e-12")).model, saved, atol=1e-3)
    assert still.metrics["init"] == str(src)


def test_burn_in_trains_the_source_conventionally_first(source):
    result = ct_core.train(cfg("train.epochs=4", "train.burnin=0.5"), model=source)
    mature = result.history["mature"].tolist()
    assert all(m != m for m in mature[:2]) and all(m == m for m in mature[2:])  # NaN: no CEs


def test_a_source_of_another_shape_or_architecture_is_a_clear_error(source, tmp_path):
    with pytest.raises(
        ConfigError, match=r"init .*trained on 2 features and 2 classes, the data has 10"
    ):
        ct_core.train(load_config({"data": {"name": "gaussm", "n_train": 100}}), model=source)
    with pytest.raises(ConfigError, match=r"weights do not fit .*mlp, hidden \[8\].*0.weight"):
        ct_core.train(cfg("model.hidden=[8]"), model=source)
    with pytest.raises(ConfigError, match="no such model file"):
        ct_core.train(cfg(), model=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match=r"no model source for s3:/ URIs .*known: models, runs"):
        ct_core.train(cfg(), model="s3://bucket/model.pt")


def test_ct_train_init_writes_the_run_and_names_its_source(source, tmp_path, capsys):
    conf = tmp_path / "moons.yaml"
    conf.write_text(yaml.safe_dump(cfg().to_dict()))
    out = tmp_path / "tuned"
    assert main(["train", str(conf), "--init", str(source), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["init"] == str(source)
    bad = tmp_path / "bad"
    code = main(["train", str(conf), "--set", "model.hidden=[4]", "--init", str(source),
                 "--out", str(bad), "--quiet"])  # fmt: skip
    assert code == 2 and not bad.exists()
    assert "error: init" in capsys.readouterr().err


@pytest.mark.integration
def test_mlflow_runs_and_registered_models_are_sources(source, tmp_path, monkeypatch):
    import mlflow
    import mlflow.pytorch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    saved, _ = ct_core.load_model(source)
    mlflow.set_experiment("finetune")
    with mlflow.start_run() as run:  # logged as ct's sweeps log models (an exported graph)
        info = mlflow.pytorch.log_model(
            saved,
            name="model",
            input_example=np.zeros((2, 2), dtype=np.float32),
            pip_requirements=["torch"],
            registered_model_name="moons-bl",
        )
    mlflow.MlflowClient().set_registered_model_alias(
        "moons-bl", "best", info.registered_model_version
    )
    for uri in (f"runs:/{run.info.run_id}/model", "models:/moons-bl@best"):
        still = ct_core.train(cfg("train.lr=1e-12"), model=uri)
        assert same(still.model, saved, atol=1e-6), uri
    with pytest.raises(ConfigError, match="init 'models:/moons-bl@nope'"):
        ct_core.train(cfg(), model="models:/moons-bl@nope")


@pytest.mark.integration
def test_a_sweep_with_init_starts_every_setting_from_the_source(source, tmp_path):
    """A real `ct-sweep run` (its own process and Ray) of two settings packed in one trial,
    both fine-tuned from ``source``: each equals that setting fine-tuned alone."""
    from ct_core.models import load_model

    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "finetune",
                "base": str(MOONS),
                "init": os.path.relpath(source, tmp_path),  # relative to the sweep file
                "overrides": dict(t.split("=") for t in TINY),
                "search": {"algorithm": "grid", "pack": 2},
                "space": {"train.lambda_reg": [0.1, 0.5]},
                "tracking": {"enabled": False},
            }
        )
    )
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "ct_sweeps.cli", "run", str(sweep), "--storage", str(run_dir)]
    env = {**os.environ, "CT_SWEEP_VERBOSE": "0"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["n_packs"] == 1
    assert (run_dir / "init.pt").is_file()
    files = sorted(run_dir.glob("tune/trial_*/checkpoint_*/model_*.pt"))
    assert len(files) == 2
    for f in files:
        swept, setting = load_model(f)
        alone = ct_core.train(setting, model=source).model
        assert same(swept, alone, atol=1e-5), f.name


def test_a_bad_init_in_a_sweep_fails_before_ray_starts(tmp_path, capsys):
    from ct_sweeps.cli import main as sweep_main

    sweep = tmp_path / "s.yaml"
    doc = {"name": "x", "base": str(MOONS), "init": "missing/run", "space": {"seed": [1, 2]}}
    sweep.write_text(yaml.safe_dump(doc))
    assert sweep_main(["run", str(sweep), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "error: init: init '" in err and "missing/run" in err and "no such model file" in err
    ray = sys.modules.get("ray")  # other tests of the session may have imported it
    assert ray is None or not ray.is_initialized()
