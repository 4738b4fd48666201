"""Bad input to ``ct-sweep`` and ``ct train``: one clear message, exit code 2, no Ray start.

A table of malformed sweep files, training configs, overrides and addresses (issue 5, item 4).
Every case must end with exactly one stderr line ``error: ...`` that names the field (and, where
there is a fixed set, the allowed values), exit code 2, no traceback, and must not import Ray (so
no Ray session directory is created and nothing waits for a cluster).

All cases run through the CLIs' ``main()`` in one fresh subprocess (this file run as a script),
each from its own directory, which records per case the exit code, stderr, whether ``ray`` got
imported and what the case wrote (nothing: no run directory, no output folder); a few more tests
run the installed console scripts for real.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import json
import os
import signal
import socket
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MOONS = str(ROOT / "configs" / "base" / "moons.yaml")
BIN = Path(sys.executable).parent
DISTS = "grid, choice, uniform, loguniform, quniform, randint"

VALID: dict[str, Any] = {
    "name": "bad-input",
    "base": MOONS,
    "overrides": {"data.n_train": 200, "train.epochs": 2, "train.nce": 50},
    "search": {"algorithm": "grid", "metric": "val_acc", "mode": "max"},
    "space": {"seed": [1, 2]},
}
_DELETE = object()


def closed_port() -> int:
    """A loopback port nobody listens on (bound and released; nothing answers there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(**changes: Any) -> str:
    """The valid sweep with top-level or ``section__key`` changes (``_DELETE`` removes a key)."""
    doc = json.loads(json.dumps(VALID))
    for key, value in changes.items():
        cur, parts = doc, key.split("__")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        if value is _DELETE:
            cur.pop(parts[-1], None)
        else:
            cur[parts[-1]] = value
    return yaml.safe_dump(doc, sort_keys=False)


def with_override(key: str, value: Any, **changes: Any) -> str:
    return sweep(overrides={**VALID["overrides"], key: value}, **changes)


def with_space(space: Any, **changes: Any) -> str:
    return sweep(space=space, **changes)


@dataclass
class Case:
    """One malformed input: files written into a fresh dir ``{d}``, the argv, and the words the
    single error line must contain (the field path and the allowed values)."""

    id: str
    files: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=lambda: ["run", "{d}/s.yaml"])
    expect: tuple[str, ...] = ()
    cli: str = "ct-sweep"  # or "ct"
    binary: bool = False  # files hold hex-encoded bytes
    bug: str = ""  # a known bug elsewhere: the case is xfail(strict=True) until it is fixed


def S(id: str, text: str, *expect: str, argv: list[str] | None = None) -> Case:  # noqa: N802
    return Case(id, {"s.yaml": text}, argv or ["run", "{d}/s.yaml"], expect)


BUG_KEYS = "ct_sweeps/schema.py `_format`: an unknown sweep key says 'serach: unknown key' without the allowed keys (ct_core.config lists them); fix: append '; allowed keys: ...' from the model's fields as ct_core.config._allowed_keys does"
BUG_UTF8 = "ct_core/config.py `read_yaml` catches OSError only: a file that is not UTF-8 raises UnicodeDecodeError with a traceback; fix: `except (OSError, UnicodeDecodeError) as e: raise ConfigError(f'cannot read {what} file {p}: not UTF-8 text ({e.reason})')`"
PORT = closed_port()
CASE_TIMEOUT_S = 20

