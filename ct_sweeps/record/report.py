"""A sweep's report, from its run directory: the results table, the best config, the Pareto
front and plots. Built from Ray Tune's own files (:mod:`ct_sweeps.run.results`), which stay the
source of truth whatever reached the tracker.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ct_sweeps.plan import RunDir
from ct_sweeps.plan.space import Space, trial_config
from ct_sweeps.run.results import TrialRecord, collect

__all__ = ["Report", "format_table", "pareto_mask", "results_frame", "write_report"]

RESULTS_FILE = "results.csv"
BEST_FILE = "best_config.yaml"
PARETO_FILE = "pareto.csv"


def results_frame(records: Sequence[TrialRecord], space: Space, packed: bool = False) -> Any:
    """One row per setting: id, status, error (``pack``: its trial), every swept parameter,
    the final metrics."""
    import pandas as pd

    keys = [e.key for e in space.entries]
    rows = []
    for r in records:
        row: dict[str, Any] = {"trial_id": r.trial_id, "status": r.status, "error": r.error}
        if packed:
            row["pack"] = r.trial
        for k in keys:
            v = r.params.get(k)
            row[k] = json.dumps(v) if isinstance(v, list | dict) else v
        row.update(r.final())
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["trial_id", "status", "error", *keys])


def sort_frame(df: Any, metric: str, mode: str) -> Any:
    if metric not in df.columns:
        return df
    return df.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")


def pareto_mask(values: Sequence[Sequence[float]], modes: Sequence[str]) -> list[bool]:
    """Non-dominated rows (a row with a NaN is never on the front)."""
    sign = [1.0 if m == "min" else -1.0 for m in modes]
    pts = [[s * v for s, v in zip(sign, row)] for row in values]
    ok = [all(math.isfinite(v) for v in p) for p in pts]
    mask = []
    for i, p in enumerate(pts):
        if not ok[i]:
            mask.append(False)
            continue
        dominated = any(
            ok[j] and all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p))
            for j, q in enumerate(pts)
            if j != i
        )
        mask.append(not dominated)
    return mask


def _plots(df: Any, run: RunDir, metrics: Sequence[str]) -> list[Path]:
    """The search metric against each swept parameter; the first two metrics and their front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, folder, out = metrics[0], run.path / "plots", []
    folder.mkdir(exist_ok=True)
    plots = [(e.key, m, e.kind == "loguniform", f"{m}_by_{e.key}.png") for e in run.space.entries]
    if len(metrics) >= 2:
        plots.append((m, metrics[1], False, "pareto.png"))
    for x, y, log, name in plots:
        if x not in df.columns or y not in df.columns:
            continue
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.scatter(df[x].astype(str) if df[x].dtype == object else df[x], df[y], s=12)
        if name == "pareto.png" and "pareto" in df.columns:
            front = df[df["pareto"]].sort_values(x)
            ax.plot(front[x], front[y], "r.-", label="Pareto front")
            ax.legend()
        ax.set(xlabel=x, ylabel=y, xscale="log" if log else "linear")
        fig.tight_layout()
        fig.savefig(folder / name, dpi=80)
        plt.close(fig)
        out.append(folder / name)
    return out


def _mode(metric: str) -> str:
    """Default direction of a metric the sweep did not optimise."""
    lower = ("loss", "cost", "implausibility", "mmd", "time", "seconds", "div", "reg", "adv")
    return "min" if any(w in metric for w in lower) else "max"


@dataclass
class Report:
    frame: Any
    results: Path
    best: Path | None
    pareto: Path | None
    plots: list[Path]
    metric: str
    mode: str

    @property
    def files(self) -> list[Path]:
        return [f for f in (self.results, self.best, self.pareto) if f is not None]


def write_report(
    run: RunDir,
    metric: str | None = None,
    mode: str | None = None,
    records: Sequence[TrialRecord] | None = None,
    plots: bool = True,
) -> Report:
    """Write ``results.csv`` (sorted by the metric), ``best_config.yaml`` (a ready training
    config of the best finished trial), ``pareto.csv`` (multi-objective) and plots."""
    s = run.sweep.search
    metrics, modes = s.metrics, s.modes
    if metric is not None:
        metrics, modes = [metric], [mode or dict(zip(metrics, modes)).get(metric) or _mode(metric)]
    recs = list(records) if records is not None else collect(run)
    df = results_frame(recs, run.space, packed=bool(run.info.get("packed")))
    best_path = pareto_path = None
    if len(metrics) > 1 and all(m in df.columns for m in metrics) and len(df):
        df["pareto"] = pareto_mask(df[metrics].astype(float).values.tolist(), modes)
        pareto_path = run.path / PARETO_FILE
        sort_frame(df[df["pareto"]], metrics[0], modes[0]).to_csv(pareto_path, index=False)
    df = sort_frame(df, metrics[0], modes[0])
    results = run.path / RESULTS_FILE
    df.to_csv(results, index=False)
    done = df[df["status"] == "TERMINATED"] if len(df) else df
    if len(done) and metrics[0] in done.columns and done[metrics[0]].notna().any():
        best_id = done.dropna(subset=[metrics[0]]).iloc[0]["trial_id"]
        best = next(r for r in recs if r.trial_id == best_id)
        cfg = trial_config(run.base, best.params)
        best_path = run.path / BEST_FILE
        header = (
            f"# Best trial {best_id} of sweep {run.sweep.name} by {metrics[0]} ({modes[0]}).\n"
            f"# Train it with: ct train {best_path} --out runs/best\n"
        )
        best_path.write_text(header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    plot_paths: list[Path] = []
    if plots and len(df):
        try:
            plot_paths = _plots(df, run, metrics)
        except Exception:  # plots are a convenience, never a failure
            plot_paths = []
    return Report(df, results, best_path, pareto_path, plot_paths, metrics[0], modes[0])


def format_table(df: Any, metric: str, n: int = 10) -> str:
    """A compact text table of the best ``n`` trials."""
    if not len(df):
        return "(no trials)"
    cols = ["trial_id", "status"]
    cols += [c for c in df.columns if "." in c]
    for c in (metric, "val_acc", "val_implausibility", "val_cost", "epochs", "time_total_s"):
        if c in df.columns and c not in cols:
            cols.append(c)
    view = df[cols].head(n).copy()
    for c in view.columns:
        if view[c].dtype.kind == "f":
            view[c] = view[c].map(lambda v: f"{v:.4g}")
    more = f"\n... {len(df) - n} more in the results file" if len(df) > n else ""
    return view.to_string(index=False) + more
