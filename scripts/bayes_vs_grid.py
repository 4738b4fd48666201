"""Does Bayesian search (Optuna TPE over T, tau, lambda_div, lambda_adv, lambda_reg) find CT
settings at least as good as the paper's tuning grid, in fewer trials?

For each dataset this runs (or, with ``--skip-run``, re-reads) two sweeps through ``ct-sweep run
... --storage DIR``:

* the paper's grid ``configs/paper/tune_<ds>.yaml`` (tau x lambda_reg x {full, vanilla} = 18)
  into ``OUT/<ds>/grid``;
* the Bayesian sweep ``configs/bayes/<ds>.yaml`` (TPE, first ``n_startup_trials`` random) into
  ``OUT/<ds>/bayes``;

then reads both runs' ``results.csv`` and writes ``OUT/<ds>/comparison.md``, ``comparison.csv``
(the best-so-far curves), ``trials.csv`` (every setting of both sweeps) and ``comparison.png``.

Fairness. Both sweeps get the same base config: by default each sweep also receives the other's
fixed ``overrides`` that it neither sets nor searches (the grid's wins on a conflict; e.g. the
grid's ``train.nce: 1000`` reaches the Bayesian sweep, whose base has 5000 for tabular data), and
``--set`` applies to both. After the runs the resolved base configs are compared key by key
outside the searched keys and any difference is printed in the report.

The metric both searches optimise is ``val_implausibility`` of the last epoch, which training
computes on ``evaluation.n_val_individuals`` (100) validation points drawn from the *trainer's*
random stream, i.e. not on the same points for every setting. So the script also re-scores every
finished setting's final model on fixed points (``--rescore``, default on): all validation points
(the same for every model; test-time ECCo, tau 0.95, T 50 as in training) and up to 1000 test
points, with test accuracy. The selected setting of each search is reported on both.

Trial order: for TPE the order in which the trials were created (Tune's experiment state), i.e.
the order TPE proposed them. For the grid any order is arbitrary, so "best after N grid trials" is
the exact expectation (and 10/90 % quantiles) of the best of N settings drawn at random without
replacement from the finished grid, by combinatorics over the sorted values.

    .venv/bin/python scripts/bayes_vs_grid.py --datasets moons --trials 60
    .venv/bin/python scripts/bayes_vs_grid.py --datasets adult --trials 40 --set train.epochs=50
    .venv/bin/python scripts/bayes_vs_grid.py --datasets moons,adult --skip-run   # re-read only

``--set KEY=VALUE`` goes to both sweeps (training-config paths such as ``train.epochs``);
``--set-grid`` / ``--set-bayes`` to one only (``search.*`` fields belong there: the grid's
``search.num_samples`` repeats the whole grid). ``--trials N`` is ``--set-bayes
search.num_samples=N``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
METRIC = "val_implausibility"
SWEEPS = ("grid", "bayes")
TEST_POINTS = 1000
CURVE_NS = (1, 2, 3, 5, 8, 10, 12, 15, 18, 20, 25, 30, 40, 50, 60, 80, 100)


# ----------------------------------------------------------------------------------------------
# Pure functions (tested in tests/test_bayes_vs_grid.py)


def _key(v: float) -> float:
    """Sort key: missing (NaN) values rank last."""
    return math.inf if v is None or math.isnan(v) else v


def best_so_far(values: Sequence[float]) -> list[float]:
    """Running minimum in the given order; NaN (no value) never improves it (NaN until a value)."""
    out, cur = [], math.nan
    for v in values:
        if not math.isnan(v) and (math.isnan(cur) or v < cur):
            cur = v
        out.append(cur)
    return out


def incumbent_report(select: Sequence[float], report: Sequence[float]) -> list[float]:
    """For each prefix of the trials, ``report`` of the trial that is best by ``select`` so far
    (the first on ties), NaN while no trial has a ``select`` value."""
    out, best_i = [], -1
    for i, v in enumerate(select):
        if not math.isnan(v) and (best_i < 0 or v < select[best_i]):
            best_i = i
        out.append(report[best_i] if best_i >= 0 else math.nan)
    return out


def argmin_probabilities(n_total: int, n: int) -> list[float]:
    """``p[i]``: probability that the ``i``-th smallest (0-based) of ``n_total`` values is the
    smallest among ``n`` drawn uniformly without replacement: C(N-1-i, n-1) / C(N, n)."""
    if not 1 <= n <= n_total:
        raise ValueError(f"n must be in [1, {n_total}], got {n}")
    total = math.comb(n_total, n)
    return [math.comb(n_total - 1 - i, n - 1) / total for i in range(n_total)]


def expected_best_of_n(
    select: Sequence[float], n: int, report: Sequence[float] | None = None
) -> float:
    """Exact expectation, over ``n`` settings drawn at random without replacement, of ``report``
    (default: ``select`` itself) of the one with the smallest ``select``. NaN ``select`` values
    (settings without a metric) rank last; the result is NaN when such a setting can be chosen
    (all ``n`` draws without a value) or when a chosen ``report`` is NaN."""
    rep = list(select) if report is None else list(report)
    order = sorted(range(len(select)), key=lambda i: (_key(select[i]), i))
    p = argmin_probabilities(len(select), n)
    out = 0.0
    for rank, i in enumerate(order):
        if p[rank] == 0.0:
            continue
        if math.isnan(select[i]) or math.isnan(rep[i]):
            return math.nan
        out += p[rank] * rep[i]
    return out


def best_of_n_quantile(values: Sequence[float], n: int, q: float) -> float:
    """Exact ``q``-quantile of the smallest of ``n`` values drawn at random without replacement
    (the smallest sorted value whose CDF P(min <= v) reaches ``q``); NaN values rank last."""
    vals = sorted(values, key=_key)
    p = argmin_probabilities(len(vals), n)
    acc = 0.0
    for v, pi in zip(vals, p):
        acc += pi
        if acc >= q - 1e-12:
            return v
    return vals[-1]


def trials_to_reach(curve: Sequence[float], target: float) -> int | None:
    """1-based number of trials after which ``curve`` (a best-so-far) is <= ``target``."""
    for i, v in enumerate(curve):
        if not math.isnan(v) and v <= target + 1e-12:
            return i + 1
    return None


def ranks(values: Sequence[float]) -> list[int]:
    """1-based competition ranks (ties share the best rank; NaN last)."""
    keys = [_key(v) for v in values]
    return [1 + sum(k2 < k for k2 in keys) for k in keys]


def alignment_sets(
    grid: dict[str, Any], bayes: dict[str, Any]
) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """Fixed overrides each sweep file lacks but the other sets: ``(to_grid, to_bayes)`` pairs.

    A key the receiving sweep searches, or already overrides itself, is left alone, except that
    the grid's value wins a conflict (the paper's tuning grid is the reference)."""
    g_over, b_over = dict(grid.get("overrides") or {}), dict(bayes.get("overrides") or {})
    g_space, b_space = set(grid.get("space") or {}), set(bayes.get("space") or {})
    to_bayes = [
        (k, v)
        for k, v in g_over.items()
        if k not in b_space and (k not in b_over or b_over[k] != v)
    ]
    to_grid = [
        (k, v)
        for k, v in b_over.items()
        if k not in g_space and k not in g_over and k not in b_space
    ]
    return to_grid, to_bayes


def base_differences(
    a: dict[str, Any], b: dict[str, Any], ignore: set[str]
) -> list[tuple[str, Any, Any]]:
    """``(key, a, b)`` for every dotted key whose values differ, outside ``ignore``."""
    keys = sorted((set(a) | set(b)) - ignore)
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}g}"
    return str(v)


# ----------------------------------------------------------------------------------------------
# Running the sweeps


def sweep_files(ds: str) -> dict[str, Path]:
    return {
        "grid": ROOT / "configs" / "paper" / f"tune_{ds}.yaml",
        "bayes": ROOT / "configs" / "bayes" / f"{ds}.yaml",
    }


def _yaml_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def sweep_commands(ds: str, out: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    files = sweep_files(ds)
    raw = {k: yaml.safe_load(p.read_text()) for k, p in files.items()}
    to_grid, to_bayes = alignment_sets(raw["grid"], raw["bayes"]) if args.align else ([], [])
    extra = {
        "grid": [f"{k}={_yaml_value(v)}" for k, v in to_grid] + list(args.set_grid),
        "bayes": [f"{k}={_yaml_value(v)}" for k, v in to_bayes] + list(args.set_bayes),
    }
    if args.trials:
        extra["bayes"].append(f"search.num_samples={args.trials}")
    cmds = {}
    for kind in SWEEPS:
        cmd = [str(BIN / "ct-sweep"), "run", str(files[kind].relative_to(ROOT))]
        cmd += ["--storage", str(out / ds / kind)]
        for s in extra[kind] + list(args.set):
            cmd += ["--set", s]
        if args.num_cpus:
            cmd += ["--num-cpus", str(args.num_cpus)]
        cmds[kind] = cmd
    return cmds


def run_sweep(cmd: list[str], log: Path) -> float:
    """Run one ``ct-sweep run`` command, appending its output to ``log``; wall seconds."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}) after {wall:.0f} s; see {log}")
    print(f"  done in {wall:.0f} s", flush=True)
    return wall