CASES: list[Case] = [
    # --- the sweep's own keys
    S("algorithm-unknown", sweep(search__algorithm="bayes"), "search.algorithm", "optuna-tpe"),
    S("metric-unknown", sweep(search__metric="accuracy"), "search.metric", "val_acc"),
    S("mode-unknown", sweep(search__mode="up"), "search.mode", "min, max"),
    S("num-samples-zero", sweep(search__num_samples=0), "search.num_samples", "1"),
    S("num-samples-type", sweep(search__num_samples="many"), "search.num_samples", "integer"),
    S("scheduler-unknown", sweep(search__scheduler="hyperband"), "search.scheduler", "asha"),
    S("max-concurrent-zero", sweep(search__max_concurrent=0), "search.max_concurrent", "1"),
    S(
        "modes-per-metric",
        sweep(search__metric=["val_acc", "val_cost"], search__mode=["max", "min", "max"]),
        "search.mode",
        "one mode per metric",
    ),
    S(
        "asha-multi-objective",
        sweep(search__metric=["val_acc", "val_cost"], search__scheduler="asha"),
        "search.scheduler",
        "single search.metric",
    ),
    S("search-not-mapping", sweep(search="grid"), "search", "dictionary"),
    S("cpu-zero", sweep(resources__cpu=0), "resources.cpu", "greater than 0"),
    S("gpu-negative", sweep(resources__gpu=-1), "resources.gpu", "greater than or equal to 0"),
    S("checkpoint-every-negative", sweep(checkpoint_every=-1), "checkpoint_every", "0"),
    S("max-failures-type", sweep(max_failures="twice"), "max_failures", "integer"),
    S("tracking-enabled-type", sweep(tracking__enabled="perhaps"), "tracking.enabled", "bool"),
    S(
        "sqlite-wal-value",
        sweep(tracking__sqlite_wal="maybe"),
        "tracking.sqlite_wal",
        "true, false or auto",
    ),
    Case(
        "unknown-top-key",
        {"s.yaml": sweep(serach={"algorithm": "grid"})},
        expect=("serach", "allowed keys"),
    ),
    Case(
        "unknown-search-key",
        {"s.yaml": sweep(search__algo="grid")},
        expect=("search.algo", "allowed keys"),
    ),
    S("name-invalid", sweep(name="my sweep!"), "name", "letters, digits"),
    S("name-missing", sweep(name=_DELETE), "name", "required"),
    S("base-missing-key", sweep(base=_DELETE), "base", "required"),
    S("base-file-missing", sweep(base="nowhere/base.yaml"), "base", "not found"),
    S("eval-every-needed", sweep(search__metric="val_implausibility"), "train.eval_every", "> 0"),
    # --- the training config, through overrides (out of range, wrong types, unknown names)
    S("tau-above-1", with_override("generator.tau", 1.5), "generator.tau", "(0, 1)"),
    S("tau-zero", with_override("generator.tau", 0.0), "generator.tau", "(0, 1)"),
    S("T-zero", with_override("generator.T", 0), "generator.T", "[1, inf)"),
    S("T-type", with_override("generator.T", "ten"), "generator.T", "integer"),
    S("lambda-reg-negative", with_override("train.lambda_reg", -1), "train.lambda_reg", "0"),
    S(
        "lambda-div-nan",
        with_override("train.lambda_div", float("nan")),
        "train.lambda_div",
        "finite",
    ),
    S("cuda-without-gpu", with_override("train.device", "cuda"), "train.device", "resources.gpu"),
    S("epsilon-zero", with_override("train.epsilon", 0), "train.epsilon", "(0, inf)"),
    S("epsilon-type", with_override("train.epsilon", [0.1]), "train.epsilon", "number"),
    S("lr-type", with_override("train.lr", "fast"), "train.lr", "number"),
    S("epochs-zero", with_override("train.epochs", 0), "train.epochs", "[1, inf)"),
    S(
        "objective-unknown",
        with_override("train.objective", "contrastive"),
        "train.objective",
        "vanilla",
    ),
    S("dataset-unknown", with_override("data.name", "mnst"), "data.name", "moons"),
    S("generator-unknown", with_override("generator.type", "wachter"), "generator.type", "revise"),
    S("override-unknown-key", with_override("train.epohcs", 5), "train.epohcs", "allowed keys"),
    S("override-unknown-section", with_override("trian.epochs", 5), "trian", "allowed keys"),
    S("immutable-unknown", with_override("data.immutable", ["age"]), "data.immutable", "x1, x2"),
    S("immutable-index", with_override("data.immutable", [7]), "data.immutable", "0..1"),
    S("csv-without-path", with_override("data.name", "csv"), "data.path", "csv"),
    # --- the search space
    S("grid-empty", with_space({"generator.T": []}), "space.generator.T", "non-empty list"),
    S(
        "grid-value-out-of-range",
        with_space({"generator.tau": [0.5, 1.5]}),
        "generator.tau",
        "(0, 1)",
    ),
    S("grid-type", with_space({"generator.T": ["ten"]}), "generator.T", "integer"),
    S(
        "grid-unknown-generator",
        with_space({"generator.type": ["ecco", "wachter"]}),
        "generator.type",
        "revise",
    ),
    S("grid-unknown-dataset", with_space({"data.name": ["moons", "nope"]}), "data.name", "circles"),
    S("space-unknown-key", with_space({"genrator.tau": [0.5]}), "genrator.tau", "generator.tau"),
    S(
        "uniform-low-gt-high",
        with_space({"generator.tau": {"uniform": [0.9, 0.5]}}),
        "space.generator.tau",
        "low must be < high",
    ),
    S(
        "uniform-bound-out-of-range",
        with_space({"generator.tau": {"uniform": [0.5, 1.5]}}),
        "generator.tau",
        "(0, 1)",
    ),
    S(
        "uniform-one-bound",
        with_space({"generator.tau": {"uniform": [0.5]}}),
        "space.generator.tau",
        "[low, high]",
    ),
    S(
        "loguniform-zero",
        with_space({"train.lr": {"loguniform": [0, 0.1]}}),
        "space.train.lr",
        "> 0",
    ),
    S(
        "loguniform-negative",
        with_space({"train.lr": {"loguniform": [-1, 0.1]}}),
        "space.train.lr",
        "> 0",
    ),
    S(
        "distribution-unknown",
        with_space({"train.lr": {"gaussian": [0, 1]}}),
        "space.train.lr",
        DISTS,
    ),
    S(
        "randint-T-zero",
        with_space({"generator.T": {"randint": [0, 10]}}),
        "generator.T",
        "[1, inf)",
    ),
    S(
        "randint-floats",
        with_space({"generator.T": {"randint": [1.5, 10]}}),
        "space.generator.T",
        "integers",
    ),
    S(
        "quniform-step-zero",
        with_space({"train.lr": {"quniform": [0.1, 0.5, 0]}}),
        "space.train.lr",
        "step must be > 0",
    ),
    S(
        "uniform-inf",
        with_space({"train.lr": {"uniform": [0.1, float("inf")]}}),
        "space.train.lr",
        "finite",
    ),
    S(
        "when-unknown-key",
        with_space(
            {
                "generator.tau": [0.5],
                "generator.lambda_energy": {
                    "loguniform": [0.1, 10],
                    "when": {"generator.typ": "ecco"},
                },
            }
        ),
        "space.generator.lambda_energy",
        "when",
    ),
    S("space-fixed-value", with_space({"generator.tau": 0.5}), "space.generator.tau", DISTS),
    S("space-not-mapping", with_space(["generator.tau"]), "space", "dictionary"),
    S(
        "optuna-empty-space",
        with_space({}, search__algorithm="optuna-tpe"),
        "space",
        "at least one entry",
    ),
    # --- unreadable and missing files
    S("yaml-syntax", "name: x\nsearch: {algorithm: grid\n", "not valid YAML", "line"),
    S("yaml-tabs", "name: x\n\tsearch: grid\n", "not valid YAML", "line"),
    S("yaml-empty", "", "s.yaml", "empty"),
    S("yaml-list", "- name: x\n", "s.yaml", "mapping"),
    S("yaml-scalar", "just a string\n", "s.yaml", "mapping"),
    Case(
        "yaml-binary",
        {"s.yaml": b"\xff\xfe\x00garbage\x81".hex()},
        expect=("s.yaml", "UTF-8"),
        binary=True,
    ),
    Case("sweep-missing", {}, ["run", "{d}/missing.yaml"], ("missing.yaml", "not found")),
    Case("sweep-is-dir", {"sub/x": ""}, ["run", "{d}/sub"], ("sub", "not a file")),
    Case(
        "base-invalid-yaml",
        {"s.yaml": sweep(base="b.yaml"), "b.yaml": "train: [epochs\n"},
        expect=("base", "not valid YAML"),
    ),
    Case(
        "base-not-mapping",
        {"s.yaml": sweep(base="b.yaml"), "b.yaml": "- 1\n"},
        expect=("base", "mapping"),
    ),
    # --- command-line values
    S(
        "set-no-equals",
        sweep(),
        "--set",
        "dotted.path=value",
        argv=["run", "{d}/s.yaml", "--set", "train.epochs"],
    ),
    S(
        "set-bad-value",
        sweep(),
        "train.epochs",
        "integer",
        argv=["run", "{d}/s.yaml", "--set", "train.epochs=abc"],
    ),
    S(
        "set-bad-algorithm",
        sweep(),
        "search.algorithm",
        "grid",
        argv=["run", "{d}/s.yaml", "--set", "search.algorithm=bayes"],
    ),
    S(
        "set-space-bad",
        sweep(),
        "space.generator.tau",
        "(0, 1)",
        argv=["run", "{d}/s.yaml", "--set", "space.generator.tau=[2.0]"],
    ),
    S(
        "address-closed-port",
        sweep(),
        "--address",
        f"127.0.0.1:{PORT}",
        argv=["run", "{d}/s.yaml", "--address", f"127.0.0.1:{PORT}"],
    ),
    S(
        "address-ray-client-closed",
        sweep(),
        "--address",
        "ray://",
        argv=["run", "{d}/s.yaml", "--address", f"ray://127.0.0.1:{PORT}"],
    ),
    S(
        "address-dashboard-closed",
        sweep(),
        "--address",
        "http://",
        argv=["run", "{d}/s.yaml", "--address", f"http://127.0.0.1:{PORT}"],
    ),
    S(
        "address-malformed",
        sweep(),
        "--address",
        "HOST:PORT",
        argv=["run", "{d}/s.yaml", "--address", "not an address"],
    ),
    Case("resume-not-a-run", {"x/y": ""}, ["resume", "{d}/x"], ("x", "not a sweep run directory")),
    Case("report-missing-dir", {}, ["report", "{d}/nope"], ("nope", "not a sweep run directory")),
    Case(
        "sync-missing-dir", {}, ["sync-mlflow", "{d}/nope"], ("nope", "not a sweep run directory")
    ),
    Case(
        "storage-already-used",
        {"s.yaml": sweep(), "run/sweep.yaml": "name: x\n"},
        ["run", "{d}/s.yaml", "--storage", "{d}/run"],
        ("--storage", "ct-sweep resume"),
    ),
    # --- ct train
    Case(
        "train-missing",
        {},
        ["train", "{d}/nope.yaml", "--out", "{d}/o"],
        ("nope.yaml", "not found"),
        "ct",
    ),
    Case(
        "train-tau",
        {},
        ["train", MOONS, "--set", "generator.tau=2", "--out", "{d}/o"],
        ("generator.tau", "(0, 1)"),
        "ct",
    ),
    Case(
        "train-T-negative",
        {},
        ["train", MOONS, "--set", "generator.T=-3", "--out", "{d}/o"],
        ("generator.T", "[1, inf)"),
        "ct",
    ),
    Case(
        "train-unknown-key",
        {"c.yaml": "train: {epochz: 3}\n"},
        ["train", "{d}/c.yaml", "--out", "{d}/o"],
        ("train.epochz", "allowed keys"),
        "ct",
    ),
    Case(
        "train-yaml-syntax",
        {"c.yaml": "train: {epochs: 3\n"},
        ["train", "{d}/c.yaml", "--out", "{d}/o"],
        ("c.yaml", "not valid YAML"),
        "ct",
    ),
    Case(
        "train-dataset-unknown",
        {},
        ["train", MOONS, "--set", "data.name=imagenet", "--out", "{d}/o"],
        ("data.name", "moons"),
        "ct",
    ),
    Case(
        "train-immutable-unknown",
        {},
        [
            "train",
            MOONS,
            "--set",
            "data.immutable=[age]",
            "--set",
            "data.n_train=50",
            "--out",
            "{d}/o",
        ],
        ("data.immutable", "x1, x2"),
        "ct",
    ),
    Case(
        "train-yaml-binary",
        {"c.yaml": b"\x80\x81 train".hex()},
        ["train", "{d}/c.yaml", "--out", "{d}/o"],
        ("c.yaml", "UTF-8"),
        "ct",
        binary=True,
    ),
    Case(
        "train-resume-nothing",
        {},
        ["train", MOONS, "--resume", "--out", "{d}/o"],
        ("--resume", "checkpoint.pt"),
        "ct",
    ),
]


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


