"""Sweep files and search spaces: counts, distributions, conditions, validation before Ray."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ct_core.config import ConfigError
from ct_sweeps.plan import plan
from ct_sweeps.plan.schema import apply_sets
from ct_sweeps.plan.space import parse_space, validate
from ct_sweeps.record.report import pareto_mask

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SYNTHETIC = ["lin_sep", "over", "moons", "circles"]
ALL = [*SYNTHETIC, "adult", "california", "credit", "gmsc", "mnist"]


def write_sweep(tmp_path: Path, **body) -> Path:
    doc = {
        "name": "t",
        "base": {"data": {"name": "moons", "n_train": 100}, "train": {"epochs": 2}},
        "search": {"algorithm": "grid", "metric": "val_acc", "mode": "max"},
        **body,
    }
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


# ------------------------------------------------------------------ the shipped configs


@pytest.mark.parametrize("dataset", SYNTHETIC)
@pytest.mark.parametrize("grid", ["gen_params", "penalties"])
def test_paper_synthetic_grids_have_270_settings(grid, dataset):
    p = plan(CONFIGS / "paper" / f"{grid}_{dataset}.yaml")
    assert p.n_trials == 270
    assert p.base_cfg.data.name == dataset
    assert p.space["generator.type"].args == ("ecco", "generic", "revise")
    assert p.space["train.objective"].args == ("full", "vanilla")


def test_gen_params_grid_matches_reference_7_2():
    s = plan(CONFIGS / "paper" / "gen_params_moons.yaml").space
    assert s["generator.T"].args == (5, 25, 50)
    assert s["generator.lambda_energy"].args == (0.1, 0.5, 5, 10, 20)
    assert s["generator.tau"].args == (0.75, 0.9, 0.95)


@pytest.mark.parametrize("dataset", ALL)
def test_paper_tuning_grids_have_18_settings(dataset):
    p = plan(CONFIGS / "paper" / f"tune_{dataset}.yaml")
    assert p.n_trials == 18
    assert p.space["generator.tau"].args == (0.5, 0.75, 0.9)
    assert p.space["train.lambda_reg"].args == (0.1, 0.25, 0.5)
    assert p.base_cfg.train.nce == 1000


@pytest.mark.parametrize("dataset", ALL)
def test_bayes_configs_run_100_tpe_trials_over_the_key_parameters(dataset):
    p = plan(CONFIGS / "bayes" / f"{dataset}.yaml")
    assert p.sweep.search.algorithm == "optuna-tpe"
    assert p.n_trials == 100
    assert {e.key for e in p.space.entries} == {
        "generator.T",
        "generator.tau",
        "train.lambda_div",
        "train.lambda_adv",
        "train.lambda_reg",
    }


def test_multiobjective_example_and_quickstart_are_valid():
    mo = plan(CONFIGS / "bayes" / "multiobjective_moons.yaml")
    assert mo.sweep.search.multi_objective
    assert mo.sweep.search.modes == ["min", "min", "max"]
    q = plan(CONFIGS / "quickstart.yaml")
    assert q.n_trials == 4 and q.base_cfg.data.name == "moons"


# ------------------------------------------------------------------ spaces


def test_lists_are_grid_axes_and_distributions_are_sampled():
    s = parse_space(
        {
            "generator.T": [5, 25],
            "generator.type": [ecco := "ecco", "generic"],
            "generator.tau": {"uniform": [0.5, 0.95]},
            "train.lambda_reg": {"loguniform": [0.001, 1.0]},
            "train.nce": {"randint": [10, 20]},
            "model.hidden": {"choice": [[16], [32, 32]]},
        },
        "grid",
    )
    assert s.num_trials(num_samples=3) == 4 * 3
    settings = s.settings(num_samples=3, seed=0)
    assert len(settings) == 12
    assert [x["generator.T"] for x in settings[:4]] == [5, 5, 25, 25]  # the grid, repeated
    assert all(0.5 <= x["generator.tau"] <= 0.95 for x in settings)
    assert all(0.001 <= x["train.lambda_reg"] <= 1.0 for x in settings)
    assert {x["train.nce"] for x in settings} <= set(range(10, 21))  # randint: both ends
    assert all(x["model.hidden"] in ([16], [32, 32]) for x in settings)
    assert len({x["generator.tau"] for x in settings}) == 12
    cfg = {"generator.T": 5, "generator.type": ecco, "generator.tau": 0.7, "train.nce": 12.0}
    assert s.resolve(cfg)["train.nce"] == 12 and isinstance(s.resolve(cfg)["train.nce"], int)


def test_a_seed_draws_the_same_settings_every_time_and_another_seed_others():
    s = parse_space(
        {"generator.tau": {"uniform": [0.5, 0.95]}, "train.nce": {"quniform": [10, 50, 10]}},
        "random",
    )
    assert s.settings(4, seed=3) == s.settings(4, seed=3)
    assert s.settings(4, seed=3) != s.settings(4, seed=4)
    assert {x["train.nce"] for x in s.settings(50, seed=0)} == {10, 20, 30, 40, 50}


def test_conditional_grid_axis_only_expands_where_its_condition_holds():
    s = parse_space(
        {
            "generator.type": ["ecco", "generic", "revise"],
            "generator.lambda_energy": {"grid": [0.1, 5.0], "when": {"generator.type": "ecco"}},
        },
        "grid",
    )
    points = s.grid_points()
    assert len(points) == 2 + 1 + 1
    assert all("generator.lambda_energy" not in p for p in points if p["generator.type"] != "ecco")
    assert s.settings(1, seed=0) == points


def test_conditional_distribution_is_dropped_when_inactive():
    s = parse_space(
        {
            "generator.type": ["ecco", "generic"],
            "generator.lambda_energy": {"uniform": [0.1, 5.0], "when": {"generator.type": "ecco"}},
        },
        "random",
    )
    assert s.resolve({"generator.type": "generic", "generator.lambda_energy": 1.0}) == {
        "generator.type": "generic"
    }
    assert s.resolve({"generator.type": "ecco", "generator.lambda_energy": 1.0}) == {
        "generator.type": "ecco",
        "generator.lambda_energy": 1.0,
    }


def test_optuna_samples_conditional_params_only_when_active_and_lists_as_categorical():
    s = parse_space(
        {
            "generator.type": ["ecco", "generic"],
            "model.hidden": {"choice": [[16], [32, 32]]},
            "generator.lambda_energy": {
                "loguniform": [0.1, 20],
                "when": {"generator.type": "ecco"},
            },
            "generator.T": {"randint": [5, 50]},
        },
        "optuna-tpe",
    )
    assert s.num_trials(num_samples=7) == 7
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        t = study.ask()
        s.optuna_space()(t)
        params = s.resolve(t.params)
        seen.add(params["generator.type"])
        assert ("generator.lambda_energy" in params) == (params["generator.type"] == "ecco")
        assert params["model.hidden"] in ([16], [32, 32])
        assert 5 <= params["generator.T"] <= 50
        study.tell(t, 0.0)
    assert seen == {"ecco", "generic"}


@pytest.mark.parametrize(
    ("space", "algorithm", "message"),
    [
        ({"generator.tau": [0.5, 1.5]}, "grid", "space.generator.tau: generator.tau: must be in"),
        ({"generator.taux": [0.5]}, "grid", "space.generator.taux: unknown config field; did you"),
        ({"generator.T": {"uniform": [5, 50]}}, "grid", "generator.T is an integer field"),
        ({"generator.T": {"grid": [5, 50]}}, "optuna-tpe", "grid axes cannot be combined"),
        ({"generator.tau": 0.5}, "grid", "space.generator.tau: must be a list"),
        ({"train.lambda_reg": {"loguniform": [0.0, 1]}}, "grid", "low must be > 0"),
        ({"train.lambda_reg": {"uniform": [1, 0.5]}}, "grid", "low must be < high"),
        ({"generator.tau": {"normal": [0, 1]}}, "grid", "a mapping needs exactly one of"),
        (
            {"generator.lambda_energy": {"uniform": [0, 1], "when": {"generator.type": "ecco"}}},
            "grid",
            "generator.type must be an unconditional list or choice entry",
        ),
    ],
)
def test_invalid_spaces_name_the_field(space, algorithm, message):
    with pytest.raises(ConfigError) as e:
        validate(parse_space(space, algorithm), {"data": {"name": "moons"}})
    assert message in str(e.value)


def test_distribution_bounds_are_validated_against_the_config_schema():
    with pytest.raises(ConfigError, match=r"space.generator.tau: generator.tau: must be in"):
        validate(parse_space({"generator.tau": {"uniform": [0.5, 1.0]}}, "random"), {})


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (
            {"algorithm": "bayes"},
            "search.algorithm must be one of grid, random, optuna-tpe, optuna-gp, got 'bayes'",
        ),
        ({"mode": "best"}, "search.mode must be one of min, max, got 'best'"),
        ({"metric": ["val_acc", "val_cost"], "mode": ["max"] * 3}, "one mode per metric"),
        ({"metric": "val_ip"}, "search.metric must be one of"),
        ({"metric": "val_implausibility", "mode": "min"}, "train.eval_every > 0"),
        ({"scheduler": "hyperband"}, "search.scheduler must be one of none, asha"),
        ({"num_samples": 0}, "search.num_samples"),
    ],
)
def test_invalid_search_sections_name_the_field(tmp_path, search, message):
    body = {"search": {"algorithm": "grid", "metric": "val_acc", "mode": "max", **search}}
    with pytest.raises(ConfigError) as e:
        plan(write_sweep(tmp_path, **body))
    assert message in str(e.value)


def test_unknown_top_level_key_and_bad_base_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="spaces: unknown key"):
        plan(write_sweep(tmp_path, spaces={}))
    with pytest.raises(ConfigError, match="base: .*not found"):
        plan(write_sweep(tmp_path, base="nope.yaml"))
    with pytest.raises(ConfigError, match="train.epochz: unknown key"):
        plan(write_sweep(tmp_path, overrides={"train.epochz": 3}))


def test_set_overrides_reach_sweep_space_and_training_config():
    raw = {"name": "n", "base": {}, "space": {"generator.T": [5, 25], "generator.tau": [0.5]}}
    out = apply_sets(
        raw, ["search.num_samples=20", "space.generator.T=[5, 10, 15]", "generator.tau=0.9"]
    )
    assert out["search"]["num_samples"] == 20
    assert out["space"] == {"generator.T": [5, 10, 15]}  # a --set key is fixed, not swept
    assert out["overrides"] == {"generator.tau": 0.9}


def test_pareto_front_keeps_only_non_dominated_rows():
    rows = [[0.1, 0.9], [0.2, 0.95], [0.3, 0.8], [0.05, 0.85], [float("nan"), 1.0]]
    assert pareto_mask(rows, ["min", "max"]) == [True, True, False, True, False]
    assert pareto_mask([[1.0, 1.0], [1.0, 1.0]], ["min", "min"]) == [True, True]


def test_a_nan_search_metric_reaches_optuna_as_the_worst_value():
    from ct_sweeps.run.searchers import worst_for_nan

    nan = float("nan")
    r = worst_for_nan({"val_implausibility": nan, "val_acc": 0.9}, "val_implausibility", "min")
    assert r == {"val_implausibility": math.inf, "val_acc": 0.9}
    r2 = worst_for_nan({"a": nan, "b": nan, "c": 1.0}, ["a", "b", "c"], ["min", "max", "min"])
    assert r2 == {"a": math.inf, "b": -math.inf, "c": 1.0}
    study = optuna.create_study(direction="minimize")  # Optuna takes it as a finished trial
    study.tell(study.ask(), r["val_implausibility"])
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_cli_rejects_bad_input_with_exit_2_before_importing_ray(tmp_path):
    bad = write_sweep(tmp_path, space={"generator.tau": [0.5, 1.5]})
    code = (
        "import sys; from ct_sweeps.cli import main; rc = main(['run', sys.argv[1], "
        "'--storage', sys.argv[2]]); print('RAY' if 'ray' in sys.modules else 'NORAY'); "
        "sys.exit(rc)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(bad), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == "error: space.generator.tau: generator.tau: must be in (0, 1), got 1.5"
    )
    assert "NORAY" in out.stdout
    assert not (tmp_path / "run").exists()


def test_asha_counts_its_rungs_in_epochs_up_to_the_training_length(tmp_path):
    """ASHA's time is the epoch (a restored trial reports an epoch again, so Tune's iteration
    count runs ahead of it) and its last rung is ``train.epochs`` of the base (2 here)."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from ct_sweeps.run.tune import scheduler, search_alg

    space = {"generator.tau": {"uniform": [0.5, 0.9]}, "generator.type": ["ecco", "generic"]}
    asha = {"scheduler": "asha", "asha": {"grace_period": 1, "reduction_factor": 3}}
    p = plan(write_sweep(tmp_path, space=space, search={"algorithm": "random", **asha}))
    assert search_alg(p) is None  # a grid over the settings drawn up front
    sched = scheduler(p)
    assert sched.set_search_properties("val_acc", "max")  # as Tune passes the sweep's metric
    trial = Trial("trainable", stub=True)
    sched.on_trial_add(None, trial)
    many_reports = {"training_iteration": 5, "val_acc": 0.5}
    assert (
        sched.on_trial_result(None, trial, {**many_reports, "epoch": 1}) == TrialScheduler.CONTINUE
    )
    assert sched.on_trial_result(None, trial, {**many_reports, "epoch": 2}) == TrialScheduler.STOP


