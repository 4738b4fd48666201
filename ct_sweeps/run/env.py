"""Process environment for Ray and MLflow, set before either is imported.

Each default is a pitfall measured in docs/ecosystem-notes.md (§7): no usage stats or telemetry,
Ray bound to loopback, token auth decided explicitly, no checkpoint-sync warning spam. A value the
user already exported always wins. Also here: where a run's MLflow store is, resolved without
importing Ray or MLflow (the driver starts the MLflow set-up before Ray).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # validation-set counterfactual metrics arrive every k-th epoch only (train.eval_every);
    # the trainable carries the last value forward, Tune must not reject the epochs before it.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # results go to result.json (runner adds Tune's JSON logger) and MLflow; Tune's default CSV
    # and TensorBoard loggers cost the driver CPU on every result (a pack's report is large)
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # an unreachable tracking server should cost seconds, not minutes of retries (the driver
    # skips MLflow for a while after a failure; `ct-sweep sync-mlflow` backfills later)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def set_defaults(address: str | None = None) -> None:
    """Export the defaults (``setdefault``) and pick ``RAY_AUTH_MODE``.

    An embedded local Ray on loopback runs without token auth (``disabled``); joining a cluster
    with ``--address`` sends the token (``token``), because a client with auth disabled cannot
    talk to a token-enabled head (notes §3.2). Inside a Ray job (``RAY_ADDRESS`` set by the job
    supervisor) the driver keeps the environment the cluster gave it.
    """
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)
    if address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    elif not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def default_tracking_uri(run_dir: str | Path) -> str:
    """The local store of a run: ``sqlite:///RUN_DIR/mlflow.db``."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cli: str | None, sweep: str | None, run_dir: str | Path) -> str:
    """``--tracking-uri`` > the sweep's ``tracking.uri`` > ``$MLFLOW_TRACKING_URI`` > local."""
    return cli or sweep or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(run_dir)
