"""Faults lose nothing (issue 5, item 3), on a real local multi-node cluster (``integration``).

One cluster for the module (cluster/ctcluster.py: a head with 0 CPUs, 2 worker nodes with 1 CPU
each, token auth, an MLflow server); every sweep is a real ``ct-sweep run --address GCS`` process.

* a trial whose loss goes NaN/Inf and trials that raise are retried ``max_failures`` times, then
  marked failed with their reason in results.csv and in MLflow; the other trial finishes;
* the MLflow server stopped mid-sweep: the sweep finishes, ``ct-sweep sync-mlflow`` then puts
  every trial and every per-epoch metric into MLflow;
* the driver SIGKILLed mid-sweep: ``ct-sweep resume`` finishes it, finished trials are not rerun;
* a worker node killed mid-sweep (last: the cluster keeps one worker): its trial restarts from
  its last checkpoint on the other node, every trial completes.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.faults_util import (
    Cluster,
    assert_nothing_lost,
    ct_sweep,
    epochs,
    history,
    mlflow_children,
    records,
    results_table,
    run_info,
    trial_dirs,
    wait_for,
    write_sweep,
)
from tests.readme_promise import promised_metrics

# in the default run (CI): the resume and restore paths these faults exercise are where a
# regression loses a user's work; `-m "not faults"` leaves them out of a quick local run
pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster.up()
    try:
        yield c
    finally:
        c.down()
        print(f"\ncluster timings: { {k: round(v, 1) for k, v in c.timings.items()} }")


HEAVY = {"data.n_train": 6000, "train.nce": 1000, "generator.T": 30}
"""Epochs of ≈ 0.2 s on a quiet core (SMALL's take 30 ms), so that a kill lands mid-trial."""


def run_args(cluster: Cluster, sweep: Path, run_dir: Path) -> list[str]:
    uri = cluster.info["mlflow"]["uri"]
    return [
        "run",
        str(sweep),
        "--storage",
        str(run_dir),
        "--address",
        cluster.gcs,
        "--tracking-uri",
        uri,
    ]


def test_nan_and_raising_trials_are_retried_then_failed_with_their_reason(cluster, tmp_path):
    good = tmp_path / "points.csv"
    good.write_text("a,b,y\n" + "".join(f"{i % 7},{i % 5},{i % 2}\n" for i in range(80)))
    failing = "ct_test_models:failing_penalty"
    sweep = write_sweep(
        tmp_path / "fail.yaml",
        "faults-fail",
        # lr 1e30: epoch 1 is finite (and checkpointed), epoch 2 is NaN/Inf in every batch;
        # the failing generator's penalty raises in the trial's first search
        {"train.lr": [0.01, 1e30], "generator.type": ["generic", failing]},
        overrides={
            "data.name": "csv",
            "data.path": str(good),
            "data.target": "y",
            "data.n_train": None,
            "data.n_val": 10,
            "data.n_test": 10,
            "train.epochs": 3,
        },
        checkpoint_every=1,
        max_failures=1,
    )
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    drv = ct_sweep(cluster, *run_args(cluster, sweep, run_dir), log=tmp_path / "driver.log")
    rc = drv.wait(240)
    cluster.timings["fail_sweep_s"] = time.monotonic() - t0
    out = drv.output()
    assert rc == 0, out  # some trials finished: the sweep itself succeeded
    assert "Traceback" not in out.split("Sweep finished")[-1]

    rows = {r["trial_id"]: r for r in results_table(run_dir)}
    assert len(rows) == 4
    ok = [r for r in rows.values() if r["status"] == "TERMINATED"]
    failed = [r for r in rows.values() if r["status"] == "ERROR"]
    assert len(ok) == 1 and len(failed) == 3, rows
    assert float(ok[0]["train.lr"]) == 0.01 and ok[0]["generator.type"] == "generic"
    assert float(ok[0]["epochs"]) == 3
    nan = next(r for r in failed if r["generator.type"] == "generic")
    assert float(nan["train.lr"]) == 1e30
    assert "non-finite" in nan["error"] and "NaN/Inf" in nan["error"], nan["error"]
    for r in failed:
        if r["generator.type"] == failing:
            assert "fails on purpose" in r["error"], r["error"]

    # retried up to max_failures: 1 + 1 attempts, each recorded in Tune's error file
    for tid, r in rows.items():
        if r["status"] != "ERROR":
            continue
        err = (run_dir / "tune" / f"trial_{tid}" / "error.txt").read_text()
        assert err.count("Failure # ") == 2, err[:2000]
    # the NaN trial's retry resumed from its last checkpoint, which holds the failure: epoch 1
    # trained once, epoch 2 failed once (its record, the history's last, says why). A retry
    # reports its checkpoint's epochs again, so result.json can hold them twice; the report
    # keeps one record of each
    nan_dir = run_dir / "tune" / f"trial_{nan['trial_id']}"
    states = sorted(nan_dir.glob("checkpoint_*/states.pt"))
    assert states, "the NaN trial left no checkpoint"
    (state,) = torch.load(states[-1], map_location="cpu", weights_only=True)
    assert [int(r["epoch"]) for r in state["history"]] == [1, 2] and "NaN/Inf" in state["failed"]
    assert "failed" not in state["history"][0] and "NaN/Inf" in state["history"][1]["failed"]
    assert sorted({int(r["epoch"]) for r in records(nan_dir) if "failed" not in r}) == [1]

    info = run_info(run_dir)
    children = {
        c.data.tags["ct.trial_id"]: c
        for c in mlflow_children(info["tracking_uri"], info["experiment_id"])
    }
    assert set(children) == set(rows)
    for tid, r in rows.items():
        child = children[tid]
        if r["status"] == "ERROR":
            assert child.info.status == "FAILED"
            assert child.data.tags.get("ct.error") == r["error"], child.data.tags
        else:
            assert child.info.status == "FINISHED"


def test_mlflow_outage_mid_sweep_loses_nothing_after_sync(cluster, tmp_path):
    """Every metric the README promises, at its steps, with the value of the epoch's record."""
    sweep = write_sweep(
        tmp_path / "outage.yaml",
        "faults-mlflow",
        {"train.lambda_reg": [0.1, 0.2, 0.3, 0.4]},
        overrides={"train.epochs": 12},
        checkpoint_every=3,
    )
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    drv = ct_sweep(cluster, *run_args(cluster, sweep, run_dir), log=tmp_path / "driver.log")
    wait_for(
        "a trial's first epoch",
        lambda: not drv.alive() or any(epochs(d) for d in trial_dirs(run_dir)),
        180,
    )
    assert drv.alive(), drv.output()
    outage = cluster.mlflow_restart(pause_s=4.0)
    still_running = drv.alive()
    rc = drv.wait(300)
    cluster.timings["mlflow_sweep_s"] = time.monotonic() - t0
    cluster.timings["mlflow_outage_s"] = outage
    assert rc == 0, drv.output()
    rows = results_table(run_dir)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"TERMINATED"}, rows
    # MLflow went down mid-sweep (asserted above); on a slow machine its restart (~15-30 s) may
    # outlast the sweep, which then also ends with MLflow down: sync must backfill either way
    cluster.timings["mlflow_back_before_end"] = float(still_running)

    res = ct_sweep(cluster, "sync-mlflow", str(run_dir), log=tmp_path / "sync.log")
    assert res.wait(180) == 0, res.output()

    info = run_info(run_dir)
    uri = info["tracking_uri"]
    assert uri == cluster.info["mlflow"]["uri"]
    client = MlflowClient(tracking_uri=uri)
    children = {c.data.tags["ct.trial_id"]: c for c in mlflow_children(uri, info["experiment_id"])}
    assert set(children) == {r["trial_id"] for r in rows}
    for tid, child in children.items():
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == info["parent_run_id"]
        hist = records(run_dir / "tune" / f"trial_{tid}")
        assert [int(h["epoch"]) for h in hist] == list(range(1, 13))
        by_epoch = {int(h["epoch"]): h for h in hist}
        want = promised_metrics(by_epoch, vanilla=False, epochs=12)
        assert {"loss", "div", "mature", "train_seconds"} <= set(want)
        run_id = child.info.run_id
        assert set(child.data.metrics) == set(want), sorted(child.data.metrics)
        for key, steps in want.items():
            logged = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            # each at its steps, none twice (the callback and the backfill do not overlap)
            assert [m.step for m in logged] == steps, (key, [m.step for m in logged])
            for m in logged:  # per-epoch values are the epoch's record
                if key in by_epoch[m.step]:
                    assert math.isclose(m.value, by_epoch[m.step][key], rel_tol=1e-6), (key, m)
    parent = client.get_run(info["parent_run_id"])
    assert parent.info.status == "FINISHED"