def _suggestions(searcher, n: int, loss) -> list[dict]:
    """The first ``n`` configs a Tune searcher suggests, each told ``loss(config)``."""
    out = []
    for i in range(n):
        cfg = searcher.suggest(f"t{i}")
        out.append(cfg)
        searcher.on_trial_complete(f"t{i}", {"val_loss": loss(cfg)})
    return out


@pytest.mark.parametrize("algorithm", ["optuna-tpe", "optuna-gp"])
def test_optuna_sweeps_suggest_what_their_optuna_sampler_suggests(tmp_path, algorithm):
    """The searcher of an ``optuna-*`` sweep is Optuna's sampler with the sweep's seed and
    startup trials (TPE multivariate): after the random start-up it suggests what that sampler
    suggests for the same results, and TPE and GP suggest differently."""
    from ct_sweeps.run.tune import search_alg

    space = {"generator.tau": {"uniform": [0.5, 0.9]}, "generator.type": ["ecco", "generic"]}

    def loss(cfg: dict) -> float:
        return float(cfg["generator.tau"]) ** 2 + (cfg["generator.type"] == "ecco")

    def searcher(alg: str):
        search = {"algorithm": alg, "metric": "val_loss", "mode": "min", "seed": 3}
        return search_alg(
            plan(write_sweep(tmp_path, space=space, search=search | {"n_startup_trials": 2}))
        )

    got = _suggestions(searcher(algorithm), 4, loss)
    if algorithm == "optuna-tpe":
        sampler = optuna.samplers.TPESampler(seed=3, n_startup_trials=2, multivariate=True)
    else:
        sampler = optuna.samplers.GPSampler(seed=3, n_startup_trials=2)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    space_fn = plan(write_sweep(tmp_path, space=space)).space.optuna_space()
    want = []
    for _ in range(4):
        trial = study.ask()
        space_fn(trial)
        want.append(trial.params)
        study.tell(trial, loss(trial.params))
    assert got == want
    other = "optuna-gp" if algorithm == "optuna-tpe" else "optuna-tpe"
    assert _suggestions(searcher(other), 4, loss)[2:] != got[2:]


