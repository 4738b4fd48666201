"""Plan, run and resume a sweep on Ray Tune.

:func:`plan` validates everything (sweep schema, search space, every grid point and every
distribution bound against the training-config schema) without importing Ray, so bad input
fails in a fraction of a second. :func:`run` creates the run directory, starts or joins Ray,
builds the :class:`~ray.tune.Tuner` (search algorithm, scheduler, resources, failure and
checkpoint config, the MLflow callback) and writes the results. :func:`resume` restores an
interrupted sweep with ``Tuner.restore`` (finished trials are not rerun).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ct_core.config import Config, ConfigError
from ct_sweeps.env import set_defaults
from ct_sweeps.local_ray import (
    actors_inherit_env,
    behind_ray_start,
    ensure_ray,
    import_tune,
    stop_ray,
)
from ct_sweeps.report import SWEEP_FILE, Report, RunDir, collect, fit_trials, write_report
from ct_sweeps.schema import SweepConfig, load_sweep
from ct_sweeps.space import Space, parse_space, validate
from ct_sweeps.trainable import CF_METRICS, TrialSpec

__all__ = ["Outcome", "Plan", "plan", "resume", "run"]

log = logging.getLogger("ct_sweeps")

KNOWN_METRICS = (
    "loss",
    "class_loss",
    "div",
    "reg",
    "adv",
    "train_acc",
    "val_acc",
    "val_loss",
    "mature",
    "ce_steps",
    "skipped_batches",
    "time_search",
    "time_train",
    "time_eval",
    "seconds",
    *CF_METRICS,
)
TRAINER = os.environ.get("CT_SWEEPS_TRAINER", "ct_core.training:Trainer")


@dataclass
class Plan:
    """A validated sweep, ready to run."""

    sweep: SweepConfig
    base: dict[str, Any]
    space: Space
    base_cfg: Config
    n_trials: int

    def spec(self) -> TrialSpec:
        carry = tuple(m for m in self.sweep.search.metrics if m in CF_METRICS)
        return TrialSpec(
            base=self.base,
            space=self.space,
            checkpoint_every=self.sweep.checkpoint_every,
            carry=carry,
            trainer=TRAINER,
        )

    def resolved_yaml(self) -> str:
        """The sweep with its base inlined (overrides applied): what ``sweep.yaml`` holds."""
        d = self.sweep.model_dump(mode="json")
        d["base"] = self.base
        d["overrides"] = {}
        return yaml.safe_dump(d, sort_keys=False)


def plan(sweep_file: str | Path, sets: Iterable[str] | None = None) -> Plan:
    """Load and validate a sweep file; raises :class:`ConfigError` (nothing is started)."""
    sweep, base = load_sweep(sweep_file, sets)
    return plan_from(sweep, base)


def plan_from(sweep: SweepConfig, base: dict[str, Any]) -> Plan:
    s = sweep.search
    unknown = [m for m in s.metrics if m not in KNOWN_METRICS]
    if unknown:
        raise ConfigError(
            f"search.metric must be one of {', '.join(KNOWN_METRICS)}, got {unknown[0]!r}"
        )
    space = parse_space(sweep.space, s.algorithm)
    base_cfg = validate(space, base)
    needs_eval = [m for m in s.metrics if m in CF_METRICS]
    if needs_eval and base_cfg.train.eval_every == 0 and "train.eval_every" not in sweep.space:
        raise ConfigError(
            f"search.metric {needs_eval[0]!r} is computed only with train.eval_every > 0 "
            "(set it under overrides, e.g. train.eval_every: 5)"
        )
    tc = base_cfg.train
    if needs_eval and 0 < tc.epochs < tc.eval_every and "train.epochs" not in sweep.space:
        raise ConfigError(
            f"train.eval_every ({tc.eval_every}) is larger than train.epochs ({tc.epochs}): "
            f"search.metric {needs_eval[0]!r} would never be computed"
        )
    if tc.device == "cuda" and sweep.resources.gpu == 0 and "train.device" not in sweep.space:
        raise ConfigError(
            "train.device 'cuda' needs resources.gpu > 0 (each trial's share of a GPU, e.g. "
            "0.25), or train.device: auto to use a GPU only where a trial holds one"
        )
    if s.scheduler == "asha" and s.asha.max_t is None:
        s.asha.max_t = base_cfg.train.epochs
    if not space.entries and s.algorithm.startswith("optuna"):
        raise ConfigError(f"space: search.algorithm {s.algorithm!r} needs at least one entry")
    return Plan(sweep, base, space, base_cfg, space.num_trials(s.num_samples))


# ----------------------------------------------------------------------------------------------
# Ray


def in_ray_job() -> bool:
    """Whether this process is the entrypoint of a ``ray job submit``."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def check_fits(p: Plan) -> None:
    """Raise :class:`ConfigError` if one trial asks for more CPUs or GPUs than the Ray this
    process started on this machine has: Tune would wait for them for ever. (A cluster joined
    by address may still grow, so it is not checked.)"""
    import ray

    total = ray.cluster_resources()
    if not total:  # nothing reported (yet): better to let Tune wait than to refuse a sweep
        return
    r = p.sweep.resources
    for name, key, want in (("cpu", "CPU", r.cpu), ("gpu", "GPU", r.gpu)):
        have = float(total.get(key, 0.0))
        if want > have:
            raise ConfigError(
                f"resources.{name}: each trial asks for {want:g} {key}s but this machine's "
                f"Ray has {have:g}; allowed: 0 to {have:g} (or a cluster: --address)"
            )


