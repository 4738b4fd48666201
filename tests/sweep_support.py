"""Helpers of the sweep integration tests: read a run's MLflow store, and run `ct-sweep run` as
its own process to interrupt it mid-sweep (for the resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

INTERRUPTIBLE = {
    "data.n_train": 3000,
    "train.nce": 1000,
    "generator.T": 20,
    "train.epochs": 60,
    "generator.type": "generic",
    "train.batch_size": 30,
}
"""Moons overrides whose 60 epochs take long enough (seconds per setting on a quiet core) for
``run_then_interrupt`` to stop a sweep of 4 settings mid-way (the resume tests, packed and not).
The rest must outlast the driver's marking the first trial FINISHED in MLflow, which comes after
its models are logged (the first MLflow model save in a process takes ~2 s): with 20 epochs a
pack of 2 settings once finished first."""


def run_then_interrupt(sweep: Path, run_dir: Path, address: str) -> tuple[int, str]:
    """Start the sweep on the Ray at ``address``, send SIGINT once its first trial (or pack) has
    finished, and return the driver's exit code and output.

    A trial counts as finished once the driver has marked its MLflow run FINISHED: that happens
    after Tune recorded the trial as TERMINATED (the final checkpoint file alone appears before
    the driver has taken the trial's last result, and a SIGINT then leaves it unfinished).
    """
    env = {**os.environ, "CT_SWEEP_VERBOSE": "0"}  # the token of ray_runtime's Ray included
    cmd = [sys.executable, "-m", "ct_sweeps.cli", "run", str(sweep), "--storage", str(run_dir)]
    driver = subprocess.Popen(
        [*cmd, "--address", address],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        finished = 0
        while time.monotonic() < deadline and driver.poll() is None:
            if any((run_dir / "tune").glob("trial_*/checkpoint_*/model*.pt")):
                finished = _finished_runs(run_dir)
                if finished >= 1:
                    break
            time.sleep(0.2)
        if driver.poll() is not None:
            pytest.fail(f"the driver exited early ({driver.returncode}):\n{driver.stdout.read()}")
        assert finished >= 1, "no trial finished in time"
        driver.send_signal(signal.SIGINT)
        log, _ = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver.returncode, log


def _finished_runs(run_dir: Path) -> int:
    """Child runs the sweep's driver has ended FINISHED in its local MLflow store (0 while the
    store is not there yet)."""
    if not (run_dir / "mlflow.db").exists():  # never create it beside the driver
        return 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    try:
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            filter_string="attributes.status = 'FINISHED' and tags.`mlflow.parentRunId` != ''",
        )
    except Exception:
        return 0
    return len(runs)


def mlflow_runs(run_dir: Path) -> tuple[object, list, list]:
    """(client, parent runs, child runs) of the sweep's local MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    exps = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([exps[0].experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def sqlite_scalar(db: Path, sql: str) -> object:
    """The one value a query returns from a sqlite file (``PRAGMA journal_mode``, a count)."""
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()
