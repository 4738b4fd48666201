"""Results of a sweep from its run directory: the trials table, the best config, the Pareto front,
plots. Reads Ray's own files (``RUN_DIR/<name>/<trial>/result.json`` and the experiment state),
which stay the source of truth whatever reached MLflow.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ct_core.config import ConfigError
from ct_sweeps.schema import SweepConfig, parse_sweep
from ct_sweeps.space import Space, parse_space, trial_config
from ct_sweeps.trainable import CF_METRICS, STATE_FILE, newest_state

__all__ = [
    "RunDir",
    "TrialRecord",
    "collect",
    "fit_trials",
    "pareto_mask",
    "results_frame",
    "write_report",
]

RUN_FILE = "run.json"
_INFO_LOCK = threading.Lock()
SWEEP_FILE = "sweep.yaml"
RESULTS_FILE = "results.csv"
BEST_FILE = "best_config.yaml"
PARETO_FILE = "pareto.csv"

_BOOKKEEPING = {
    "timestamp",
    "pid",
    "done",
    "time_this_iter_s",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_dir_name",
    "eval_epoch",
    "training_iteration",
}


@dataclass
class RunDir:
    """A sweep's run directory and what ``run.json`` / ``sweep.yaml`` say about it."""

    path: Path
    info: dict[str, Any]
    sweep: SweepConfig
    base: dict[str, Any]
    space: Space

    @property
    def experiment_path(self) -> Path:
        return self.path / self.info["experiment"]

    @classmethod
    def load(cls, path: str | Path) -> RunDir:
        p = Path(path).resolve()
        if not (p / RUN_FILE).is_file() or not (p / SWEEP_FILE).is_file():
            raise ConfigError(
                f"{p}: not a sweep run directory (no {RUN_FILE} / {SWEEP_FILE}); "
                "pass the directory that `ct-sweep run` printed"
            )
        info = json.loads((p / RUN_FILE).read_text())
        sweep = parse_sweep(yaml.safe_load((p / SWEEP_FILE).read_text()))
        assert isinstance(sweep.base, dict)
        space = parse_space(sweep.space, sweep.search.algorithm)
        return cls(p, info, sweep, dict(sweep.base), space)

    def save_info(self, **updates: Any) -> None:
        """Update ``run.json`` (atomically; the driver's MLflow set-up thread writes it too)."""
        with _INFO_LOCK:
            self.info.update(updates)
            tmp = self.path / f".{RUN_FILE}.tmp"
            tmp.write_text(json.dumps(self.info, indent=2))
            os.replace(tmp, self.path / RUN_FILE)


