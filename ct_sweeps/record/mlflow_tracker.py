"""The MLflow tracker: one parent run per sweep, one child run per setting, from the driver.

Workers never talk to the store, and an outage never fails a trial: a failed call is reported,
the store is left alone for ``retry_s`` seconds, and ``ct-sweep sync-mlflow`` backfills later.
Child runs carry the tag ``ct.trial_id`` (the setting's id), so a resumed sweep or a backfill
finds the runs an earlier driver made and adds only what they lack. Metrics are batched: a
setting's params go with its first metrics, and what is pending goes to the store every
``flush_s`` seconds (one ``log_batch`` per setting) and at a setting's end.

A run holds each step of each metric once, whatever a driver replays or a trial reports again:
the tracker knows which steps each run holds (for a run it made, those it sent; for a run an
earlier driver made, or after a call that failed, which the store may have taken all the same,
it reads them from the store first) and never sends a step again. One ``log_batch`` call holds
whole steps, so the store holds either every value of a step or none, and one metric of each
group of values sent together (:func:`_mark`) tells which steps a run holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ct_sweeps.plan import RunDir
from ct_sweeps.record import events as ev
from ct_sweeps.record.store import checkpoint, is_local, new_sqlite_store

__all__ = ["MlflowTracker", "runs_link", "save_mlflow_model"]

log = logging.getLogger("ct_sweeps.record")

TRIAL_TAG = "ct.trial_id"
PARENT_TAG = "mlflow.parentRunId"
MODEL_TAG = "ct.model"
KIND_TAG = "mlflow.experimentKind"
"""What the MLflow UI takes an experiment for (docs/ecosystem.md, "MLflow")."""
VIEW_TAG = "mlflow.sharedViewState."
"""A saved view of the experiment's runs table, listed under the UI's "Views"."""
CF_COLUMNS = ("val_implausibility", "val_cost", "val_validity", "val_mmd", "val_acc")


def runs_link(base: str, experiment_id: str, view: str | None = None) -> str:
    """The address of an experiment's runs table in the MLflow UI at ``base``, in the UI's
    model-training view, with the saved view ``view`` (docs/ecosystem.md, "MLflow")."""
    query = (f"viewStateShareKey={view}&" if view else "") + "workflowType=machine_learning"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def save_mlflow_model(model_file: Path, folder: Path, mlflow_model: Any = None) -> Path:
    """A model file (``ct_core.models.save_model``) as an MLflow PyTorch model in
    ``folder/model`` (``mlflow.pytorch.load_model`` reads it back as an ``nn.Module``), with a
    signature inferred from an input example; ``mlflow_model``: the ``mlflow.models.Model`` of
    the logged model it becomes."""
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
        model,
        str(folder / "model"),
        mlflow_model=mlflow_model,
        input_example=example,
        pip_requirements=pins,
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
        self._stored: dict[str, dict[str, set[int]]] = {}
        """Setting id -> the steps its run holds, by the mark of the values (:func:`_mark`)."""
        self._sure: set[str] = set()
        """Settings whose ``_stored`` is all their run holds; for the others a mark not in it
        is read from the store before values with that mark are sent."""
        self._params: dict[str, dict[str, Any]] = {}
        self._buffer: dict[str, list[tuple[int, dict[str, float]]]] = {}
        self._flushed = time.monotonic()
        self._warm = False
        self._model_ids: dict[str, str] = {}

    # -- calls that may fail
    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
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
        """``MlflowClient.log_batch`` (which splits a batch into calls within MLflow's limits:
        100 params and 1000 values a call); ``False`` if it failed."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, step) for k, v, step in metrics]
        ps = [Param(k, _param_str(v)) for k, v in (params or {}).items()]
        self.call("log_batch", "log_batch", run_id, metrics=ms, params=ps)
        return self._ok

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
        kind = {KIND_TAG: "custom_model_development"}  # the UI's "Model training"
        if exp is not None:
            exp_id = exp.experiment_id
            if KIND_TAG not in exp.tags:
                self.call("tag experiment", "set_experiment_tag", exp_id, KIND_TAG, kind[KIND_TAG])
        else:
            art = (e.run_dir / "mlartifacts").as_uri() if is_local(self.uri) else None
            exp_id = self.call("create experiment", "create_experiment", name, art, kind)
        if exp_id is None:
            return
        self.experiment_id = exp_id
        self._save_view()
        pid = info.get("parent_run_id")
        if pid and info.get("experiment_id") == exp_id and info.get("tracking_uri") == self.uri:
            self.parent = self.call("get parent run", "get_run", pid)
        if self.parent is not None:
            self._adopt_children()
        else:
            tags = {"ct.sweep": e.name, "ct.run_dir": str(e.run_dir)}
            self.parent = self.call(
                "create parent run", "create_run", exp_id, run_name=e.name, tags=tags
            )
            if self.parent is None:
                return
            self.counts["parent_created"] = 1
            self.log_batch(self.parent.info.run_id, params=e.params)
            for f in e.files:
                self.call("log artifact", "log_artifact", self.parent.info.run_id, str(f))
        ids = {"experiment_id": exp_id, "parent_run_id": self.parent.info.run_id}
        self.run.save_info(tracking_uri=self.uri, experiment_name=name, **ids)

    def _save_view(self) -> None:
        """The view "ct: <metric>": the runs table sorted by the search metric, with the
        counterfactual metrics and the swept parameters as columns (the MLflow UI's own saved
        views are experiment tags of this form: docs/ecosystem.md, "MLflow")."""
        s = self.run.sweep.search
        metrics = list(dict.fromkeys([*s.metrics, *CF_COLUMNS]))
        columns = ["attributes.`Models`"]
        columns += [f"metrics.`{m}`" for m in metrics] + [
            f"params.`{e.key}`" for e in self.run.space.entries
        ]
        state = {"orderByKey": f"metrics.`{s.metrics[0]}`", "orderByAsc": s.modes[0] == "min"}
        state.update(selectedColumns=columns, searchFilter="", lifecycleFilter="Active")
        now = int(time.time() * 1000)
        body = {"name": f"ct: {s.metrics[0]}", "createdAt": now, "updatedAt": now}
        key = "ct-" + re.sub(r"[^A-Za-z0-9]", "-", s.metrics[0])
        value = json.dumps({**body, "state": json.dumps(state)})
        self.call("save view", "set_experiment_tag", self.experiment_id, VIEW_TAG + key, value)
        self.run.save_info(view=key)

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
                    self._stored[uid] = {}  # read before its first metrics are sent
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
            self._stored[e.setting_id] = {}
            self._sure.add(e.setting_id)
            self.counts["created"] += 1
            self.call("log dataset", "log_inputs", made.info.run_id, [_dataset(e.params)])

    def _metrics(self, e: ev.Metrics) -> None:
        if self._run_id(e.setting_id) is None:
            return
        self._buffer.setdefault(e.setting_id, []).append((e.step, dict(e.values)))
        if time.monotonic() - self._flushed >= self.flush_s:
            self.flush()

    def flush(self, uids: Iterable[str] | None = None) -> None:
        """Send the pending params and metrics (of ``uids``; all by default)."""
        if uids is None:
            self._flushed = time.monotonic()
            uids = set(self._buffer) | set(self._params)
        for uid in list(uids):
            rid = self._run_id(uid)
            if rid is not None and (self._buffer.get(uid) or uid in self._params):
                self._flush_one(uid, rid)

    def _flush_one(self, uid: str, rid: str) -> None:
        """Send the setting's pending steps that its run does not hold, whole steps per call; a
        failed call leaves the rest pending and what the run holds to be read again."""
        pending = self._buffer.get(uid) or []
        held = self._holds(uid, rid, {_mark(v) for _, v in pending})
        if held is None:
            return  # not knowing what it holds, send nothing: later, or `sync-mlflow`
        todo: dict[tuple[str, int], tuple[int, dict[str, float]]] = {}
        for step, values in pending:  # the last values of a step reported twice
            if step not in held.get(_mark(values), ()):
                todo[(_mark(values), step)] = (step, values)
        left, params = list(todo.values()), self._params.get(uid)
        while left or params is not None:
            room = 1000 - min(100, len(params or ()))  # the metrics of log_batch's first call
            batch: list[tuple[int, dict[str, float]]] = []
            while left and (not batch or room >= len(left[0][1])):
                room -= len(left[0][1])
                batch.append(left.pop(0))
            metrics = [(k, v, step) for step, values in batch for k, v in values.items()]
            if not self.log_batch(rid, metrics=metrics, params=params):
                self._buffer[uid] = batch + left
                self._stored[uid] = {}  # the store may have taken the batch all the same
                self._sure.discard(uid)
                return
            for step, values in batch:
                held.setdefault(_mark(values), set()).add(step)
            self.counts["metrics"] += len(metrics)
            self._params.pop(uid, None)
            params = None
        self._buffer.pop(uid, None)

    def _holds(self, uid: str, rid: str, marks: set[str]) -> dict[str, set[int]] | None:
        """The steps the setting's run holds by mark, read from the store where not known
        (``None``: a read failed)."""
        held = self._stored.setdefault(uid, {})
        if uid in self._sure:
            return held
        for mark in sorted(marks - set(held)):
            got = self.call("read metric history", "get_metric_history", rid, mark)
            if got is None:
                return None
            held[mark] = {int(m.step) for m in got}
        return held

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
        """The setting's model as an MLflow logged model, an output of its run (the UI's model
        columns), and its plots in the run's ``plots/``."""
        from mlflow.entities import LoggedModelOutput
        from mlflow.models import Model

        rid, run = self._run_id(e.setting_id), self.children.get(e.setting_id)
        if rid is None or (not isinstance(run, str) and run.data.tags.get(MODEL_TAG)):
            return
        for f in e.plots:
            self.call("log plot", "log_artifact", rid, str(f), "plots")
        made = self.call("create model", "create_logged_model", self.experiment_id, "model", rid)
        if made is None:
            return
        mid, t0 = made.model_id, time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="ct-mlflow-") as d:
                meta = Model(made.artifact_location, rid, model_uuid=mid, model_id=mid)
                local = save_mlflow_model(e.model_file, Path(d), meta)
                self.seconds += time.perf_counter() - t0
                self.call("log model", "log_model_artifacts", mid, str(local))
        except Exception as err:  # the raw model file is in the run directory either way
            self.failures += 1
            log.warning(
                "MLflow model of %s not saved (%s: %s)", e.setting_id, type(err).__name__, err
            )
            self.call("finalize model", "finalize_logged_model", mid, "FAILED")
            return
        self.call("link model", "log_outputs", rid, [LoggedModelOutput(mid, 0)])
        self.call("finalize model", "finalize_logged_model", mid, "READY")
        self.call("tag model", "set_tag", rid, MODEL_TAG, mid)
        self._model_ids[e.setting_id] = mid

    def _register(self, name: str, uid: str, metrics: Mapping[str, float]) -> None:
        """The setting's logged model as a new version of registered model ``name``, with the
        alias ``best``."""
        rid, mid = self._run_id(uid), self._model_ids.get(uid)
        if mid is None and rid is not None:  # logged by an earlier driver of this sweep
            got = self.call("read run", "get_run", rid)
            mid = got.data.tags.get(MODEL_TAG) if got is not None else None
        model = (
            self.call("read model", "get_logged_model", mid)
            if mid not in (None, "mlflow")
            else None
        )
        if model is None:
            return
        found = self.call("find model", "search_registered_models", f"name = '{name}'")
        if found is not None and not found:
            what = f"The best setting of each ct sweep {self.run.sweep.name!r} (alias: best)"
            self.call("register model", "create_registered_model", name, description=what)
        tags = {"ct.sweep": self.run.sweep.name, "ct.run_dir": str(self.run.path), TRIAL_TAG: uid}
        tags.update({k: str(v) for k, v in metrics.items()})
        # the source is the logged model's location, not models:/<id>, which MLflow's local
        # registry looks up in the process's default store rather than this client's
        version = self.call(
            "add model version",
            "create_model_version",
            name,
            model.artifact_location,
            rid,
            tags,
            model_id=mid,
        )
        if version is not None:
            self.call("alias model", "set_registered_model_alias", name, "best", version.version)
            self.run.save_info(registered_model=name, registered_version=version.version)

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
        if e.register and e.best and e.status != "KILLED":
            self._register(e.register, e.best, e.metrics)
        self.call("end parent run", "set_terminated", pid, e.status)
        checkpoint(self.uri)


def _mark(values: Mapping[str, float]) -> str:
    """The metric that says whether a run holds a group of values sent together at one step:
    ``loss`` for an epoch's metrics, ``train_seconds`` for a setting's totals at its end."""
    for key in ("loss", "train_seconds"):
        if key in values:
            return key
    return min(values)


def _dataset(params: Mapping[str, Any]) -> Any:
    """The training data of a setting as an MLflow dataset input: named by the data set (or
    the file), its digest that of its ``data.*`` config (which fixes the split: the loaders are
    seeded), its source the file or the config."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    data = {k[5:]: v for k, v in params.items() if k.startswith("data.")}
    text = json.dumps(data, sort_keys=True, default=str)
    path = data.get("path")
    name = Path(path).name if path else str(data.get("name"))
    kind, source = ("local", {"uri": str(path)}) if path else ("ct", {"data": data})
    ds = Dataset(
        name,
        hashlib.sha256(text.encode()).hexdigest()[:12],
        kind,
        json.dumps(source, default=str),
        profile=text,
    )
    return DatasetInput(ds, [InputTag("mlflow.data.context", "training")])
