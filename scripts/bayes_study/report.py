"""The study's files for one dataset: ``trials.csv`` (every setting of both sweeps),
``comparison.csv`` (the best-so-far curves), ``comparison.png`` and ``comparison.md``."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bayes_study import METRIC, SWEEPS
from bayes_study.analysis import Comparison, analyse, best
from bayes_study.plot import plot
from bayes_study.runs import TEST_POINTS

# The trial counts the markdown's best-so-far table shows (plus both sweeps' sizes).
CURVE_NS = (1, 2, 3, 5, 8, 10, 12, 15, 18, 20, 25, 30, 40, 50, 60, 80, 100)


def compare(
    ds: str, out: Path, meta: dict[str, Any], do_rescore: bool, min_validity: float = 0.5
) -> dict[str, Any]:
    """Write ``OUT/<ds>/comparison.{md,csv,png}`` and ``trials.csv`` from the two run dirs;
    return each search's best setting, TPE's trials to match the grid, and base differences.
    ``meta``: the commands and wall times of the runs (``OUT/<ds>/meta.json``)."""
    c = analyse(ds, out, do_rescore, min_validity)
    write_tables(c)
    png = c.dir / "comparison.png"
    n_startup = int(c.bases["bayes"][2].get("n_startup_trials") or 0)
    plot(
        ds, c.curves, c.grid, c.bayes, c.g_best, c.b_best, png, do_rescore, n_startup, min_validity
    )
    (c.dir / "comparison.md").write_text(markdown(c, meta, png))
    return {
        "grid_best": c.g_best,
        "bayes_best": c.b_best,
        "to_match": c.to_match,
        "to_match_full": c.to_match_full,
        "to_match_valid": c.to_match_valid,
        "diffs": c.diffs,
    }


def write_tables(c: Comparison) -> None:
    """``trials.csv`` and ``comparison.csv`` in the dataset's output folder."""
    d, grid, bayes, spaces, curves, do_rescore = (
        c.dir,
        c.grid,
        c.bayes,
        c.spaces,
        c.curves,
        c.do_rescore,
    )
    trials_path = d / "trials.csv"
    cols = ["sweep", "trial_id", "order", "objective", *spaces["bayes"], *spaces["grid"]]
    cols = list(dict.fromkeys(cols))
    cols += [METRIC, "val_acc", "val_validity", "val_cost", "rank_in_grid"]
    cols += [
        c
        for c in (
            "val_implausibility_fixed",
            "val_validity_fixed",
            "val_acc_fixed",
            "test_implausibility_fixed",
            "test_validity_fixed",
            "test_acc_fixed",
        )
        if do_rescore
    ]
    cols += ["time_total_s", "train_seconds"]
    with trials_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for kind, rs in (("grid", grid), ("bayes", bayes)):
            for r in rs:
                w.writerow({"sweep": kind, **r})
    curve_cols = list(dict.fromkeys(k for c in curves for k in c))
    with (d / "comparison.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=curve_cols)
        w.writeheader()
        w.writerows(curves)


def markdown(c: Comparison, meta: dict[str, Any], png: Path) -> str:
    """The report: how both sweeps ran, each search's picks, best-so-far vs trials, a summary."""
    ds, runs, rows, bases, spaces, diffs = c.ds, c.runs, c.rows, c.bases, c.spaces, c.diffs
    grid, bayes, curves, n_grid, n_bayes = c.grid, c.bayes, c.curves, c.n_grid, c.n_bayes
    g_best, g_best_full, g_best_valid = c.g_best, c.g_best_full, c.g_best_valid
    b_best, b_best_18, b_best_valid = c.b_best, c.b_best_18, c.b_best_valid
    vanilla, fixed_in_grid, ahead, is_valid = c.vanilla, c.fixed_in_grid, c.ahead, c.is_valid
    to_match, to_match_full, to_match_valid = c.to_match, c.to_match_full, c.to_match_valid
    do_rescore, min_validity = c.do_rescore, c.min_validity
    L: list[str] = [f"## {ds}: TPE vs the paper's tuning grid", ""]
    L += [f"Run directories: `{runs['grid']}` (grid), `{runs['bayes']}` (TPE)."]
    for k in SWEEPS:
        cmd = meta.get("commands", {}).get(k)
        if cmd:
            L += ["", f"{k}: `{' '.join(cmd)}`"]
    L += [""]
    epochs = bases["grid"][0].get("train.epochs")
    b_search = bases["bayes"][2]
    L += [
        f"* Grid: {n_grid} settings ({', '.join(spaces['grid'])}), "
        f"{sum(r['objective'] == 'vanilla' for r in grid)} of them vanilla; "
        f"it holds {', '.join(f'{k}={v}' for k, v in fixed_in_grid.items())} fixed.",
        f"* TPE: {n_bayes} trials over {', '.join(spaces['bayes'])} "
        f"(first {b_search.get('n_startup_trials')} random, seed {b_search.get('seed')}), "
        "objective full.",
        f"* Both: {epochs} epochs, nce {bases['grid'][0].get('train.nce')}, "
        f"eval_every {bases['grid'][0].get('train.eval_every')}; metric `{METRIC}` of the last "
        "epoch (min).",
    ]
    if diffs:
        L += ["* **Base configs differ** outside the searched keys: "]
        L += [f"  * `{k}`: grid {a!r}, TPE {b!r}" for k, a, b in diffs]
    else:
        L += ["* Base configs are identical outside the searched keys (checked key by key)."]
    wall = meta.get("wall_s", {})
    L += [
        "* Compute: "
        + "; ".join(
            f"{k} {fmt(wall.get(k), 3)} s wall, "
            f"{sum(r['time_total_s'] for r in rows[k] if not math.isnan(r['time_total_s'])):.0f} "
            "s summed trial time"
            for k in SWEEPS
        )
        + ". (Grid settings are packed several to a process; the summed time of a pack's "
        "settings counts the pack once per setting.)",
        "",
    ]
    L += ["### Selected settings", ""]
    head = ["which", "setting", "val IP (sweep)", "val acc", "val validity"]
    if do_rescore:
        head += ["val IP fixed", "test IP fixed", "test validity", "test acc"]
    L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def line(label: str, r: dict[str, Any] | None, keys: Sequence[str]) -> None:
        if r is None:
            L.append(f"| {label} | (none) |" + " |" * (len(head) - 2))
            return
        cells = [label, _setting(r, keys), fmt(r[METRIC]), fmt(r["val_acc"], 4)]
        cells.append(fmt(r["val_validity"], 2))
        if do_rescore:
            cells += [
                fmt(r.get("val_implausibility_fixed", math.nan)),
                fmt(r.get("test_implausibility_fixed", math.nan)),
                fmt(r.get("test_validity_fixed", math.nan), 2),
                fmt(r.get("test_acc_fixed", math.nan), 4),
            ]
        L.append("| " + " | ".join(cells) + " |")

    line(f"grid best (of {n_grid})", g_best, spaces["grid"])
    if g_best is not g_best_full:
        line("grid best full-CT", g_best_full, spaces["grid"])
    if vanilla:
        line(
            f"grid vanilla (best of {len(vanilla)}, rank {min(r['rank_in_grid'] for r in vanilla)})",
            best(vanilla),
            spaces["grid"],
        )
    line(f"grid best with val validity ≥ {min_validity:g}", g_best_valid, spaces["grid"])
    line(f"TPE best of first {min(n_grid, n_bayes)}", b_best_18, spaces["bayes"])
    line(
        f"TPE best (of {n_bayes}, trial {b_best['order'] if b_best else '–'})",
        b_best,
        spaces["bayes"],
    )
    line(
        f"TPE best with val validity ≥ {min_validity:g}"
        + (f" (trial {b_best_valid['order']})" if b_best_valid else ""),
        b_best_valid,
        spaces["bayes"],
    )
    L += [""]
    L += [
        "val IP (sweep), val acc, val validity: the sweep's own last-epoch values (100 validation "
        "points from each trainer's random stream; IP over valid counterfactuals only)."
    ]
    if do_rescore:
        L += [
            "'fixed': the final model re-scored on the same points for every model: all "
            f"validation points, and the first {TEST_POINTS} of a fixed permutation of the test "
            "split (test accuracy on the whole test split)."
        ]
    L += [""]

    L += ["### Best-so-far vs number of trials", ""]
    L += [
        "Grid: exact expectation [10 %, 90 % quantiles] of the best of N settings drawn at random "
        "without replacement (the grid has no natural order). TPE: its own order (one seed)."
    ]
    if do_rescore:
        L += [
            "'fixed' columns: fixed-point validation IP of the setting each search would pick "
            "after N trials (the incumbent by the sweep metric), expected over draws for the grid."
        ]
    L += [""]
    head2 = ["N", "grid E[best]", "grid q10–q90", "TPE best"]
    if do_rescore:
        head2 += ["grid pick, val IP fixed", "TPE pick, val IP fixed"]
    L += ["| " + " | ".join(head2) + " |", "|" + "---|" * len(head2)]
    for c in curves:
        if c["n"] not in CURVE_NS and c["n"] not in (n_grid, n_bayes):
            continue
        cells = [
            str(c["n"]),
            fmt(c.get("grid_expected_best")),
            f"{fmt(c.get('grid_q10'))}–{fmt(c.get('grid_q90'))}" if "grid_q10" in c else "",
            fmt(c.get("bayes_best")),
        ]
        if do_rescore:
            cells += [
                fmt(c.get("grid_incumbent_val_implausibility_fixed")),
                fmt(c.get("bayes_incumbent_val_implausibility_fixed")),
            ]
        L += ["| " + " | ".join(c2 if c2 else "" for c2 in cells) + " |"]
    L += ["", f"![{ds}]({png.name})", ""]

    L += ["### Summary", ""]
    L += [
        f"* Grid best `{METRIC}`: {fmt(g_best[METRIC] if g_best else math.nan)}; TPE best: "
        f"{fmt(b_best[METRIC] if b_best else math.nan)}.",
        f"* TPE trials to match the grid's best: {to_match if to_match else 'not reached'} "
        f"(of {n_bayes}); to match the best full-CT grid setting: "
        f"{to_match_full if to_match_full else 'not reached'}.",
        f"* TPE's best-so-far is at or below the grid's expected best of N for N in "
        f"{_ranges(ahead) or 'none'} (of 1–{min(n_grid, n_bayes)}).",
        f"* With val validity ≥ {min_validity:g} required: grid best "
        f"{fmt(g_best_valid[METRIC] if g_best_valid else math.nan)}"
        f" ({g_best_valid['objective'] if g_best_valid else '–'}), TPE best "
        f"{fmt(b_best_valid[METRIC] if b_best_valid else math.nan)}; TPE trials to match: "
        f"{to_match_valid if to_match_valid else 'not reached'}.",
        "* Settings below that validity: grid "
        f"{sum(not is_valid(r) for r in grid if r['objective'] == 'full')} of "
        f"{sum(r['objective'] == 'full' for r in grid)} full-CT, TPE "
        f"{sum(not is_valid(r) for r in bayes)} of {n_bayes}; without any valid counterfactual "
        f"(IP missing): grid {sum(math.isnan(r[METRIC]) for r in grid)}, TPE "
        f"{sum(math.isnan(r[METRIC]) for r in bayes)}.",
        f"* Vanilla grid settings rank {sorted({r['rank_in_grid'] for r in vanilla})} of {n_grid} "
        f"(identical models: vanilla training ignores tau and lambda_reg).",
    ]
    L += [""]
    return "\n".join(L)


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}g}"
    return str(v)


def _setting(row: dict[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = row.get(k, "")
        try:
            fv = float(v)
            v = f"{fv:.3g}" if not fv.is_integer() or "." in str(row.get(k)) else str(int(fv))
        except (TypeError, ValueError):
            pass
        parts.append(f"{k.split('.')[-1]}={v}")
    return ", ".join(parts)


def _ranges(ns: Sequence[int]) -> str:
    out: list[str] = []
    for n in ns:
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))  # type: ignore[arg-type]
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in out)  # type: ignore[misc]
