"""A sweep's run directory: where it is, and what ``run.json`` and ``sweep.yaml`` say about it."""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ct_core.config import ConfigError
from ct_sweeps.plan.packing import PACKS_FILE, PackBook, load_book
from ct_sweeps.plan.schema import SweepConfig, parse_sweep
from ct_sweeps.plan.space import Space, parse_space

__all__ = ["RUN_FILE", "SWEEP_FILE", "RunDir", "default_run_dir", "in_ray_job"]

RUN_FILE = "run.json"
SWEEP_FILE = "sweep.yaml"
_INFO_LOCK = threading.Lock()


def in_ray_job() -> bool:
    """Whether this process is the entrypoint of a ``ray job submit``."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def default_run_dir(name: str, storage: str | None) -> Path:
    """``storage``, else ``$CT_RUNS_DIR/<name>-<timestamp>`` (default ``./ct_runs``; under a
    Ray job, whose working directory is a temporary copy, ``~/ct_runs``)."""
    if storage:
        return Path(storage).expanduser().resolve()
    root = os.environ.get("CT_RUNS_DIR")
    if not root:
        root = str(Path.home() / "ct_runs") if in_ray_job() else "ct_runs"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (Path(root) / f"{name}-{stamp}").resolve()


@dataclass
class RunDir:
    """A sweep's run directory and what ``run.json`` / ``sweep.yaml`` say about it."""

    path: Path
    info: dict[str, Any]
    sweep: SweepConfig
    base: dict[str, Any]
    space: Space

    @property
    def experiment_path(self) -> Path:
        """Ray Tune's experiment folder (``tune/``)."""
        return self.path / self.info["experiment"]

    def book(self) -> PackBook | None:
        """The packs of a grid/random sweep (``packs.json``), ``None`` for Optuna."""
        path = self.path / PACKS_FILE
        return load_book(path) if path.exists() else None

    @classmethod
    def load(cls, path: str | Path) -> RunDir:
        p = Path(path).resolve()
        if not (p / RUN_FILE).is_file() or not (p / SWEEP_FILE).is_file():
            raise ConfigError(
                f"{p}: not a sweep run directory (no {RUN_FILE} / {SWEEP_FILE}); "
                "pass the directory that `ct-sweep run` printed"
            )
        info = json.loads((p / RUN_FILE).read_text())
        sweep = parse_sweep(yaml.safe_load((p / SWEEP_FILE).read_text()))
        assert isinstance(sweep.base, dict)
        space = parse_space(sweep.space, sweep.search.algorithm)
        return cls(p, info, sweep, dict(sweep.base), space)

    def save_info(self, **updates: Any) -> None:
        """Update ``run.json`` atomically (the tracking thread writes it too)."""
        with _INFO_LOCK:
            self.info.update(updates)
            tmp = self.path / f".{RUN_FILE}.tmp"
            tmp.write_text(json.dumps(self.info, indent=2))
            os.replace(tmp, self.path / RUN_FILE)
