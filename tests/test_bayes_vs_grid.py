"""The pure functions of scripts/bayes_vs_grid.py (no sweeps run)."""

from __future__ import annotations

import importlib.util
import itertools
import math
import statistics
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "bayes_vs_grid", ROOT / "scripts" / "bayes_vs_grid.py"
)
assert _spec is not None and _spec.loader is not None
bvg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bvg)

NAN = math.nan


def test_best_so_far_skips_missing_values():
    assert bvg.best_so_far([3.0, NAN, 2.0, 5.0, 1.0]) == [3.0, 3.0, 2.0, 2.0, 1.0]
    out = bvg.best_so_far([NAN, 4.0])
    assert math.isnan(out[0]) and out[1] == 4.0


def test_incumbent_report_follows_the_selection_metric():
    select = [3.0, 2.0, NAN, 2.5, 1.0]
    report = [30.0, 20.0, 0.0, 25.0, 10.0]
    assert bvg.incumbent_report(select, report) == [30.0, 20.0, 20.0, 20.0, 10.0]


@pytest.mark.parametrize("n_total", [1, 5, 18])
def test_argmin_probabilities_sum_to_one(n_total):
    for n in range(1, n_total + 1):
        assert sum(bvg.argmin_probabilities(n_total, n)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bvg.argmin_probabilities(n_total, n_total + 1)


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
        assert bvg.expected_best_of_n(values, n) == pytest.approx(
            statistics.fmean(_brute(values, n))
        )
        assert bvg.expected_best_of_n(values, n, report) == pytest.approx(
            statistics.fmean(_brute(values, n, report))
        )
    assert bvg.expected_best_of_n(values, len(values)) == min(values)
    assert bvg.expected_best_of_n(values, 1) == pytest.approx(statistics.fmean(values))


def test_expected_best_of_n_with_missing_values():
    values = [2.0, NAN, 1.0]
    assert math.isnan(bvg.expected_best_of_n(values, 1))  # the NaN setting alone can be drawn
    # n=2: pairs {2,nan}->2, {2,1}->1, {nan,1}->1
    assert bvg.expected_best_of_n(values, 2) == pytest.approx(4.0 / 3.0)


def test_best_of_n_quantile_matches_enumeration():
    values = [1.3, 1.1, 1.4, 1.2, 1.05, 1.5]
    for n in range(1, len(values) + 1):
        picks = sorted(_brute(values, n))
        for q in (0.1, 0.5, 0.9):
            k = math.ceil(q * len(picks)) - 1
            assert bvg.best_of_n_quantile(values, n, q) == picks[max(k, 0)]


def test_trials_to_reach_and_ranks():
    assert bvg.trials_to_reach([3.0, 2.0, 1.0], 2.0) == 2
    assert bvg.trials_to_reach([NAN, 3.0], 1.0) is None
    assert bvg.ranks([2.0, 1.0, 2.0, NAN]) == [2, 1, 2, 4]


def test_alignment_copies_the_grids_overrides_to_the_tpe_sweep():
    for ds in ("moons", "adult"):
        files = bvg.sweep_files(ds)
        grid = yaml.safe_load(files["grid"].read_text())
        bayes = yaml.safe_load(files["bayes"].read_text())
        to_grid, to_bayes = bvg.alignment_sets(grid, bayes)
        aligned = {**(bayes.get("overrides") or {}), **dict(to_bayes)}
        fixed = {k: v for k, v in grid["overrides"].items() if k not in bayes["space"]}
        assert all(aligned.get(k) == v for k, v in fixed.items()), (ds, aligned, fixed)
        assert all(k not in bayes["space"] for k, _ in to_bayes)
        assert all(k not in grid["space"] for k, _ in to_grid)
    g = {"overrides": {"a": 1, "b": 2}, "space": {"s": [1]}}
    b = {"overrides": {"a": 3, "c": 4, "s": 5}, "space": {"b": {"uniform": [0, 1]}}}
    to_grid, to_bayes = bvg.alignment_sets(g, b)
    assert to_bayes == [("a", 1)]  # "b" is searched by the TPE sweep
    assert to_grid == [("c", 4)]  # "a" conflicts (grid wins), "s" is searched by the grid


def test_base_differences_ignore_searched_keys():
    a = {"train.nce": 1000, "generator.tau": 0.5, "train.epochs": 100}
    b = {"train.nce": 5000, "generator.tau": 0.9, "train.epochs": 100}
    assert bvg.base_differences(a, b, {"generator.tau"}) == [("train.nce", 1000, 5000)]