# ----------------------------------------------------------------------------------------------
# Reading the runs


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_results(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``results.csv``: the swept parameters as written, the metrics as floats."""
    with (run_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in (METRIC, "val_acc", "val_validity", "val_cost", "time_total_s", "train_seconds"):
            r[k] = _float(r.get(k))
    return rows


def trial_order(run_dir: Path) -> dict[str, int]:
    """Creation index of each trial (Tune's experiment state lists trials as they were added:
    the order the searcher proposed them); falls back to each trial's first reported timestamp."""
    states = sorted((run_dir / "tune").glob("experiment_state-*.json"))
    if states:
        data = json.loads(states[-1].read_text())
        ids = [
            json.loads(t[0] if isinstance(t, list) else t)["trial_id"] for t in data["trial_data"]
        ]
        return {t: i for i, t in enumerate(ids)}
    first: dict[str, float] = {}
    for p in (run_dir / "tune").glob("*/result.json"):
        line = p.read_text().splitlines()[:1]
        if line:
            d = json.loads(line[0])
            first[str(d["trial_id"])] = float(d.get("timestamp", math.inf))
    return {t: i for i, t in enumerate(sorted(first, key=lambda t: first[t]))}


def flat_base(run_dir: Path) -> tuple[dict[str, Any], set[str], dict[str, Any]]:
    """The run's resolved base training config (dotted), its searched keys, its search block."""
    from ct_core.config import parse_config

    sweep = yaml.safe_load((run_dir / "sweep.yaml").read_text())
    return parse_config(sweep["base"]).flat(), set(sweep.get("space") or {}), sweep["search"]


def rescore(run_dir: Path, data_cache: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every finished setting's final model on fixed points: all validation points and up to
    ``TEST_POINTS`` test points (same points, targets and samples for every model)."""
    import dataclasses

    import torch

    from ct_core.config import parse_config
    from ct_core.data import load_dataset
    from ct_core.evaluation import validation_metrics
    from ct_core.models import load_model
    from ct_sweeps.plan import RunDir
    from ct_sweeps.run.results import collect

    run = RunDir.load(run_dir)
    out: dict[str, dict[str, float]] = {}
    for rec in collect(run):
        if rec.status != "TERMINATED" or rec.path is None:
            continue
        model_file = rec.model()
        if model_file is None:
            continue
        model, cfg = load_model(model_file)
        key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
        if key not in data_cache:
            data_cache[key] = load_dataset(cfg.data)
        data = data_cache[key]
        res: dict[str, float] = {}
        for split, n_max in (("val", None), ("test", TEST_POINTS)):
            X, y = data.split(split)
            n = X.shape[0] if n_max is None else min(n_max, X.shape[0])
            d = cfg.to_dict()
            d["evaluation"]["n_val_individuals"] = int(n)
            c = parse_config(d)
            dd = data if split == "val" else dataclasses.replace(data, X_val=X, y_val=y)
            m = validation_metrics(model, dd, c, seed=c.evaluation.seed)
            for k in ("validity", "implausibility", "cost"):
                res[f"{split}_{k}_fixed"] = m[f"val_{k}"]
            with torch.no_grad():
                res[f"{split}_acc_fixed"] = float((model(X).argmax(1) == y).float().mean())
        out[rec.trial_id] = res
    return out


# ----------------------------------------------------------------------------------------------
# The comparison


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


def compare(
    ds: str, out: Path, meta: dict[str, Any], do_rescore: bool, min_validity: float = 0.5
) -> dict[str, Any]:
    """Write ``OUT/<ds>/comparison.{md,csv,png}`` and ``trials.csv`` from the two run dirs.

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

    def best(rs: list[dict[str, Any]]) -> dict[str, Any] | None:
        ok = [r for r in rs if not math.isnan(r[METRIC])]
        return min(ok, key=lambda r: r[METRIC]) if ok else None

    g_best, b_best = best(grid), best(bayes)
    g_best_full = best([r for r in grid if r["objective"] == "full"])
    b_best_18 = best(bayes[:n_grid])
    vanilla = [r for r in grid if r["objective"] == "vanilla"]
    grid_best_v = g_best[METRIC] if g_best else math.nan
    to_match = trials_to_reach(b_curve, grid_best_v)
    to_match_full = trials_to_reach(b_curve, g_best_full[METRIC]) if g_best_full else None

    def is_valid(r: dict[str, Any]) -> bool:
        return not math.isnan(r["val_validity"]) and r["val_validity"] >= min_validity

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

    # files
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
    png = d / "comparison.png"
    n_startup = int(bases["bayes"][2].get("n_startup_trials") or 0)
    plot(ds, curves, grid, bayes, g_best, b_best, png, do_rescore, n_startup, min_validity)

    # markdown
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
        f"* Grid best `{METRIC}`: {fmt(grid_best_v)}; TPE best: "
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
    (d / "comparison.md").write_text("\n".join(L))
    return {
        "grid_best": g_best,
        "bayes_best": b_best,
        "to_match": to_match,
        "to_match_full": to_match_full,
        "to_match_valid": to_match_valid,
        "diffs": diffs,
    }


def _ranges(ns: Sequence[int]) -> str:
    out: list[str] = []
    for n in ns:
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))  # type: ignore[arg-type]
    return ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in out)  # type: ignore[misc]


