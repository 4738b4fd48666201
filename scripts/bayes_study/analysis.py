"""The comparison of the two searches on one dataset, computed from their run directories.

Trial order: for TPE the order in which the trials were created (the order TPE proposed them).
For the grid any order is arbitrary, so "best after N grid trials" is the exact expectation (and
10/90 % quantiles) of the best of N settings drawn at random without replacement.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bayes_study import METRIC, SWEEPS
from bayes_study.runs import flat_base, read_results, rescore, trial_order
from bayes_study.stats import (
    best_of_n_quantile,
    best_so_far,
    expected_best_of_n,
    incumbent_report,
    ranks,
    trials_to_reach,
)
from bayes_study.sweeps import base_differences

Row = dict[str, Any]


def best(rs: list[Row]) -> Row | None:
    """The row with the smallest metric (the first on ties); None when no row has one."""
    ok = [r for r in rs if not math.isnan(r[METRIC])]
    return min(ok, key=lambda r: r[METRIC]) if ok else None


def valid_enough(r: Row, min_validity: float) -> bool:
    """The sweep's ``val_validity`` of the setting reaches ``min_validity``."""
    return not math.isnan(r["val_validity"]) and r["val_validity"] >= min_validity


@dataclass
class Comparison:
    """One dataset's comparison: both sweeps' rows (TPE's in proposal order, with ``order``;
    the grid's with ``rank_in_grid``), the best-so-far curves, and each search's picks."""

    ds: str
    dir: Path
    runs: dict[str, Path]
    rows: dict[str, list[Row]]
    bases: dict[str, tuple[dict[str, Any], set[str], dict[str, Any]]]
    spaces: dict[str, list[str]]
    diffs: list[tuple[str, Any, Any]]
    fixed_in_grid: dict[str, Any]
    grid: list[Row]
    bayes: list[Row]
    curves: list[dict[str, Any]]
    g_best: Row | None
    g_best_full: Row | None
    g_best_valid: Row | None
    b_best: Row | None
    b_best_18: Row | None
    b_best_valid: Row | None
    vanilla: list[Row]
    to_match: int | None
    to_match_full: int | None
    to_match_valid: int | None
    ahead: list[int]
    do_rescore: bool
    min_validity: float

    @property
    def n_grid(self) -> int:
        return len(self.grid)

    @property
    def n_bayes(self) -> int:
        return len(self.bayes)

    def is_valid(self, r: Row) -> bool:
        return valid_enough(r, self.min_validity)


