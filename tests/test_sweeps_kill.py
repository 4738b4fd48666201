"""A packed sweep whose driver is SIGKILLed and then resumed holds each MLflow step once
(``integration``, ``slow``: five kills at different points, about a minute each).

Each run is a real ``ct-sweep run`` process with a Ray of its own and the default sqlite store in
the run directory, writing metrics every 2 s (``tracking.flush_s``), so that the store already
holds part of the running settings' epochs when the driver dies; ``ct-sweep resume`` then replays
the run directory, whose results lag behind the store, and the restored packs report their
checkpoints' epochs again. The fast variant of this, without Ray, is in
``tests/test_sweeps_tracking.py``.
"""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 60  # long enough that every kill point of the test falls inside the sweep


def _sweep(tmp: Path) -> Path:
    doc = {
        "name": "killed",
        "base": str(ROOT / "configs" / "base" / "moons.yaml"),
        "overrides": {
            "data.n_train": 1000,
            "data.n_val": 200,
            "train.epochs": EPOCHS,
            "train.lr": 0.005,
            "train.nce": 300,
            "train.eval_every": 5,
            "evaluation.n_val_individuals": 50,
        },
        "search": {"algorithm": "grid", "metric": "val_implausibility", "mode": "min"},
        "space": {"train.lambda_reg": [0.1, 0.2, 0.3, 0.4]},
        "resources": {"cpu": 1},
        "tracking": {"flush_s": 2.0},
        "checkpoint_every": 5,
    }
    doc["search"].update(max_concurrent=2, pack=2, seed=3)
    path = tmp / "killed.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _metric_rows(db: Path) -> int:
    """Metric values in the store (0 before it holds any)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM metrics").fetchone()[0]
    except sqlite3.Error:  # not created yet, or busy
        return 0


def _ct_sweep(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ct_sweeps.cli", *args],
        cwd=ROOT,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.parametrize("delay", [0.0, 1.5, 3.0, 4.5, 6.0])
def test_a_killed_and_resumed_packed_sweep_holds_each_step_once(tmp_path, delay):
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    db = run_dir / "mlflow.db"
    drv = _ct_sweep("run", str(_sweep(tmp_path)), "--storage", str(run_dir), log=tmp_path / "a")
    try:
        deadline = time.monotonic() + 300
        while drv.poll() is None and _metric_rows(db) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(delay)  # a different point of the sweep in each repetition
        assert drv.poll() is None, (tmp_path / "a").read_text()[-3000:]
        os.killpg(drv.pid, signal.SIGKILL)
    finally:
        if drv.poll() is None:
            os.killpg(drv.pid, signal.SIGKILL)
        drv.wait(30)
    res = _ct_sweep("resume", str(run_dir), log=tmp_path / "b")
    assert res.wait(600) == 0, (tmp_path / "b").read_text()[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        for key in child.data.metrics:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
            twice = sorted(s for s, n in collections.Counter(steps).items() if n > 1)
            assert not twice, (child.info.run_name, key, twice)
        loss = client.get_metric_history(child.info.run_id, "loss")
        assert sorted(m.step for m in loss) == list(range(1, EPOCHS + 1)), child.info.run_name