def test_multi_objective_optuna_sweeps_pass_every_metric_and_mode(tmp_path):
    from ct_sweeps.run.tune import search_alg

    space = {"generator.tau": {"uniform": [0.5, 0.9]}, "generator.type": ["ecco", "generic"]}
    for algorithm in ("optuna-tpe", "optuna-gp"):
        search = {"algorithm": algorithm, "metric": ["val_loss", "val_acc"], "mode": ["min", "max"]}
        alg = search_alg(plan(write_sweep(tmp_path, space=space, search=search)))
        assert (alg.metric, alg.mode) == (["val_loss", "val_acc"], ["min", "max"])


def test_asha_needs_a_single_metric(tmp_path):
    search = {"metric": ["val_loss", "val_acc"], "mode": ["min", "max"], "scheduler": "asha"}
    with pytest.raises(ConfigError, match="search.scheduler 'asha' needs a single search.metric"):
        plan(write_sweep(tmp_path, search=search))


def test_a_trial_holding_no_gpu_trains_on_the_cpu_where_the_device_is_auto():
    """Ray leaves every GPU visible to a trial that asked for none (resources.gpu: 0), so
    ``train.device: auto`` becomes ``cpu`` there; a GPU share, an explicit device, or a call
    outside Tune (``gpus`` unknown) leaves it as it is."""
    from ct_sweeps.plan.space import trial_config, trial_params

    p = plan(str(Path(__file__).parents[1] / "configs" / "quickstart.yaml"))
    point = p.space.grid_points()[0]
    assert trial_params(p.space, p.base, point, 1.0, 0.0)["train.device"] == "cpu"
    assert "train.device" not in trial_params(p.space, p.base, point, 1.0, 0.25)
    assert "train.device" not in trial_params(p.space, p.base, point, 1.0, None)
    assert (
        trial_config(p.base, trial_params(p.space, p.base, point, 1.0, 0.0)).train.device == "cpu"
    )
    on_cuda = {**p.base, "train": {"device": "cuda"}}
    assert "train.device" not in trial_params(p.space, on_cuda, point, 2.0, 0.0)  # as asked
    assert trial_params(p.space, on_cuda, point, 2.0, 0.0)["train.threads"] == 2
