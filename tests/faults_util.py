"""Helpers of tests/test_faults.py: a local cluster from cluster/ctcluster.py, sweep drivers run
as real ``ct-sweep`` processes, and readers for what a run directory and MLflow hold."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cluster"))
import procinfo  # noqa: E402

PY = sys.executable
BIN = Path(PY).parent
SCRIPT = ROOT / "cluster" / "ctcluster.py"

# Trials of a few seconds each: moons, small data, a short search per epoch.
SMALL = {
    "data.n_train": 300,
    "data.n_val": 100,
    "data.n_test": 100,
    "train.nce": 60,
    "train.batch_size": 50,
    "train.lr": 0.01,
    "generator.type": "generic",
    "generator.T": 10,
}


def sourced_env(env_file: Path, base: dict[str, str]) -> dict[str, str]:
    """``base`` plus what ``source env_file`` exports (parsed by bash itself)."""
    out = subprocess.run(
        ["bash", "-c", f"set -a; source {env_file}; env -0"],
        env=base,
        capture_output=True,
        check=True,
    ).stdout
    pairs = (item.split(b"=", 1) for item in out.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


def wait_for(what: str, check: Callable[[], Any], timeout: float, poll: float = 0.3) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Cluster:
    """A running local cluster: state dir, client env (env.sh sourced), timings."""

    state: Path
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def info(self) -> dict:
        return json.loads((self.state / "cluster.json").read_text())

    @property
    def gcs(self) -> str:
        return self.info["ray"]["address"]

    def node(self, name: str) -> dict:
        return next(n for n in self.info["ray"]["nodes"] if n["name"] == name)

    def ctl(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    @classmethod
    def up(cls) -> Cluster:
        # a short private path: Ray puts unix sockets under the temp dir (~107 chars at most)
        state = Path(tempfile.mkdtemp(prefix="ctf-", dir="/tmp"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env.update(CT_CLUSTER_DIR=str(state), DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
        # the test's own generators (tests/user_models) import in the driver and in Ray's workers
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "tests" / "user_models"), env.get("PYTHONPATH")) if p
        )
        c = cls(state, env)
        args = ["up", "--workers", "2", "--cpus-per-worker", "1", "--head-cpus", "0"]
        args += ["--port", "0", "--dashboard-port", "0", "--mlflow-port", "0"]
        t0 = time.monotonic()
        res = c.ctl(*args, timeout=300)
        c.timings["up_s"] = time.monotonic() - t0
        if res.returncode != 0:
            c.down()
            raise RuntimeError(
                f"cluster up failed (rc {res.returncode}):\n{res.stdout}{res.stderr}"
            )
        c.env = sourced_env(state / "env.sh", env)
        return c

    def down(self) -> None:
        t0 = time.monotonic()
        if (self.state / "cluster.json").exists():
            self.ctl("down", timeout=180)
        self.timings["down_s"] = time.monotonic() - t0
        shutil.rmtree(self.state, ignore_errors=True)

    def mlflow_restart(self, pause_s: float) -> float:
        """Stop the MLflow server, wait ``pause_s``, start it again on the same port; return the
        seconds it was unreachable."""
        port = str(self.info["mlflow"]["port"])
        t0 = time.monotonic()
        res = self.ctl("mlflow", "down", timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        time.sleep(pause_s)
        self._mlflow_up_same_port(int(port))
        return time.monotonic() - t0

    def _mlflow_up_same_port(self, port: int) -> None:
        """``ctcluster.py mlflow up --port P`` refuses P while the old server's connections sit
        in TIME_WAIT (its free-port probe binds without SO_REUSEADDR, which the server itself
        sets), for up to a minute. Start it through the cluster's own functions instead."""
        from clusterstate import load_state, save_state
        from mlflowserver import mlflow_healthy, start_mlflow

        info = load_state(self.state)
        rec = start_mlflow(self.state, info["host"], port)
        info["mlflow"] = rec
        save_state(self.state, info)
        wait_for("MLflow /health", lambda: mlflow_healthy(rec["uri"]), 120, poll=0.5)

    def add_worker(self, index: int, cpus: float = 1.0, store_mb: int = 256) -> dict:
        """Start one more worker node (``worker-<index>``) and wait until Ray lists it alive."""
        from clusterstate import load_state, save_state
        from raynodes import alive_nodes, start_worker

        info = load_state(self.state)
        token = (self.state / "auth_token").read_text().strip()
        dash = info["ray"]["dashboard_url"]
        # the nodes whose processes run, not Ray's list: a node killed seconds ago is still
        # ALIVE there until its health checks time out, and counting it would wait for a node
        # too many
        want = sum(procinfo.alive(n["pid"]) for n in info["ray"]["nodes"]) + 1
        node = start_worker(self.state, info["host"], self.gcs, index, cpus, store_mb)
        info["ray"]["nodes"].append(node)
        save_state(self.state, info)
        wait_for(
            f"worker-{index} alive in Ray ({want} nodes)",
            lambda: len(alive_nodes(dash, token) or []) == want,
            180,
            poll=1.0,
        )
        return node

    def kill_node(self, name: str) -> set[int]:
        """SIGKILL a node's ``ray start`` process and its whole tree (raylet, agents, workers)."""
        pid = self.node(name)["pid"]
        tree = procinfo.descendants(pid) | {pid}
        for p in tree:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return tree