def checkpoints(trial_dir: Path) -> int:
    """Checkpoints a trial has persisted (workers write them straight to storage; result.json
    gets a trial's results only once the driver has taken them)."""
    return len(list(trial_dir.glob("checkpoint_*")))


def finished(run_dir: Path) -> list[Path]:
    """Trials whose final checkpoint (the one with the model) is on disk."""
    return [d for d in trial_dirs(run_dir) if any(d.glob("checkpoint_*/model*.pt"))]


def restarts(trial_dir: Path) -> list[dict]:
    """The first record of each later process that ran the trial (a restart elsewhere)."""
    hist, out = history(trial_dir), []
    for prev, rec in zip(hist, hist[1:]):
        if rec["pid"] != prev["pid"]:
            out.append(rec)
    return out


def test_driver_killed_mid_sweep_resumes_without_rerunning_finished_trials(cluster, tmp_path):
    sweep = write_sweep(
        tmp_path / "driver.yaml",
        "faults-driver",
        {"train.lambda_reg": [0.1, 0.2, 0.3, 0.4]},
        overrides={"train.epochs": 40, **HEAVY},
        checkpoint_every=2,
    )
    run_dir = tmp_path / "run"
    drv = ct_sweep(cluster, *run_args(cluster, sweep, run_dir), log=tmp_path / "driver.log")
    wait_for("a finished trial", lambda: not drv.alive() or finished(run_dir), 240)
    assert drv.alive(), drv.output()
    os.kill(drv.proc.pid, signal.SIGKILL)
    t_kill = time.time()
    assert drv.wait(30) == -signal.SIGKILL
    done = finished(run_dir)
    saved = {d.name: checkpoints(d) for d in trial_dirs(run_dir) if d not in done}
    assert 1 <= len(done) < 4, (done, saved)

    t0 = time.monotonic()
    res = ct_sweep(
        cluster, "resume", str(run_dir), "--address", cluster.gcs, log=tmp_path / "resume.log"
    )
    rc = res.wait(300)
    cluster.timings["resume_s"] = time.monotonic() - t0
    assert rc == 0, res.output()
    assert_nothing_lost(run_dir, n_settings=4, n_epochs=40)
    for d in trial_dirs(run_dir):
        late = [int(r["epoch"]) for r in history(d) if r.get("timestamp", 0) > t_kill]
        if d in done:  # not rerun: at most its last epoch reported again (when Tune's last
            assert late in ([], [40]), (d.name, late)  # snapshot had not recorded its end)
        elif saved.get(d.name):  # resumed from its checkpoint, not from epoch 1
            assert late and min(late) > 1, (d.name, late)


