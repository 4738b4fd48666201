"""The Bayes-vs-grid study (scripts/bayes_vs_grid.py, scripts/bayes_study/): its order
statistics and config alignment, and its report from two finished run directories (no sweeps
run: the run directories are written here)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bayes_vs_grid  # noqa: E402
from bayes_study import stats, sweeps  # noqa: E402

NAN = math.nan


def test_best_so_far_skips_missing_values():
    assert stats.best_so_far([3.0, NAN, 2.0, 5.0, 1.0]) == [3.0, 3.0, 2.0, 2.0, 1.0]
    out = stats.best_so_far([NAN, 4.0])
    assert math.isnan(out[0]) and out[1] == 4.0


def test_incumbent_report_follows_the_selection_metric():
    select = [3.0, 2.0, NAN, 2.5, 1.0]
    report = [30.0, 20.0, 0.0, 25.0, 10.0]
    assert stats.incumbent_report(select, report) == [30.0, 20.0, 20.0, 20.0, 10.0]


@pytest.mark.parametrize("n_total", [1, 5, 18])
def test_argmin_probabilities_sum_to_one(n_total):
    for n in range(1, n_total + 1):
        assert sum(stats.argmin_probabilities(n_total, n)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stats.argmin_probabilities(n_total, n_total + 1)


def _brute(values, n, report=None):
    rep = values if report is None else report
    picks = []
    for sub in itertools.combinations(range(len(values)), n):
        i = min(sub, key=lambda j: (values[j], j))
        picks.append(rep[i])
    return picks


def test_expected_best_of_n_matches_enumeration_with_ties():
    values = [1.3, 1.1, 1.4, 1.4, 1.4, 1.2, 1.05]
    report = [v * 10 + k for k, v in enumerate(values)]
    report[2:5] = [14.0, 14.0, 14.0]  # tied settings are identical models
    for n in range(1, len(values) + 1):
        assert stats.expected_best_of_n(values, n) == pytest.approx(
            statistics.fmean(_brute(values, n))
        )
        assert stats.expected_best_of_n(values, n, report) == pytest.approx(
            statistics.fmean(_brute(values, n, report))
        )
    assert stats.expected_best_of_n(values, len(values)) == min(values)
    assert stats.expected_best_of_n(values, 1) == pytest.approx(statistics.fmean(values))


def test_expected_best_of_n_with_missing_values():
    values = [2.0, NAN, 1.0]
    assert math.isnan(stats.expected_best_of_n(values, 1))  # the NaN setting alone can be drawn
    # n=2: pairs {2,nan}->2, {2,1}->1, {nan,1}->1
    assert stats.expected_best_of_n(values, 2) == pytest.approx(4.0 / 3.0)


def test_best_of_n_quantile_matches_enumeration():
    values = [1.3, 1.1, 1.4, 1.2, 1.05, 1.5]
    for n in range(1, len(values) + 1):
        picks = sorted(_brute(values, n))
        for q in (0.1, 0.5, 0.9):
            k = math.ceil(q * len(picks)) - 1
            assert stats.best_of_n_quantile(values, n, q) == picks[max(k, 0)]


def test_trials_to_reach_and_ranks():
    assert stats.trials_to_reach([3.0, 2.0, 1.0], 2.0) == 2
    assert stats.trials_to_reach([NAN, 3.0], 1.0) is None
    assert stats.ranks([2.0, 1.0, 2.0, NAN]) == [2, 1, 2, 4]


def test_alignment_copies_the_grids_overrides_to_the_tpe_sweep():
    for ds in ("moons", "adult"):
        files = sweeps.sweep_files(ds)
        grid = yaml.safe_load(files["grid"].read_text())
        bayes = yaml.safe_load(files["bayes"].read_text())
        to_grid, to_bayes = sweeps.alignment_sets(grid, bayes)
        aligned = {**(bayes.get("overrides") or {}), **dict(to_bayes)}
        fixed = {k: v for k, v in grid["overrides"].items() if k not in bayes["space"]}
        assert all(aligned.get(k) == v for k, v in fixed.items()), (ds, aligned, fixed)
        assert all(k not in bayes["space"] for k, _ in to_bayes)
        assert all(k not in grid["space"] for k, _ in to_grid)
    g = {"overrides": {"a": 1, "b": 2}, "space": {"s": [1]}}
    b = {"overrides": {"a": 3, "c": 4, "s": 5}, "space": {"b": {"uniform": [0, 1]}}}
    to_grid, to_bayes = sweeps.alignment_sets(g, b)
    assert to_bayes == [("a", 1)]  # "b" is searched by the TPE sweep
    assert to_grid == [("c", 4)]  # "a" conflicts (grid wins), "s" is searched by the grid


def test_base_differences_ignore_searched_keys():
    a = {"train.nce": 1000, "generator.tau": 0.5, "train.epochs": 100}
    b = {"train.nce": 5000, "generator.tau": 0.9, "train.epochs": 100}
    assert sweeps.base_differences(a, b, {"generator.tau"}) == [("train.nce", 1000, 5000)]


def _run_dir(path: Path, space: dict, rows: list[dict], proposed: list[str]) -> None:
    """A finished sweep as the study reads it: sweep.yaml, results.csv, Tune's experiment state."""
    (path / "tune").mkdir(parents=True)
    base = yaml.safe_load((ROOT / "configs" / "base" / "moons.yaml").read_text())
    search = {"algorithm": "optuna-tpe", "n_startup_trials": 2, "seed": 0}
    (path / "sweep.yaml").write_text(
        yaml.safe_dump({"base": base, "space": space, "search": search})
    )
    with (path / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    trials = [[json.dumps({"trial_id": t}), "{}"] for t in proposed]
    (path / "tune" / "experiment_state-0.json").write_text(json.dumps({"trial_data": trials}))


def test_the_report_reads_both_run_directories_and_follows_tpes_proposal_order(tmp_path):
    def row(tid: str, ip: str, validity: str, **setting) -> dict:
        return {
            "trial_id": tid,
            **setting,
            "val_implausibility": ip,
            "val_acc": "0.9",
            "val_validity": validity,
            "val_cost": "1",
            "time_total_s": "2",
            "train_seconds": "1",
        }

    grid = [
        row("g0", "0.8", "0.9", **{"generator.tau": 0.5, "train.objective": "full"}),
        row("g1", "0.6", "0.9", **{"generator.tau": 0.9, "train.objective": "full"}),
        row("g2", "", "0.0", **{"generator.tau": 0.5, "train.objective": "vanilla"}),
    ]
    bayes = [
        row("b0", "0.7", "0.9", **{"generator.tau": 0.6}),
        row("b1", "0.5", "0.2", **{"generator.tau": 0.7}),
        row("b2", "0.55", "0.8", **{"generator.tau": 0.8}),
    ]
    d = tmp_path / "moons"
    _run_dir(
        d / "grid",
        {"generator.tau": [0.5, 0.9], "train.objective": ["full", "vanilla"]},
        grid,
        ["g0", "g1", "g2"],
    )
    # results.csv lists b1 first; TPE proposed b2, b0, b1 in that order
    _run_dir(d / "bayes", {"generator.tau": {"uniform": [0.5, 0.95]}}, bayes, ["b2", "b0", "b1"])

    res = bayes_vs_grid.compare("moons", tmp_path, {}, do_rescore=False)

    assert res["grid_best"]["trial_id"] == "g1" and res["bayes_best"]["trial_id"] == "b1"
    assert res["to_match"] == 1  # b2, proposed first, already beats the grid's 0.6
    with (d / "trials.csv").open() as f:
        trials = list(csv.DictReader(f))
    assert [(r["trial_id"], r["order"]) for r in trials if r["sweep"] == "bayes"] == [
        ("b2", "1"),
        ("b0", "2"),
        ("b1", "3"),
    ]
    assert [r["rank_in_grid"] for r in trials if r["sweep"] == "grid"] == ["2", "1", "3"]
    report = (d / "comparison.md").read_text()
    assert "TPE trials to match the grid's best: 1 (of 3)" in report
    assert "TPE best with val validity ≥ 0.5 (trial 1)" in report  # b1 is below that validity
    assert (d / "comparison.png").stat().st_size > 0 and (d / "comparison.csv").exists()
