"""Bad input to ``ct train|evaluate|compare`` and ``ct-sweep run|resume|report|sync-mlflow``: one
clear message, exit code 2, nothing started, nothing written.

A table of over 300 malformed inputs (tests/bad_input_sweeps.py: sweep files and command lines;
tests/bad_input_config.py: training configs, YAML, seeds, sizes, CSV files, model and checkpoint
files; tests/bad_input_files.py: output folders and damaged run and result directories). Every
case must end with exactly one stderr line ``error: ...`` that names the field or file (and,
where there is a fixed set, the allowed values), exit code 2, no traceback, must not import Ray
(so no Ray session directory is created and nothing waits for a cluster) and must write nothing.

All cases run through the CLIs' ``main()`` in one fresh subprocess (``python -m
tests.test_bad_input``), each from its own directory, which records per case the exit code,
stderr, whether ``ray`` got imported and what the case wrote; a few more tests run the installed
console scripts for real.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import json
import os
import signal
import subprocess
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from tests.bad_input_cases import BIN, MOONS, ROOT, Case, closed_port, sweep, with_override
from tests.bad_input_config import CONFIG_CASES
from tests.bad_input_files import FILE_CASES
from tests.bad_input_sweeps import SWEEP_CASES

CASES = [*SWEEP_CASES, *CONFIG_CASES, *FILE_CASES]

CASE_TIMEOUT_S = 20
MODEL_SETTINGS = ("train.epochs=1", "data.n_train=60", "data.n_val=10", "data.n_test=40")
MODEL_SETTINGS += ("train.nce=10", "generator.T=3", "model.hidden=[4]")


# ----------------------------------------------------------------------------------------------
# The harness: runs every case through main() in this (fresh) process.


class _NoRay(importlib.abc.MetaPathFinder):
    """Refuses (and records) any import of Ray: bad input must be rejected before Ray starts,
    and a case that slipped through must fail at once instead of running a sweep."""

    attempted = False

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "ray" or name.startswith("ray."):
            _NoRay.attempted = True
            raise ImportError(f"bad input must not import {name}")
        return None


def _ray_sessions(pid: int, before: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Ray session dirs created by process ``pid`` (others' sessions on a shared machine aside;
    ``before``: the dirs that existed already, one of which may carry a recycled pid)."""
    root = Path("/tmp/ray")
    got = {p.name for p in root.glob(f"session_*_{pid}")} if root.exists() else set()
    return got - set(before)


def _all_sessions() -> set[str]:
    root = Path("/tmp/ray")
    return {p.name for p in root.glob("session_*")} if root.exists() else set()


def _run_case(case: dict, root: Path, model: str) -> dict:
    d = root / case["id"]
    d.mkdir(parents=True)
    subst = {"{d}": str(d), "{model}": model}
    for name, text in case["files"].items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if text.startswith("@copy:"):
            src, _, n = text[len("@copy:") :].replace("{model}", model).partition(":")
            blob = Path(src).read_bytes()
            p.write_bytes(blob[: int(n)] if n else blob)
        elif case["binary"]:
            p.write_bytes(bytes.fromhex(text))
        else:
            p.write_text(text)
    argv = case["argv"]
    for key, value in subst.items():
        argv = [a.replace(key, value) for a in argv]
    if case["cli"] == "ct":
        from ct_core.cli import main
    else:
        from ct_sweeps.cli import main
    err, out = io.StringIO(), io.StringIO()
    _NoRay.attempted = False
    given = set(d.rglob("*"))
    os.chdir(d)  # where a default output (./ct_runs/...) would go
    signal.alarm(CASE_TIMEOUT_S)  # a hang guard: a case that waits for a cluster fails
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            rc = -1
        finally:
            signal.alarm(0)
    return {
        "rc": rc,
        "stderr": err.getvalue(),
        "stdout": out.getvalue(),
        "written": sorted(str(q.relative_to(d)) for q in set(d.rglob("*")) - given),
        "ray_imported": _NoRay.attempted or "ray" in sys.modules,
    }


def _alarm(signum: int, frame: Any) -> None:
    raise TimeoutError(f"the case took more than {CASE_TIMEOUT_S} s")


