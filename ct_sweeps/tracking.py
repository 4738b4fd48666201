"""MLflow tracking from the driver: one parent run per sweep, one child run per trial.

All logging happens in the Tune driver (a :class:`ray.tune.Callback`), batched per trial, so
workers never need the tracking store and a tracking outage never fails a trial: a failed call is
reported once and skipped, and ``ct-sweep sync-mlflow RUN_DIR`` later backfills from Ray's own
results (the source of truth). Child runs carry the tag ``ct.trial_id`` and ``ct.last_step`` so
that backfilling is idempotent.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ct_sweeps.trainable import CF_METRICS, MODEL_FILE, TrialSpec, trial_params

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
}


def default_tracking_uri(run_dir: str | Path) -> str:
    """The local store of a run: ``sqlite:///RUN_DIR/mlflow.db``."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cli: str | None, sweep: str | None, run_dir: str | Path) -> str:
    """``--tracking-uri`` > the sweep's ``tracking.uri`` > ``$MLFLOW_TRACKING_URI`` > local."""
    import os

    return cli or sweep or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(run_dir)


def metrics_of(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics of one Tune result worth logging (CF metrics only where computed)."""
    out: dict[str, float] = {}
    fresh = result.get("eval_epoch") == result.get("epoch")
    for k, v in result.items():
        if k in _SKIP or isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if k in CF_METRICS and not fresh:
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

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def call(self, what: str, fn: str, *args: Any, **kwargs: Any) -> Any:
        self.last_ok = False
        if time.monotonic() < self._down_until:
            return None
        t0 = time.perf_counter()
        try:
            out = getattr(self.client, fn)(*args, **kwargs)
            self.last_ok = True
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

    def log_batch(
        self,
        run_id: str,
        metrics: Iterable[tuple[str, float, int]] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> bool:
        """Log in chunks within MLflow's batch limits; ``False`` if any call failed."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, step) for k, v, step in metrics]
        ps = [Param(k, _param_str(v)) for k, v in (params or {}).items()]
        ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        ok = True
        chunks = max(-(-len(ms) // 900), -(-len(ps) // 100), 1)
        for c in range(chunks):
            self.call(
                "log_batch",
                "log_batch",
                run_id,
                metrics=ms[c * 900 : (c + 1) * 900],
                params=ps[c * 100 : (c + 1) * 100],
                tags=ts if c == 0 else [],
            )
            ok &= self.last_ok
        return ok


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def child_params(spec: TrialSpec, config: Mapping[str, Any], cpus: float) -> dict[str, Any]:
    """Every resolved training parameter of a trial, flattened with dotted keys."""
    from ct_sweeps.space import trial_config

    return trial_config(spec.base, trial_params(spec, config, cpus)).flat()


def log_model(tracker: Tracker, run_id: str, model_path: Path) -> None:
    """Log a trial's final model: the raw ``checkpoint/model.pt`` and an MLflow PyTorch model
    under ``model/`` (``mlflow.pytorch.load_model("runs:/<id>/model")``).

    The model is saved locally and uploaded with the client, so no global MLflow state (active
    run, tracking URI) is touched in the driver.
    """
    import tempfile

    import mlflow.pytorch
    import numpy as np
    import torch

    from ct_core.models import load_model

    tracker.call("log model file", "log_artifact", run_id, str(model_path), "checkpoint")
    t0 = time.perf_counter()
    try:
        model, _ = load_model(model_path)
        meta = torch.load(model_path, map_location="cpu", weights_only=True).get("meta", {})
        # two rows, so that the exported graph keeps the batch dimension dynamic
        example = np.zeros((2, int(meta["n_features"])), dtype=np.float32)
        with tempfile.TemporaryDirectory(prefix="ct-mlflow-") as d:
            mlflow.pytorch.save_model(
                model,
                str(Path(d) / "model"),
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )
            t1 = time.perf_counter()
            tracker.call("log model", "log_artifacts", run_id, str(Path(d) / "model"), "model")
            t0 += time.perf_counter() - t1  # counted by tracker.call already
    except Exception as e:
        log.warning("MLflow model logging for run %s failed: %s", run_id, e)
    tracker.seconds += time.perf_counter() - t0


class MlflowSweepCallback(Callback):
    """Driver-side logging: params at trial start, metrics batched per trial (every
    ``flush_s`` seconds and at the end), the final model, the status."""

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        parent_run_id: str,
        spec: TrialSpec,
        sweep_name: str,
        cpus: float = 1.0,
        flush_s: float = 15.0,
        log_models: bool = True,
    ):
        self.uri = uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.spec = spec
        self.sweep_name = sweep_name
        self.cpus = cpus
        self.flush_s = flush_s
        self.log_models = log_models
        self.children: dict[str, str] = {}
        self.steps: dict[str, int] = {}
        self._buffer: dict[str, list[tuple[str, float, int]]] = {}
        self._flushed: dict[str, float] = {}
        self._tracker: Tracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_tracker"] = None
        d["_buffer"] = {}
        return d

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.uri)
        return self._tracker

    # -- state kept in Tune's experiment snapshots (restored by `ct-sweep resume`)
    def get_state(self) -> dict[str, Any]:
        return {"children": dict(self.children), "steps": dict(self.steps)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.children.update(state.get("children", {}))
        self.steps.update(state.get("steps", {}))

    # -- Tune hooks
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._child(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        if step <= self.steps.get(trial.trial_id, 0):
            return
        buf = self._buffer.setdefault(trial.trial_id, [])
        buf.extend((k, v, step) for k, v in metrics_of(result).items())
        if time.monotonic() - self._flushed.get(trial.trial_id, 0.0) > self.flush_s:
            self._flush(trial)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for t in trials:
            if self._buffer.get(t.trial_id):
                self._flush(t)

    # -- helpers
    def _child(self, trial: Any) -> str | None:
        tid = trial.trial_id
        if tid in self.children:
            return self.children[tid]
        tr = self.tracker
        existing = tr.find_child(self.experiment_id, tid)
        if existing is not None:
            self.children[tid] = existing.info.run_id
            self.steps[tid] = int(float(existing.data.tags.get(STEP_TAG, 0)))
            return self.children[tid]
        tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: tid, SWEEP_TAG: self.sweep_name}
        run = tr.call(
            "create run", "create_run", self.experiment_id, run_name=str(trial), tags=tags
        )
        if run is None:
            return None
        rid = run.info.run_id
        self.children[tid] = rid
        params = child_params(self.spec, trial.config, self.cpus)
        swept = sorted(self.spec.space.resolve(trial.config))
        tr.log_batch(rid, params=params, tags={"ct.swept": ",".join(swept)})
        return rid

    def _flush(self, trial: Any) -> None:
        tid = trial.trial_id
        rid = self._child(trial)
        buf = self._buffer.get(tid) or []
        if rid is None or not buf:
            return
        last = max(step for _, _, step in buf)
        if self.tracker.log_batch(rid, metrics=buf, tags={STEP_TAG: str(last)}):
            self.steps[tid] = last
            self._buffer[tid] = []
        self._flushed[tid] = time.monotonic()

    def _finish(self, trial: Any, status: str) -> None:
        self._flush(trial)
        rid = self.children.get(trial.trial_id)
        if rid is None:
            return
        tr = self.tracker
        if status == "FAILED":
            reason = error_reason(trial)
            if reason:
                tr.call("tag error", "set_tag", rid, "ct.error", reason[:5000])
        elif self.log_models:
            path = final_model_path(trial)
            if path is not None:
                log_model(tr, rid, path)
        tr.call("end run", "set_terminated", rid, status)


def final_model_path(trial: Any) -> Path | None:
    """``model.pt`` of a trial's latest checkpoint, if it holds one."""
    ckpt = getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)
    latest = getattr(ckpt, "latest_checkpoint_result", None) if ckpt else None
    path = getattr(getattr(latest, "checkpoint", None), "path", None)
    if path and (Path(path) / MODEL_FILE).exists():
        return Path(path) / MODEL_FILE
    local = getattr(trial, "path", None)
    if local:
        found = sorted(Path(local).glob(f"checkpoint_*/{MODEL_FILE}"))
        if found:
            return found[-1]
    return None


def error_reason(trial: Any) -> str:
    """The last line of a failed trial's traceback (the exception and its message)."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ":" in ln and not ln.startswith(("File ", "^")):
            return ln
    return lines[-1] if lines else ""


def sync(run: Any, records: Iterable[Any], uri: str | None = None) -> dict[str, int]:
    """Backfill MLflow from Ray's results (``ct-sweep sync-mlflow``): create missing child runs,
    log the epochs after each run's ``ct.last_step``, set statuses. Idempotent."""
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
    cpus = run.sweep.resources.cpu
    for rec in records:
        child = tr.find_child(exp_id, rec.trial_id)
        last = 0
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
                params=child_params(spec, rec.config, cpus),
                tags={"ct.swept": ",".join(sorted(rec.params))},
            )
            counts["created"] += 1
            status_now = "RUNNING"
        else:
            rid = child.info.run_id
            last = int(float(child.data.tags.get(STEP_TAG, 0)))
            status_now = child.info.status
        rows = []
        for result in rec.history():
            step = int(result.get("epoch", result.get("training_iteration", 0)))
            if step > last:
                rows.extend((k, v, step) for k, v in metrics_of(result).items())
        if rows:
            top = max(s for _, _, s in rows)
            if tr.log_batch(rid, metrics=rows, tags={STEP_TAG: str(top)}):
                counts["metrics"] += len(rows)
        want = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}.get(rec.status)
        if want and status_now != want:
            if want == "FINISHED" and run.sweep.tracking.log_model and rec.path is not None:
                found = sorted(rec.path.glob(f"checkpoint_*/{MODEL_FILE}"))
                if found:
                    log_model(tr, rid, found[-1])
            if want == "FAILED" and rec.error:
                tr.call("tag error", "set_tag", rid, "ct.error", rec.error[:5000])
            tr.call("set status", "set_terminated", rid, want)
            counts["status"] += 1
    terminal = bool(records) and all(r.status in ("TERMINATED", "ERROR") for r in records)
    if terminal and parent.info.status != "FINISHED":
        from ct_sweeps.report import write_report
        from ct_sweeps.runner import _log_parent_outputs

        _log_parent_outputs(run, write_report(run, records=records), "FINISHED")
        counts["status"] += 1
    if tr.failures:
        raise RuntimeError(f"{tr.failures} MLflow calls failed against {uri}")
    return counts