def analyse(ds: str, out: Path, do_rescore: bool, min_validity: float = 0.5) -> Comparison:
    """Read ``OUT/<ds>/grid`` and ``OUT/<ds>/bayes`` and compare them; with ``do_rescore`` every
    finished setting's final model is re-scored on fixed points (cached in
    ``OUT/<ds>/rescore_<sweep>.json`` until the run's results.csv changes).

    IP is averaged over *valid* counterfactuals only, so a setting whose counterfactuals rarely
    reach the evaluation tau can win on few points; ``min_validity`` adds the selection restricted
    to settings whose sweep ``val_validity`` reaches it."""
    d = out / ds
    runs = {k: d / k for k in SWEEPS}
    rows = {k: read_results(runs[k]) for k in SWEEPS}
    bases = {k: flat_base(runs[k]) for k in SWEEPS}
    spaces = {k: sorted(bases[k][1]) for k in SWEEPS}
    ignore = bases["grid"][1] | bases["bayes"][1]
    diffs = base_differences(bases["grid"][0], bases["bayes"][0], ignore)
    fixed_in_grid = {k: bases["grid"][0].get(k) for k in spaces["bayes"] if k not in spaces["grid"]}

    if do_rescore:
        cache: dict[str, Any] = {}
        for k in SWEEPS:
            # cached next to the runs; recomputed when the run's results.csv is newer
            saved = d / f"rescore_{k}.json"
            if (
                saved.exists()
                and saved.stat().st_mtime >= (runs[k] / "results.csv").stat().st_mtime
            ):
                scores = json.loads(saved.read_text())
            else:
                scores = rescore(runs[k], cache)
                saved.write_text(json.dumps(scores, indent=1))
            for r in rows[k]:
                r.update(scores.get(r["trial_id"], {}))
    fixed_keys = ("val_implausibility_fixed", "test_implausibility_fixed")

    for r in rows["grid"]:
        r["objective"] = r.get("train.objective", "full")
    for r in rows["bayes"]:
        r["objective"] = "full"
    order = trial_order(runs["bayes"])
    bayes = sorted(rows["bayes"], key=lambda r: order.get(r["trial_id"], 10**9))
    for i, r in enumerate(bayes):
        r["order"] = i + 1
    grid = rows["grid"]
    gv = [r[METRIC] for r in grid]
    bv = [r[METRIC] for r in bayes]
    n_grid, n_bayes = len(grid), len(bayes)
    g_rank = ranks(gv)
    for r, rk in zip(grid, g_rank):
        r["rank_in_grid"] = rk

    # best-so-far curves
    b_curve = best_so_far(bv)
    curves: list[dict[str, Any]] = []
    for n in range(1, max(n_grid, n_bayes) + 1):
        c: dict[str, Any] = {"n": n}
        if n <= n_bayes:
            c["bayes_best"] = b_curve[n - 1]
            for fk in fixed_keys:
                if fk in bayes[0]:
                    c[f"bayes_incumbent_{fk}"] = incumbent_report(
                        bv, [r.get(fk, math.nan) for r in bayes]
                    )[n - 1]
        if n <= n_grid:
            c["grid_expected_best"] = expected_best_of_n(gv, n)
            c["grid_q10"] = best_of_n_quantile(gv, n, 0.1)
            c["grid_q90"] = best_of_n_quantile(gv, n, 0.9)
            for fk in fixed_keys:
                if fk in grid[0]:
                    c[f"grid_incumbent_{fk}"] = expected_best_of_n(
                        gv, n, [r.get(fk, math.nan) for r in grid]
                    )
        curves.append(c)

    g_best, b_best = best(grid), best(bayes)
    g_best_full = best([r for r in grid if r["objective"] == "full"])
    b_best_18 = best(bayes[:n_grid])
    vanilla = [r for r in grid if r["objective"] == "vanilla"]
    to_match = trials_to_reach(b_curve, g_best[METRIC] if g_best else math.nan)
    to_match_full = trials_to_reach(b_curve, g_best_full[METRIC]) if g_best_full else None

    def is_valid(r: dict[str, Any]) -> bool:
        return valid_enough(r, min_validity)

    g_best_valid = best([r for r in grid if is_valid(r)])
    b_best_valid = best([r for r in bayes if is_valid(r)])
    b_curve_valid = best_so_far([r[METRIC] if is_valid(r) else math.nan for r in bayes])
    for c, v in zip(curves, b_curve_valid):
        c["bayes_best_valid"] = v
    to_match_valid = trials_to_reach(b_curve_valid, g_best_valid[METRIC]) if g_best_valid else None
    # TPE's curve against the grid's expected best of the same number of trials
    ahead = [
        c["n"]
        for c in curves
        if c["n"] <= min(n_grid, n_bayes) and c["bayes_best"] <= c["grid_expected_best"]
    ]
    return Comparison(
        ds=ds,
        dir=d,
        runs=runs,
        rows=rows,
        bases=bases,
        spaces=spaces,
        diffs=diffs,
        fixed_in_grid=fixed_in_grid,
        grid=grid,
        bayes=bayes,
        curves=curves,
        g_best=g_best,
        g_best_full=g_best_full,
        g_best_valid=g_best_valid,
        b_best=b_best,
        b_best_18=b_best_18,
        b_best_valid=b_best_valid,
        vanilla=vanilla,
        to_match=to_match,
        to_match_full=to_match_full,
        to_match_valid=to_match_valid,
        ahead=ahead,
        do_rescore=do_rescore,
        min_validity=min_validity,
    )