def harness(cases_file: str, root: str, model: str) -> None:
    """Script entry: run the cases in ``cases_file`` (JSON) with ``{model}`` the trained model
    directory ``model``; print one JSON line of results."""
    os.environ.pop("RAY_ADDRESS", None)
    signal.signal(signal.SIGALRM, _alarm)
    assert "ray" not in sys.modules
    sys.meta_path.insert(0, _NoRay())
    cases = json.loads(Path(cases_file).read_text())
    before = _all_sessions()
    results = {c["id"]: _run_case(c, Path(root), model) for c in cases}
    new = _ray_sessions(os.getpid(), before)
    print(json.dumps({"results": results, "new_ray_sessions": sorted(new)}))


# ----------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict:
    assert len({c.id for c in CASES}) == len(CASES), "each case needs an id of its own"
    tmp = tmp_path_factory.mktemp("bad-input")
    cases = tmp / "cases.json"
    cases.write_text(json.dumps([asdict(c) for c in CASES]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    model = tmp / "model"  # a small real model for the cases that need one ({model})
    sets = [a for s in MODEL_SETTINGS for a in ("--set", s)]
    made = subprocess.run(
        [str(BIN / "ct"), "train", MOONS, *sets, "--out", str(model), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard
    )
    assert made.returncode == 0, made.stderr[-3000:]
    res = subprocess.run(
        [sys.executable, "-m", "tests.test_bad_input", str(cases), str(tmp / "cases"), str(model)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_error_and_exit_code_2(case: Case, outcomes: dict):
    r = outcomes["results"][case.id]
    err = r["stderr"]
    assert "Traceback" not in err, err
    assert r["rc"] == 2, f"rc {r['rc']}:\n{err}\n{r['stdout']}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in case.expect:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert not r["ray_imported"], "Ray was imported for bad input"
    assert r["written"] == [], "a rejected input must leave nothing behind"


def test_no_ray_session_was_started(outcomes: dict):
    assert outcomes["new_ray_sessions"] == []


def _cli(*argv: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run a console script in ``cwd``; return its result and the Ray sessions it started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    before = _all_sessions()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=300)  # a hang guard
    finally:
        if proc.poll() is None:
            proc.kill()
    res = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    return res, _ray_sessions(proc.pid, before)


def test_console_scripts_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text(with_override("generator.tau", 1.5))
    for argv in (
        [str(BIN / "ct-sweep"), "run", str(bad)],
        [str(BIN / "ct-sweep"), "run", str(tmp_path / "missing.yaml")],
        [str(BIN / "ct-sweep"), "resume", str(tmp_path)],
        [str(BIN / "ct"), "train", str(bad), "--out", str(tmp_path / "o")],
    ):
        res, sessions = _cli(*argv, cwd=tmp_path)
        assert res.returncode == 2, (argv, res.stderr)
        assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr, res.stderr
        assert not sessions, (argv, sessions)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"], argv  # nothing written


def test_unreachable_cluster_address_fails_fast_before_ray_starts(tmp_path):
    good = tmp_path / "s.yaml"
    good.write_text(sweep())
    port = closed_port()
    argv = [str(BIN / "ct-sweep"), "run", str(good), "--address", f"127.0.0.1:{port}"]
    res, sessions = _cli(*argv, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    # ct's own check of the address, made before Ray is imported, answers (Ray itself would
    # wait a minute or more for the GCS, then end with a traceback)
    assert res.stderr.startswith(
        f"error: --address 127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port}"
    ), res.stderr
    assert "Traceback" not in res.stderr and "Started a local Ray" not in res.stderr
    assert not sessions
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"], "a run directory was made"


def test_trials_larger_than_the_local_ray_fail_at_once_and_end_the_parent_run(tmp_path):
    """Tune would wait for ever for a trial the machine cannot hold; the local Ray is asked
    first, and the MLflow parent run already made is ended as FAILED, not left RUNNING."""
    from mlflow import MlflowClient

    good = tmp_path / "s.yaml"
    good.write_text(sweep(resources={"cpu": 3, "gpu": 0}))
    argv = [str(BIN / "ct-sweep"), "run", str(good), "--num-cpus", "2"]
    res, _ = _cli(*argv, "--storage", str(tmp_path / "run"), cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "error: resources.cpu: each trial asks for 3 CPUs but this machine's Ray has 2" in (
        res.stderr
    )
    assert "allowed: 0 to 2" in res.stderr and "Traceback" not in res.stderr
    assert not list((tmp_path / "run").glob("tune/trial_*")), "a trial was started"
    assert not (tmp_path / "run" / "results.csv").exists()
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    parent = MlflowClient(info["tracking_uri"]).get_run(info["parent_run_id"])
    assert parent.info.status == "FAILED"


if __name__ == "__main__":
    harness(sys.argv[1], sys.argv[2], sys.argv[3])
