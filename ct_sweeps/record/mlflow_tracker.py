"""The MLflow tracker: one parent run per sweep, one child run per setting, from the driver.

Workers never talk to the store, and an outage never fails a trial: a failed call is reported,
the store is left alone for ``retry_s`` seconds, and ``ct-sweep sync-mlflow`` backfills later.
Child runs carry the tag ``ct.trial_id`` (the setting's id), so a resumed sweep or a backfill
finds the runs an earlier driver made and adds only what they lack. Metrics are batched: a
setting's params go with its first metrics, and what is pending goes to the store every
``flush_s`` seconds (one ``log_batch`` per setting) and at a setting's end.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ct_sweeps.plan import RunDir
from ct_sweeps.record import events as ev
from ct_sweeps.record.store import checkpoint, is_local, new_sqlite_store

__all__ = ["MlflowTracker", "save_mlflow_model"]

log = logging.getLogger("ct_sweeps.record")

TRIAL_TAG = "ct.trial_id"
PARENT_TAG = "mlflow.parentRunId"
MODEL_TAG = "ct.model"


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def save_mlflow_model(model_file: Path, folder: Path) -> Path:
    """A model file (``ct_core.models.save_model``) as an MLflow PyTorch model in
    ``folder/model`` (``mlflow.pytorch.load_model`` reads it back as an ``nn.Module``)."""
    import mlflow.pytorch
    import numpy as np
    import torch

    from ct_core.models import load_model

    model, _ = load_model(model_file)
    meta = torch.load(model_file, map_location="cpu", weights_only=True).get("meta", {})
    # two rows, so that the exported graph keeps the batch dimension dynamic
    example = np.zeros((2, int(meta["n_features"])), dtype=np.float32)
    pins = [f"torch=={torch.__version__.split('+')[0]}"]
    mlflow.pytorch.save_model(
        model, str(folder / "model"), input_example=example, pip_requirements=pins
    )
    return folder / "model"


class MlflowTracker:
    """Tracker events (:mod:`ct_sweeps.record.events`) into the MLflow store at ``uri``."""

    def __init__(self, uri: str, run: RunDir, flush_s: float = 30.0, retry_s: float = 60.0):
        self.uri, self.run = uri, run
        self.flush_s, self.retry_s = flush_s, retry_s
        self.failures = 0
        self.seconds = 0.0
        """Time spent in MLflow calls."""
        self.counts = {"created": 0, "metrics": 0, "status": 0, "parent_created": 0}
        self._client: Any = None
        self._down_until = 0.0
        self._ok = True
        self.experiment_id: str | None = None
        self.parent: Any = None
        self.children: dict[str, Any] = {}
        """Setting id -> its run (``mlflow.entities.Run``) or, for a run made here, its id."""
        self._stored: dict[str, set[int] | None] = {}
        self._params: dict[str, dict[str, Any]] = {}
        self._buffer: dict[str, list[tuple[str, float, int]]] = {}
        self._flushed = time.monotonic()
        self._warm = False

    # -- calls that may fail
    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def call(self, what: str, fn: str, *args: Any, **kwargs: Any) -> Any:
        """``MlflowClient.<fn>(*args, **kwargs)``, or ``None`` if it failed (logged once)."""
        self._ok = False
        if time.monotonic() < self._down_until:
            return None
        t0 = time.perf_counter()
        try:
            out = getattr(self.client, fn)(*args, **kwargs)
            self._ok = True
            return out
        except Exception as e:  # a tracking outage must never stop the sweep
            self.failures += 1
            self._down_until = time.monotonic() + self.retry_s
            first = str(e).splitlines()[0][:200] if str(e) else ""
            why = f"{type(e).__name__}: {first}"
            log.warning(
                "MLflow %s failed (%s); the sweep goes on, `ct-sweep sync-mlflow` backfills",
                what,
                why,
            )
            return None
        finally:
            self.seconds += time.perf_counter() - t0

    def log_batch(
        self, run_id: str, metrics: Iterable[tuple] = (), params: Mapping | None = None
    ) -> bool:
        """Log in as few calls as MLflow's limits allow (per call at most 100 params and 1000
        entities in all); ``False`` if a call failed."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, step) for k, v, step in metrics]
        ps = [Param(k, _param_str(v)) for k, v in (params or {}).items()]
        ok, first = True, True
        while first or ms or ps:
            p, ps = ps[:100], ps[100:]
            m, ms = ms[: 1000 - len(p)], ms[1000 - len(p) :]
            self.call("log_batch", "log_batch", run_id, metrics=m, params=p)
            ok &= self._ok
            first = False
        return ok

    # -- events
    def handle(self, event: ev.Event) -> None:
        if self.parent is None and not isinstance(event, ev.SweepStarted):
            return  # MLflow was not reachable at the start: `sync-mlflow` backfills
        handlers = {ev.SweepStarted: self._sweep_started, ev.SettingStarted: self._setting_started}
        handlers.update({ev.Metrics: self._metrics, ev.SettingEnded: self._setting_ended})
        handlers.update({ev.Model: self._model, ev.SweepEnded: self._sweep_ended})
        handlers[type(event)](event)  # type: ignore[operator]

    def _sweep_started(self, e: ev.SweepStarted) -> None:
        info, t = self.run.info, self.run.sweep.tracking
        new_sqlite_store(self.uri, wal=t.sqlite_wal)
        name = info.get("experiment_name") or t.experiment or e.name
        exp = self.call("get experiment", "get_experiment_by_name", name)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            art = (e.run_dir / "mlartifacts").as_uri() if is_local(self.uri) else None
            exp_id = self.call("create experiment", "create_experiment", name, art)
        if exp_id is None:
            return
        self.experiment_id = exp_id
        pid = info.get("parent_run_id")
        if pid and info.get("experiment_id") == exp_id and info.get("tracking_uri") == self.uri:
            self.parent = self.call("get parent run", "get_run", pid)
        if self.parent is not None:
            self._adopt_children()
        else:
            tags = {"ct.sweep": e.name, "ct.run_dir": str(e.run_dir)}
            self.parent = self.call(
                "create parent run", "create_run", exp_id, run_name=e.run_dir.name, tags=tags
            )
            if self.parent is None:
                return
            self.counts["parent_created"] = 1
            self.log_batch(self.parent.info.run_id, params=e.params)
            for f in e.files:
                self.call("log artifact", "log_artifact", self.parent.info.run_id, str(f))
        ids = {"experiment_id": exp_id, "parent_run_id": self.parent.info.run_id}
        self.run.save_info(tracking_uri=self.uri, experiment_name=name, **ids)

    def _adopt_children(self) -> None:
        """The child runs an earlier driver made under this parent (one paged search)."""
        token = None
        while True:
            page = self.call(
                "search runs",
                "search_runs",
                [self.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{self.parent.info.run_id}'",
                max_results=1000,
                page_token=token,
            )
            if page is None:
                return
            for r in page:
                uid = r.data.tags.get(TRIAL_TAG)
                if uid and uid not in self.children:
                    self.children[uid] = r
                    self._stored[uid] = None  # read when its first metrics come
            token = getattr(page, "token", None)
            if not token:
                return

    def _run_id(self, uid: str) -> str | None:
        run = self.children.get(uid)
        return run if isinstance(run, str) or run is None else run.info.run_id

    def _setting_started(self, e: ev.SettingStarted) -> None:
        run = self.children.get(e.setting_id)
        if run is not None:
            if not isinstance(run, str) and not run.data.params:
                self._params[e.setting_id] = e.params  # its driver died before the first flush
            return
        tags = {
            PARENT_TAG: self.parent.info.run_id,
            TRIAL_TAG: e.setting_id,
            "ct.sweep": self.run.sweep.name,
            "ct.swept": ",".join(sorted(e.swept)),
        }
        made = self.call("create run", "create_run", self.experiment_id, run_name=e.name, tags=tags)
        if made is not None:
            self.children[e.setting_id] = made.info.run_id
            self._params[e.setting_id] = e.params  # logged with its first metrics
            self.counts["created"] += 1

    def _metrics(self, e: ev.Metrics) -> None:
        rid = self._run_id(e.setting_id)
        if rid is None:
            return
        if self._stored.get(e.setting_id, set()) is None:  # a run found, not made here
            got = self.call("read metric history", "get_metric_history", rid, "loss")
            if got is None:
                return  # not knowing what it holds, log nothing: `sync-mlflow` fills it in
            self._stored[e.setting_id] = {int(m.step) for m in got}
        if e.step not in self._stored.get(e.setting_id, ()):
            self._buffer.setdefault(e.setting_id, []).extend(
                (k, v, e.step) for k, v in e.values.items()
            )
        if time.monotonic() - self._flushed >= self.flush_s:
            self.flush()

    def flush(self, uids: Iterable[str] | None = None) -> None:
        """Send the pending params and metrics (of ``uids``; all by default)."""
        if uids is None:
            self._flushed = time.monotonic()
            uids = set(self._buffer) | set(self._params)
        for uid in list(uids):
            rid = self._run_id(uid)
            metrics = self._buffer.get(uid) or []
            if rid is None or not (metrics or uid in self._params):
                continue
            if self.log_batch(rid, metrics=metrics, params=self._params.get(uid)):
                self.counts["metrics"] += len(metrics)
                self._buffer.pop(uid, None)
                self._params.pop(uid, None)

    def _setting_ended(self, e: ev.SettingEnded) -> None:
        self.flush([e.setting_id])
        rid, run = self._run_id(e.setting_id), self.children.get(e.setting_id)
        if rid is None or (not isinstance(run, str) and run.info.status == e.status):
            return
        if e.reason:
            self.call("tag error", "set_tag", rid, "ct.error", e.reason)
        if e.model_file is not None and not self._warm:
            self._warm_up(e.model_file)
        if e.model_file is not None:  # the raw file, as checkpoint/model.pt
            with tempfile.TemporaryDirectory(prefix="ct-model-") as d:
                shutil.copyfile(e.model_file, Path(d) / "model.pt")
                self.call(
                    "log model file", "log_artifact", rid, str(Path(d) / "model.pt"), "checkpoint"
                )
        self.call("end run", "set_terminated", rid, e.status)
        if self._ok:
            self.counts["status"] += 1

    def _warm_up(self, model_file: Path) -> None:
        """The first MLflow model a process saves takes seconds (``torch.export``'s imports):
        pay them when the first setting ends, while others still train, not after the last."""
        self._warm = True
        with tempfile.TemporaryDirectory(prefix="ct-mlflow-") as d:
            try:
                save_mlflow_model(model_file, Path(d))
            except Exception:  # reported when a model is saved for real
                pass

    def _model(self, e: ev.Model) -> None:
        rid, run = self._run_id(e.setting_id), self.children.get(e.setting_id)
        if rid is None or (not isinstance(run, str) and run.data.tags.get(MODEL_TAG)):
            return
        t0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="ct-mlflow-") as d:
                local = save_mlflow_model(e.model_file, Path(d))
                self.seconds += time.perf_counter() - t0
                self.call("log model", "log_artifacts", rid, str(local), "model")
        except Exception as err:  # the raw model file is in the run directory either way
            self.failures += 1
            log.warning(
                "MLflow model of %s not saved (%s: %s)", e.setting_id, type(err).__name__, err
            )
            return
        self.call("tag model", "set_tag", rid, MODEL_TAG, "mlflow")

    def _sweep_ended(self, e: ev.SweepEnded) -> None:
        self.flush()
        pid = self.parent.info.run_id
        if not (self.counts["parent_created"] or self.parent.info.status != "FINISHED"):
            return  # a parent an earlier sweep or backfill already ended
        for f in e.files:
            self.call("log results", "log_artifact", pid, str(f))
        for f in e.plots:
            self.call("log plot", "log_artifact", pid, str(f), "plots")
        if e.metrics:
            self.log_batch(pid, metrics=[(k, v, 0) for k, v in e.metrics.items()])
        self.call("end parent run", "set_terminated", pid, e.status)
        checkpoint(self.uri)
