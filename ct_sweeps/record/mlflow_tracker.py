"""MLflow tracking from the driver: one parent run per sweep, one child run per trial.

All logging happens in the Tune driver (a :class:`ray.tune.Callback`), batched per trial, so
workers never need the tracking store and a tracking outage never fails a trial: a failed call is
reported once and skipped, and ``ct-sweep sync-mlflow RUN_DIR`` later backfills from Ray's own
results (the source of truth). Child runs carry the tag ``ct.trial_id`` and ``ct.last_step`` so
that backfilling is idempotent.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ct_sweeps.env import default_tracking_uri, resolve_tracking_uri
from ct_sweeps.sqlite_store import checkpoint
from ct_sweeps.trainable import CF_METRICS, MODEL_FILE, TrialSpec, resolve_trial

__all__ = [
    "MlflowSweepCallback",
    "Tracker",
    "default_tracking_uri",
    "metrics_of",
    "resolve_tracking_uri",
]

log = logging.getLogger("ct_sweeps.tracking")

TRIAL_TAG = "ct.trial_id"
STEP_TAG = "ct.last_step"
SWEEP_TAG = "ct.sweep"
PARENT_TAG = "mlflow.parentRunId"

_SKIP = {
    "timestamp",
    "pid",
    "done",
    "training_iteration",
    "iterations_since_restore",
    "time_since_restore",
    "epoch",
    "eval_epoch",
    "checkpoint_dir_name",
    "settings_alive",
}
TIME_KEYS = (
    "time_search",
    "time_train",
    "time_eval",
    "seconds",
    "time_this_iter_s",
    "time_total_s",
)
"""Per-epoch clocks: not logged every epoch (a third of the metric rows); a finished setting's
run gets their totals once (``train_seconds``, ``time_search_total``, ...)."""


def metrics_of(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of one Tune result worth logging (CF metrics only where computed)."""
    out: dict[str, float] = {}
    fresh = result.get("eval_epoch") == result.get("epoch")
    for k, v in result.items():
        if k in _SKIP or k in TIME_KEYS or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if k in CF_METRICS and not fresh:
            continue
        if k == "skipped_batches" and v == 0:  # logged where non-zero; its total at the end
            continue
        if math.isfinite(v):
            out[k] = float(v)
    return out