def _one_setting_per_trial() -> dict:
    """``search.pack: 1``: these tests follow one setting per trial."""
    return {"pack": 1}


def write_sweep(
    path: Path,
    name: str,
    space: dict,
    overrides: dict | None = None,
    pack: int | None = None,
    **extra: Any,
) -> Path:
    """A grid sweep on small moons; one setting per trial unless ``pack`` settings per trial."""
    doc = {
        "name": name,
        "base": str(ROOT / "configs" / "base" / "moons.yaml"),
        "overrides": {**SMALL, **(overrides or {})},
        "search": {"algorithm": "grid", "metric": "val_acc", "mode": "max", "max_concurrent": 2}
        | (_one_setting_per_trial() if pack is None else {"pack": pack}),
        "space": space,
        "resources": {"cpu": 1},
        **extra,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Driver:
    """A ``ct-sweep`` process (its own session, so that a kill reaches it alone)."""

    proc: subprocess.Popen
    log: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(
                f"ct-sweep did not finish in {timeout:.0f} s:\n{self.output()}"
            ) from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None


def ct_sweep(cluster: Cluster, *args: str, log: Path) -> Driver:
    env = dict(cluster.env, CT_SWEEP_VERBOSE="0", PYTHONUNBUFFERED="1")
    fh = open(log, "ab")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [str(BIN / "ct-sweep"), *args],
        cwd=ROOT,
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    fh.close()
    return Driver(proc, log)


# ----------------------------------------------------------------------------------------------
# What the run directory holds


def trial_dirs(run_dir: Path) -> list[Path]:
    exp = run_dir / "tune"
    return sorted(p for p in exp.glob("trial_*") if p.is_dir()) if exp.exists() else []


def history(trial_dir: Path) -> list[dict]:
    """Every complete ``result.json`` line of a trial."""
    path = trial_dir / "result.json"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def epochs(trial_dir: Path) -> list[int]:
    """The epoch of each result the trial reported (a result carries the epochs since the
    last)."""
    return [int(r["epoch"]) for r in history(trial_dir) if "epoch" in r]


def records(trial_dir: Path, k: int = 0) -> list[dict]:
    """Setting ``k``'s epoch records in the order the trial reported them."""
    return [rec for line in history(trial_dir) for rec in line.get("settings", {}).get(str(k), [])]


def results_table(run_dir: Path) -> list[dict[str, str]]:
    import csv

    with (run_dir / "results.csv").open() as fh:
        return list(csv.DictReader(fh))


def run_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def mlflow_children(uri: str, experiment_id: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([experiment_id], max_results=1000)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def assert_nothing_lost(run_dir: Path, n_settings: int, n_epochs: int) -> None:
    """Every setting finished all its epochs, in results.csv and as a FINISHED MLflow child run
    that holds each epoch's metrics exactly once."""
    from mlflow.tracking import MlflowClient

    rows = results_table(run_dir)
    assert len(rows) == n_settings, rows
    for r in rows:
        assert r["status"] == "TERMINATED", r
        assert float(r["epoch"]) == n_epochs and float(r["epochs"]) == n_epochs, r
    info = run_info(run_dir)
    children = [
        c
        for c in mlflow_children(info["tracking_uri"], info["experiment_id"])
        if c.data.tags["mlflow.parentRunId"] == info["parent_run_id"]
    ]
    assert len(children) == n_settings, [c.info.run_name for c in children]
    assert {c.info.status for c in children} == {"FINISHED"}
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    for c in children:
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "val_acc")]
        assert sorted(steps) == list(range(1, n_epochs + 1)), (c.info.run_name, steps)
