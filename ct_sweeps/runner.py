"""Run, resume and back-fill a sweep: plan, run and record put together.

:func:`run` makes the run directory, opens the tracking session (the sweep's parent run is made
on its thread while Ray starts), starts or joins Ray, packs the settings, runs Tune, writes the
report and ends the tracking. :func:`resume` goes on with an interrupted sweep
(``Tuner.restore``: finished trials are not rerun), first replaying the run directory into the
tracker, which then holds what the killed driver had not logged. :func:`sync` replays a run
directory into a tracking store (``ct-sweep sync-mlflow``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ct_core.config import ConfigError
from ct_sweeps.plan import Plan, RunDir, new_run_dir, pack_settings, plan, plan_from
from ct_sweeps.plan.packing import PACKS_FILE, PackBook, save_packs
from ct_sweeps.record.report import Report, write_report
from ct_sweeps.record.store import checkpoint, default_tracking_uri, resolve_tracking_uri
from ct_sweeps.run.cluster import (
    check_fits,
    ensure_ray,
    mark_driver,
    reap_orphans,
    set_defaults,
    slots,
    stop_ray,
    sweep_token,
)
from ct_sweeps.run.results import collect
from ct_sweeps.run.state import StateKeeper, restore_state
from ct_sweeps.run.trainable import TrialSpec

__all__ = ["Outcome", "plan", "resume", "run", "sync"]

log = logging.getLogger("ct_sweeps")


@dataclass
class Outcome:
    run_dir: Path
    report: Report
    interrupted: bool
    n_expected: int
    n_finished: int
    n_errors: int
    tracking_uri: str | None
    seconds: float
    tracking_ok: bool
    timings: dict[str, float]


def _session(p: Plan, run: RunDir, uri: str | None) -> Any:
    """Open the sweep's tracking session (``None``: tracking is off) and start the sweep's
    parent run on its thread."""
    if uri is None:
        return None
    from ct_sweeps.record.mlflow_tracker import MlflowTracker
    from ct_sweeps.record.stream import Session, Stream

    run.save_info(tracking_uri=run.info.get("tracking_uri") or uri)
    if "id" not in run.info:
        run.save_info(id=uuid.uuid4().hex)
    tracker = MlflowTracker(uri, run, flush_s=p.sweep.tracking.flush_s)
    session = Session(run.info["id"], Stream(tracker, p, run, None))
    session.submit(session.stream.sweep_started)
    return session


def _book(p: Plan, run: RunDir) -> PackBook | None:
    """A grid/random sweep's packs: planned for the trials Ray can run at once and written to
    ``packs.json`` on the first run; read back on resume."""
    if p.sweep.search.uses_optuna:
        return None
    book = run.book()
    if book is None:
        r, s = p.sweep.resources, p.sweep.search
        n = slots(r.cpu, r.gpu, s.max_concurrent)
        book = pack_settings(p, n, gpu=r.gpu > 0)
        save_packs(run.path / PACKS_FILE, book)
        run.save_info(packed=s.packs, n_packs=len(book), slots=n)
        log.info("%d settings in %d trials", len(book.settings), len(book))
    return book


def _progress(p: Plan, book: PackBook | None) -> Any:
    """The console's progress line: each trial's settings and epochs."""
    from ct_sweeps.plan.space import trial_config
    from ct_sweeps.record.progress import Progress

    epochs, units = p.base_cfg.train.epochs, None
    if book is not None:
        swept = "train.epochs" in {e.key for e in p.space.entries}
        first = [book.settings[pk[0]] for pk in book.packs]
        units = [
            (len(pk), trial_config(p.base, p.space.resolve(s)).train.epochs if swept else epochs)
            for pk, s in zip(book.packs, first)
        ]
    s = p.sweep.search
    return Progress(p.n_trials, epochs, s.metrics[0], s.modes[0], units)


def _count(frame: Any, expected: int) -> tuple[int, int, bool]:
    """Finished and errored settings, and whether the sweep stopped early (a SIGINT makes
    ``Tuner.fit()`` return normally)."""
    status = list(frame["status"]) if len(frame) else []
    finished, errors = status.count("TERMINATED"), status.count("ERROR")
    return finished, errors, finished + errors < max(expected, len(frame))


def _fit(
    p: Plan,
    run: RunDir,
    address: str | None,
    num_cpus: int | None,
    uri: str | None,
    restore: bool = False,
    retry_errored: bool = False,
    verbose: bool = False,
) -> Outcome:
    """Run (or go on with) the sweep's Tune experiment, then report and end the tracking
    (``uri``: where, unless the sweep turns tracking off). ``timings`` in ``run.json``: where
    the driver's time went, in seconds."""
    uri = uri if p.sweep.tracking.enabled else None
    t0, cpu0 = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    sweep_token(run.path, address)  # before anything imports Ray
    orphans = reap_orphans()  # what an earlier, killed driver left running
    if orphans:
        log.warning("ended %d processes a killed sweep driver had left", len(orphans))
    if not (address or os.environ.get("RAY_ADDRESS")):
        mark_driver()  # the Ray this process starts inherits the mark
    session = _session(p, run, uri)
    started, ran = None, False
    try:
        started = ensure_ray(address, num_cpus, verbose)
        t1 = lap("ray_start", t0)
        from ray import tune

        from ct_sweeps.run.tune import ResultLog, build_tuner, restore_tuner

        r = p.sweep.resources
        if started == "local":
            import ray

            run.save_info(ray_address=ray.get_runtime_context().gcs_address)
            check_fits(r.cpu, r.gpu)
        book = _book(p, run)
        s = p.sweep.search
        spec = TrialSpec(
            base=p.base,
            space=p.space,
            book=book,
            experiment_path=str(run.experiment_path),
            checkpoint_every=p.sweep.checkpoint_every,
            metric=s.metrics[0],
            mode=s.modes[0],
            report_s=2.0 if s.packs else 0.0,  # else every epoch: ASHA and Optuna see each
            init=run.init_state(),
        )
        if session is not None:
            session.stream.book = book
        if restore:
            if not tune.Tuner.can_restore(str(run.experiment_path)):
                raise ConfigError(f"{run.path}: nothing to resume (no Tune experiment state)")
            if session is not None:  # what the earlier driver may not have logged
                session.submit(session.stream.replay, collect(run))
            restore_state(run.experiment_path)  # a state file a full disk cut short
            tuner = restore_tuner(p, run, spec, retry_errored, verbose)
        else:
            from ct_sweeps.record.live import TrackingCallback

            callbacks: list[Any] = [ResultLog()]
            if session is not None:
                callbacks.append(TrackingCallback(run.info["id"]))
            if not verbose:
                callbacks.append(_progress(p, book))
            tuner = build_tuner(p, run, spec, callbacks, verbose)
        t2 = lap("tuner_setup", t1)
        ran = True
        keeper = StateKeeper(run.experiment_path).start()
        try:
            tuner.fit()
        finally:
            keeper.stop()
        t3 = lap("fit", t2)
    except BaseException as e:
        stop_ray(started)
        if session is not None:
            if not ran:  # stopped before Tune ran (bad resources, Ctrl-C): no report
                status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
                session.submit(session.stream.finish, status)
            session.close()
        raise
    # Ray stops (seconds: it waits for its processes to exit) while the report is written
    stopping = threading.Thread(target=stop_ray, args=(started,), name="ct-ray-stop")
    stopping.start()
    records = collect(run)
    report = write_report(run, records=records)
    t4 = lap("report", t3)
    stopping.join()
    t5 = lap("ray_stop", t4)
    finished, errors, interrupted = _count(report.frame, p.n_trials)
    recovered = sum(rec.recovered for rec in records)
    if recovered:
        log.warning("%d epoch records missing from Ray's results came from checkpoints", recovered)
    status = "KILLED" if interrupted else ("FAILED" if errors and not finished else "FINISHED")
    tracking_ok = True
    if session is not None:
        session.submit(session.stream.replay, records)  # anything the live stream missed
        session.submit(session.stream.finish, status, report)
        session.close()
        tracker = session.stream.tracker
        timings["mlflow_in_driver"] = round(tracker.seconds, 3)
        tracking_ok = tracker.parent is not None and not tracker.failures
        lap("mlflow_end", t5)
    seconds = time.perf_counter() - t0
    # CPU of the driver process, all threads (Tune's loop, tracking, the report): on a small
    # machine it competes with the trials
    timings["driver_cpu"] = round(time.process_time() - cpu0, 3)
    run.save_info(timings={**timings, "total": round(seconds, 3)})
    uri = run.info.get("tracking_uri")
    counts = (interrupted, p.n_trials, finished, errors)
    return Outcome(run.path, report, *counts, uri, seconds, tracking_ok, timings)