class Tracker:
    """A thin, failure-tolerant wrapper around ``MlflowClient``.

    After a failed call the store is treated as down for ``retry_s`` seconds (calls are
    skipped), so an unreachable server costs one timeout, not one per epoch.
    """

    def __init__(self, uri: str, retry_s: float = 60.0):
        self.uri = uri
        self.retry_s = retry_s
        self.failures = 0
        self._down_until = 0.0
        self._client: Any = None
        self.last_ok = True
        self.seconds = 0.0
        """Time spent in MLflow calls (reported as overhead in the sweep summary)."""
        self._artifact_uris: dict[str, str] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def call(self, what: str, fn: str, *args: Any, **kwargs: Any) -> Any:
        """``MlflowClient.<fn>(*args, **kwargs)``, or ``None`` if it failed (logged)."""
        return self._guard(what, lambda: getattr(self.client, fn)(*args, **kwargs))

    def _guard(self, what: str, fn: Any) -> Any:
        self.last_ok = False
        if time.monotonic() < self._down_until:
            return None
        t0 = time.perf_counter()
        try:
            out = fn()
            self.last_ok = True
            self._note(out)
            return out
        except Exception as e:  # a tracking outage must never stop the sweep
            self.failures += 1
            self._down_until = time.monotonic() + self.retry_s
            log.warning(
                "MLflow %s failed (%s: %s); the sweep goes on, backfill later with "
                "`ct-sweep sync-mlflow RUN_DIR`",
                what,
                type(e).__name__,
                str(e).splitlines()[0][:200] if str(e) else "",
            )
            return None
        finally:
            self.seconds += time.perf_counter() - t0

    def _note(self, run: Any) -> None:
        """Remember a run's artifact location (from ``create_run``, ``get_run`` or a search)."""
        info = getattr(run, "info", None)
        if getattr(info, "artifact_uri", None) and getattr(info, "run_id", None):
            self._artifact_uris[info.run_id] = info.artifact_uri

    def upload(self, what: str, run_id: str, local: str | Path, artifact_path: str) -> None:
        """Upload a file (or a directory's files) under ``artifact_path`` of a run.

        For a run this tracker has seen, straight to its artifact repository: the client's
        ``log_artifact`` first loads the whole run (params, metrics, tags) to find where its
        artifacts go, about 10 ms a run on a local store (bench/README.md)."""
        uri = self._artifact_uris.get(run_id)
        directory = Path(local).is_dir()
        if uri is None:
            fn = "log_artifacts" if directory else "log_artifact"
            self.call(what, fn, run_id, str(local), artifact_path)
            return

        def upload() -> None:
            from mlflow.store.artifact.artifact_repository_registry import (
                get_artifact_repository,
            )

            repo = get_artifact_repository(uri, tracking_uri=self.uri)
            (repo.log_artifacts if directory else repo.log_artifact)(str(local), artifact_path)

        self._guard(what, upload)

    def experiment(self, name: str, artifact_location: str | None = None) -> str | None:
        exp = self.call("get experiment", "get_experiment_by_name", name)
        if exp is not None:
            return exp.experiment_id
        return self.call("create experiment", "create_experiment", name, artifact_location)

    def find_child(self, experiment_id: str, trial_id: str) -> Any:
        runs = self.call(
            "search runs",
            "search_runs",
            [experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}'",
            max_results=1,
        )
        return runs[0] if runs else None

    def children(self, experiment_id: str, parent_run_id: str) -> dict[str, Any] | None:
        """The child runs of a sweep's parent run by trial id (one paged search, not one per
        trial); ``None`` if the store did not answer."""
        out: dict[str, Any] = {}
        token = None
        while True:
            page = self.call(
                "search runs",
                "search_runs",
                [experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                max_results=1000,
                page_token=token,
            )
            if page is None:
                return None
            for r in page:
                self._note(r)
                tid = r.data.tags.get(TRIAL_TAG)
                if tid and tid not in out:
                    out[tid] = r
            token = getattr(page, "token", None)
            if not token:
                return out

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[tuple[str, float, int]] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> bool:
        """Log in as few calls as MLflow's batch limits allow (per call at most 100 params, 100
        tags and 1000 entities in all; the tags go in the first); ``False`` if any call failed."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, step) for k, v, step in metrics]
        ps = [Param(k, _param_str(v)) for k, v in (params or {}).items()]
        ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        ok, first = True, True
        while first or ms or ps or ts:
            t, ts = ts[:100], ts[100:]
            p, ps = ps[:100], ps[100:]
            m, ms = ms[: 1000 - len(t) - len(p)], ms[1000 - len(t) - len(p) :]
            self.call("log_batch", "log_batch", run_id, metrics=m, params=p, tags=t)
            ok &= self.last_ok
            first = False
        return ok


def _run_info(run_path: str | None) -> dict[str, Any]:
    """A run directory's ``run.json`` (empty if there is none)."""
    from ct_sweeps.report import RUN_FILE

    if not run_path:
        return {}
    try:
        return json.loads((Path(run_path) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def child_params(
    spec: TrialSpec, config: Mapping[str, Any], cpus: float, gpus: float | None = None
) -> dict[str, Any]:
    """Every resolved training parameter of a trial (holding ``cpus`` and ``gpus``), flattened
    with dotted keys."""
    return resolve_trial(spec, config, cpus, gpus).flat()


def log_model_file(tracker: Tracker, run_id: str, model_path: Path) -> None:
    """Upload a final model file as ``checkpoint/model.pt`` (a pack's ``model_<k>.pt`` too)."""
    if model_path.name == MODEL_FILE:
        tracker.upload("log model file", run_id, model_path, "checkpoint")
        return
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ct-model-") as d:
        shutil.copyfile(model_path, Path(d) / MODEL_FILE)
        tracker.upload("log model file", run_id, Path(d) / MODEL_FILE, "checkpoint")


def log_model(
    tracker: Tracker,
    run_id: str,
    model_path: Path,
    raw: bool = True,
    full: bool = True,
    prepared: Path | None = None,
) -> None:
    """Log a trial's final model: the raw ``checkpoint/model.pt`` and an MLflow PyTorch model
    under ``model/`` (``mlflow.pytorch.load_model("runs:/<id>/model")``); ``prepared``: that
    MLflow model already saved by :func:`prepare_model`.

    The model is saved locally and uploaded with the client, so no global MLflow state (active
    run, tracking URI) is touched in the driver.
    """
    import tempfile

    if raw:
        log_model_file(tracker, run_id, model_path)
    if not full:
        return
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="ct-mlflow-") as d:
            local = prepared if prepared is not None else prepare_model(model_path, Path(d))
            t1 = time.perf_counter()
            tracker.upload("log model", run_id, local, "model")
            t0 += time.perf_counter() - t1  # counted by tracker.call already
    except Exception as e:
        log.warning("MLflow model logging for run %s failed: %s", run_id, e)
    tracker.seconds += time.perf_counter() - t0


def prepare_model(model_path: Path, folder: Path) -> Path:
    """Save a model file (``ct_core.models.save_model``) as an MLflow PyTorch model in
    ``folder/model``, ready to upload; returns that path."""
    import numpy as np
    import torch

    from ct_core.models import load_model

    model, _ = load_model(model_path)
    meta = torch.load(model_path, map_location="cpu", weights_only=True).get("meta", {})
    # two rows, so that the exported graph keeps the batch dimension dynamic
    example = np.zeros((2, int(meta["n_features"])), dtype=np.float32)
    _save_mlflow_model(model, Path(folder) / "model", example)
    return Path(folder) / "model"


def _save_mlflow_model(model: Any, path: Path, example: Any) -> None:
    """``mlflow.pytorch.save_model`` with an input example and the pinned torch requirement."""
    import mlflow.pytorch
    import torch

    mlflow.pytorch.save_model(
        model,
        str(path),
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
    )


def warm_model_logging() -> None:
    """Save a throwaway MLflow PyTorch model, so that the first real one is fast."""
    import tempfile

    import numpy as np
    import torch

    with tempfile.TemporaryDirectory(prefix="ct-mlflow-warm-") as d:
        _save_mlflow_model(torch.nn.Linear(2, 2), Path(d) / "model", np.zeros((2, 2), np.float32))


CLOCK_NAMES = {
    "seconds": "train_seconds",
    "time_search": "time_search_total",
    "time_train": "time_train_total",
    "time_eval": "time_eval_total",
    "skipped_batches": "skipped_batches_total",
}
VANILLA_ZEROS = ("div", "reg", "adv")
"""CT terms, always 0 for a vanilla setting: not logged per epoch (nor are epochs with no
skipped batch: ``skipped_batches`` is logged where non-zero, and its total at the end)."""


class _Unit:
    """One setting seen by the callback: a whole trial, or setting ``k`` of a pack trial."""

    __slots__ = ("config", "id", "k", "name")

    def __init__(self, uid: str, name: str, config: Mapping[str, Any], k: int | None):
        self.id, self.name, self.config, self.k = uid, name, config, k

    def records(self, result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """This setting's epoch records in one Tune result (a pack reports several at once)."""
        if self.k is None:
            return [result]
        recs = (result.get("settings") or {}).get(str(self.k)) or []
        return recs if isinstance(recs, list) else [recs]


class MlflowSweepCallback(Callback):
    """Driver-side logging: a child run per setting at trial start, its params with its first
    metrics (one call fewer per setting), metrics batched per trial (every ``flush_s`` seconds,
    at the latest once by half its epochs, and at the end; in the sweep's tail, at each
    result), the final model, the status.

    With ``packs`` (a :class:`~ct_sweeps.packing.PackBook`) a trial whose config names a
    ``pack`` logs one child run per setting of that pack (its config's ``members``, if any).
    ``models`` settings get an MLflow PyTorch model: all of them when ``models >= n_settings``,
    else the best ``models`` by ``metric`` at the end of the sweep (every finished setting gets
    ``checkpoint/model.pt`` when ``models`` is not ``None``)."""

    def __init__(
        self,
        uri: str,
        experiment_id: str | None,
        parent_run_id: str | None,
        spec: TrialSpec,
        sweep_name: str,
        cpus: float = 1.0,
        gpus: float | None = None,
        flush_s: float = 30.0,
        log_models: bool = True,
        packs: Any = None,
        models: int | None = None,
        n_settings: int = 0,
        metric: str | None = None,
        mode: str = "max",
        log_every: int = 1,
        ready: Future | None = None,
        run_path: str | Path | None = None,
        new_parent: bool = False,
    ):
        self.uri = uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.spec = spec
        self.sweep_name = sweep_name
        self.cpus, self.gpus = cpus, gpus
        self.flush_s = flush_s
        self.log_models = log_models
        self.packs = packs
        self.models = models if models is not None else (n_settings if log_models else None)
        self.n_settings = n_settings
        self.metric, self.mode = metric, mode
        self.log_every = log_every
        self._held: dict[str, tuple[Mapping[str, Any], int]] = {}
        """A unit's latest epoch not on the ``log_every`` grid, logged if it turns out last."""
        self.children: dict[str, str] = {}
        self.steps: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.finals: dict[str, float] = {}
        self.model_paths: dict[str, str] = {}
        self.clocks: dict[str, dict[str, float]] = {}
        self._objective: dict[str, str] = {}
        self._buffer: dict[str, list[tuple[str, float, int]]] = {}
        self._params: dict[str, dict[str, Any]] = {}
        """A child run's params not logged yet: they go with its next flush (at the latest when
        its trial ends); one call per setting fewer than logging them when the run is made."""
        self._added: dict[str, int] = {}
        self._unverified: set[str] = set()
        self._flushed: dict[str, float] = {}
        self._flushed_once: set[str] = set()
        self._n_epochs: dict[str, int] = {}
        self._tracker: Tracker | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._ready = ready
        """The parent run being made (``runner._start_tracking``); resolves to the ids."""
        self.run_path = str(run_path) if run_path is not None else None
        self._off = False
        """MLflow was not reachable when the sweep started: nothing is logged."""
        self._warm = False
        self._in_tail = False
        """A trial slot idles from now to the end (:meth:`_tail`): the running trials flush at
        each result."""
        self._prepared: dict[str, Path] = {}
        """MLflow models of the best settings so far, saved locally in the sweep's tail
        (:meth:`_prepare_best`): fewer are left to save after the last trial."""
        self._prep_dir: str | None = None
        self._known: dict[str, Any] | None = {} if new_parent else None
        """The experiment's child runs of this parent when the first child was needed (none
        to look up when this sweep has just made the parent run: ``new_parent``; a callback
        restored by ``ct-sweep resume`` looks them up)."""

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(_tracker=None, _buffer={}, _params={}, _added={}, _held={})
        d.update(_queue=None, _thread=None, _prepared={}, _prep_dir=None)
        # the logging thread's flush bookkeeping starts afresh in a restored callback
        d.update(_flushed={}, _flushed_once=set(), _n_epochs={})
        if self.parent_run_id is None and self._ready is not None and self._ready.done():
            ids = self._ready.result()
            if ids:
                d.update(experiment_id=ids[0], parent_run_id=ids[1])
        # a restored callback checks MLflow (and warms model logging) again in its new process
        d.update(_ready=None, _known=None, _off=False, _warm=False, _in_tail=False)
        return d

    def _ids(self) -> bool:
        """Whether the experiment and parent run are known: waits for the set-up thread, or
        (a callback restored from an experiment snapshot taken before it was done) reads them
        from ``run.json``."""
        if self.parent_run_id is None and not self._off:
            if self._ready is not None:
                ids = self._ready.result()
                self._ready = None
            else:
                info = _run_info(self.run_path)
                ids = (info.get("experiment_id"), info.get("parent_run_id"))
                ids = ids if all(ids) else None
            if ids:
                self.experiment_id, self.parent_run_id = ids
            self._off = not ids
        return not self._off

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.uri)
        return self._tracker

    # -- a background thread does the logging, so that Tune's event loop (and with it every
    #    trial, which waits in ``tune.report`` for the driver) never waits on the store
    def _submit(self, fn: Any, *args: Any) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._work, name="ct-mlflow", daemon=True)
            self._thread.start()
            if self.models:  # import mlflow.pytorch (seconds) now, not when a trial ends
                self._queue.put((importlib.import_module, ("mlflow.pytorch",)))
        assert self._queue is not None
        self._queue.put((fn, args))

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            fn, args = self._queue.get()
            try:
                if self._ids():
                    fn(*args)
            except Exception as e:  # never let a logging bug stop the sweep
                log.warning("MLflow logging failed (%s: %s)", type(e).__name__, e)
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Wait until everything submitted so far is logged."""
        if self._queue is not None and self._thread is not None and self._thread.is_alive():
            self._queue.join()

    # -- state kept in Tune's experiment snapshots (restored by `ct-sweep resume`)
    def get_state(self) -> dict[str, Any]:
        """The callback's state for Tune's experiment snapshot. Taken without waiting for the
        logging thread: Tune's event loop calls this every few seconds and at the end of
        ``fit()``, and a work item can take seconds (a pack's flush, the first model save).
        Each copy is one C-level call under the GIL, so no dict is seen mid-change; a restored
        callback reads every child run's last logged step back from MLflow (:meth:`set_state`)."""
        return {
            "children": self.children.copy(),
            "steps": self.steps.copy(),
            "failed": self.failed.copy(),
            "finals": self.finals.copy(),
            "model_paths": self.model_paths.copy(),
            "clocks": {k: v.copy() for k, v in list(self.clocks.items())},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        for key in ("children", "steps", "failed", "finals", "model_paths", "clocks"):
            getattr(self, key).update(state.get(key, {}))
        # the snapshot can be older than the last flush: read each run's last step back
        self._unverified = set(self.children)

    # -- units
    def _units(self, trial: Any) -> list[_Unit]:
        tid = trial.trial_id
        if self.packs is None or "pack" not in trial.config:
            return [_Unit(tid, str(trial), trial.config, None)]
        from ct_sweeps.packing import unit_id

        if isinstance(self.packs, list | tuple):  # pickled by a driver from before PackBook
            settings = self.packs[int(trial.config["pack"])]
        else:
            settings = self.packs.configs(trial.config)
        return [
            _Unit(unit_id(tid, k), unit_id(str(trial), k), cfg, k) for k, cfg in enumerate(settings)
        ]

    # -- Tune hooks (main thread: read what is needed from the trial, then hand over)
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit(self._start, self._units(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        units = self._units(trial)
        self._submit(self._result, trial.trial_id, units, result)
        if self._best_only and not self._warm:
            if float(result.get("epoch", 0)) >= self._epochs(units) / 2:
                self._warm_up()

    def _warm_up(self) -> None:
        """The best settings' MLflow models are logged after the last trial, and the first
        ``save_model`` in a process takes ~2 s (``torch.export``'s lazy imports): pay that once,
        in the middle of a trial or at the first trial's end, whichever comes first. Not later:
        when a slot frees up, the last round of packs is sized from how fast the busy slots go
        (``ct_sweeps/last_round.py``), and in the tail it would hold up the sweep's end."""
        if not self._warm:
            self._warm = True
            self._submit(warm_model_logging)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        units = self._units(trial)
        paths = {u.id: final_model_path(trial, u.k) for u in units}
        self._submit(self._finish, trial.trial_id, units, "", paths)
        tail = self._tail(trials)
        # The driver has a core to spare from now on: the last trials flush at each result
        # (but their last), so that their ends leave little to log (bench/README.md, eighth
        # pass). Not at once: a trial about to end would log twice.
        self._in_tail = self._in_tail or tail
        if not self._best_only:
            return
        self._warm_up()
        if tail:
            self._submit(self._prepare_best)

    def _tail(self, trials: list) -> bool:
        """Whether the sweep is in its tail: every trial exists (Tune makes them as slots free
        up, and Optuna as it suggests them) and none waits for a slot, so the slot that just
        finished idles until the end."""
        expected = len(self.packs) if self.packs is not None else self.n_settings
        waiting = any(t.status in ("PENDING", "PAUSED") for t in trials)
        return len(trials) >= expected and not waiting

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        units = self._units(trial)
        self._submit(self._finish, trial.trial_id, units, error_reason(trial) or "error", {})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for t in trials:
            self._submit(self._flush, t.trial_id, self._units(t))
        # not drained here: Ray stops and the report is written meanwhile (runner._fit)
        self._submit(self._log_best_models)

    # -- the logging thread
    def _start(self, units: list[_Unit]) -> None:
        for u in units:
            self._child(u)

    def _result(self, trial_id: str, units: list[_Unit], result: Mapping[str, Any]) -> None:
        top = int(result.get("epoch", result.get("training_iteration", 0)))
        for u in units:
            if u.id in self._unverified:
                self._last_step_logged(u)
            for rec in u.records(result):
                self._add(u, rec, int(rec.get("epoch", top)))
        # every flush_s seconds from the trial's first result (not at it: that flush would be
        # one more call per setting, each a few ms of the driver's CPU, just as trials start);
        # a trial shorter than 2 x flush_s flushes once by half its epochs rather than leave all
        # its logging (params too) to its end, which for a last trial holds up the sweep's end;
        # in the sweep's tail, at each result. Never at the last epoch: the trial's end follows
        # and flushes (one call per setting, not two, after the last trial)
        now = time.monotonic()
        epochs = self._epochs(units)
        due = now - self._flushed.setdefault(trial_id, now) > self.flush_s or self._in_tail
        due = due or (trial_id not in self._flushed_once and top >= epochs / 2)
        if due and top < epochs:
            self._flush(trial_id, units)

    def _add(self, u: _Unit, rec: Mapping[str, Any], step: int) -> None:
        # an epoch reported again (a restored trial) is logged once
        if step <= max(self.steps.get(u.id, 0), self._added.get(u.id, 0)):
            return
        self._added[u.id] = step
        if rec.get("failed"):
            self.failed[u.id] = str(rec["failed"])
        if self.metric and isinstance(rec.get(self.metric), int | float):
            v = float(rec[self.metric])
            if math.isfinite(v):
                self.finals[u.id] = v
        clocks = self.clocks.setdefault(u.id, {})
        for k in ("seconds", "time_search", "time_train", "time_eval", "skipped_batches"):
            if isinstance(rec.get(k), int | float) and math.isfinite(rec[k]):
                clocks[k] = clocks.get(k, 0.0) + float(rec[k])
        clocks["step"] = float(step)
        if step % self.log_every:
            self._held[u.id] = (rec, step)
            return
        self._held.pop(u.id, None)
        self._log(u, rec, step)

    def _log(self, u: _Unit, rec: Mapping[str, Any], step: int) -> None:
        buf = self._buffer.setdefault(u.id, [])
        skip = VANILLA_ZEROS if self._vanilla(u) else ()
        buf.extend((k, v, step) for k, v in metrics_of(rec).items() if k not in skip)

    # -- helpers
    def _last_step_logged(self, u: _Unit) -> None:
        run = self.tracker.call("get run", "get_run", self.children[u.id])
        if run is not None:
            self._unverified.discard(u.id)
            logged = int(float(run.data.tags.get(STEP_TAG, 0)))
            self.steps[u.id] = max(self.steps.get(u.id, 0), logged)
            self._params_if_missing(u, run)

    def _params_if_missing(self, u: _Unit, run: Any) -> None:
        """Owe an earlier driver's child run its params (logged with its next flush) if that
        driver died before the run's first flush."""
        if not run.data.params:
            self._params[u.id] = child_params(self.spec, u.config, self.cpus, self.gpus)

    def _vanilla(self, u: _Unit) -> bool:
        if u.id not in self._objective:
            from ct_sweeps.space import trial_config

            cfg = trial_config(self.spec.base, self.spec.space.resolve(u.config))
            self._objective[u.id] = cfg.train.objective
        return self._objective[u.id] == "vanilla"

    def _child(self, u: _Unit) -> str | None:
        if u.id in self.children:
            return self.children[u.id]
        tr = self.tracker
        if self._known is None:  # once: the runs a restored sweep's earlier driver made
            self._known = tr.children(self.experiment_id, self.parent_run_id)
        existing = (self._known or {}).get(u.id)
        if existing is not None:
            self.children[u.id] = existing.info.run_id
            self.steps[u.id] = int(float(existing.data.tags.get(STEP_TAG, 0)))
            self._params_if_missing(u, existing)
            return self.children[u.id]
        swept = ",".join(sorted(self.spec.space.resolve(u.config)))
        tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: u.id, SWEEP_TAG: self.sweep_name}
        tags["ct.swept"] = swept
        run = tr.call("create run", "create_run", self.experiment_id, run_name=u.name, tags=tags)
        if run is None:
            return None
        rid = run.info.run_id
        self.children[u.id] = rid
        params = child_params(self.spec, u.config, self.cpus, self.gpus)
        self._objective[u.id] = str(params.get("train.objective"))
        self._params[u.id] = params  # logged with the run's first metrics (_flush)
        return rid

    def _epochs(self, units: list[_Unit]) -> int:
        """The epochs of a trial (a pack's settings share their epoch loop; the sweep's
        settings were validated before any trial started, as for :meth:`_vanilla`)."""
        u = units[0]
        if u.id not in self._n_epochs:
            from ct_sweeps.space import trial_config

            cfg = trial_config(self.spec.base, self.spec.space.resolve(u.config))
            self._n_epochs[u.id] = cfg.train.epochs
        return self._n_epochs[u.id]

    def _flush(self, trial_id: str, units: list[_Unit]) -> None:
        self._flushed[trial_id] = time.monotonic()
        self._flushed_once.add(trial_id)
        for u in units:
            buf = self._buffer.get(u.id) or []
            if not buf and u.id not in self._params:
                continue
            rid = self._child(u)
            if rid is None:
                continue
            last = max((step for _, _, step in buf), default=None)
            tags = {STEP_TAG: str(last)} if last is not None else None
            if self.tracker.log_batch(rid, metrics=buf, params=self._params.get(u.id), tags=tags):
                if last is not None:
                    self.steps[u.id] = last
                self._buffer[u.id] = []
                self._params.pop(u.id, None)

    def _finish(
        self, trial_id: str, units: list[_Unit], reason: str, paths: Mapping[str, Path | None]
    ) -> None:
        """End the trial's runs: FAILED with ``ct.error`` (the setting's own failure, else the
        trial's ``reason``), or FINISHED with the model."""
        for u in units:  # the last epoch, also off the log_every grid
            if u.id in self._held:
                self._log(u, *self._held.pop(u.id))
        for u in units:  # the clocks' totals, once, at the last step
            c = self.clocks.get(u.id)
            if c:
                step = int(c["step"])
                self._buffer.setdefault(u.id, []).extend(
                    (CLOCK_NAMES[k], v, step) for k, v in c.items() if k in CLOCK_NAMES
                )
        self._flush(trial_id, units)
        tr = self.tracker
        for u in units:
            rid = self.children.get(u.id)
            if rid is None:
                continue
            why = self.failed.get(u.id) or reason
            if why:
                tr.call("tag error", "set_tag", rid, "ct.error", why[:5000])
                tr.call("end run", "set_terminated", rid, "FAILED")
                continue
            path = paths.get(u.id)
            if path is not None and self.models is not None:
                self.model_paths[u.id] = str(path)
                if self.models >= self.n_settings:
                    log_model(tr, rid, path)
                else:  # the raw file now, the MLflow model at the end for the best ones
                    log_model_file(tr, rid, path)
            tr.call("end run", "set_terminated", rid, "FINISHED")

    @property
    def _best_only(self) -> bool:
        """Whether only the best ``models`` settings get an MLflow model, after the last trial
        (some, but not all of them)."""
        return bool(self.models) and self.models < self.n_settings

    def _best(self) -> list[str]:
        """The ``models`` best finished settings so far, by the search metric."""
        ranked = sorted(
            (u for u in self.model_paths if u in self.finals and u not in self.failed),
            key=lambda u: self.finals[u],
            reverse=self.mode == "max",
        )
        return ranked[: self.models]

    def _prepare_best(self) -> None:
        """Save the MLflow models of the best settings so far (uploaded, if still among the
        best, by :meth:`_log_best_models`). Runs in the sweep's tail, while a trial slot idles
        and the last trials train: each model takes 0.05-0.15 s (``torch.export``) that would
        otherwise come after the last trial."""
        import tempfile

        if self._prep_dir is None:
            self._prep_dir = tempfile.mkdtemp(prefix="ct-best-models-")
        for u in self._best():
            if u in self._prepared:
                continue
            t0 = time.perf_counter()
            try:
                # a folder of its own: one a failed save left half-written is not reused
                folder = Path(tempfile.mkdtemp(dir=self._prep_dir))
                self._prepared[u] = prepare_model(Path(self.model_paths[u]), folder)
            except Exception as e:  # log_model saves it again (and reports a failure)
                log.debug("could not prepare the MLflow model of %s: %s", u, e)
            self.tracker.seconds += time.perf_counter() - t0

    def _log_best_models(self) -> None:
        """Log MLflow models for the best ``models`` settings (when not every setting got one)."""
        import shutil

        if not self._best_only:
            return
        try:
            for u in self._best():
                rid = self.children.get(u)
                if rid is not None:
                    path, ready = Path(self.model_paths[u]), self._prepared.get(u)
                    log_model(self.tracker, rid, path, raw=False, prepared=ready)
                    self.tracker.call("tag best", "set_tag", rid, "ct.model", "mlflow")
        finally:
            if self._prep_dir is not None:
                shutil.rmtree(self._prep_dir, ignore_errors=True)
            self._prep_dir, self._prepared = None, {}


def final_model_path(trial: Any, k: int | None = None) -> Path | None:
    """The final model of a trial's latest checkpoint (``model.pt``, or setting ``k``'s
    ``model_<k>.pt`` of a pack), if it holds one."""
    name = MODEL_FILE
    if k is not None:
        from ct_sweeps.packing import model_file

        name = model_file(k)
    ckpt = getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)
    latest = getattr(ckpt, "latest_checkpoint_result", None) if ckpt else None
    path = getattr(getattr(latest, "checkpoint", None), "path", None)
    if path and (Path(path) / name).exists():
        return Path(path) / name
    local = getattr(trial, "path", None)
    if local:
        found = sorted(Path(local).glob(f"checkpoint_*/{name}"))
        if found:
            return found[-1]
    return None


def error_reason(trial: Any) -> str:
    """The last line of a failed trial's traceback (the exception and its message)."""
    text = ""
    # Tune keeps error.txt in the trial's folder; ``trial.error_file`` resolves the driver's
    # staging path, which needs a running Ray (reports are written after Ray shut down)
    candidates = (
        lambda: Path(trial.path) / (trial.run_metadata.error_filename or "error.txt"),
        lambda: trial.error_file,
    )
    for where in candidates:
        try:
            path = where()
            if path and Path(path).is_file():
                text = Path(path).read_text()
                break
        except Exception:  # a property that needs Ray, or a missing path
            continue
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ":" in ln and not ln.startswith(("File ", "^")):
            return ln
    return lines[-1] if lines else ""


def _on_log_grid(history: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """The records MLflow gets with ``tracking.log_every``: every N-th epoch and the last."""
    if every <= 1:
        return history
    return [
        r
        for i, r in enumerate(history)
        if i == len(history) - 1 or int(r.get("epoch", r.get("training_iteration", 0))) % every == 0
    ]


def _logged_steps(tr: Tracker, run_id: str, history: list[dict[str, Any]]) -> set[int] | None:
    """The epochs a child run already holds, read off one metric that every epoch logs (not
    only those up to ``ct.last_step``: a driver killed with metrics still buffered leaves gaps
    below it). ``None`` if the store did not answer."""
    keys = [k for k in (set(metrics_of(r)) for r in history) if k]  # not a bare failure record
    common = set.intersection(*keys) if keys else set()
    if not common:
        return set()
    probe = "loss" if "loss" in common else sorted(common)[0]
    got = tr.call("read metric history", "get_metric_history", run_id, probe)
    return None if got is None else {int(m.step) for m in got}


def sync(
    run: Any, records: Iterable[Any], uri: str | None = None, end_parent: bool = True
) -> dict[str, int]:
    """Backfill MLflow from Ray's results (``ct-sweep sync-mlflow``): create missing child runs,
    log the epochs after each run's ``ct.last_step``, set statuses, and (``end_parent``) end
    the parent run with the report once every trial is terminal. Idempotent."""
    from ct_sweeps.runner import plan_from

    info = run.info
    uri = uri or info.get("tracking_uri") or default_tracking_uri(run.path)
    tr = Tracker(uri, retry_s=0.0)
    name = info.get("experiment_name") or run.sweep.tracking.experiment or run.sweep.name
    local = uri.startswith("sqlite:") or "://" not in uri
    exp_id = tr.experiment(name, (run.path / "mlartifacts").as_uri() if local else None)
    if exp_id is None:
        raise RuntimeError(f"cannot reach the MLflow store at {uri}")
    parent = None
    if info.get("parent_run_id") and info.get("experiment_id") == exp_id:
        try:  # a different store may not hold it: then it is created below
            parent = tr.client.get_run(info["parent_run_id"])
        except Exception:
            parent = None
    counts = {"created": 0, "metrics": 0, "status": 0, "parent_created": 0}
    if parent is None:
        parent = tr.call(
            "create parent run",
            "create_run",
            exp_id,
            run_name=run.path.name,
            tags={SWEEP_TAG: run.sweep.name, "ct.run_dir": str(run.path)},
        )
        if parent is None:
            raise RuntimeError(f"cannot create the parent run in {uri}")
        counts["parent_created"] = 1
    info.update(
        tracking_uri=uri,
        experiment_id=exp_id,
        parent_run_id=parent.info.run_id,
        experiment_name=name,
    )
    run.save_info()
    p = plan_from(run.sweep, run.base)
    if counts["parent_created"]:
        from ct_sweeps.runner import _log_parent_inputs

        _log_parent_inputs(tr, parent.info.run_id, p, run)
    spec = p.spec()
    records = list(records)
    cpus, gpus = run.sweep.resources.cpu, run.sweep.resources.gpu
    known = tr.children(exp_id, parent.info.run_id)
    for rec in records:
        child = (
            known.get(rec.trial_id) if known is not None else tr.find_child(exp_id, rec.trial_id)
        )
        history = rec.history()
        logged: set[int] = set()
        if child is None:
            tags = {
                PARENT_TAG: parent.info.run_id,
                TRIAL_TAG: rec.trial_id,
                SWEEP_TAG: run.sweep.name,
            }
            created = tr.call("create run", "create_run", exp_id, run_name=rec.name, tags=tags)
            if created is None:
                continue
            rid = created.info.run_id
            tr.log_batch(
                rid,
                params=child_params(spec, rec.config, cpus, gpus),
                tags={"ct.swept": ",".join(sorted(rec.params))},
            )
            counts["created"] += 1
            status_now = "RUNNING"
        else:
            rid = child.info.run_id
            status_now = child.info.status
            if not child.data.params:  # made by a driver that died before the run's first flush
                tr.log_batch(rid, params=child_params(spec, rec.config, cpus, gpus))
            logged = _logged_steps(tr, rid, history)
            if logged is None:
                continue
        rows = []
        every = run.sweep.tracking.log_every
        for result in _on_log_grid(history, every):
            step = int(result.get("epoch", result.get("training_iteration", 0)))
            if step not in logged:
                rows.extend((k, v, step) for k, v in metrics_of(result).items())
        if rows:
            top = max([s for _, _, s in rows] + list(logged))
            if tr.log_batch(rid, metrics=rows, tags={STEP_TAG: str(top)}):
                counts["metrics"] += len(rows)
        want = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}.get(rec.status)
        if want and status_now != want:
            n_models = run.sweep.tracking.models_for(len(records))
            if want == "FINISHED" and run.sweep.tracking.log_model and rec.path is not None:
                found = sorted(rec.path.glob(f"checkpoint_*/{rec.model_name}"))
                if found:
                    log_model(tr, rid, found[-1], full=n_models >= len(records))
            if want == "FAILED" and rec.error:
                tr.call("tag error", "set_tag", rid, "ct.error", rec.error[:5000])
            tr.call("set status", "set_terminated", rid, want)
            counts["status"] += 1
    terminal = bool(records) and all(r.status in ("TERMINATED", "ERROR") for r in records)
    if end_parent and terminal and parent.info.status != "FINISHED":
        from ct_sweeps.report import write_report
        from ct_sweeps.runner import _log_parent_outputs

        _log_parent_outputs(run, write_report(run, records=records), "FINISHED")
        counts["status"] += 1
    checkpoint(uri)  # a local store's write-ahead log back into its file
    if tr.failures:
        raise RuntimeError(f"{tr.failures} MLflow calls failed against {uri}")
    return counts
