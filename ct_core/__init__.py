"""ct_core: Counterfactual Training in PyTorch (no Ray, no MLflow).

The Python API (docs/python-api.md)::

    import ct_core

    cfg = ct_core.load_config("configs/base/moons.yaml", overrides=["train.epochs=20"])
    result = ct_core.train(cfg, model=None, callbacks=None)
    result.model, result.history, result.metrics
    result.save("runs/moons")

See docs/architecture.md for the modules and their contracts; ``ct train`` / ``ct evaluate`` /
``ct compare`` are in :mod:`ct_core.cli`. Importing ``ct_core`` loads neither torch nor the data
stack; the names below are loaded on first use.
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


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