def plot(
    ds: str,
    curves: list[dict[str, Any]],
    grid: list[dict[str, Any]],
    bayes: list[dict[str, Any]],
    g_best: dict[str, Any] | None,
    b_best: dict[str, Any] | None,
    path: Path,
    do_rescore: bool,
    n_startup: int = 0,
    min_validity: float = 0.5,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(2, 2, figsize=(10.5, 8.0))
    axes = list(axs.flat)
    if not do_rescore:
        axes[1].set_visible(False)
    panels = [("", "best val_implausibility (sweep metric, 100 pts)")]
    if do_rescore:
        panels.append(("_val_implausibility_fixed", "val IP of the pick, all val pts"))
    for ax, (suffix, label) in zip(axes, panels):
        gkey = "grid_expected_best" if not suffix else f"grid_incumbent{suffix}"
        bkey = "bayes_best" if not suffix else f"bayes_incumbent{suffix}"
        gn = [c["n"] for c in curves if gkey in c]
        ax.plot(gn, [c[gkey] for c in curves if gkey in c], "C0-", label="grid, E[best of N]")
        if not suffix:
            ax.fill_between(
                gn,
                [c["grid_q10"] for c in curves if gkey in c],
                [c["grid_q90"] for c in curves if gkey in c],
                color="C0",
                alpha=0.2,
                label="grid, 10–90 % of draws",
            )
        bn = [c["n"] for c in curves if bkey in c]
        ax.step(bn, [c[bkey] for c in curves if bkey in c], "C1-", where="post", label="TPE")
        vkey = "bayes_best_valid"
        if not suffix and any(c.get(vkey) != c.get(bkey) for c in curves if bkey in c):
            ax.step(
                bn,
                [c[vkey] for c in curves if bkey in c],
                "C1--",
                where="post",
                lw=1,
                label=f"TPE, val validity ≥ {min_validity:g}",
            )
        if gn:
            ax.axhline(
                [c[gkey] for c in curves if gkey in c][-1],
                color="C0",
                ls=":",
                lw=1,
                label=f"grid, all {gn[-1]}",
            )
        rkey = suffix[1:] if suffix else METRIC
        van = [r.get(rkey, math.nan) for r in grid if r["objective"] == "vanilla"]
        van = [v for v in van if not math.isnan(v)]
        if van:
            ax.axhline(min(van), color="0.5", ls="--", lw=1, label="grid vanilla (best)")
        if 0 < n_startup < len(bayes):
            ax.axvline(n_startup + 0.5, color="C1", ls=":", lw=1, label="TPE: end of random start")
        ax.set_xlabel("trials (N)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    for ax, ykey in zip(axes[2:], ("val_acc", "val_validity")):
        for kind, rs, mk, col in (("grid", grid, "o", "C0"), ("TPE", bayes, ".", "C1")):
            for obj, m in (("full", mk), ("vanilla", "x")):
                sel = [r for r in rs if r["objective"] == obj]
                if sel:
                    ax.scatter(
                        [r[METRIC] for r in sel],
                        [r[ykey] for r in sel],
                        marker=m,
                        color=col,
                        s=22,
                        label=f"{kind} {obj}",
                        alpha=0.8,
                    )
        for r, col in ((g_best, "C0"), (b_best, "C1")):
            if r is not None:
                ax.scatter([r[METRIC]], [r[ykey]], marker="*", s=160, color=col, edgecolor="k")
        ax.set_xlabel("val_implausibility (sweep; NaN not shown)")
        ax.set_ylabel(f"{ykey} (sweep, last epoch)")
        ax.legend(fontsize=7)
    axes[2].set_title("stars: each search's pick", fontsize=9)
    fig.suptitle(f"{ds}: Optuna TPE vs the paper's tuning grid (lower IP is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for p in ("torch", "ray", "optuna", "numpy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "?"
    try:
        out["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        out["git"] = "?"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--datasets", default="moons,adult", help="comma-separated (default: %(default)s)"
    )
    ap.add_argument(
        "--out", default="results/bayes", help="output directory (default: %(default)s)"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="both sweeps")
    ap.add_argument("--set-grid", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--set-bayes", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--trials", type=int, help="TPE trials (search.num_samples of the TPE sweep)")
    ap.add_argument("--num-cpus", type=int, help="CPUs of ct-sweep's embedded Ray")
    ap.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="do not copy each sweep's fixed overrides into the other",
    )
    ap.add_argument("--skip-run", action="store_true", help="re-read existing runs under OUT")
    ap.add_argument(
        "--no-rescore",
        dest="rescore",
        action="store_false",
        help="skip the fixed-point re-scoring of every setting's final model",
    )
    ap.add_argument(
        "--only", choices=SWEEPS, help="run only this sweep (the other must exist under OUT)"
    )
    ap.add_argument(
        "--min-validity",
        type=float,
        default=0.5,
        help="also select among settings with val_validity >= this (default: %(default)s)",
    )
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    names = [s for s in args.datasets.split(",") if s]
    missing = [n for n in names if not all(p.is_file() for p in sweep_files(n).values())]
    if missing:
        ap.error(f"no tune_<ds>.yaml / bayes/<ds>.yaml for {missing}")
    for ds in names:
        d = out / ds
        d.mkdir(parents=True, exist_ok=True)
        meta_path = d / "meta.json"
        meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        meta.setdefault("commands", {})
        meta.setdefault("wall_s", {})
        if not args.skip_run:
            cmds = sweep_commands(ds, out, args)
            for kind in SWEEPS:
                if args.only and kind != args.only:
                    continue
                if (d / kind).exists():
                    sys.exit(f"{d / kind} exists; remove it or use --skip-run")
                meta["wall_s"][kind] = round(run_sweep(cmds[kind], d / "sweeps.log"), 1)
                meta["commands"][kind] = cmds[kind]
                meta["finished_" + kind] = time.strftime("%Y-%m-%d %H:%M:%S")
                meta["versions"] = versions()
                meta_path.write_text(json.dumps(meta, indent=2))
        t0 = time.perf_counter()
        res = compare(ds, out, meta, args.rescore, args.min_validity)
        print(f"{ds}: comparison in {time.perf_counter() - t0:.0f} s -> {d / 'comparison.md'}")
        print(
            f"  grid best {fmt(res['grid_best'][METRIC] if res['grid_best'] else math.nan)}, "
            f"TPE best {fmt(res['bayes_best'][METRIC] if res['bayes_best'] else math.nan)}, "
            f"TPE trials to match: {res['to_match']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
