"""The local multi-node cluster of `cluster/ctcluster.py`, started for real (marked `integration`).

One cluster per module: a head with 0 CPUs and 2 worker nodes with 1 CPU each (separate
`ray start` processes on 127.0.0.1), token auth with a token in a private state dir, and an
MLflow server. The tests check what a user relies on: the printed addresses and env file, health,
`ray status` with the token, rejection without it, loopback-only listeners, a sweep submitted with
`ray job submit --working-dir .` landing in MLflow, and that `down` leaves no process behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "cluster"))
import procinfo  # noqa: E402

from tests.faults_util import sourced_env  # noqa: E402
from tests.sweep_support import sqlite_scalar  # noqa: E402

pytestmark = pytest.mark.integration

PY = sys.executable
BIN = Path(PY).parent
SCRIPT = REPO / "cluster" / "ctcluster.py"


@dataclass
class LocalCluster:
    """A running cluster: its state dir, parsed state file, client env and timings."""

    state: Path
    env: dict[str, str]
    up_output: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def info(self) -> dict:
        return json.loads((self.state / "cluster.json").read_text())

    @property
    def token(self) -> str:
        return (self.state / "auth_token").read_text().strip()

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def our_pids(self) -> set[int]:
        """Every live process of this cluster: node/MLflow pids, their trees, the temp-dir marker."""
        info = self.info
        recs = info["ray"]["nodes"] + [info["mlflow"]]
        pids = {r["pid"] for r in recs if procinfo.alive(r["pid"])}
        for pid in list(pids):
            pids |= procinfo.descendants(pid)
        return pids | procinfo.pids_mentioning(info["ray_temp_dir"])


def http(
    url: str,
    *,
    token: str | None = None,
    data: dict | None = None,
    headers: dict | None = None,
) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.data = json.dumps(data).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def is_loopback(host: str) -> bool:
    addr = ipaddress.ip_address(host)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@pytest.fixture(scope="module")
def cluster():
    # A short private path: Ray puts unix sockets under the temp dir (path limit ~107 chars).
    state = Path(tempfile.mkdtemp(prefix="ctc-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(CT_CLUSTER_DIR=str(state), DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true")
    args = ["up", "--workers", "2", "--cpus-per-worker", "1", "--head-cpus", "0"]
    args += ["--port", "0", "--dashboard-port", "0", "--mlflow-port", "0"]
    t0 = time.monotonic()
    up = subprocess.run(
        [PY, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
    )
    c = LocalCluster(state=state, env=env, up_output=up.stdout + up.stderr)
    c.timings["up_s"] = time.monotonic() - t0
    if up.returncode != 0:
        c.run("down", timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"cluster up failed (rc {up.returncode}):\n{c.up_output}")
    try:
        yield c
    finally:
        if (state / "cluster.json").exists():  # the `down` test did not run or failed
            c.run("down", timeout=120)
        print(f"\ncluster timings: {json.dumps({k: round(v, 1) for k, v in c.timings.items()})}")
        shutil.rmtree(state, ignore_errors=True)


def test_up_prints_addresses_and_writes_a_sourceable_env_file(cluster):
    info = cluster.info
    out = cluster.up_output
    assert f"RAY_ADDRESS={info['ray']['address']}" in out
    assert info["ray"]["dashboard_url"] in out
    assert f"MLFLOW_TRACKING_URI={info['mlflow']['uri']}" in out
    env = sourced_env(cluster.state / "env.sh", {"PATH": os.environ["PATH"]})
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(cluster.state / "auth_token")
    assert env["RAY_ADDRESS"] == info["ray"]["address"]
    assert env["MLFLOW_TRACKING_URI"] == info["mlflow"]["uri"]
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert cluster.token not in (cluster.state / "env.sh").read_text()


def test_token_is_private_and_state_dir_is_git_ignored(cluster):
    token = cluster.state / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(cluster.token) == 64 and int(cluster.token, 16) >= 0
    assert stat.S_IMODE(cluster.state.stat().st_mode) == 0o700
    assert (cluster.state / ".gitignore").read_text().splitlines()[-1] == "*"


def test_health_command_reports_every_node_and_mlflow(cluster):
    res = cluster.run("health", timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 5  # head, worker-1, worker-2, ray nodes, mlflow
    assert all(ln.startswith("ok") for ln in lines), res.stdout
    assert "3/3 alive" in res.stdout


def test_nodes_are_separate_processes_with_their_own_cpus(cluster):
    status, body = http(
        f"{cluster.info['ray']['dashboard_url']}/api/v0/nodes?limit=100&detail=1",
        token=cluster.token,
    )
    assert status == 200, body
    nodes = [n for n in json.loads(body)["data"]["result"]["result"] if n["state"] == "ALIVE"]
    cpus = sorted(n["resources_total"].get("CPU", 0.0) for n in nodes)
    assert cpus == [0.0, 1.0, 1.0]
    assert sum(n["is_head_node"] for n in nodes) == 1
    assert {n["node_ip"] for n in nodes} == {"127.0.0.1"}
    pids = {r["pid"] for r in cluster.info["ray"]["nodes"]}
    assert len(pids) == 3 and all(procinfo.alive(p) for p in pids)


def test_ray_status_with_the_token_sees_three_nodes_and_two_cpus(cluster):
    env = sourced_env(cluster.state / "env.sh", cluster.env)
    # `up` waits until the GCS lists every node; `ray status` shows the autoscaler's view, which
    # refreshes every few seconds, so a node that just joined may take a moment to appear there
    deadline = time.monotonic() + 60
    while True:
        res = subprocess.run(
            [str(BIN / "ray"), "status"], env=env, capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr
        active = res.stdout.split("Active:")[1].split("Pending:")[0]
        if active.count("node_") == 3 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert active.count("node_") == 3, res.stdout
    assert "0.0/2.0 CPU" in res.stdout


def test_clients_without_the_right_token_are_rejected(cluster):
    info = cluster.info
    base = sourced_env(cluster.state / "env.sh", cluster.env)  # right address, loopback knob
    no_auth = dict(base, RAY_AUTH_MODE="disabled")
    res = subprocess.run(
        [str(BIN / "ray"), "status"], env=no_auth, capture_output=True, text=True, timeout=120
    )
    assert res.returncode != 0
    assert "Authentication" in res.stderr or "InvalidAuthToken" in res.stderr, res.stderr[-800:]

    wrong = cluster.state / "wrong_token"
    wrong.write_text("0" * 64)
    bad_token = dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(wrong))
    res = subprocess.run(
        [str(BIN / "ray"), "status"], env=bad_token, capture_output=True, text=True, timeout=120
    )
    assert res.returncode != 0
    assert "InvalidAuthToken" in res.stderr or "Authentication" in res.stderr, res.stderr[-800:]

    dash = info["ray"]["dashboard_url"]
    assert http(f"{dash}/api/version")[0] == 401
    assert http(f"{dash}/api/version", token="0" * 64)[0] in (401, 403)
    assert http(f"{dash}/api/jobs/")[0] == 401  # the Jobs API: arbitrary code for its callers
    status, body = http(f"{dash}/api/version", token=cluster.token)
    assert status == 200 and json.loads(body)["ray_version"].startswith("2.60")


def test_everything_listens_on_loopback_only(cluster):
    pids = cluster.our_pids()
    socks = procinfo.listeners_of(pids)
    assert socks, "found no listening sockets of the cluster (is `ss -ltnp` allowed?)"
    exposed = [(s.host, s.port, procinfo.cmdline(s.pids[0])[:80]) for s in socks]
    assert all(is_loopback(s.host) for s in socks), exposed
    ports = {s.port for s in socks}
    info = cluster.info
    assert int(info["ray"]["address"].rsplit(":", 1)[1]) in ports  # GCS
    assert int(info["ray"]["dashboard_url"].rsplit(":", 1)[1]) in ports
    assert info["mlflow"]["port"] in ports


def test_mlflow_server_is_healthy_and_rejects_foreign_host_headers(cluster):
    uri = cluster.info["mlflow"]["uri"]
    assert http(f"{uri}/health") == (200, "OK")
    # MLflow's security middleware (DNS-rebinding guard) is left at its defaults.
    api = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http(api)[0] == 200
    assert http(api, headers={"Host": "evil.example"})[0] == 403


def test_mlflow_server_store_uses_the_write_ahead_log_on_a_local_disk(cluster):
    """Made before the server's first start as a sweep's own store is (ct_sweeps/sqlite_store)."""
    from ct_sweeps.record.store import local_filesystem

    db = cluster.state / "mlflow.db"
    mode = sqlite_scalar(db, "PRAGMA journal_mode")
    assert mode == ("wal" if local_filesystem(db.parent) else "delete")


def test_logs_are_in_one_place(cluster):
    logs = cluster.state / "logs"
    names = {p.name for p in logs.glob("*.log")}
    assert {"head.log", "worker-1.log", "worker-2.log", "mlflow.log"} <= names
    for node in ("head", "worker-1", "worker-2"):
        assert (logs / f"ray-{node}" / "raylet.out").exists()
    res = cluster.run("logs", "head", "-n", "5", timeout=30)
    assert res.returncode == 0 and "head.log" in res.stdout


def _ct_sweep_available() -> bool:
    return (BIN / "ct-sweep").exists() and (REPO / "ct_sweeps" / "cli.py").exists()


@pytest.fixture(scope="module")
def e2e_sweep(cluster):
    """A small real sweep submitted with `ray job submit --working-dir .` (2 trials, 2 epochs)."""
    if not _ct_sweep_available():
        pytest.skip("ct-sweep is not installed in this environment")
    env = sourced_env(cluster.state / "env.sh", cluster.env)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    storage = cluster.state / "runs" / name
    entry = [
        "ct-sweep",
        "run",
        "configs/quickstart.yaml",
        "--name",
        name,
        "--storage",
        str(storage),
        "--tracking-uri",
        cluster.info["mlflow"]["uri"],
        "--set",
        "space.generator.type=[generic]",
        "--set",
        "train.epochs=2",
        "--set",
        "data.n_train=200",
        "--set",
        "train.nce=50",
        "--set",
        "train.eval_every=1",
    ]
    t0 = time.monotonic()
    res = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--working-dir", ".", "--", *entry],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
    )
    cluster.timings["job_submit_s"] = time.monotonic() - t0
    return {"name": name, "result": res, "storage": storage}


def test_sweep_submitted_as_a_ray_job_lands_on_the_mlflow_server(cluster, e2e_sweep):
    res = e2e_sweep["result"]
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "succeeded" in res.stdout + res.stderr
    assert "Uploading package" in res.stdout + res.stderr  # the working dir went up to the head

    uri = cluster.info["mlflow"]["uri"]
    status, body = http(
        f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name={e2e_sweep['name']}"
    )
    assert status == 200, body
    exp_id = json.loads(body)["experiment"]["experiment_id"]
    status, body = http(
        f"{uri}/api/2.0/mlflow/runs/search",
        data={"experiment_ids": [exp_id], "max_results": 100},
    )
    assert status == 200, body
    runs = json.loads(body)["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    children = [r for r, t in zip(runs, tags) if "mlflow.parentRunId" in t]
    assert len(children) == 2  # CT with the generic generator, and vanilla
    for run in children:
        assert run["info"]["status"] == "FINISHED"
        metrics = {m["key"] for m in run["data"].get("metrics", [])}
        params = {p["key"]: p["value"] for p in run["data"].get("params", [])}
        assert {"val_acc", "loss"} <= metrics
        # a vanilla model uses no generator: its run logs no generator.* parameters
        assert ("generator.tau" in params) == (params["train.objective"] == "full"), params
    # The sweep's results went to the storage we named, not into Ray's session dir.
    assert e2e_sweep["storage"].exists()


@pytest.mark.slow
def test_mlflow_ui_renders_the_sweep_in_headless_chromium(cluster, e2e_sweep, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    uri = cluster.info["mlflow"]["uri"]
    _, body = http(
        f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name={e2e_sweep['name']}"
    )
    exp_id = json.loads(body)["experiment"]["experiment_id"]
    shot = REPO / "cluster" / ".state" / "screenshots" / f"mlflow-{e2e_sweep['name']}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chrome'}",
        f"--screenshot={shot}",
        "--window-size=1400,900",
        "--virtual-time-budget=15000",
        f"{uri}/#/experiments/{exp_id}/runs",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000, "screenshot missing or blank"
    print(f"\nMLflow UI screenshot: {shot}")


def test_zz_down_stops_every_process_and_frees_the_ports(cluster, tmp_path):
    """Runs last in this module (pytest keeps file order): `down` must leave nothing behind."""
    pids = cluster.our_pids()
    info = cluster.info
    ports = [
        int(info["ray"]["address"].rsplit(":", 1)[1]),
        int(info["ray"]["dashboard_url"].rsplit(":", 1)[1]),
        info["mlflow"]["port"],
    ]
    assert len(pids) > 10  # the cluster really was a tree of processes
    t0 = time.monotonic()
    res = cluster.run("down", timeout=180)
    cluster.timings["down_s"] = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    left = [(p, procinfo.cmdline(p)[:80]) for p in pids if procinfo.alive(p)]
    assert not left
    assert not procinfo.pids_mentioning(info["ray_temp_dir"])
    still_listening = {s.port for s in procinfo.listeners()} & set(ports)
    assert not still_listening
    assert not (cluster.state / "cluster.json").exists()
    assert cluster.run("health", timeout=30).returncode != 0
    # the server's store: its file alone holds every run (a copy made before anything opens it)
    shutil.copyfile(cluster.state / "mlflow.db", tmp_path / "mlflow.db")
    count = "SELECT count(*) FROM runs"
    assert sqlite_scalar(tmp_path / "mlflow.db", count) == sqlite_scalar(
        cluster.state / "mlflow.db", count
    )