def run(
    p: Plan,
    *,
    storage: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    num_cpus: int | None = None,
    verbose: bool = False,
) -> Outcome:
    """Run a planned sweep to the end (or until interrupted); ``verbose``: Ray Tune's tables
    instead of one progress line."""
    set_defaults(address)
    run_dir = new_run_dir(p, storage)
    uri = resolve_tracking_uri(tracking_uri, p.sweep.tracking.uri, run_dir.path)
    return _fit(p, run_dir, address, num_cpus, uri, verbose=verbose)


def resume(
    run_path: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    retry_errored: bool = False,
    verbose: bool = False,
) -> Outcome:
    """Continue an interrupted sweep: unfinished trials resume from their last checkpoint,
    finished trials are kept as they are, errored trials are retried only if asked."""
    set_defaults(address)
    run_dir = RunDir.load(run_path)
    p = plan_from(run_dir.sweep, run_dir.base)
    uri = run_dir.info.get("tracking_uri")
    uri = uri or resolve_tracking_uri(None, p.sweep.tracking.uri, run_dir.path)
    return _fit(p, run_dir, address, num_cpus, uri, True, retry_errored, verbose)


def sync(run_path: str | Path, tracking_uri: str | None = None) -> dict[str, int]:
    """Back-fill a tracking store from a run directory (``ct-sweep sync-mlflow``): create
    missing child runs, log the epochs they lack, set their statuses, and end the parent run
    with the report once every trial has ended. Idempotent."""
    from ct_sweeps.record.mlflow_tracker import MlflowTracker
    from ct_sweeps.record.stream import Stream

    run = RunDir.load(run_path)
    p = plan_from(run.sweep, run.base)
    uri = tracking_uri or run.info.get("tracking_uri") or default_tracking_uri(run.path)
    records = collect(run)
    tracker = MlflowTracker(uri, run, retry_s=0.0)
    stream = Stream(tracker, p, run, run.book())
    stream.sweep_started()
    if tracker.parent is None:
        raise RuntimeError(f"cannot reach the MLflow store at {uri}")
    stream.replay(records)
    if records and all(r.status in ("TERMINATED", "ERROR") for r in records):
        report = write_report(run, records=records)
        stream.finish("FINISHED", report)
    else:
        tracker.flush()
        checkpoint(uri)
    if tracker.failures:
        raise RuntimeError(f"{tracker.failures} MLflow calls failed against {uri}")
    return tracker.counts
