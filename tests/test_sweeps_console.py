"""What ``ct-sweep`` prints (``integration``): one progress display and ct's closing table, not
Ray Tune's tables; ``--version``; where the run directory goes, in ``--help``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CT_SWEEP = [sys.executable, "-m", "ct_sweeps.cli"]


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CT_SWEEP, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_versions_and_where_the_run_directory_goes():
    out = _run("--version").stdout
    assert out.startswith("ct-sweep ") and "ray " in out and "mlflow " in out
    ct = subprocess.run(
        [sys.executable, "-m", "ct_core.cli", "--version"], capture_output=True, text=True
    )
    assert ct.stdout.startswith("ct ") and "torch " in ct.stdout
    helptext = " ".join(_run("run", "--help").stdout.split())
    assert "ray job submit" in helptext and "~/ct_runs" in helptext and "--verbose" in helptext


@pytest.mark.integration
def test_the_quickstart_prints_a_progress_line_and_the_summary_in_at_most_40_lines(tmp_path):
    """The quickstart file, shortened to a few epochs, with its own Ray and MLflow store."""
    sets = ["train.epochs=5", "data.n_train=300", "evaluation.n_val_individuals=20"]
    res = _run(
        "run",
        "configs/quickstart.yaml",
        *(a for s in sets for a in ("--set", s)),
        "--storage",
        str(tmp_path / "run"),
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    lines = out.splitlines()
    assert len(lines) <= 40, out
    assert any(ln.startswith("Sweep ") and "4/4 done" in ln for ln in lines), out
    assert "Trial status" not in out and "Trial name" not in out  # Ray Tune's tables
    assert "best_config.yaml" in out and "Runs:" in out and "workflowType=" in out
    assert "models:/moons-quickstart@best" in out


def test_the_progress_line_counts_settings_and_shows_the_best_latest_value():
    from types import SimpleNamespace as Trial

    from ct_sweeps.record.progress import Progress

    p = Progress(4, 10, "val_implausibility", "min", units=[(2, 10), (2, 10)])  # two packs
    a = Trial(trial_id="a", status="RUNNING", config={"pack": 0}, last_result={})
    b = Trial(trial_id="b", status="PENDING", config={"pack": 1}, last_result={})
    p.on_trial_result(0, [a, b], a, {"epoch": 5.0, "val_implausibility": 1.2})
    work, text = p.line([a, b])
    assert (work, text) == (10, "0/4 done, 2 running, 0 failed  best val_implausibility 1.2")
    # pack a ends with one of its settings failed and a worse value than at epoch 5
    a.status, a.last_result = "TERMINATED", {"epoch": 10.0, "val_implausibility": 1.5}
    a.last_result["settings_alive"] = 1.0
    b.status = "RUNNING"
    p.on_trial_result(0, [a, b], b, {"epoch": 2.0, "val_implausibility": 1.4})
    work, text = p.line([a, b])
    assert (work, text) == (24, "1/4 done, 2 running, 1 failed  best val_implausibility 1.4")