@dataclass
class TrialRecord:
    """One setting of a sweep: a Tune trial, or setting ``pack_index`` of a pack trial."""

    trial_id: str
    name: str
    status: str
    config: dict[str, Any]
    path: Path | None
    error: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    pack_index: int | None = None
    pack_size: int = 1
    pack_trial: str = ""
    lines: list[dict[str, Any]] | None = field(default=None, repr=False)
    """The trial's parsed ``result.json`` (shared by the settings of a pack, read once)."""
    recovered: int = 0
    """Epochs missing from ``result.json`` and recovered from the trial's checkpoint."""
    _history: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def model_name(self) -> str:
        """The final model's file name in the trial's last checkpoint."""
        from ct_sweeps.packing import model_file

        return "model.pt" if self.pack_index is None else model_file(self.pack_index)

    def _lines(self) -> list[dict[str, Any]]:
        if self.lines is not None:
            return self.lines
        if self.path is None or not (self.path / "result.json").exists():
            return []
        out = []
        for line in (self.path / "result.json").read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash
                    continue
        return out

    def history(self) -> list[dict[str, Any]]:
        """This setting's record of every epoch, in order: the ``result.json`` lines, one per
        epoch, and any epoch missing there taken from the trial's newest checkpoint."""
        if self._history is None:
            lines = self._lines()
            if self.pack_index is not None:
                from ct_sweeps.packing import setting_history

                lines = setting_history(lines, self.pack_index, self.pack_size)
            self._history = self._fill_gaps(one_per_epoch(lines))
        return self._history

    def _fill_gaps(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Ray can drop the results a trial reported just before its node died or it failed;
        the trainer's state in the checkpoint it resumed from holds every epoch's record."""
        have = {int(float(r["epoch"])) for r in history if "epoch" in r}
        if not have or len(have) == max(have) or self.path is None:
            return history
        saved = {int(float(r["epoch"])): r for r in self._checkpoint_history()}
        missing = {e: saved[e] for e in set(range(1, max(have) + 1)) - have if e in saved}
        if not missing:
            return history
        self.recovered = len(missing)
        for e, r in missing.items():
            r = {k: v for k, v in r.items() if isinstance(v, int | float | str)}
            if any(m in r for m in CF_METRICS):
                r["eval_epoch"] = float(e)
            history.append(r)
        return sorted(history, key=lambda r: float(r.get("epoch", 0)))

    def _checkpoint_history(self) -> list[dict[str, Any]]:
        """The history in the trial's newest checkpoint (the one with the most epochs)."""
        from ct_sweeps.packing import STATES_FILE

        assert self.path is not None
        name = STATE_FILE if self.pack_index is None else STATES_FILE
        state = newest_state(self.path, name)
        if self.pack_index is not None:
            states = state if isinstance(state, list) else []
            state = states[self.pack_index] if self.pack_index < len(states) else {}
        return list(state.get("history", [])) if isinstance(state, dict) else []

    def final(self) -> dict[str, float]:
        h = self.history()
        if not h:
            return {}
        if self.pack_index is not None:
            from ct_sweeps.packing import carried_final

            out = carried_final(h)
        else:
            out = {
                k: float(v)
                for k, v in h[-1].items()
                if k not in _BOOKKEEPING and isinstance(v, int | float) and not isinstance(v, bool)
            }
        out["epochs"] = float(len({r.get("epoch") for r in h}))
        # training compute of the trial: the epochs' own clocks (the rest of time_total_s is
        # data loading, model set-up, checkpoints and reporting)
        out["train_seconds"] = float(sum(r.get("seconds", 0.0) for r in h))
        return out


def one_per_epoch(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per epoch, the last reported, in epoch order. A trial restored from a
    checkpoint reports the checkpoint's epoch again and retrains the epochs after it: the later
    record is the one its model continued from."""
    if not records or any("epoch" not in r for r in records):
        return records
    by_epoch = {float(r["epoch"]): r for r in records}
    if len(by_epoch) == len(records):
        return records
    return [by_epoch[e] for e in sorted(by_epoch)]


def collect(
    run: RunDir,
    trials: Sequence[Any] | None = None,
    results: Callable[[str], list[dict[str, Any]] | None] | None = None,
) -> list[TrialRecord]:
    """The trials of a run, from Ray's experiment state (status, error) and trial folders.

    ``trials``: Tune's trials as ``Tuner.fit()`` left them (:func:`fit_trials`), which spares
    reading the experiment state and every ``result.json`` into data frames once more (about
    half a second for the OL grid's 13 MB). ``results(trial_id)``: a trial's ``result.json``
    lines as the driver received them (:meth:`ct_sweeps.callbacks.PrepareReport.results`), or
    ``None`` to read the file."""
    from ct_sweeps.tracking import error_reason

    if trials is None:
        from ray.tune import ExperimentAnalysis

        exp = run.experiment_path
        if not exp.exists():
            return []
        try:
            trials = ExperimentAnalysis(str(exp)).trials
        except Exception:  # no experiment state written yet
            return []

    lines = results or (lambda _: None)
    if run.info.get("packed"):
        return _collect_packs(run, trials, lines)
    out = []
    for t in trials:
        local = t.path
        rec = TrialRecord(
            trial_id=t.trial_id,
            name=str(t),
            status=str(t.status),
            config=dict(t.config),
            path=Path(local) if local else None,
            error=error_reason(t) if str(t.status) == "ERROR" else "",
            lines=lines(t.trial_id),
        )
        rec.params = run.space.resolve(rec.config)
        out.append(rec)
    return out


def fit_trials(grid: Any) -> list[Any] | None:
    """The trials of a ``ResultGrid``, or ``None`` to read the experiment state from disk: where
    this Ray keeps them elsewhere, or when a trial ended without its final result. A SIGINT makes
    ``Tuner.fit()`` return with the trials it stopped marked TERMINATED in memory (measured);
    the state on disk has them unfinished, and the sweep counts as interrupted."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None)
    if trials is None:
        return None
    if any(str(t.status) == "TERMINATED" and not (t.last_result or {}).get("done") for t in trials):
        return None
    return list(trials)


def _collect_packs(
    run: RunDir, trials: Sequence[Any], results: Callable[[str], Any]
) -> list[TrialRecord]:
    """One record per setting of each pack trial. A setting that failed inside its pack is an
    ``ERROR`` with its own reason; the others take the trial's status (and its error)."""
    from ct_sweeps.packing import PACKS_FILE, load_book, unit_id
    from ct_sweeps.tracking import error_reason

    book = load_book(run.path / PACKS_FILE)
    out = []
    for t in sorted(trials, key=lambda t: int(t.config.get("pack", 0))):
        settings = book.configs(t.config)
        status = str(t.status)
        trial_error = error_reason(t) if status == "ERROR" else ""
        path = Path(t.path) if t.path else None
        lines = results(t.trial_id)
        if lines is None:
            lines = TrialRecord("", "", status, {}, path)._lines()
        for k, cfg in enumerate(settings):
            rec = TrialRecord(
                trial_id=unit_id(t.trial_id, k),
                name=unit_id(str(t), k),
                status=status,
                config=dict(cfg),
                path=path,
                error=trial_error,
                pack_index=k,
                pack_size=len(settings),
                pack_trial=t.trial_id,
                lines=lines,
            )
            reason = next((r["failed"] for r in rec.history() if r.get("failed")), "")
            if reason:
                rec.status, rec.error = "ERROR", str(reason)
            rec.params = run.space.resolve(rec.config)
            out.append(rec)
    return out


def results_frame(records: Sequence[TrialRecord], space: Space) -> Any:
    """One row per trial: id, status, error, every swept parameter, the final metrics."""
    import pandas as pd

    keys = [e.key for e in space.entries]
    rows = []
    for r in records:
        row: dict[str, Any] = {"trial_id": r.trial_id, "status": r.status, "error": r.error}
        if r.pack_index is not None:
            row["pack"] = r.pack_trial
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


def prepare_plots() -> None:
    """Import matplotlib (Agg) for the plots; the sweep calls it while trials still run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _plots(df: Any, run: RunDir, metrics: Sequence[str], modes: Sequence[str]) -> list[Path]:
    prepare_plots()
    import matplotlib.pyplot as plt

    out_dir = run.path / "plots"
    out_dir.mkdir(exist_ok=True)
    paths: list[Path] = []
    m = metrics[0]
    if m in df.columns:
        for e in run.space.entries:
            if e.key not in df.columns:
                continue
            fig, ax = plt.subplots(figsize=(4, 3))
            x = df[e.key]
            if x.dtype == object:
                x = x.astype(str)
            ax.scatter(x, df[m], s=12)
            ax.set_xlabel(e.key)
            ax.set_ylabel(m)
            if e.kind == "loguniform":
                ax.set_xscale("log")
            fig.tight_layout()
            p = out_dir / f"{m}_by_{e.key}.png"
            fig.savefig(p, dpi=80)
            plt.close(fig)
            paths.append(p)
    if len(metrics) >= 2 and all(k in df.columns for k in metrics[:2]):
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.scatter(df[metrics[0]], df[metrics[1]], s=12, label="trials")
        if "pareto" in df.columns:
            front = df[df["pareto"]].sort_values(metrics[0])
            ax.plot(front[metrics[0]], front[metrics[1]], "r.-", label="Pareto front")
        ax.set_xlabel(f"{metrics[0]} ({modes[0]})")
        ax.set_ylabel(f"{metrics[1]} ({modes[1]})")
        ax.legend()
        fig.tight_layout()
        p = out_dir / "pareto.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    return paths


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
    df = results_frame(recs, run.space)
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
            plot_paths = _plots(df, run, metrics, modes)
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
