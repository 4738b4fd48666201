"""Process environment for Ray, Tune and MLflow, set before any of them is imported.

Every variable is one their documentation lists; why each is set is in ``docs/ecosystem.md``.
A value the user already exported wins.
"""

from __future__ import annotations

import os

DEFAULTS: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    # Ray's node address: 127.0.0.1, so that every port of a Ray this process starts listens
    # on loopback only (docs/ecosystem.md, "Loopback")
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # validation-set counterfactual metrics arrive every k-th epoch only (train.eval_every):
    # Tune must not reject the results before the first one
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # results go to result.json (run/tune.py: ResultLog) and MLflow; Tune's CSV and
    # TensorBoard loggers would cost the driver CPU on every result
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # an unreachable tracking server costs seconds, not minutes of retries (the tracker then
    # skips MLflow for a while; `ct-sweep sync-mlflow` backfills)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def set_defaults(address: str | None = None) -> None:
    """Export :data:`DEFAULTS` (``setdefault``). Joining a cluster by ``address`` sends a token
    (``RAY_AUTH_MODE=token``): a client with auth disabled cannot talk to a token-enabled head
    (the clusters of ``cluster/`` all use tokens). A Ray the sweep starts itself
    gets its own token (:func:`ct_sweeps.run.cluster.ensure_ray`); inside a Ray job the driver
    keeps the environment the cluster gave it."""
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)
    if address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
