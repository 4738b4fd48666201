"""The paper's final models (``configs/paper/final/``) and ``scripts/reproduce.py``, which trains
and compares them.

The expected values are the paper's appendix table "Final hyperparameters" (everything else at
the defaults) and its protected features (docs/results.md, Table 1: synthetic x1, Adult age, CH
HouseAge, Credit AGE, GMSC age; MNIST the top and bottom 5 image rows). ``reproduce.py`` runs
once, for moons with two epochs and two protocol runs; its summary must hold the metrics of each
variant computed from the models it trained, CT against vanilla and not the other way round.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ct_sweeps.plan import plan

ROOT = Path(__file__).resolve().parents[1]
FINAL = ROOT / "configs" / "paper" / "final"
# dataset: (τ for training, λ_reg, nce); the paper's appendix table "Final hyperparameters"
PAPER_FINAL = {
    "lin_sep": (0.5, 0.01, 1000),
    "circles": (0.5, 0.5, 1000),
    "moons": (0.9, 0.25, 1000),
    "over": (0.5, 0.25, 1000),
    "adult": (0.75, 0.25, 5000),
    "california": (0.5, 0.25, 5000),
    "credit": (0.5, 0.25, 5000),
    "gmsc": (0.5, 0.5, 5000),
    "mnist": (0.5, 0.01, 5000),
}
PROTECTED = {"adult": "age", "california": "houseage", "credit": "age", "gmsc": "age"}
PROTECTED.update({ds: "x1" for ds in ("lin_sep", "circles", "moons", "over")})
MNIST_ROWS = [*range(5), *range(23, 28)]


def objectives(p) -> list[str]:
    assert [e.key for e in p.space.entries] == ["train.objective"]
    return list(p.space["train.objective"].args)


def test_the_final_configs_are_exactly_the_papers_three_families():
    names = {f.stem for f in FINAL.glob("*.yaml")}
    assert names == {
        f"{v}{ds}{m}"
        for ds in PAPER_FINAL
        for v, m in (("", ""), ("", "_mutability"), ("ablation_", ""))
    }


@pytest.mark.parametrize("dataset", PAPER_FINAL)
def test_the_final_models_train_with_the_papers_hyperparameters(dataset):
    tau, lambda_reg, nce = PAPER_FINAL[dataset]
    plain = plan(FINAL / f"{dataset}.yaml")
    cost = plan(FINAL / f"{dataset}_mutability.yaml")
    ablation = plan(FINAL / f"ablation_{dataset}.yaml")
    for p in (plain, cost, ablation):
        cfg = p.base_cfg
        assert cfg.data.name == dataset
        assert (cfg.generator.tau, cfg.train.lambda_reg, cfg.train.nce) == (tau, lambda_reg, nce)
        assert (cfg.train.lambda_div, cfg.train.lambda_adv, cfg.train.epochs) == (0.5, 0.25, 100)
        assert cfg.model.type == "mlp" and cfg.generator.type == "ecco"
    if dataset == "mnist":
        assert tuple(plain.base_cfg.data.domain) == (-1.0, 1.0)
    assert objectives(plain) == objectives(cost) == ["full", "vanilla"]
    assert objectives(ablation) == ["full", "energy", "adversarial", "vanilla"]
    # IP and IP*: no constraint; cost: the protected feature immutable, in training and search
    assert plain.base_cfg.data.immutable == [] and not plain.base_cfg.evaluation.constrained
    assert ablation.base_cfg.to_dict() == plain.base_cfg.to_dict()
    assert cost.base_cfg.data.immutable and cost.base_cfg.evaluation.constrained
    a, b = plain.base_cfg.to_dict(), cost.base_cfg.to_dict()
    for d in (a, b):
        d["data"].pop("immutable"), d["evaluation"].pop("constrained")
    assert a == b, "the cost models differ from the plain ones in more than the constraint"


@pytest.mark.parametrize("dataset", PAPER_FINAL)
def test_the_cost_models_protect_the_papers_feature(dataset):
    from ct_core.data import load_dataset

    cfg = plan(FINAL / f"{dataset}_mutability.yaml").base_cfg
    if dataset == "mnist":
        assert cfg.data.immutable == [r * 28 + c for r in MNIST_ROWS for c in range(28)]
        return
    (i,) = cfg.data.immutable
    assert load_dataset(cfg.data).feature_names[i].lower() == PROTECTED[dataset]


# ---------------------------------------------------------------------------------------------
# scripts/reproduce.py --table main


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    cmd = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--table", "main"]
    cmd += ["--datasets", "moons", "--trainer", "local", "--jobs", "2", "--epochs", "2"]
    cmd += ["--runs", "2", "--individuals", "4", "--ig-rounds", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_reproduce_trains_each_variant_from_its_final_config(reproduced):
    from ct_core.models import load_model

    for variant, immutable in (("moons", []), ("moons_mutability", [0])):
        for objective in ("full", "vanilla"):
            _, cfg = load_model(reproduced / variant / "models" / objective / "model.pt")
            assert cfg.train.objective == objective
            assert cfg.data.immutable == immutable
            assert (cfg.generator.tau, cfg.train.lambda_reg) == PAPER_FINAL["moons"][:2]
            assert cfg.train.epochs == 2


def test_reproduce_reports_ct_against_vanilla_from_the_models_it_trained(reproduced):
    from ct_core.comparison import compare
    from ct_core.data import load_dataset
    from ct_core.evaluation import accuracy, predict
    from ct_core.models import load_model

    summary = pd.read_csv(reproduced / "main.csv")
    assert set(summary["dataset"]) == {"Moon"} and set(summary["model"]) == {"full"}
    plain_metrics = {"IP", "IP*", "Cost (unconstrained)", "Validity"}
    cost_metrics = {"Cost", "Validity (cost setting)"}
    extra = {"Accuracy", "FGSM accuracy (eps 0.1)", "PGD accuracy (eps 0.1)", "IG"}
    assert set(summary["metric"]) == plain_metrics | cost_metrics | extra
    for variant, metrics, setting in (
        ("moons", plain_metrics, "plausibility"),
        ("moons_mutability", cost_metrics, "cost"),
    ):
        frames = {
            o: pd.read_parquet(reproduced / variant / "frames" / f"{o}.parquet")
            for o in ("full", "vanilla")
        }
        for frame in frames.values():
            assert set(frame["setting"]) == {setting}
            if setting == "cost":  # x1 immutable: no counterfactual moves it
                assert (frame["cf_x1"] == frame["x_x1"]).all()
        want = compare(frames["full"], frames["vanilla"])
        want = want[want["metric"].isin(metrics)].set_index(["metric", "population"])
        got = summary[summary["metric"].isin(metrics)].set_index(["metric", "population"])
        assert set(got.index) == set(want.index)
        for key in want.index:
            for col in ("ct", "bl"):
                w, g = float(want.loc[key, col]), float(got.loc[key, col])
                assert (math.isnan(w) and math.isnan(g)) or g == pytest.approx(w, rel=1e-5), (
                    key,
                    col,
                )
    # accuracy on the test set: CT's model first, vanilla's second
    rows = summary.set_index("metric")
    for objective, col in (("full", "ct"), ("vanilla", "bl")):
        model, cfg = load_model(reproduced / "moons" / "models" / objective / "model.pt")
        data = load_dataset(cfg.data)
        acc = accuracy(data.y_test, predict(model.eval(), data.X_test))
        assert float(rows.loc["Accuracy", col]) == pytest.approx(acc, rel=1e-5)
    assert (reproduced / "meta.json").is_file()