def _ray_sessions(pid: int) -> set[str]:
    """Ray session dirs created by process ``pid`` (others' sessions on a shared machine aside)."""
    root = Path("/tmp/ray")
    return {p.name for p in root.glob(f"session_*_{pid}")} if root.exists() else set()


def _run_case(case: dict, root: Path) -> dict:
    d = root / case["id"]
    d.mkdir(parents=True)
    for name, text in case["files"].items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if case["binary"]:
            p.write_bytes(bytes.fromhex(text))
        else:
            p.write_text(text)
    argv = [a.replace("{d}", str(d)) for a in case["argv"]]
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


def harness(cases_file: str, root: str) -> None:
    """Script entry: run the cases in ``cases_file`` (JSON), print one JSON line of results."""
    os.environ.pop("RAY_ADDRESS", None)
    signal.signal(signal.SIGALRM, _alarm)
    assert "ray" not in sys.modules
    sys.meta_path.insert(0, _NoRay())
    cases = json.loads(Path(cases_file).read_text())
    results = {c["id"]: _run_case(c, Path(root)) for c in cases}
    new = _ray_sessions(os.getpid())
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
    res = subprocess.run(
        [sys.executable, __file__, str(cases), str(tmp / "cases")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _param(c: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=c.bug)] if c.bug else []
    return pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
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
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=300)  # a hang guard
    finally:
        if proc.poll() is None:
            proc.kill()
    res = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    return res, _ray_sessions(proc.pid)


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
    harness(sys.argv[1], sys.argv[2])