def test_driver_killed_mid_packed_sweep_loses_nothing(cluster, tmp_path):
    """The same with the default kind of sweep: several settings trained per trial (packs)."""
    sweep = write_sweep(
        tmp_path / "driver-packed.yaml",
        "faults-driver-packed",
        {"train.lambda_reg": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
        overrides={"train.epochs": 40, **HEAVY},
        checkpoint_every=2,
        pack=2,
    )
    run_dir = tmp_path / "run"
    drv = ct_sweep(cluster, *run_args(cluster, sweep, run_dir), log=tmp_path / "driver.log")

    def started() -> bool:  # a pack past epoch 10 (checkpoints every 2 epochs)
        return not drv.alive() or any(checkpoints(d) >= 5 for d in trial_dirs(run_dir))

    wait_for("a pack past epoch 10", started, 240)
    assert drv.alive(), drv.output()
    os.kill(drv.proc.pid, signal.SIGKILL)
    assert drv.wait(30) == -signal.SIGKILL
    assert len(finished(run_dir)) < 3, "every pack finished before the driver was killed"
    res = ct_sweep(
        cluster, "resume", str(run_dir), "--address", cluster.gcs, log=tmp_path / "resume.log"
    )
    assert res.wait(300) == 0, res.output()
    assert_nothing_lost(run_dir, n_settings=6, n_epochs=40)


def _kill_node_mid_sweep(cluster: Cluster, tmp_path: Path, node: str, pack: int | None) -> None:
    """Run a 2-trial sweep (one per worker node), SIGKILL ``node`` while both trials are
    between epochs 3 and n/2; the sweep must finish with nothing lost, the killed trial
    resumed on the other node from its last checkpoint (one per epoch)."""
    n = 60
    space = {"train.lambda_reg": [0.1, 0.2] if pack is None else [0.1, 0.2, 0.3, 0.4]}
    sweep = write_sweep(
        tmp_path / "node.yaml",
        "faults-node" if pack is None else "faults-node-packed",
        space,
        overrides={"train.epochs": n, **HEAVY},
        checkpoint_every=1,
        max_failures=3,
        pack=pack,
    )
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    drv = ct_sweep(cluster, *run_args(cluster, sweep, run_dir), log=tmp_path / "driver.log")

    def midway() -> bool:
        if not drv.alive():
            return True  # stop waiting; asserted below
        ds = trial_dirs(run_dir)
        return len(ds) == 2 and all(3 <= checkpoints(d) <= n // 2 for d in ds)

    wait_for("both trials between epochs 3 and n/2", midway, 240)
    assert drv.alive(), drv.output()
    tree = cluster.kill_node(node)
    assert len(finished(run_dir)) == 0, "a trial finished before the node was killed"
    t_kill = time.monotonic()
    rc = drv.wait(360)
    cluster.timings[f"{node}_sweep_s"] = time.monotonic() - t0
    cluster.timings[f"{node}_after_kill_s"] = time.monotonic() - t_kill
    assert rc == 0, drv.output()

    assert_nothing_lost(run_dir, n_settings=len(space["train.lambda_reg"]), n_epochs=n)
    moved = {d.name: restarts(d) for d in trial_dirs(run_dir) if restarts(d)}
    assert len(moved) == 1, moved  # the killed node's trial, and only it, ran again elsewhere
    (first, *_), *_ = moved.values()
    assert first["pid"] not in tree and first["epoch"] > 1, first  # from a checkpoint


def test_zz_worker_node_killed_mid_sweep_trials_restart_from_checkpoints(cluster, tmp_path):
    """Runs last but one (file order): it leaves the cluster with one worker node."""
    _kill_node_mid_sweep(cluster, tmp_path, "worker-1", pack=None)


def test_zzz_worker_node_killed_mid_packed_sweep_loses_nothing(cluster, tmp_path):
    """Runs last: a fresh worker replaces the one killed above, then a node running a pack of
    settings is killed."""
    cluster.add_worker(3)
    _kill_node_mid_sweep(cluster, tmp_path, "worker-2", pack=2)
