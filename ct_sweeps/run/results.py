"""What a sweep's trials left in the run directory: one :class:`TrialRecord` per setting.

From Tune's experiment state (status and config, through the public ``ExperimentAnalysis``) and
each trial's folder (``result.json``, ``error.txt``, checkpoints). A setting's history has one
record per epoch: an epoch reported twice keeps its last record, and epochs that never reached
``result.json`` (a node or the driver died) come from the trial's newest checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ct_sweeps.plan import CF_METRICS, RunDir
from ct_sweeps.plan.packing import settings_of, unit_id
from ct_sweeps.plan.space import trial_config
from ct_sweeps.run.trainable import model_file, newest_state

__all__ = ["TrialRecord", "collect", "error_reason", "one_per_epoch", "setting_records"]


@dataclass
class TrialRecord:
    """Setting ``index`` of a Tune trial that trained ``size`` settings."""

    trial_id: str
    """The setting's id (:func:`~ct_sweeps.plan.packing.unit_id`)."""
    name: str
    status: str
    """Tune's status of the trial, or ``ERROR`` for a setting that failed inside its pack."""
    config: dict[str, Any]
    path: Path | None
    error: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    index: int = 0
    trial: str = ""
    """The Tune trial's id."""
    epochs: int = 0
    """Epochs the setting trains (``train.epochs``; 0: unknown)."""
    lines: list[dict[str, Any]] | None = field(default=None, repr=False)
    recovered: int = 0
    """Epochs missing from ``result.json`` and taken from the trial's checkpoint."""
    _history: list[dict[str, Any]] | None = field(default=None, repr=False)

    def _lines(self) -> list[dict[str, Any]]:
        if self.lines is None:
            self.lines = read_results(self.path)
        return self.lines

    def history(self) -> list[dict[str, Any]]:
        """The setting's record of every epoch, in order."""
        if self._history is None:
            self._history = self._fill_gaps(setting_records(self._lines(), self.index))
        return self._history

    def _fill_gaps(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``history`` with the epochs it lacks that the trial's newest checkpoint holds."""
        have = {int(r["epoch"]) for r in history if "epoch" in r}
        failed = any("failed" in r for r in history)
        complete = have == set(range(1, max(have, default=0) + 1))
        if self.path is None or failed or (complete and max(have, default=0) >= self.epochs):
            return history
        states = newest_state(self.path)
        state = states[self.index] if isinstance(states, list) and self.index < len(states) else {}
        saved = [r for r in state.get("history", []) if int(r["epoch"]) not in have]
        if not saved:
            return history
        self.recovered = len(saved)
        history += [{k: v for k, v in r.items() if isinstance(v, int | float | str)} for r in saved]
        return sorted(history, key=lambda r: float(r["epoch"]))

    def model(self) -> Path | None:
        """The setting's final model in the trial's newest checkpoint, if there is one."""
        return final_model(self.path, self.index)

    def final(self) -> dict[str, float]:
        """The last record's metrics, the CF metrics carried from the last epoch that computed
        them, the epochs trained and their training seconds (``train_seconds``)."""
        h = self.history()
        if not h:
            return {}
        keep = set(h[-1]) | set(CF_METRICS)
        out: dict[str, float] = {}
        for r in h:  # each key's last number, in the order in which keys first appear
            for k, v in r.items():
                if k in keep and isinstance(v, int | float) and not isinstance(v, bool):
                    out[k] = float(v)
        out["epochs"] = float(len(h))
        out["train_seconds"] = float(sum(r.get("seconds", 0.0) for r in h))
        return out


def final_model(trial_dir: Path | None, k: int) -> Path | None:
    """Setting ``k``'s final model in a trial folder's newest checkpoint, if there is one."""
    if trial_dir is None:
        return None
    found = sorted(Path(trial_dir).glob(f"checkpoint_*/{model_file(k)}"))
    return found[-1] if found else None


def read_results(path: Path | None) -> list[dict[str, Any]]:
    """A trial's ``result.json`` lines (a line cut short by a crash is passed over)."""
    if path is None or not (path / "result.json").exists():
        return []
    out = []
    for line in (path / "result.json").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def setting_records(lines: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Setting ``k``'s records in a trial's ``result.json`` lines, one per epoch."""
    recs = [dict(r) for line in lines for r in (line.get("settings") or {}).get(str(k)) or []]
    return one_per_epoch(recs)


def one_per_epoch(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per epoch, the last reported, in epoch order: a trial restored from a
    checkpoint reports its epochs again and retrains the epochs after it, so the later record is
    the one its model continued from."""
    if any("epoch" not in r for r in records):
        return records
    by_epoch = {float(r["epoch"]): r for r in records}
    return records if len(by_epoch) == len(records) else [by_epoch[e] for e in sorted(by_epoch)]


def error_reason(trial: Any) -> str:
    """The last line of a failed trial's traceback (the exception and its message): from
    ``error.txt`` in the trial's folder in the run directory, or, before Tune has copied it
    there, in Tune's staging folder (a path that needs a running Ray)."""
    text = ""
    for where in (lambda: Path(trial.path) / "error.txt", lambda: trial.error_file):
        try:
            path = where()
            if path and Path(path).is_file():
                text = Path(path).read_text()
                break
        except Exception:  # no running Ray for the staging path
            continue
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ":" in ln and not ln.startswith(("File ", "^")):
            return ln
    return lines[-1] if lines else ""


def trial_settings(
    trial_id: str, name: str, config: Mapping[str, Any], book: Any
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(id, name, setting config)`` of each setting a trial trains."""
    settings = settings_of(config, book)
    n = len(settings)
    return [(unit_id(trial_id, k, n), unit_id(name, k, n), s) for k, s in enumerate(settings)]


def collect(run: RunDir) -> list[TrialRecord]:
    """Every setting of a run, from Tune's experiment state and the trial folders."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(str(run.experiment_path)).trials
    except Exception:  # no experiment state written yet
        return []
    book = run.book()
    out = []
    for t in sorted(trials, key=lambda t: (int(t.config.get("pack", 0)), t.trial_id)):
        status = str(t.status)
        error = error_reason(t) if status == "ERROR" else ""
        path = Path(t.path) if t.path else None
        lines = read_results(path)
        settings = trial_settings(t.trial_id, str(t), t.config, book)
        # a trial's settings share their epoch loop (ct_core.packability.pack_key)
        epochs = trial_config(run.base, run.space.resolve(settings[0][2])).train.epochs
        for k, (uid, name, cfg) in enumerate(settings):
            rec = TrialRecord(uid, name, status, dict(cfg), path, error, index=k, epochs=epochs)
            rec.trial, rec.lines, rec.params = t.trial_id, lines, run.space.resolve(cfg)
            reason = next((r["failed"] for r in rec.history() if r.get("failed")), "")
            if reason:
                rec.status, rec.error = "ERROR", str(reason)
            out.append(rec)
    return out
