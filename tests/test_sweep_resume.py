"""An interrupted sweep resumes where its checkpoints stopped, and MLflow holds what the README
promises (integration: the module's real Ray and a real sqlite MLflow store).

A small packed sweep (4 settings, CT and vanilla, in 2 packs that run side by side, a checkpoint
every epoch) runs as a real ``ct-sweep run --address`` process, which is stopped once a pack has
checkpointed its third epoch, before it finishes: with SIGINT (Ctrl-C: Tune stops the trials) or
with SIGKILL (the driver gets no say). ``ct-sweep resume`` then finishes the sweep. Every result
a trial reports carries the time its process started (``started``), which tells the processes
that ran a trial apart.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.sweep_support import mlflow_runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
import procinfo  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, LOG_EVERY, EVAL_EVERY, BURNIN = 30, 2, 3, 0.1
SWEEP = {
    "base": str(ROOT / "configs" / "base" / "moons.yaml"),
    "overrides": {
        "data.n_train": 200,
        "data.n_val": 100,
        "data.n_test": 100,
        "train.epochs": EPOCHS,
        "train.nce": 50,
        "train.batch_size": 50,
        "train.burnin": BURNIN,
        "train.eval_every": EVAL_EVERY,
        "evaluation.n_val_individuals": 20,
        "generator.type": "generic",
        "generator.T": 5,
    },
    "search": {"algorithm": "grid", "metric": "val_acc", "mode": "max", "max_concurrent": 2},
    "space": {"train.objective": ["full", "vanilla"], "train.lambda_reg": [0.1, 0.2]},
    "resources": {"cpu": 1},
    "tracking": {"log_every": LOG_EVERY},
    "checkpoint_every": 1,
}
SEARCH_PACK = {"pack": 2}


def trial_dirs(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "tune").glob("trial_*") if p.is_dir())


def lines(trial: Path) -> list[dict]:
    """The results the driver(s) recorded for a trial (``result.json``), complete lines only."""
    out = []
    path = trial / "result.json"
    for text in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return out


def checkpoints(trial: Path) -> list[int]:
    """The epoch of each checkpoint a trial has left."""
    out = []
    for f in trial.glob("checkpoint_*/states.pt"):
        try:
            states = torch.load(f, map_location="cpu", weights_only=True)
        except Exception:  # being written
            continue
        out.append(int(states[0]["epoch"]))
    return out


def finished(trial: Path) -> bool:
    return any(trial.glob("checkpoint_*/model_*.pt"))


def trial_processes() -> set[int]:
    """The trial actors running on this test process's Ray (its raylet is our child)."""
    return {p for p in procinfo.descendants(os.getpid()) if procinfo.cmdline(p).startswith("ray::")}


