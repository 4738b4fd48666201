"""Small Tune callbacks of the sweep driver (MLflow's is :class:`ct_sweeps.tracking.MlflowSweepCallback`)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import ray.cloudpickle as cloudpickle
from ray.tune import Callback
from ray.tune.logger import JsonLoggerCallback
from ray.tune.utils.util import SafeFallbackEncoder

from ct_sweeps.report import prepare_plots

__all__ = ["PrepareReport", "RunDirJsonLogger"]


class RunDirJsonLogger(JsonLoggerCallback):
    """Tune's JSON logger (``result.json``, ``params.json``/``params.pkl``), writing straight
    into each trial's folder in the run directory.

    Tune's own writes them to the driver's staging folder and copies that whole folder to the
    run directory at every experiment snapshot (every ~10 s and at the end): for the OL grid's
    packs that is up to 13 MB a copy, a second at the end of the sweep, and a ``result.json`` in
    the run directory that lags behind the sweep in between."""

    @staticmethod
    def _folder(trial: Any) -> Path:
        folder = Path(trial.path)  # the trial's folder in the sweep's (local) storage
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_files:
            self._trial_files[trial].close()
        self.update_config(trial, trial.config)
        self._trial_files[trial] = (self._folder(trial) / "result.json").open("a")

    def update_config(self, trial: Any, config: dict) -> None:
        self._trial_configs[trial] = config
        folder = self._folder(trial)
        with (folder / "params.json").open("w") as f:
            json.dump(config, f, indent=2, sort_keys=True, cls=SafeFallbackEncoder)
        with (folder / "params.pkl").open("wb") as f:
            cloudpickle.dump(config, f)


class PrepareReport(Callback):
    """Gets the report ready while the trials still train.

    * imports the plotting library when the first trial ends (half a second less between the
      last trial and the report);
    * keeps each trial's results as Tune's JSON logger writes them to ``result.json``, so that
      the report need not parse them back (13 MB for the OL grid's packs, 0.45 s). Only trials
      seen from their first result in this driver qualify; for the others (a resumed sweep)
      :meth:`results` is ``None`` and the report reads the file."""

    def __init__(self) -> None:
        self.started = False
        self._results: dict[str, list[dict[str, Any]]] = {}
        self._partial: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the tuner: never the results
        return {**self.__dict__, "_results": {}, "_partial": set()}

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        seen = self._results.setdefault(trial.trial_id, [])
        if not seen and result.get("iterations_since_restore") != result.get("training_iteration"):
            self._partial.add(trial.trial_id)  # restored: result.json holds earlier results
        seen.append(result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.started:
            self.started = True
            threading.Thread(target=prepare_plots, name="ct-prepare", daemon=True).start()

    def results(self, trial_id: str) -> list[dict[str, Any]] | None:
        """The trial's results in order, or ``None`` where only ``result.json`` has them all."""
        if trial_id in self._partial or trial_id not in self._results:
            return None
        return self._results[trial_id]
