"""Packed sweeps end to end: several settings per Tune trial, each still its own row and run.

A real local Ray (2 CPUs, loopback) and a real sqlite MLflow store. The grid has 6 tiny moons
settings (generator x lambda_reg) with ``search.pack: 3``, so 2 pack trials; one setting has
``lambda_class = 1e39`` and its loss overflows in the first epoch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.sweep_support import INTERRUPTIBLE, mlflow_runs, run_then_interrupt

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "data.n_train": 200,
    "data.n_val": 100,
    "data.n_test": 100,
    "train.epochs": 3,
    "train.nce": 50,
    "train.batch_size": 50,
    "generator.T": 5,
}
SPACE = {
    "generator.type": ["ecco", "generic"],
    "train.lambda_reg": [0.1, 0.25, 0.5],
    # exactly one setting overflows: (generic, 0.5)
    "train.lambda_class": {
        "grid": [1e39],
        "when": {"generator.type": "generic", "train.lambda_reg": 0.5},
    },
}


EVAL = {"train.eval_every": 2, "evaluation.n_val_individuals": 40, "train.lr": 0.03}
"""Counterfactual metrics at epochs 2 and 3 (the last), valid ones after so few epochs."""
CF = ("val_implausibility", "val_cost", "val_validity", "val_mmd")


def sweep_file(tmp: Path, name: str, pack: int, space: dict = SPACE, **extra) -> Path:
    doc = {
        "name": name,
        "base": str(ROOT / "configs" / "base" / "moons.yaml"),
        "overrides": {**TINY, **extra.pop("overrides", {})},
        "search": {
            "algorithm": "grid",
            "metric": "val_acc",
            "mode": "max",
            "seed": 7,
            "max_concurrent": 2,
            "pack": pack,
            **extra.pop("search", {}),
        },
        "space": space,
        "resources": {"cpu": 1},
        **extra,
    }
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def slot_ends(pack_costs: list[float], slots: int) -> list[float]:
    """When each trial slot finishes if the packs, in their order, each start on the next free
    slot (as Tune starts them)."""
    import heapq

    free = [0.0] * slots
    for c in pack_costs:
        heapq.heapreplace(free, free[0] + c)
    return free


def key(row) -> tuple[str, float]:
    return (row["generator.type"], float(row["train.lambda_reg"]))


@pytest.fixture(scope="module")
def packed(ray_runtime, tmp_path_factory):
    from ct_sweeps import runner

    tmp = tmp_path_factory.mktemp("packed")
    plan = runner.plan(sweep_file(tmp, "packed6", 3, overrides=EVAL))
    return runner.run(plan, storage=str(tmp / "run"))


@pytest.fixture(scope="module")
def unpacked(ray_runtime, tmp_path_factory):
    from ct_sweeps import runner

    tmp = tmp_path_factory.mktemp("unpacked")
    # also thins MLflow to every 2nd epoch (and the last)
    plan = runner.plan(sweep_file(tmp, "plain6", 0, overrides=EVAL, tracking={"log_every": 2}))
    return runner.run(plan, storage=str(tmp / "run"))


def test_six_settings_run_as_two_packs_and_six_rows(packed):
    info = json.loads((packed.run_dir / "run.json").read_text())
    assert info["packed"] is True and info["n_packs"] == 2
    trials = [p for p in (packed.run_dir / "tune").iterdir() if p.name.startswith("trial_")]
    assert len(trials) == 2
    df = packed.report.frame
    assert len(df) == 6 and df["pack"].nunique() == 2
    assert (packed.run_dir / "results.csv").read_text().count("\n") == 7
    assert sorted(map(key, df.to_dict("records"))) == sorted(
        (g, r) for g in ("ecco", "generic") for r in (0.1, 0.25, 0.5)
    )
    assert (packed.n_finished, packed.n_errors, packed.interrupted) == (5, 1, False)


def test_the_overflowing_setting_fails_alone_with_its_reason(packed):
    df = packed.report.frame
    bad = df[df["status"] == "ERROR"]
    assert len(bad) == 1
    row = bad.iloc[0]
    assert key(row) == ("generic", 0.5) and float(row["train.lambda_class"]) == 1e39
    assert "non-finite" in row["error"]
    good = df[df["status"] == "TERMINATED"]
    assert len(good) == 5 and (good["epochs"] == 3).all()
    assert good["val_acc"].between(0, 1).all()


def test_best_config_and_report_are_per_setting(packed):
    from ct_core.config import load_config
    from ct_sweeps.cli import main

    df = packed.report.frame
    top = df.iloc[0]
    assert top["status"] == "TERMINATED" and top["val_acc"] == df["val_acc"].max()
    best = load_config(packed.run_dir / "best_config.yaml")
    assert (best.generator.type, best.train.lambda_reg) == key(top)
    assert best.train.epochs == 3
    assert main(["report", str(packed.run_dir)]) == 0


def test_the_report_rebuilt_from_the_run_directory_is_the_sweeps_own(packed, unpacked):
    """`ct-sweep report` rebuilds the sweep's own table from the trial folders, failed setting
    included."""
    import pandas as pd

    from ct_sweeps.plan import RunDir
    from ct_sweeps.record.report import results_frame
    from ct_sweeps.run.results import collect

    for out in (packed, unpacked):
        run = RunDir.load(out.run_dir)
        rebuilt = results_frame(collect(run), run.space)
        sent = out.report.frame[list(rebuilt.columns)]
        pd.testing.assert_frame_equal(
            sent.sort_values("trial_id").reset_index(drop=True),
            rebuilt.sort_values("trial_id").reset_index(drop=True),
        )


def test_each_setting_is_its_own_mlflow_child_run(packed, tmp_path):
    client, parents, children = mlflow_runs(packed.run_dir)
    assert len(parents) == 1 and len(children) == 6
    assert parents[0].info.status == "FINISHED"
    by_status: dict[str, list] = {}
    for child in children:
        by_status.setdefault(child.info.status, []).append(child)
        p = child.data.params
        assert p["train.epochs"] == "3" and p["data.n_train"] == "200"
        assert p["generator.type"] in ("ecco", "generic") and "generator.T" in p
        assert p["train.threads"] == "1"
    assert len(by_status["FINISHED"]) == 5 and len(by_status["FAILED"]) == 1
    failed = by_status["FAILED"][0]
    assert failed.data.params["train.lambda_class"] == "1e+39"
    assert "non-finite" in failed.data.tags["ct.error"]
    for child in by_status["FINISHED"]:
        rid = child.info.run_id
        assert [m.step for m in client.get_metric_history(rid, "val_acc")] == [1, 2, 3]
        assert [m.step for m in client.get_metric_history(rid, "loss")] == [1, 2, 3]
        assert client.get_metric_history(rid, "train_seconds")[0].value > 0
        arts = {a.path for a in client.list_artifacts(rid, "checkpoint")}
        assert "checkpoint/model.pt" in arts
    import mlflow.pytorch
    import torch

    # each finished setting's model is an MLflow logged model, an output of its run
    for child in by_status["FINISHED"]:
        outputs = client.get_run(child.info.run_id).outputs.model_outputs
        assert [o.model_id for o in outputs] == [child.data.tags["ct.model"]]
    model = client.get_logged_model(by_status["FINISHED"][0].data.tags["ct.model"])
    assert model.status == "READY" and model.source_run_id == by_status["FINISHED"][0].info.run_id
    net = mlflow.pytorch.load_model(model.artifact_location)
    assert isinstance(net, torch.nn.Module) and net(torch.zeros(4, 2)).shape == (4, 2)


def test_packed_and_unpacked_child_runs_hold_the_same_counterfactual_metrics(packed, unpacked):
    """The sweep's own metric and the other counterfactual metrics, at each evaluation epoch,
    whether a setting trained in a pack or alone; the runs are named by what they sweep."""
    runs = []
    for out in (packed, unpacked):
        client, _, children = mlflow_runs(out.run_dir)
        names = [c.info.run_name for c in children]
        assert len(set(names)) == 6, names  # e.g. "ecco reg=0.25"
        assert all(n.split()[0] in ("ecco", "generic") and " reg=" in n for n in names), names
        done = [c for c in children if c.info.status == "FINISHED"]
        runs.append(
            {
                (c.data.params["generator.type"], c.data.params["train.lambda_reg"]): (client, c)
                for c in done
            }
        )
    a, b = runs
    assert set(a) == set(b) and len(a) == 5
    for k, (client, run) in a.items():
        other_client, other = b[k]
        assert set(run.data.metrics) == set(other.data.metrics), k
        assert set(CF) <= set(run.data.metrics), (k, sorted(run.data.metrics))
        for m in CF:
            mine = {h.step: h.value for h in client.get_metric_history(run.info.run_id, m)}
            theirs = {
                h.step: h.value for h in other_client.get_metric_history(other.info.run_id, m)
            }
            assert sorted(mine) == sorted(theirs) == [2, 3], (k, m, mine, theirs)
            for step, v in mine.items():
                assert math.isclose(v, theirs[step], rel_tol=1e-5, abs_tol=1e-6), (k, m, step)


def test_log_every_thins_mlflow_but_not_the_results(unpacked):
    client, _, children = mlflow_runs(unpacked.run_dir)
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 5
    for child in finished:  # epochs 2 (on the grid) and 3 (the last) of 3
        assert [m.step for m in client.get_metric_history(child.info.run_id, "loss")] == [2, 3]
    done = unpacked.report.frame[unpacked.report.frame["status"] == "TERMINATED"]
    assert list(done["epochs"]) == [3.0] * 5  # results.csv: every epoch


def test_packed_results_equal_the_unpacked_sweep(packed, unpacked):
    a = {key(r): r for r in packed.report.frame.to_dict("records")}
    b = {key(r): r for r in unpacked.report.frame.to_dict("records")}
    book = json.loads(unpacked.run_dir.joinpath("packs.json").read_text())
    assert [len(pk) for pk in book["packs"]] == [1] * 6  # one setting per trial
    assert set(a) == set(b) and len(a) == 6
    for k in a:
        assert a[k]["status"] == b[k]["status"], k
        if a[k]["status"] != "TERMINATED":
            continue
        for m in ("val_acc", "train_acc", "loss", "val_loss", "mature"):
            assert math.isclose(a[k][m], b[k][m], rel_tol=1e-5, abs_tol=1e-6), (k, m)


# ---------------------------------------------------------------------------------------------
# Planning (no Ray)


def test_pack_option_is_validated_before_ray_starts():
    from ct_core.config import ConfigError
    from ct_sweeps.plan.schema import parse_sweep

    ok = {"name": "x", "base": {}}
    assert parse_sweep(ok).search.pack == "auto"
    assert parse_sweep({**ok, "search": {"pack": 12}}).search.packs
    assert not parse_sweep({**ok, "search": {"pack": 1}}).search.packs
    assert not parse_sweep({**ok, "search": {"algorithm": "optuna-tpe"}}).search.packs
    assert not parse_sweep({**ok, "search": {"scheduler": "asha"}}).search.packs
    for bad in ("big", -1, True, 2.5):
        with pytest.raises(ConfigError, match="search.pack must be 'auto'"):
            parse_sweep({**ok, "search": {"pack": bad}})
    with pytest.raises(ConfigError, match="tracking.log_model must be"):
        parse_sweep({**ok, "tracking": {"log_model": "some"}})


def test_settings_are_drawn_up_front_and_packed_by_compatibility(tmp_path):
    from ct_core.packability import auto_pack_size, make_packs
    from ct_sweeps import runner
    from ct_sweeps.plan.packing import setting_traits

    path = sweep_file(
        tmp_path,
        "plan",
        0,
        space={
            "generator.type": ["ecco", "revise"],
            "model.hidden": [[8], [16]],
            "train.lambda_reg": {"loguniform": [0.01, 1.0]},
        },
        search={"algorithm": "random", "num_samples": 3},
    )
    p = runner.plan(path)
    settings = p.space.settings(3, seed=1)
    assert len(settings) == p.n_trials == 12
    assert all(0.01 <= s["train.lambda_reg"] <= 1.0 for s in settings)
    assert len({s["train.lambda_reg"] for s in settings}) == 12
    packs = make_packs(*setting_traits(settings, p.base, p.space), 2, slots=2)
    assert sorted(i for pk in packs for i in pk) == list(range(12))
    for pk in packs:  # same model size and generator family within a pack, at most 2
        assert 1 <= len(pk) <= 2
        assert (
            len({(settings[i]["generator.type"], str(settings[i]["model.hidden"])) for i in pk})
            == 1
        )
    assert auto_pack_size(270, 2) == 68 and auto_pack_size(18, 2) == 5
    assert auto_pack_size(3, 8) == 1 and auto_pack_size(900, 1) == 90  # CAP_CPU


def test_a_random_sweep_trains_the_same_settings_packed_or_not(ray_runtime, tmp_path):
    """The settings of a grid/random sweep are drawn once, up front, from ``search.seed``, and
    only then packed: ``pack: auto`` and ``pack: 0`` train the same values."""
    from ct_sweeps import runner

    space = {
        "train.objective": ["full", "vanilla"],
        "train.lambda_reg": {"loguniform": [0.01, 1.0]},
        "generator.tau": {"uniform": [0.5, 0.95]},
    }
    swept = ["train.objective", "train.lambda_reg", "generator.tau"]
    got = []
    for pack in ("auto", 0):
        search = {"algorithm": "random", "num_samples": 3, "seed": 11}
        doc = sweep_file(tmp_path, f"random-{pack}", pack, space=space, search=search)
        out = runner.run(runner.plan(doc), storage=str(tmp_path / f"run-{pack}"))
        assert (out.n_finished, out.n_errors) == (6, 0)
        got.append(sorted(map(tuple, out.report.frame[swept].values.tolist())))
    assert got[0] == got[1] and len(set(got[0])) == 6
    assert json.loads((tmp_path / "run-auto" / "run.json").read_text())["n_packs"] < 6


def test_auto_packs_on_cpu_trials_are_the_widest_that_keep_the_slots_balanced():
    """The paper's OL grid on two CPU slots: a setting-epoch costs less in a wider pack (the
    per-operation work is shared), so each slot gets one Generic/ECCo pack of 90 and one REVISE
    pack of 45 (REVISE searches a latent space and cannot share a pack with the others), not
    three packs of 45; the dearer Generic/ECCo packs start first."""
    from ct_core.packability import CAP_CPU, make_packs, setting_cost
    from ct_sweeps import runner
    from ct_sweeps.plan.packing import setting_traits
    from ct_sweeps.plan.space import trial_config

    p = runner.plan(str(Path(__file__).parents[1] / "configs/paper/gen_params_over.yaml"))
    settings = p.space.settings(1, seed=0)
    packs = make_packs(*setting_traits(settings, p.base, p.space), "auto", slots=2)
    assert sorted(i for pk in packs for i in pk) == list(range(270))
    families = [{settings[i]["generator.type"] == "revise" for i in pk} for pk in packs]
    assert families == [{False}, {False}, {True}, {True}]
    assert [len(pk) for pk in packs] == [90, 90, 45, 45] and CAP_CPU == 90
    cost = [setting_cost(trial_config(p.base, p.space.resolve(s))) for s in settings]
    ends = slot_ends([sum(cost[i] for i in pk) for pk in packs], slots=2)
    assert max(ends) - min(ends) < 0.02 * max(ends)
    # four slots: still two packs per slot
    assert len(make_packs(*setting_traits(settings, p.base, p.space), "auto", slots=4)) == 8


def test_auto_packs_keep_both_slots_busy_when_settings_cost_very_different_amounts():
    """The paper's Adult grid: 9 CT settings (T = 30 steps over nce 5000 each epoch) and 9
    vanilla ones. Even-sized packs put 3 CT settings in one pack and leave a slot idle for about
    one CT setting at the end; the packs come out the most expensive first, as Tune starts them."""
    from ct_core.packability import make_packs, setting_cost
    from ct_sweeps import runner
    from ct_sweeps.plan.packing import setting_traits
    from ct_sweeps.plan.space import trial_config

    p = runner.plan(
        str(Path(__file__).parents[1] / "configs/paper/tune_adult.yaml"), ["train.nce=5000"]
    )
    settings = p.space.settings(1, seed=0)
    cost = [setting_cost(trial_config(p.base, p.space.resolve(s))) for s in settings]
    ct = max(cost)
    assert ct > 10 * min(cost)  # CT settings cost an order of magnitude more than vanilla
    packs = make_packs(*setting_traits(settings, p.base, p.space), "auto", slots=2)
    assert sorted(i for pk in packs for i in pk) == list(range(18))
    assert len(packs) == 4  # still two packs per slot
    pack_cost = [sum(cost[i] for i in pk) for pk in packs]
    assert pack_cost == sorted(pack_cost, reverse=True)
    ends = slot_ends(pack_cost, slots=2)
    assert max(ends) - min(ends) < ct / 2
    # with a fixed K the packs are even-sized, as asked
    fixed = make_packs(*setting_traits(settings, p.base, p.space), 5, slots=2)
    assert sorted(len(pk) for pk in fixed) == [4, 4, 5, 5]


def test_auto_packs_on_gpu_trials_are_as_wide_as_allowed_and_cut_only_to_fill_the_slots():
    """On a GPU a pack's epoch costs about what its dearest setting costs, whatever K, so the
    OL grid goes in one pack per pack group (Generic/ECCo 180, REVISE 90) while there are at
    most two slots; with four, the largest group is cut, its dearest settings (CT, large T)
    together, until every slot has a pack."""
    from ct_core.packability import make_packs
    from ct_sweeps import runner
    from ct_sweeps.plan.packing import setting_traits
    from ct_sweeps.plan.space import trial_config

    p = runner.plan(str(Path(__file__).parents[1] / "configs/paper/gen_params_over.yaml"))
    settings = p.space.settings(1, seed=0)
    cfgs = [trial_config(p.base, p.space.resolve(s)) for s in settings]

    def generators(pk):
        return {cfgs[i].generator.type for i in pk}

    for slots in (1, 2):
        packs = make_packs(*setting_traits(settings, p.base, p.space), "auto", slots, gpu=True)
        assert [len(pk) for pk in packs] == [180, 90]
        assert generators(packs[0]) == {"generic", "ecco"} and generators(packs[1]) == {"revise"}
    packs = make_packs(*setting_traits(settings, p.base, p.space), "auto", 4, gpu=True)
    assert sorted(len(pk) for pk in packs) == [60, 60, 60, 90]
    assert sorted(i for pk in packs for i in pk) == list(range(270))
    # the first Generic/ECCo pack Tune starts holds that group's CT settings with the largest T
    dearest = next(pk for pk in packs if generators(pk) != {"revise"})
    assert all(cfgs[i].train.objective == "full" and cfgs[i].generator.T >= 25 for i in dearest)
    assert {cfgs[i].generator.T for i in dearest} >= {50}
    # a fixed K is still a fixed K on GPU trials
    fixed = make_packs(*setting_traits(settings, p.base, p.space), 45, 4, gpu=True)
    assert sorted(len(pk) for pk in fixed) == [45] * 6


def test_interrupted_packed_sweep_resumes_without_rerunning_finished_packs(ray_runtime, tmp_path):

    from ct_sweeps import runner
    from ct_sweeps.plan import RunDir
    from ct_sweeps.run.results import collect

    path = sweep_file(
        tmp_path,
        "interrupt",
        2,
        space={"train.lambda_reg": [0.1, 0.2, 0.3, 0.4]},
        search={"max_concurrent": 1},
        overrides=INTERRUPTIBLE,
        checkpoint_every=2,
    )
    run_dir = tmp_path / "run"
    rc, log = run_then_interrupt(path, run_dir, ray_runtime)
    assert rc == 130, log

    before = {r.trial_id: r for r in collect(RunDir.load(run_dir))}
    done = {t: r for t, r in before.items() if r.status == "TERMINATED"}
    assert len(done) == 2 and len({r.trial for r in done.values()}) == 1
    lines = {t: (r.path / "result.json").read_text() for t, r in done.items()}

    out = runner.resume(run_dir)
    assert (out.n_finished, out.n_errors, out.interrupted) == (4, 0, False)
    after = {r.trial_id: r for r in collect(RunDir.load(run_dir))}
    assert len(after) == 4
    for t, text in lines.items():  # the finished pack was not rerun
        assert (after[t].path / "result.json").read_text() == text
    n = INTERRUPTIBLE["train.epochs"]
    for r in after.values():
        epochs = [h["epoch"] for h in r.history()]
        assert epochs[-1] == n and set(epochs) == set(range(1, n + 1))
    _, parents, children = mlflow_runs(run_dir)
    assert len(parents) == 1 and len(children) == 4
    assert {c.info.status for c in children} == {"FINISHED"}


def test_a_users_model_and_generator_pack_in_a_real_sweep_and_equal_their_runs_alone(tmp_path):
    """``ct-sweep run`` (its own process and local Ray) of a grid whose model is a user's
    residual network from ``model.factory`` and whose generators are ECCo and a user's penalty
    named by import path, both in tests/user_models, on ``PYTHONPATH`` for the driver and Ray's
    workers as a user's package would be: the four settings train as one pack, and each
    setting's final model equals that setting trained alone."""
    import os
    import subprocess
    import sys

    import torch

    from ct_core.models import load_model
    from ct_core.training import Trainer

    user = ROOT / "tests" / "user_models"
    space = {
        "generator.type": ["ecco", "ct_test_models:squared_cost"],
        "train.lambda_reg": [0.1, 0.5],
    }
    overrides = {"model.factory": "ct_test_models:residual_mlp"}
    sweep = sweep_file(tmp_path, "factory", 4, space=space, overrides=overrides)
    path = os.pathsep.join(p for p in (str(user), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "CT_SWEEP_VERBOSE": "0"}
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "ct_sweeps.cli", "run", str(sweep), "--storage", str(run_dir)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["packed"] is True and info["n_packs"] == 1
    files = sorted(run_dir.glob("tune/trial_*/checkpoint_*/model_*.pt"))
    assert len(files) == 4
    sys.path.insert(0, str(user))
    try:
        for f in files:
            swept, cfg = load_model(f)
            assert type(swept).__name__ == "ResidualMLP"
            alone = Trainer(cfg).fit()
            for (name, v), w in zip(swept.state_dict().items(), alone.state_dict().values()):
                assert torch.allclose(v, w, atol=1e-5), (f.name, name)
    finally:
        sys.path.remove(str(user))