def interrupt_then_resume(tmp: Path, address: str, sig: signal.Signals) -> dict:
    sweep = tmp / "sweep.yaml"
    doc = {"name": f"resume-{sig.name.lower()}", **SWEEP}
    doc["search"] = {**doc["search"], **SEARCH_PACK}
    sweep.write_text(yaml.safe_dump(doc, sort_keys=False))
    run_dir = tmp / "run"
    env = {**os.environ, "CT_SWEEP_VERBOSE": "0"}  # the token of ray_runtime's Ray included
    cli = [sys.executable, "-m", "ct_sweeps.cli"]
    run = [*cli, "run", str(sweep), "--storage", str(run_dir), "--address", address]
    driver = subprocess.Popen(
        run, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a speed requirement
        midway: list[Path] = []
        while not midway and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            midway = [
                t
                for t in trial_dirs(run_dir)
                if not finished(t) and max(checkpoints(t), default=0) >= 3
            ]
        assert driver.poll() is None, f"the driver exited early:\n{driver.communicate()[0]}"
        assert midway, "no pack reached epoch 3 in time"
        t_stop = time.time()
        driver.send_signal(sig)
        log, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    expected_rc = 130 if sig == signal.SIGINT else -signal.SIGKILL
    assert driver.returncode == expected_rc, log
    # Ray ends the stopped driver's trials; only then is what they saved final
    deadline = time.monotonic() + 120
    while any("ImplicitFunc" in procinfo.cmdline(p) for p in trial_processes()):
        assert time.monotonic() < deadline, "the stopped sweep's trials did not end"
        time.sleep(0.2)
    saved = {t.name: max(checkpoints(t), default=0) for t in trial_dirs(run_dir)}
    resumed = subprocess.run(
        [*cli, "resume", str(run_dir), "--address", address],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return {
        "run_dir": run_dir,
        "t_stop": t_stop,
        "saved": saved,
        "midway": [t.name for t in midway],
    }


@pytest.fixture(scope="module", params=[signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def resumed(request, ray_runtime, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp(request.param.name.lower())
    return interrupt_then_resume(tmp, ray_runtime, request.param)


def test_a_resumed_pack_goes_on_from_its_newest_checkpoint(resumed):
    """After ``ct-sweep resume``, a trial the stop left unfinished trains from the epoch after
    its newest checkpoint: its new process reports that checkpoint's epoch once more (the
    driver may never have received it), then each later epoch once, for every setting. A trial
    that had finished is not trained again; one that had not started starts at epoch 1."""
    resumed_from = {}
    for trial in trial_dirs(resumed["run_dir"]):
        results = lines(trial)
        after = [r for r in results if r["started"] > resumed["t_stop"]]
        if not after:  # finished, and recorded as such, before the stop
            for k in ("0", "1"):
                got = sorted(
                    {int(rec["epoch"]) for r in results for rec in r["settings"].get(k, [])}
                )
                assert got == list(range(1, EPOCHS + 1)), (trial.name, k, got)
            continue
        newest = resumed["saved"].get(trial.name, 0)
        resumed_from[trial.name] = newest
        for k in ("0", "1"):
            epochs = [int(rec["epoch"]) for r in after for rec in r["settings"].get(k, [])]
            assert epochs == list(range(max(newest, 1), EPOCHS + 1)), (trial.name, k, newest)
    # the stop did leave a pack midway, with checkpoints to go on from
    assert any(resumed_from.get(name, 0) >= 3 for name in resumed["midway"]), resumed_from


def test_every_setting_finishes_every_epoch_once(resumed):
    import csv

    with (resumed["run_dir"] / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"TERMINATED"}, rows
    assert {float(r["epochs"]) for r in rows} == {EPOCHS}


# ---------------------------------------------------------------------------------------------
# MLflow: what the README says a setting's run holds


def readme_promise() -> dict[str, str]:
    """metric key -> the README's words for the steps at which it is logged (its table under
    "What a setting's MLflow run holds")."""
    text = (ROOT / "README.md").read_text()
    start = text.index("**What a setting's MLflow run holds.**")
    table = re.search(r"\| metrics \| steps \|\n\|---\|---\|\n((?:\|.*\|\n)+)", text[start:])
    assert table, "the README lost its table of MLflow metrics"
    out = {}
    for row in table.group(1).splitlines():
        keys, steps = (c.strip() for c in row.strip("|").split(" | "))
        for key in re.findall(r"`([^`]+)`", keys):
            out[key] = steps
    return out


def promised_steps(words: str, setting: dict, records: dict[int, dict]) -> list[int]:
    """The epochs at which the README's ``words`` say a metric is logged for ``setting``
    (its swept values; ``records``: its record of each epoch, to tell where a batch was
    skipped)."""
    logged = [e for e in range(1, EPOCHS + 1) if e % LOG_EVERY == 0 or e == EPOCHS]
    vanilla = setting["train.objective"] == "vanilla"
    searched = [] if vanilla else [e for e in logged if e > round(BURNIN * EPOCHS)]
    computed = [e for e in logged if e % EVAL_EVERY == 0 or e == EPOCHS]
    skipped = [e for e in logged if records[e].get("skipped_batches", 0) > 0]
    rules = {
        "every logged epoch": logged,
        "every logged epoch, except for vanilla settings": [] if vanilla else logged,
        "every logged epoch in which counterfactuals were searched (not vanilla, not during "
        "the burn-in)": searched,
        "every logged epoch in which they were computed (every `train.eval_every` epochs and "
        "the last; never with `eval_every: 0`)": computed,
        "every logged epoch in which a mini-batch had a non-finite loss": skipped,
        "once, at the last epoch": [EPOCHS],
    }
    assert words in rules, f"the README promises something this test does not know: {words!r}"
    return rules[words]


def test_mlflow_holds_the_metrics_and_steps_the_readme_promises(resumed):
    from ct_sweeps.plan import RunDir
    from ct_sweeps.run.results import collect

    promise = readme_promise()
    assert {"loss", "val_acc", "mature", "div", "val_implausibility", "train_seconds"} <= set(
        promise
    )
    by_id = {r.trial_id: r for r in collect(RunDir.load(resumed["run_dir"]))}
    client, parents, children = mlflow_runs(resumed["run_dir"])
    assert len(parents) == 1 and len(children) == 4
    for child in children:
        setting = by_id[child.data.tags["ct.trial_id"]]
        records = {int(r["epoch"]): r for r in setting.history()}
        assert sorted(records) == list(range(1, EPOCHS + 1))
        swept = setting.params
        want = {}
        for key, words in promise.items():
            steps = promised_steps(words, swept, records)
            if key in records[EPOCHS]:  # an epoch's own metric: left out where not finite
                steps = [e for e in steps if math.isfinite(records[e].get(key, math.nan))]
            if steps:
                want[key] = steps
        run_id = child.info.run_id
        assert set(child.data.metrics) == set(want), (swept, sorted(child.data.metrics))
        for key, steps in want.items():
            history = client.get_metric_history(run_id, key)
            assert [m.step for m in sorted(history, key=lambda m: m.step)] == steps, (swept, key)
            for m in history:  # per-epoch values are the epoch's record
                if key in records[m.step]:
                    assert m.value == pytest.approx(records[m.step][key], rel=1e-6), (key, m.step)
