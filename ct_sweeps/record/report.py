"""A sweep's report, from its run directory: the results table, the best config, the Pareto
front and plots. Built from Ray Tune's own files (:mod:`ct_sweeps.run.results`), which stay the
source of truth whatever reached the tracker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ct_core.files import atomic_save, atomic_write_text
from ct_sweeps.plan import OPTUNA_FILE, RunDir
from ct_sweeps.plan.space import Space, trial_config
from ct_sweeps.run.results import TrialRecord, collect

__all__ = ["Report", "format_table", "pareto_mask", "results_frame", "setting_plots"]
__all__ += ["write_report"]

RESULTS_FILE = "results.csv"
BEST_FILE = "best_config.yaml"
PARETO_FILE = "pareto.csv"
log = logging.getLogger("ct_sweeps.record")


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
    import numpy as np

    pts = np.asarray(values, dtype=float).reshape(len(values), len(modes))
    pts = pts * np.array([1.0 if m == "min" else -1.0 for m in modes])
    ok = np.isfinite(pts).all(axis=1)
    # dominates[j, i]: row j is no worse than row i everywhere and better somewhere
    no_worse = (pts[:, None, :] <= pts[None, :, :]).all(axis=2)
    better = (pts[:, None, :] < pts[None, :, :]).any(axis=2)
    dominated = (no_worse & better & ok[:, None]).any(axis=0)
    return (ok & ~dominated).tolist()


def _plots(df: Any, run: RunDir, metrics: Sequence[str], modes: Sequence[str]) -> list[Path]:
    """The search metric against each swept parameter; the first two metrics' Pareto front;
    an Optuna sweep's history, parameter importances and parallel coordinates."""
    from ct_core.plots import plot_metric_by_param, plot_pareto

    m, folder, out = metrics[0], run.path / "plots", []
    folder.mkdir(exist_ok=True)
    title = f"{run.sweep.name}: {m} by {{}} ({len(df)} settings)"
    for e in run.space.entries:
        if e.key in df.columns and m in df.columns:
            path = folder / f"{m}_by_{e.key}.png"
            plot_metric_by_param(
                df, e.key, m, modes[0], e.kind == "loguniform", path, title.format(e.key)
            )
            out.append(path)
    if len(metrics) >= 2 and {*metrics[:2]} <= set(df.columns):
        title = f"{run.sweep.name}: Pareto front of {metrics[0]} and {metrics[1]}"
        plot_pareto(df, *metrics[:2], modes[:2], path=folder / "pareto.png", title=title)
        out.append(folder / "pareto.png")
    if (run.path / OPTUNA_FILE).exists():
        out += _optuna_plots(run, folder, metrics)
    return out


def _optuna_plots(run: RunDir, folder: Path, metrics: Sequence[str]) -> list[Path]:
    """Optuna's own plots of the sweep's study (its matplotlib versions)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = JournalStorage(JournalFileBackend(str(run.path / OPTUNA_FILE)))
    study = optuna.load_study(study_name=run.sweep.name, storage=storage)
    one = {
        "target": (lambda t: t.values[0]) if len(metrics) > 1 else None,
        "target_name": metrics[0],
    }
    out = []
    for name, plot in (
        ("history", ovm.plot_optimization_history),
        ("param_importances", ovm.plot_param_importances),
        ("parallel_coordinate", ovm.plot_parallel_coordinate),
    ):
        try:
            ax = plot(study, **one)
        except Exception:  # too few finished trials, or one parameter only
            continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.set_size_inches(9, 5.5)
        fig.suptitle(f"{run.sweep.name}: Optuna {name.replace('_', ' ')}")
        fig.savefig(folder / f"optuna_{name}.png", dpi=100, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        out.append(folder / f"optuna_{name}.png")
    return out


def setting_plots(
    run: RunDir, uid: str, name: str, cfg: Any, history: Sequence[dict], model_file: Path
) -> list[Path]:
    """One setting's learning curves and, for 2-D data, its Figure-1 panel, in
    ``plots/<setting id>/`` (made for the settings whose models are kept: a few seconds of CPU
    each would add up over a large grid)."""
    import torch

    from ct_core.plots import plot_history, plot_model

    folder = run.path / "plots" / uid
    out: list[Path] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only wait on each other
    try:
        if history:
            plot_history(history, folder / "learning_curves.png", f"{name}: learning curves")
            out.append(folder / "learning_curves.png")
        blob = torch.load(model_file, map_location="cpu", weights_only=True)
        if blob.get("meta", {}).get("n_features") == 2:
            from ct_core.data import load_dataset
            from ct_core.models import load_model

            model, _ = load_model(model_file)
            plot_model(
                model,
                load_dataset(cfg.data),
                cfg,
                folder / "figure1.png",
                f"{name}: decision boundary and counterfactuals",
            )
            out.append(folder / "figure1.png")
    except Exception as e:  # plots are a convenience, never a failure
        log.warning("plots of %s not made (%s: %s)", uid, type(e).__name__, e)
    finally:
        torch.set_num_threads(threads)
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
        front = sort_frame(df[df["pareto"]], metrics[0], modes[0])
        atomic_save(pareto_path, lambda f: front.to_csv(f, index=False))
    df = sort_frame(df, metrics[0], modes[0])
    results = run.path / RESULTS_FILE
    # through a temporary file: a report cut short (full disk, kill) leaves the old one whole
    atomic_save(results, lambda f: df.to_csv(f, index=False))
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
        atomic_write_text(best_path, header + yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    plot_paths: list[Path] = []
    if plots and len(df):
        try:
            plot_paths = _plots(df, run, metrics, modes)
        except Exception as e:  # plots are a convenience, never a failure
            log.warning("sweep plots not made (%s: %s)", type(e).__name__, e)
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
