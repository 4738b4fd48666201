"""Sweeps end to end on a real local Ray runtime and a real MLflow (sqlite) store.

One module-scoped Ray (2 CPUs, loopback, no dashboard) serves every test; the interrupted sweep
runs its driver in a subprocess that joins that Ray and is stopped with SIGINT.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.sweep_support import INTERRUPTIBLE, mlflow_runs, run_then_interrupt, sqlite_scalar

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


def sweep_file(tmp_path: Path, name: str, search: dict, space: dict, **extra) -> Path:
    doc = {
        "name": name,
        "base": str(ROOT / "configs" / "base" / "moons.yaml"),
        "overrides": {**TINY, **extra.pop("overrides", {})},
        "search": {"seed": 7, "max_concurrent": 2, **search},
        "space": space,
        "resources": {"cpu": 1},
        **extra,
    }
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def grid_run(ray_runtime, tmp_path_factory):
    from ct_sweeps import runner

    tmp = tmp_path_factory.mktemp("grid")
    path = sweep_file(
        tmp,
        "grid4",
        {"algorithm": "grid", "metric": "val_acc", "mode": "max"},
        {"generator.type": ["ecco", "generic"], "train.objective": ["full", "vanilla"]},
    )
    return runner.run(runner.plan(path), storage=str(tmp / "run"))


def test_grid_of_4_finishes_with_results_and_best_config(grid_run):
    from ct_core.config import load_config

    out = grid_run
    assert (out.n_finished, out.n_errors, out.interrupted) == (4, 0, False)
    df = out.report.frame
    assert len(df) == 4 and set(df["status"]) == {"TERMINATED"}
    assert set(zip(df["generator.type"], df["train.objective"])) == {
        (g, o) for g in ("ecco", "generic") for o in ("full", "vanilla")
    }
    assert (df["epochs"] == 3).all() and df["val_acc"].between(0, 1).all()
    assert list(df["val_acc"]) == sorted(df["val_acc"], reverse=True)
    best = load_config(out.run_dir / "best_config.yaml")
    top = df.iloc[0]
    assert (best.generator.type, best.train.objective) == (
        top["generator.type"],
        top["train.objective"],
    )
    assert best.train.epochs == 3 and best.data.n_train == 200
    assert (out.run_dir / "results.csv").read_text().count("\n") == 5
    assert (out.run_dir / "sweep.yaml").exists()


def test_trials_keep_result_json_only_and_the_run_records_where_the_time_went(grid_run):
    # Tune's CSV and TensorBoard loggers are off (driver CPU on every result); result.json,
    # which reports and resume read, is kept
    trial_dirs = sorted((grid_run.run_dir / "tune").glob("trial_*"))
    assert len(trial_dirs) == 4
    for d in trial_dirs:
        assert (d / "result.json").stat().st_size > 0
        assert not (d / "progress.csv").exists()
        assert not list(d.glob("events.out.tfevents*"))
    timings = _read_json(grid_run.run_dir / "run.json")["timings"]
    for step in ("ray_start", "tuner_setup", "fit", "report", "mlflow_end", "total"):
        assert timings[step] >= 0, step
    assert timings["fit"] < timings["total"]


def test_grid_is_tracked_as_one_parent_and_4_children(grid_run, tmp_path):
    client, parents, children = mlflow_runs(grid_run.run_dir)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "sweep.yaml", "search_space.json", "best_config.yaml"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/val_acc_by_generator.type.png" in plots  # the sweep's plots
    assert parent.info.run_name == "grid4"  # named by the sweep
    names = sorted(c.info.run_name for c in children)
    assert names == ["ecco full", "generic full", "vanilla", "vanilla #2"]  # vanilla: no generator
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        p = child.data.params
        if p["train.objective"] == "vanilla":  # what does not apply is not logged
            assert not [k for k in p if k.startswith("generator.")] and "train.lambda_div" not in p
        else:
            assert p["generator.type"] in ("ecco", "generic") and "train.lambda_div" in p
        assert p["train.epochs"] == "3" and p["data.n_train"] == "200"
        assert p["train.threads"] == "1"  # one torch thread per CPU the trial holds
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert sorted(steps) == [1, 2, 3]
        arts = {a.path for a in client.list_artifacts(child.info.run_id, "checkpoint")}
        assert "checkpoint/model.pt" in arts
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert {"plots/learning_curves.png", "plots/figure1.png"} <= plots  # moons is 2-D
        assert [
            i.dataset.name for i in client.get_run(child.info.run_id).inputs.dataset_inputs
        ] == ["moons"]
    # the final model is an MLflow logged model that maps (N, 2) moons points to (N, 2) logits
    import mlflow.pytorch
    import torch

    model = client.get_logged_model(children[0].data.tags["ct.model"])
    net = mlflow.pytorch.load_model(model.artifact_location)
    assert net(torch.zeros(5, 2)).shape == (5, 2)


def test_the_run_store_file_alone_holds_every_run_after_the_sweep(grid_run, tmp_path):
    """A local run directory's store is in WAL mode (ct_sweeps/record/store.py); at the end of
    the sweep its log is folded back, so copying ``mlflow.db`` alone loses nothing."""
    import shutil

    from mlflow.tracking import MlflowClient

    from ct_sweeps.record.store import local_filesystem

    db = grid_run.run_dir / "mlflow.db"
    mode = sqlite_scalar(db, "PRAGMA journal_mode")
    assert mode == ("wal" if local_filesystem(db.parent) else "delete")

    alone = tmp_path / "mlflow.db"
    shutil.copyfile(db, alone)
    _, parents, children = mlflow_runs(grid_run.run_dir)
    copy = MlflowClient(tracking_uri=f"sqlite:///{alone}")
    for run in parents + children:
        got = copy.get_run(run.info.run_id)
        assert got.info.status == run.info.status == "FINISHED"
        assert got.data.params == run.data.params and got.data.metrics == run.data.metrics


def test_sync_mlflow_backfills_a_deleted_child_run_idempotently(grid_run):
    from ct_sweeps.cli import main

    client, _, children = mlflow_runs(grid_run.run_dir)
    victim = children[0]
    client.delete_run(victim.info.run_id)
    assert len(mlflow_runs(grid_run.run_dir)[2]) == 3

    assert main(["sync-mlflow", str(grid_run.run_dir)]) == 0
    client, parents, children = mlflow_runs(grid_run.run_dir)
    assert len(parents) == 1 and len(children) == 4
    back = next(
        c for c in children if c.data.tags["ct.trial_id"] == victim.data.tags["ct.trial_id"]
    )
    assert back.info.run_id != victim.info.run_id and back.info.status == "FINISHED"
    assert back.data.params == victim.data.params
    assert [m.step for m in client.get_metric_history(back.info.run_id, "val_acc")] == [1, 2, 3]

    assert main(["sync-mlflow", str(grid_run.run_dir)]) == 0  # nothing left to do
    client, _, again = mlflow_runs(grid_run.run_dir)
    assert len(again) == 4
    assert len(client.get_metric_history(back.info.run_id, "val_acc")) == 3


def test_sync_mlflow_gives_params_to_a_child_run_whose_driver_died_before_its_first_flush(
    grid_run,
):
    # a child run gets its params with its first metrics: a driver killed before that leaves a
    # run with tags only, which `sync-mlflow` (and `ct-sweep resume`) complete
    from ct_sweeps.cli import main

    client, parents, children = mlflow_runs(grid_run.run_dir)
    victim = children[0]
    client.delete_run(victim.info.run_id)
    keep = ("mlflow.parentRunId", "ct.trial_id", "ct.sweep", "ct.swept")
    bare = client.create_run(
        victim.info.experiment_id, tags={k: victim.data.tags[k] for k in keep}
    ).info.run_id
    assert client.get_run(bare).data.params == {}

    assert main(["sync-mlflow", str(grid_run.run_dir)]) == 0
    run = client.get_run(bare)
    assert run.data.params == victim.data.params and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(bare, "val_acc")] == [1, 2, 3]


def test_a_tracking_server_down_from_the_start_loses_nothing(ray_runtime, tmp_path):
    """The MLflow set-up runs beside Ray's start; when the server cannot be reached the sweep
    still trains every setting, says so, and `sync-mlflow` later puts everything in a store."""
    import socket

    from ct_sweeps import runner
    from ct_sweeps.cli import main

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = sweep_file(
        tmp_path,
        "down",
        {"algorithm": "grid", "metric": "val_acc", "mode": "max"},
        {"train.objective": ["full", "vanilla"]},
        tracking={"uri": f"http://127.0.0.1:{port}"},
    )
    out = runner.run(runner.plan(path), storage=str(tmp_path / "run"))
    assert (out.n_finished, out.n_errors) == (2, 0)
    assert not out.tracking_ok
    assert "parent_run_id" not in _read_json(out.run_dir / "run.json")

    store = f"sqlite:///{tmp_path / 'later.db'}"
    assert main(["sync-mlflow", str(out.run_dir), "--tracking-uri", store]) == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("down")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert sorted(steps) == [1, 2, 3]


def test_optuna_tpe_sweep_of_6_trials(ray_runtime, tmp_path):
    from ct_sweeps import runner

    path = sweep_file(
        tmp_path,
        "tpe6",
        {
            "algorithm": "optuna-tpe",
            "metric": "val_implausibility",  # validation CF metric, every 2nd epoch only
            "mode": "min",
            "num_samples": 6,
            "n_startup_trials": 3,
        },
        {
            "generator.type": ["ecco", "generic"],
            "generator.lambda_energy": {
                "loguniform": [0.1, 10],
                "when": {"generator.type": "ecco"},
            },
            "generator.tau": {"uniform": [0.5, 0.95]},
            "train.lambda_reg": {"loguniform": [0.001, 1.0]},
        },
        overrides={"train.eval_every": 2, "train.lr": 0.01, "evaluation.n_val_individuals": 20},
    )
    out = runner.run(runner.plan(path), storage=str(tmp_path / "run"))
    assert (out.n_finished, out.n_errors, out.interrupted) == (6, 0, False)
    assert "val_implausibility" in out.report.frame.columns
    df = out.report.frame
    assert len(df) == 6 and df["generator.tau"].between(0.5, 0.95).all()
    assert df["generator.tau"].nunique() == 6  # sampled, not a grid
    generic = df[df["generator.type"] == "generic"]
    assert generic["generator.lambda_energy"].isna().all()  # conditional: only for ECCo

    client, parents, children = mlflow_runs(out.run_dir)
    assert len(parents) == 1 and len(children) == 6
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "val_loss")) == 3
        # CF metrics are logged where they were computed, not where Tune saw them carried over
        cf = client.get_metric_history(child.info.run_id, "val_validity")
        assert [m.step for m in cf] == [2, 3]  # every eval_every epochs and at the last one
        assert 0.5 <= float(child.data.params["generator.tau"]) <= 0.95
    # the study is in the run directory, and its plots in the parent run
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = JournalStorage(JournalFileBackend(str(out.run_dir / "optuna_journal.log")))
    study = optuna.load_study(study_name="tpe6", storage=journal)
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 6
    plots = {a.path for a in client.list_artifacts(parents[0].info.run_id, "plots")}
    assert {f"plots/optuna_{n}.png" for n in ("history", "parallel_coordinate")} <= plots


def test_failing_trial_errors_with_its_reason_and_the_others_finish(ray_runtime, tmp_path):
    from ct_sweeps import runner

    good = tmp_path / "points.csv"
    good.write_text("a,b,y\n" + "".join(f"{i % 7},{i % 5},{i % 2}\n" for i in range(60)))
    path = sweep_file(
        tmp_path,
        "fails",
        {"algorithm": "grid", "metric": "val_acc", "mode": "max"},
        {"data.path": [str(good), str(tmp_path / "missing.csv")]},
        overrides={
            "data.name": "csv",
            "data.target": "y",
            "data.n_train": None,
            "data.n_val": 10,
            "data.n_test": 10,
            "train.epochs": 1,
        },
    )
    out = runner.run(runner.plan(path), storage=str(tmp_path / "run"))
    assert (out.n_finished, out.n_errors) == (1, 1)
    df = out.report.frame
    failed = df[df["status"] == "ERROR"].iloc[0]
    assert "missing.csv" in failed["data.path"] and "missing.csv" in failed["error"]
    _, _, children = mlflow_runs(out.run_dir)
    statuses = sorted(c.info.status for c in children)
    assert statuses == ["FAILED", "FINISHED"]


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_runtime, tmp_path):

    from ct_sweeps import runner
    from ct_sweeps.plan import RunDir
    from ct_sweeps.run.results import collect

    path = sweep_file(
        tmp_path,
        "interrupt",
        {"algorithm": "grid", "metric": "val_acc", "mode": "max", "max_concurrent": 1},
        {"train.lambda_reg": [0.1, 0.2, 0.3, 0.4]},
        overrides=INTERRUPTIBLE,
        checkpoint_every=2,
    )
    run_dir = tmp_path / "run"
    rc, log = run_then_interrupt(path, run_dir, ray_runtime)
    assert rc == 130, log
    assert f"ct-sweep resume {run_dir}" in log

    before = {r.trial_id: r for r in collect(RunDir.load(run_dir))}
    done_before = {t: r for t, r in before.items() if r.status == "TERMINATED"}
    assert 1 <= len(done_before) < 4
    lines = {t: (r.path / "result.json").read_text() for t, r in done_before.items()}

    out = runner.resume(run_dir)
    assert (out.n_finished, out.n_errors, out.interrupted) == (4, 0, False)
    after = {r.trial_id: r for r in collect(RunDir.load(run_dir))}
    assert len(after) == 4
    for t, text in lines.items():  # finished trials were not rerun
        assert (after[t].path / "result.json").read_text() == text
    epochs = list(range(1, INTERRUPTIBLE["train.epochs"] + 1))
    for r in after.values():  # one record per epoch, though a resumed trial reports its
        assert [h["epoch"] for h in r.history()] == epochs  # checkpoint again
    client, parents, children = mlflow_runs(run_dir)
    assert len(parents) == 1 and len(children) == 4
    assert {c.info.status for c in children} == {"FINISHED"}
    for c in children:  # and MLflow holds each epoch once
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_acc")]
        assert sorted(steps) == epochs, steps
