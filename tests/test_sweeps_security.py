"""A sweep's own Ray is closed to everyone who does not hold its token.

``ct-sweep run`` without ``--address`` starts a Ray of its own: on loopback, with token
authentication and a token made for that sweep (``RUN_DIR/ray_auth_token``, mode 600). A second
process on the same machine can neither connect to it nor run work on it without that token; with
it, it can. (Joining a token cluster with ``--address`` is exercised by the resume tests, whose
driver joins the tests' token-auth Ray, and by ``test_cluster_local.py``.)
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
CLIENT = """
import sys, ray
ctx = ray.init(address=sys.argv[1], log_to_driver=False)
print("dashboard:", repr(ctx.dashboard_url))
print("task:", ray.get(ray.remote(lambda: 42).remote()))
"""


def _env(**extra: str) -> dict[str, str]:
    """This environment without Ray's auth variables (the tests' own token), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", CT_SWEEP_VERBOSE="0", **extra)
    return env


def _clients(address: str, *envs: dict[str, str]) -> list[tuple[int, str, str]]:
    """``(returncode, stdout, stderr)`` of one client process per environment, run side by side
    (one refused takes a while: Ray retries before it gives up)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, address],
            env=_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in envs
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real ``ct-sweep run`` with no token in its environment, long enough to probe its Ray;
    interrupted at the end."""
    tmp = tmp_path_factory.mktemp("secure")
    doc = {
        "name": "secure",
        "base": str(ROOT / "configs" / "base" / "moons.yaml"),
        "overrides": {"data.n_train": 100, "train.epochs": 100000, "train.objective": "vanilla"},
        "search": {"metric": "val_acc", "mode": "max"},
        "space": {"train.lambda_reg": [0.1]},
        "tracking": {"enabled": False},
    }
    path = tmp / "secure.yaml"
    path.write_text(yaml.safe_dump(doc))
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "ct_sweeps.cli", "run", str(path), "--storage", str(run_dir)]
    driver = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None:
            info = run_dir / "run.json"
            if info.exists() and "ray_address" in json.loads(info.read_text()):
                break
            time.sleep(0.5)
        if driver.poll() is not None:
            pytest.fail(f"the sweep ended early ({driver.returncode}):\n{driver.stdout.read()}")
        yield run_dir, json.loads((run_dir / "run.json").read_text())["ray_address"]
    finally:
        driver.send_signal(signal.SIGINT)
        try:
            driver.wait(timeout=120)
        except subprocess.TimeoutExpired:
            driver.kill()


def test_the_sweeps_ray_has_a_private_token_of_its_own_and_listens_on_loopback(sweep):
    run_dir, address = sweep
    token = run_dir / "ray_auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text()) == 64
    assert address.startswith("127.0.0.1:")


def test_a_process_without_the_token_can_neither_connect_nor_run_work(sweep, tmp_path):
    _, address = sweep
    wrong = tmp_path / "wrong_token"
    wrong.write_text("0" * 64)
    no_auth, guessed = _clients(
        address,
        {"RAY_AUTH_MODE": "disabled"},
        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong)},
    )
    for rc, out, err in (no_auth, guessed):
        assert rc != 0 and "task:" not in out
        assert "InvalidAuthToken" in err or "Authentication" in err, err[-1500:]


def test_a_process_with_the_token_connects_and_runs_work_but_finds_no_jobs_api(sweep):
    run_dir, address = sweep
    token = str(run_dir / "ray_auth_token")
    ((rc, out, err),) = _clients(address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token})
    assert rc == 0, err[-2000:]
    assert "task: 42" in out
    assert "dashboard: ''" in out  # no dashboard: no Jobs API to submit work to


SWEEP_TOKEN = """
import json, os, sys
from ct_sweeps.run.cluster import sweep_token
made = sweep_token(__import__("pathlib").Path(sys.argv[1]), sys.argv[2] or None)
print(json.dumps({"made": str(made) if made else None,
                  "mode": os.environ.get("RAY_AUTH_MODE"),
                  "path": os.environ.get("RAY_AUTH_TOKEN_PATH")}))
"""


@pytest.mark.parametrize(
    ("env", "address", "made"),
    [
        ({}, "", True),
        ({"RAY_AUTH_MODE": "token"}, "", True),  # a mode with no token named
        ({"RAY_AUTH_MODE": "disabled"}, "", False),  # the user opts out
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/mine"}, "", False),  # theirs
        ({}, "127.0.0.1:6379", False),  # a cluster to join: its token is the user's
    ],
)
def test_a_sweep_makes_its_own_token_unless_told_otherwise(tmp_path, env, address, made):
    out = subprocess.run(
        [sys.executable, "-c", SWEEP_TOKEN, str(tmp_path), address],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    got = json.loads(out.stdout)
    token = tmp_path / "ray_auth_token"
    assert (got["made"] == str(token)) is made and token.exists() is made
    if made:
        assert (got["mode"], got["path"]) == ("token", str(token))
        assert stat.S_IMODE(token.stat().st_mode) == 0o600


def test_a_ray_the_sweep_did_not_start_is_left_running(ray_environ):
    import ray

    from ct_sweeps.run.cluster import ensure_ray, stop_ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        started = ensure_ray()
        assert started is None
        stop_ray(started)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
