"""From a sweep's trials and results to tracker events (:mod:`ct_sweeps.record.events`).

A :class:`Stream` makes the events whether results arrive live from Tune
(:mod:`ct_sweeps.record.live`) or are read back from the run directory (:meth:`Stream.replay`:
``ct-sweep resume`` and ``sync-mlflow``). It remembers each setting's epochs, so a result seen
twice (a restored trial reports its checkpoint's epochs again) makes one event; a
:class:`Session` runs a sweep's stream on a thread of its own. Logged: a
setting's metrics every ``tracking.log_every`` epochs and at its last, without the per-epoch
clocks (their totals come at its end: ``train_seconds``, ``time_search_total``, ...), the CT
terms of a vanilla setting (always 0) or ``skipped_batches`` where 0.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ct_sweeps.plan import SWEEP_FILE, Plan, RunDir
from ct_sweeps.plan.packing import PackBook
from ct_sweeps.plan.space import resolve_setting
from ct_sweeps.record import events as ev
from ct_sweeps.record.labels import Names, applicable, setting_name
from ct_sweeps.record.report import Report, setting_plots
from ct_sweeps.run.results import (
    TrialRecord,
    final_model,
    read_results,
    setting_records,
    trial_settings,
)

__all__ = ["Session", "Stream", "metrics_of", "session_for"]

log = logging.getLogger("ct_sweeps.record")

CLOCKS = {"seconds": "train_seconds", "skipped_batches": "skipped_batches_total"}
CLOCKS.update({k: f"{k}_total" for k in ("time_search", "time_train", "time_eval")})
VANILLA_ZEROS = ("div", "reg", "adv")


def metrics_of(record: Mapping[str, Any], vanilla: bool = False) -> dict[str, float]:
    """The metrics of one epoch record worth logging (see the module docstring)."""
    out: dict[str, float] = {}
    for k, v in record.items():
        if k == "epoch" or (k in CLOCKS and k != "skipped_batches") or isinstance(v, bool):
            continue
        if not isinstance(v, int | float) or not math.isfinite(v):
            continue
        if (k == "skipped_batches" and v == 0) or (vanilla and k in VANILLA_ZEROS):
            continue
        out[k] = float(v)
    return out


@dataclass
class _Setting:
    cfg: Any
    """Its resolved ``ct_core.config.Config``."""
    name: str
    steps: set[int] = field(default_factory=set)
    held: tuple[int, Mapping[str, Any]] | None = None
    clocks: dict[str, float] = field(default_factory=dict)
    last: int = 0
    failed: str = ""
    ended: str | None = None
    model: Path | None = None
    history: Callable[[], list[dict[str, Any]]] | None = None

    @property
    def vanilla(self) -> bool:
        return self.cfg.train.objective == "vanilla"


class Stream:
    """The tracker events of one sweep (see the module docstring)."""

    def __init__(self, tracker: ev.Tracker, p: Plan, run: RunDir, book: PackBook | None):
        self.tracker, self.plan, self.run, self.book = tracker, p, run, book
        t = p.sweep.tracking
        self.log_every = t.log_every
        self.models = t.models_for(p.n_trials) if t.log_model is not False else None
        self.metric, self.mode = p.sweep.search.metrics[0], p.sweep.search.modes[0]
        self.settings: dict[str, _Setting] = {}
        self.names = Names()

    # -- the sweep
    def sweep_started(self) -> None:
        p, run = self.plan, self.run
        s, r = p.sweep.search, p.sweep.resources
        params = {f"search.{k}": getattr(s, k) for k in ("algorithm", "num_samples", "seed")}
        params.update({f"search.{k}": getattr(s, k) for k in ("max_concurrent", "scheduler")})
        params.update({"search.metric": ",".join(s.metrics), "search.mode": ",".join(s.modes)})
        params.update({"sweep.name": p.sweep.name, "sweep.n_trials": p.n_trials})
        params.update({"resources.cpu": r.cpu, "resources.gpu": r.gpu})
        space = run.path / "search_space.json"
        space.write_text(json.dumps(p.space.describe(), indent=2))
        files = (run.path / SWEEP_FILE, space)
        self.tracker.handle(ev.SweepStarted(p.sweep.name, run.path, params, files))

    def finish(self, status: str, report: Report | None = None) -> None:
        """The best settings' models (where not every setting gets one), and the sweep's end
        with the report (``None``: the sweep stopped before it ran)."""
        best, metrics, df = None, {}, None if report is None else report.frame
        if df is not None and len(df) and self.metric in df.columns:
            done = df[df["status"] == "TERMINATED"].dropna(subset=[self.metric])
            if len(done) and status != "KILLED":
                metrics[f"best_{self.metric}"] = float(done[self.metric].iloc[0])
            kept = [u for u in done["trial_id"] if u in self.settings and self.settings[u].model]
            if self.models is not None and self.models < self.plan.n_trials:
                for uid in kept[: self.models]:
                    self._keep(uid)
            best = kept[0] if kept and kept[0] == done["trial_id"].iloc[0] else None
        files, plots = ((), ()) if report is None else (report.files, report.plots)
        name = self.plan.sweep.tracking.model_name(self.plan.sweep.name)
        self.tracker.handle(ev.SweepEnded(status, tuple(files), tuple(plots), metrics, best, name))

    # -- one setting
    def start(self, uid: str, config: Mapping[str, Any]) -> None:
        if uid in self.settings:
            return
        p, r = self.plan, self.plan.sweep.resources
        cfg = resolve_setting(p.space, p.base, config, r.cpu, r.gpu)
        params = applicable(cfg)
        swept = {k: v for k, v in p.space.resolve(config).items() if k in params}
        order = [e.key for e in p.space.entries]
        name = self.names(setting_name(swept, order, p.sweep.name))
        self.settings[uid] = _Setting(cfg, name)
        self.tracker.handle(ev.SettingStarted(uid, name, params, swept))

    def record(self, uid: str, rec: Mapping[str, Any]) -> None:
        st = self.settings[uid]
        step = int(rec.get("epoch", 0))
        if step in st.steps:
            return
        st.steps.add(step)
        st.last = max(st.last, step)
        for k, total in CLOCKS.items():
            v = rec.get(k)
            if isinstance(v, int | float) and math.isfinite(v):
                st.clocks[total] = st.clocks.get(total, 0.0) + float(v)
        if rec.get("failed"):
            st.failed = str(rec["failed"])
        if step % self.log_every and not st.failed:
            st.held = (step, rec)  # logged if it turns out to be the last
            return
        st.held = None
        self._log(uid, step, metrics_of(rec, st.vanilla))

    def end(self, uid: str, status: str, reason: str = "", model: Path | None = None) -> None:
        st = self.settings[uid]
        if st.ended == status:
            return
        if st.held is not None:
            step, rec = st.held
            st.held = None
            self._log(uid, step, metrics_of(rec, st.vanilla))
        if st.ended is None and st.clocks:
            self._log(uid, st.last, dict(st.clocks))
        st.ended = status
        st.model = model if status == "FINISHED" and self.models is not None else None
        self.tracker.handle(ev.SettingEnded(uid, status, reason[:5000], st.model))
        if st.model is not None and self.models is not None and self.models >= self.plan.n_trials:
            self._keep(uid)

    def _keep(self, uid: str) -> None:
        """The setting's model, with its plots, as a model the tracker serves."""
        st = self.settings[uid]
        assert st.model is not None
        history = st.history() if st.history is not None else []
        plots = setting_plots(self.run, uid, st.name, st.cfg, history, st.model)
        self.tracker.handle(ev.Model(uid, st.model, tuple(plots)))

    def _log(self, uid: str, step: int, values: dict[str, float]) -> None:
        if values:
            self.tracker.handle(ev.Metrics(uid, step, values))

    # -- from Tune (live) and from the run directory (replay)
    def trial_result(
        self, trial_id: str, name: str, config: Mapping[str, Any], result: Mapping[str, Any]
    ) -> None:
        settings = result.get("settings") or {}
        for k, (uid, _, cfg) in enumerate(trial_settings(trial_id, name, config, self.book)):
            self.start(uid, cfg)
            for rec in settings.get(str(k)) or []:
                self.record(uid, rec)

    def trial_ended(
        self, trial_id: str, name: str, config: Mapping[str, Any], reason: str, path: Path
    ) -> None:
        """A trial ended: its settings FAILED (with their own reason, else the trial's) or
        FINISHED (with the final model in the trial's folder ``path``)."""
        for k, (uid, _, cfg) in enumerate(trial_settings(trial_id, name, config, self.book)):
            self.start(uid, cfg)
            st = self.settings[uid]
            st.history = st.history or (lambda k=k: setting_records(read_results(path), k))
            why = st.failed or reason
            self.end(uid, "FAILED" if why else "FINISHED", why, final_model(path, k))

    def replay(self, records: Iterable[TrialRecord]) -> None:
        """Pass on what the run directory holds: every setting's epochs, and the end of those
        whose trial ended."""
        for rec in records:
            self.start(rec.trial_id, rec.config)
            self.settings[rec.trial_id].history = rec.history
            for r in rec.history():
                self.record(rec.trial_id, r)
            if rec.status == "TERMINATED":
                self.end(rec.trial_id, "FINISHED", "", rec.model())
            elif rec.status == "ERROR":
                self.end(rec.trial_id, "FAILED", rec.error or "error")


_SESSIONS: dict[str, Session] = {}
"""The sessions this process has open, by run id (a run's ``run.json`` holds its id)."""


def session_for(run_id: str) -> Session | None:
    """The session this process opened for a run, if any."""
    return _SESSIONS.get(run_id)


class Session:
    """A stream of tracker events and the one thread that produces them, in submission order."""

    def __init__(self, run_id: str, stream: Stream):
        self.stream, self.key = stream, run_id
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ct-tracking")
        self._last: Future | None = None
        _SESSIONS[run_id] = self

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._last = self._pool.submit(_logged, fn, *args)

    def wait(self) -> None:
        """Wait until everything submitted so far is done."""
        if self._last is not None:
            self._last.result()

    def close(self) -> None:
        """Finish the work submitted, then end the thread and the session."""
        self._pool.shutdown(wait=True)
        _SESSIONS.pop(self.key, None)


def _logged(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as e:  # a bug in logging must never stop the sweep
        log.warning("tracking failed (%s: %s)", type(e).__name__, e)