def _search_alg(p: Plan) -> Any:
    s = p.sweep.search
    if s.uses_optuna:
        import optuna

        from ct_sweeps.searchers import CtOptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if s.algorithm == "optuna-gp":
            sampler = optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
        else:
            sampler = optuna.samplers.TPESampler(
                seed=s.seed, n_startup_trials=s.n_startup_trials, multivariate=True
            )
        # a define-by-run space never receives Tune's metric/mode: pass them here
        metric, mode = (s.metrics, s.modes) if s.multi_objective else (s.metric, s.mode)
        return CtOptunaSearch(
            space=p.space.optuna_space(), metric=metric, mode=mode, sampler=sampler
        )
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=s.max_concurrent or 0, random_state=s.seed)


def _scheduler(p: Plan) -> Any:
    s = p.sweep.search
    if s.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",  # not training_iteration: a restored trial reports an epoch again
        max_t=s.asha.max_t,
        grace_period=s.asha.grace_period,
        reduction_factor=s.asha.reduction_factor,
    )


def _trainable(p: Plan, packs: Any = None) -> Any:
    from ray import tune

    from ct_sweeps.trainable import ct_trainable

    r = p.sweep.resources
    res = {"cpu": r.cpu, "gpu": r.gpu} if r.gpu else {"cpu": r.cpu}
    if packs is None:
        return tune.with_resources(tune.with_parameters(ct_trainable, spec=p.spec()), res)
    from ct_sweeps.packing import PackSpec, pack_trainable

    s = p.sweep.search
    spec = PackSpec(
        trial=p.spec(),
        book=packs,
        metric=s.metrics[0],
        mode=s.modes[0],
    )
    return tune.with_resources(tune.with_parameters(pack_trainable, spec=spec), res)


