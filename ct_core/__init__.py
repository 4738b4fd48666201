"""ct_core: Counterfactual Training in PyTorch (no Ray, no MLflow).

The Python API is documented in docs/python-api.md (``ct_core.load_config``, ``ct_core.train``),
the modules and their contracts in docs/architecture.md; ``ct train`` / ``ct evaluate`` /
``ct compare`` are in :mod:`ct_core.cli`. Importing ``ct_core`` loads neither torch nor the data
stack: the names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "ct_core.config",
    "ConfigError": "ct_core.config",
    "load_config": "ct_core.config",
    "TrainResult": "ct_core.api",
    "train": "ct_core.api",
    "compare": "ct_core.api",
    "explain": "ct_core.explanation",
    "PackTrainer": "ct_core.training",
    "Trainer": "ct_core.training",
    "register_generator": "ct_core.generators",
    "load_dataset": "ct_core.data",
    "load_model": "ct_core.models",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ct_core' has no attribute {name!r}")
