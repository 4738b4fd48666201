"""MLflow as a source of initial weights for fine-tuning (``ct train --init``, a sweep's
``init:``): ``runs:/<run_id>/<path>`` and ``models:/<name>@<alias>`` (or ``/<version>``).

ct_core finds :func:`load` through the ``ct.model_sources`` entry points that ``pyproject.toml``
declares (``ct_core.sources``), so that ct_core imports no MLflow. The store is MLflow's own
choice: ``MLFLOW_TRACKING_URI`` (and ``MLFLOW_REGISTRY_URI``), or ``mlflow.set_tracking_uri`` in
the calling process.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load"]


def load(uri: str) -> Any:
    """The PyTorch module MLflow logged at ``uri`` (``mlflow.pytorch.load_model``, on the CPU)."""
    import mlflow.pytorch

    return mlflow.pytorch.load_model(uri, map_location="cpu")