def _slots(p: Plan) -> int:
    """Trials Ray can run at once: CPUs (GPUs) of the cluster over those of one trial."""
    import ray

    r, s = p.sweep.resources, p.sweep.search
    total = ray.cluster_resources()
    slots = int(float(total.get("CPU", 1.0)) // r.cpu) or 1
    if r.gpu:
        slots = min(slots, int(float(total.get("GPU", 0.0)) // r.gpu) or 1)
    return min(slots, s.max_concurrent) if s.max_concurrent else slots


def _plan_packs(p: Plan, run: RunDir) -> Any:
    """Expand and pack the settings (once per run; ``packs.json`` is read back on resume): a
    :class:`~ct_sweeps.packing.PackBook`. With ``pack: auto`` on CPU trials, the last round's
    packs are sized when a slot frees up (:mod:`ct_sweeps.last_round`)."""
    from dataclasses import replace

    from ct_sweeps.packing import (
        PACKS_FILE,
        PackBook,
        expand_settings,
        last_round_packs,
        load_book,
        make_packs,
        save_packs,
        setting_traits,
    )

    path = run.path / PACKS_FILE
    if path.exists():
        book = load_book(path)
        cost, _, epochs = setting_traits(book.settings, p.base, p.space)
        return replace(book, cost=tuple(cost), epochs=tuple(epochs))
    s = p.sweep.search
    settings = expand_settings(p.space, s.num_samples, s.seed)
    traits = setting_traits(settings, p.base, p.space)
    slots = _slots(p)
    gpu = p.sweep.resources.gpu > 0
    packs = make_packs(settings, p.base, p.space, s.pack, slots, gpu=gpu, traits=traits)
    flex = last_round_packs(packs, traits[1], slots) if s.pack == "auto" and not gpu else ()
    book = PackBook(
        tuple(settings),
        tuple(tuple(pk) for pk in packs),
        flex,
        tuple(traits[0]),
        tuple(traits[2]),
    )
    save_packs(path, book)
    run.save_info(packed=True, n_packs=len(packs), slots=slots)
    log.info("%d settings in %d packs", len(settings), len(packs))
    return book


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _pack_searcher(p: Plan, run: RunDir, book: Any) -> Any:
    from ct_sweeps.last_round import PackSearcher

    s = p.sweep.search
    return PackSearcher(book, int(run.info.get("slots", 1)), run.path, s.metrics[0], s.modes[0])


def build_tuner(p: Plan, run: RunDir, callbacks: list[Any], packs: Any = None) -> Any:
    from ray import tune

    s = p.sweep.search
    single = not s.multi_objective
    # packs: one trial each, from Tune's grid, or from PackSearcher when the last round is sized
    # as the sweep goes
    flex = packs is not None and bool(packs.flex)
    limit = s.max_concurrent if s.uses_optuna else None
    if packs is None:
        search_alg, num_samples = _search_alg(p), s.num_samples
    elif flex:
        search_alg, num_samples = _pack_searcher(p, run, packs), len(packs)
        # Tune keeps one trial of a searcher pending at a time unless told how many may run
        # at once: the first packs' workers would then start one after the other (~2 s apart)
        limit = int(run.info.get("slots", 1))
    else:
        search_alg, num_samples = _search_alg(p), 1
    tune_config = tune.TuneConfig(
        metric=s.metrics[0] if single else None,
        mode=s.modes[0] if single else None,
        search_alg=search_alg,
        scheduler=_scheduler(p),
        num_samples=num_samples,
        max_concurrent_trials=limit,
        reuse_actors=True,
        trial_dirname_creator=_trial_dirname,
    )
    run_config = tune.RunConfig(
        name=run.info["experiment"],
        storage_path=str(run.path),
        failure_config=tune.FailureConfig(max_failures=p.sweep.max_failures),
        # keep every checkpoint: after a SIGKILLed driver, Tune restores each trial from the
        # checkpoint named in its last state snapshot, which can lag behind the disk; pruning
        # (num_to_keep) may already have deleted it. Trial checkpoints are small state dicts.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=callbacks,
        verbose=int(os.environ.get("CT_SWEEP_VERBOSE", "1")),
    )
    if flex:
        param_space = {}
    elif packs is not None:
        param_space = {"pack": tune.grid_search(list(range(len(packs))))}
    else:
        param_space = {} if s.uses_optuna else p.space.ray_param_space()
    return tune.Tuner(
        _trainable(p, packs),
        param_space=param_space,
        tune_config=tune_config,
        run_config=run_config,
    )


# ----------------------------------------------------------------------------------------------
# Tracking set-up


@dataclass
class TrackingSetup:
    """The sweep's MLflow experiment and parent run, made on a background thread while Ray
    starts (importing MLflow and creating a sqlite store take seconds); the callback's logging
    thread waits for it, Tune and the trials do not."""

    uri: str
    future: Future | None = None
    """Resolves to ``(experiment_id, parent_run_id)``, or ``None`` if MLflow was not reachable."""
    seconds: float = 0.0
    """Time the set-up spent in MLflow calls."""

    def wait(self) -> float:
        """Wait until the set-up is done (it never raises); its seconds in MLflow calls."""
        if self.future is not None:
            self.future.result()
        return self.seconds


def _start_tracking(p: Plan, run: RunDir, tracking_uri: str | None) -> TrackingSetup | None:
    """Start creating the experiment and parent run (``None``: tracking is off)."""
    from concurrent.futures import ThreadPoolExecutor

    from ct_sweeps.env import resolve_tracking_uri  # not ct_sweeps.tracking: it imports Ray Tune

    t = p.sweep.tracking
    if not t.enabled:
        return None
    import_tune()  # ct_sweeps.tracking needs it: start it before the set-up thread waits for it
    uri = run.info.get("tracking_uri") or resolve_tracking_uri(tracking_uri, t.uri, run.path)
    run.save_info(tracking_uri=uri)
    setup = TrackingSetup(uri)
    pool = ThreadPoolExecutor(1, thread_name_prefix="ct-mlflow-setup")
    setup.future = pool.submit(_make_parent, p, run, setup)
    pool.shutdown(wait=False)
    return setup


def _make_parent(p: Plan, run: RunDir, setup: TrackingSetup) -> tuple[str, str] | None:
    behind_ray_start()  # the pool's one thread ends with this task
    try:
        return _parent_run(p, run, setup)
    except Exception as e:  # never the sweep's end: its results do not depend on MLflow
        log.warning(
            "MLflow set-up failed (%s: %s); run `ct-sweep sync-mlflow %s` later",
            type(e).__name__,
            e,
            run.path,
        )
        return None


def _parent_run(p: Plan, run: RunDir, setup: TrackingSetup) -> tuple[str, str] | None:
    import_tune().join()  # ct_sweeps.tracking imports Ray Tune
    from ct_sweeps.sqlite_store import new_sqlite_store
    from ct_sweeps.tracking import Tracker

    new_sqlite_store(setup.uri, wal=p.sweep.tracking.sqlite_wal)
    info = run.info
    tracker = Tracker(setup.uri)
    uri = setup.uri
    try:
        if not info.get("experiment_id"):
            name = p.sweep.tracking.experiment or p.sweep.name
            local = uri.startswith("sqlite:") or "://" not in uri
            art = (run.path / "mlartifacts").as_uri() if local else None
            run.save_info(experiment_name=name, experiment_id=tracker.experiment(name, art))
        if info.get("experiment_id") and not info.get("parent_run_id"):
            parent = tracker.call(
                "create parent run",
                "create_run",
                info["experiment_id"],
                run_name=run.path.name,
                tags={"ct.sweep": p.sweep.name, "ct.run_dir": str(run.path)},
            )
            if parent is not None:
                run.save_info(parent_run_id=parent.info.run_id)
                _log_parent_inputs(tracker, parent.info.run_id, p, run)
    finally:
        setup.seconds = tracker.seconds
    if not info.get("parent_run_id"):
        log.warning("MLflow is not reachable; run `ct-sweep sync-mlflow %s` later", run.path)
        return None
    return info["experiment_id"], info["parent_run_id"]


def _tracking(p: Plan, run: RunDir, setup: TrackingSetup | None, packs: Any = None) -> list[Any]:
    """The Tune callbacks: ``result.json`` per trial, and MLflow when tracking is on."""
    from ct_sweeps.callbacks import PrepareReport, RunDirJsonLogger
    from ct_sweeps.tracking import MlflowSweepCallback

    # only result.json (reports and resume read it), written in the run directory: Tune's
    # default CSV and TensorBoard loggers (switched off in ct_sweeps.env) cost the driver CPU
    # on every result
    callbacks: list[Any] = [RunDirJsonLogger(), PrepareReport()]
    if setup is None:
        return callbacks
    t = p.sweep.tracking
    callbacks.append(
        MlflowSweepCallback(
            setup.uri,
            None,
            None,
            p.spec(),
            p.sweep.name,
            cpus=p.sweep.resources.cpu,
            gpus=p.sweep.resources.gpu,
            packs=packs,
            models=t.models_for(p.n_trials) if t.log_model is not False else None,
            n_settings=p.n_trials,
            metric=p.sweep.search.metrics[0],
            mode=p.sweep.search.modes[0],
            log_every=t.log_every,
            ready=setup.future,
            run_path=run.path,
            new_parent=True,  # made by this sweep: no child runs yet
        )
    )
    return callbacks


def _log_parent_inputs(tracker: Any, run_id: str, p: Plan, run: RunDir) -> None:
    s = p.sweep.search
    params = {
        "sweep.name": p.sweep.name,
        "search.algorithm": s.algorithm,
        "search.metric": ",".join(s.metrics),
        "search.mode": ",".join(s.modes),
        "search.num_samples": s.num_samples,
        "search.max_concurrent": s.max_concurrent,
        "search.seed": s.seed,
        "search.scheduler": s.scheduler,
        "sweep.n_trials": p.n_trials,
        "resources.cpu": p.sweep.resources.cpu,
        "resources.gpu": p.sweep.resources.gpu,
    }
    tracker.log_batch(run_id, params=params)
    space_file = run.path / "search_space.json"
    space_file.write_text(json.dumps(p.space.describe(), indent=2))
    tracker.call("log sweep.yaml", "log_artifact", run_id, str(run.path / SWEEP_FILE))
    tracker.call("log search space", "log_artifact", run_id, str(space_file))


def _log_parent_outputs(run: RunDir, report: Report, status: str) -> None:
    from ct_sweeps.tracking import Tracker

    rid = run.info.get("parent_run_id")
    uri = run.info.get("tracking_uri")
    if not rid or not uri:
        return
    tr = Tracker(uri)
    for f in (report.results, report.best, report.pareto):
        if f is not None and f.exists():
            tr.call("log results", "log_artifact", rid, str(f))
    for f in report.plots:
        tr.call("log plot", "log_artifact", rid, str(f), "plots")
    df = report.frame
    if len(df) and report.metric in df.columns and df[report.metric].notna().any():
        v = df[report.metric].dropna().iloc[0]
        tr.log_batch(rid, metrics=[(f"best_{report.metric}", float(v), 0)])
    _end_parent(run, status, tr)


def _end_parent(run: RunDir, status: str, tracker: Any = None) -> None:
    """End the sweep's parent run (also one that stopped before Tune ran: no report to log),
    the last write of a sweep, and fold a local store's write-ahead log into its file."""
    from ct_sweeps.sqlite_store import checkpoint
    from ct_sweeps.tracking import Tracker

    rid, uri = run.info.get("parent_run_id"), run.info.get("tracking_uri")
    if rid and uri:
        (tracker or Tracker(uri)).call("end parent run", "set_terminated", rid, status)
        checkpoint(uri)


# ----------------------------------------------------------------------------------------------
# Run / resume


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
    tracking_ok: bool = True
    timings: dict[str, float] = field(default_factory=dict)


def default_run_dir(name: str, storage: str | None) -> Path:
    if storage:
        return Path(storage).expanduser().resolve()
    root = os.environ.get("CT_RUNS_DIR")
    if not root:
        # a Ray job runs in a temporary copy of the working dir: keep results in $HOME
        root = str(Path.home() / "ct_runs") if in_ray_job() else "ct_runs"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (Path(root) / f"{name}-{stamp}").resolve()


def _new_run_dir(p: Plan, storage: str | None) -> RunDir:
    path = default_run_dir(p.sweep.name, storage or p.sweep.storage)
    if (path / SWEEP_FILE).exists():
        raise ConfigError(
            f"--storage {path} already holds a sweep; use `ct-sweep resume {path}` "
            "or choose a new directory"
        )
    path.mkdir(parents=True, exist_ok=True)
    (path / SWEEP_FILE).write_text(p.resolved_yaml())
    info = {"experiment": "tune", "n_trials": p.n_trials, "created": time.time()}
    run = RunDir(path, info, p.sweep, p.base, p.space)
    run.save_info()
    return run


def _count(frame: Any, expected: int) -> tuple[int, int, bool]:
    """Finished and errored trials from the experiment state Tune wrote last, and whether the
    sweep stopped early (a SIGINT makes ``Tuner.fit()`` return normally, notes §5.2)."""
    status = frame["status"] if len(frame) else []
    finished = int((status == "TERMINATED").sum()) if len(frame) else 0
    errors = int((status == "ERROR").sum()) if len(frame) else 0
    return finished, errors, finished + errors < max(expected, len(frame))


def _fit(
    p: Plan,
    run: RunDir,
    tuner_factory: Any,
    address: str | None,
    num_cpus: int | None,
    reconcile: bool = False,
    tracking: TrackingSetup | None = None,
) -> Outcome:
    """Fit, then write the report and end the parent run. With ``reconcile`` (a resumed
    sweep), or when epochs missing from Ray's results had to be recovered from checkpoints,
    MLflow is first brought in line with the results as ``ct-sweep sync-mlflow`` does: a
    driver killed mid-sweep can leave runs RUNNING or epochs unlogged that the restored
    callbacks never see again (a trial that finished just before the kill).

    ``tracking`` is the MLflow set-up already under way (:func:`_start_tracking`), which runs
    while Ray starts and the trials set up; ``tuner_factory(tracking)`` builds the tuner. The
    MLflow logging thread finishes its work, and the report is written, while Ray stops.
    ``timings`` holds the durations of these steps in seconds."""

    t0, cpu0 = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    tune_import = import_tune()
    started = ensure_ray(address, num_cpus)
    tune_import.join()
    local = started == "local"
    if local:
        actors_inherit_env()  # a local Ray of our own: its workers inherit our environment
    t1 = lap("ray_start", t0)
    tuner = None
    try:
        if local:
            check_fits(p)
        tuner = tuner_factory(tracking)
        t2 = lap("tuner_setup", t1)
        grid = tuner.fit()
        t3 = lap("fit", t2)
    except BaseException as e:
        stop_ray(started)
        if tracking is not None:
            tracking.wait()  # do not leave the store half-written on exit
            if tuner is None:  # stopped before Tune ran (bad resources, Ctrl-C): no report
                _end_parent(run, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    # Ray stops (under a second, see stop_ray) while the MLflow logging thread finishes and
    # then the report is written. One after the other, not side by side: the two share the GIL,
    # and the logging thread, which lets go of it for every SQLite call, waits to get it back
    # each time (the 45 run ends of a pack: 0.5 s alone, 1.0-1.7 s beside the report;
    # bench/README.md, seventh pass)
    ray_stopped = _in_background(lambda: stop_ray(started), "ct-ray-stop") if started else None
    # the parent run exists (or MLflow is down)
    mlflow_s = tracking.wait() if tracking is not None else 0.0
    trackers = _trackers(tuner)
    t4 = lap("mlflow_drain", t3)
    from ct_sweeps.callbacks import PrepareReport  # imports Ray Tune: only once it is loaded

    prepared = _callbacks(tuner, PrepareReport)
    records = collect(run, fit_trials(grid), prepared[0].results if prepared else None)
    report = write_report(run, records=records)
    t5 = lap("report", t4)
    if ray_stopped is not None:
        timings["ray_stop"] = round(ray_stopped(), 3)
        t5 = lap("ray_stop_wait", t5)
    timings["mlflow_in_fit"] = round(mlflow_s + sum(t.seconds for t in trackers), 3)
    finished, errors, interrupted = _count(report.frame, p.n_trials)
    recovered = sum(r.recovered for r in records)
    if recovered:
        log.warning(
            "%d epoch records missing from Ray's results were taken from checkpoints", recovered
        )
    if (reconcile or recovered) and run.info.get("parent_run_id"):
        _reconcile(run, records)
        t5 = lap("mlflow_reconcile", t5)
    status = "KILLED" if interrupted else ("FAILED" if errors and not finished else "FINISHED")
    _log_parent_outputs(run, report, status)
    lap("mlflow_parent", t5)
    seconds = time.perf_counter() - t0
    # CPU of the driver process, all threads (Tune's loop, MLflow logging, the report): on a
    # small machine it competes with the trials, so it shows in their epoch clocks too
    timings["driver_cpu"] = round(time.process_time() - cpu0, 3)
    run.save_info(timings={**timings, "total": round(seconds, 3)})
    return Outcome(
        run.path,
        report,
        interrupted,
        p.n_trials,
        finished,
        errors,
        run.info.get("tracking_uri"),
        seconds,
        tracking_ok=bool(run.info.get("parent_run_id")) and not any(t.failures for t in trackers),
        timings=timings,
    )


def _in_background(fn: Any, name: str) -> Any:
    """Start ``fn()`` on a thread; the returned function waits for it and gives its seconds."""
    took: list[float] = []

    def target() -> None:
        t = time.perf_counter()
        try:
            fn()
        finally:
            took.append(time.perf_counter() - t)

    thread = threading.Thread(target=target, name=name)
    thread.start()

    def wait() -> float:
        thread.join()
        return took[0] if took else 0.0

    return wait


def _reconcile(run: RunDir, records: list[Any]) -> None:
    from ct_sweeps.tracking import sync

    try:
        counts = sync(run, records, end_parent=False)
    except Exception as e:  # MLflow down: the sweep's results are safe in the run dir
        log.warning(
            "MLflow not brought up to date (%s); run `ct-sweep sync-mlflow %s`", e, run.path
        )
        return
    if counts["created"] or counts["metrics"] or counts["status"]:
        log.info(
            "MLflow brought up to date with the results: %d runs created, %d metric values, "
            "%d statuses set",
            counts["created"],
            counts["metrics"],
            counts["status"],
        )


def _callbacks(tuner: Any, cls: type) -> list[Any]:
    """The tuner's callbacks of class ``cls`` (those ``Tuner.fit()`` used, restored or not)."""
    try:
        callbacks = tuner._local_tuner._run_config.callbacks or []
    except Exception:
        return []
    return [c for c in callbacks if isinstance(c, cls)]


def _trackers(tuner: Any) -> list[Any]:
    """The MLflow trackers the tuner's callbacks used (for failure counts and timings), once
    their logging threads have finished what was handed to them."""
    from ct_sweeps.tracking import MlflowSweepCallback

    ours = _callbacks(tuner, MlflowSweepCallback)
    for c in ours:
        c.drain()
    return [c._tracker for c in ours if c._tracker]


def run(
    p: Plan,
    *,
    storage: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    num_cpus: int | None = None,
) -> Outcome:
    """Run a planned sweep to the end (or until interrupted)."""
    set_defaults(address)
    run_dir = _new_run_dir(p, storage)

    def factory(tracking: TrackingSetup | None) -> Any:
        # packs train with PackTrainer; a stand-in trainer (CT_SWEEPS_TRAINER) runs unpacked
        packed = p.sweep.search.packs and TRAINER == "ct_core.training:Trainer"
        packs = _plan_packs(p, run_dir) if packed else None
        return build_tuner(p, run_dir, _tracking(p, run_dir, tracking, packs), packs)

    # the MLflow set-up starts first: it runs beside Ray's start (runner._fit)
    tracking = _start_tracking(p, run_dir, tracking_uri)
    return _fit(p, run_dir, factory, address, num_cpus, tracking=tracking)


def resume(
    run_path: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    retry_errored: bool = False,
) -> Outcome:
    """Continue an interrupted sweep: unfinished trials resume from their last checkpoint,
    finished trials are kept as they are, errored trials are retried only if asked."""
    set_defaults(address)
    run_dir = RunDir.load(run_path)
    p = plan_from(run_dir.sweep, run_dir.base)

    def factory(_: Any) -> Any:
        from ray import tune

        exp = str(run_dir.experiment_path)
        if not tune.Tuner.can_restore(exp):
            raise ConfigError(f"{run_dir.path}: nothing to resume (no Tune experiment state)")
        packs = _plan_packs(p, run_dir) if run_dir.info.get("packed") else None
        return tune.Tuner.restore(
            exp,
            trainable=_trainable(p, packs),
            resume_unfinished=True,
            resume_errored=retry_errored,
        )

    return _fit(p, run_dir, factory, address, num_cpus, reconcile=True)
