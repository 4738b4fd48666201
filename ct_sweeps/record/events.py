"""What a sweep tells its tracker: ``SweepStarted``; per setting ``SettingStarted``, ``Metrics``
at its logged epochs, ``SettingEnded``; ``Model`` for settings whose models are kept (the best,
once known); ``SweepEnded``. A live sweep, the reconciliation of a resumed one and ``ct-sweep
sync-mlflow`` make the same stream (:class:`~ct_sweeps.record.stream.Stream`). A tracker must
take events it has already recorded (a resumed sweep replays what the killed driver may have
logged) and never raise for an unreachable store (the sweep goes on; ``sync-mlflow`` backfills).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Event", "Metrics", "Model", "SettingEnded", "SettingStarted", "SweepEnded"]
__all__ += ["SweepStarted", "Tracker"]


@dataclass(frozen=True)
class SweepStarted:
    name: str
    run_dir: Path
    params: dict[str, Any]
    """The sweep's own parameters (``search.*``, ``resources.*``)."""
    files: tuple[Path, ...] = ()
    """``sweep.yaml`` and the search space."""


@dataclass(frozen=True)
class SettingStarted:
    setting_id: str
    name: str
    """Unique within the sweep, from what it sweeps (:mod:`ct_sweeps.record.labels`)."""
    params: dict[str, Any]
    """The resolved training parameters that apply to the setting, by dotted path."""
    swept: dict[str, Any]
    """What the sweep sets for this setting (its point in the space)."""


@dataclass(frozen=True)
class Metrics:
    setting_id: str
    step: int
    """The epoch."""
    values: dict[str, float]


@dataclass(frozen=True)
class SettingEnded:
    setting_id: str
    status: str
    """``FINISHED`` or ``FAILED``."""
    reason: str = ""
    model_file: Path | None = None
    """The setting's final model file (``ct_core.models.save_model``), if it is kept."""


@dataclass(frozen=True)
class Model:
    """Keep a setting's final model as a model the tracker serves (an MLflow model)."""

    setting_id: str
    model_file: Path
    plots: tuple[Path, ...] = ()
    """The setting's plots (learning curves; the Figure-1 panel for 2-D data)."""


@dataclass(frozen=True)
class SweepEnded:
    status: str
    """``FINISHED``, ``FAILED`` or ``KILLED`` (interrupted)."""
    files: tuple[Path, ...] = ()
    """The report: ``results.csv``, ``best_config.yaml``, ``pareto.csv``."""
    plots: tuple[Path, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    best: str | None = None
    """The best setting, if its model was kept."""
    register: str | None = None
    """The registered model that the best setting's model becomes a version of (alias ``best``)."""


Event = SweepStarted | SettingStarted | Metrics | SettingEnded | Model | SweepEnded


class Tracker(Protocol):
    """Where a sweep's events go (:class:`~ct_sweeps.record.mlflow_tracker.MlflowTracker`)."""

    failures: int
    """Calls to the store that failed (0: everything reached it)."""

    def handle(self, event: Event) -> None:
        """Record one event (batching is the tracker's choice; :meth:`flush` sends it)."""

    def flush(self) -> None:
        """Send everything batched so far."""
