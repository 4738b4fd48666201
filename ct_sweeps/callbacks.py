"""Small Tune callbacks of the sweep driver (MLflow's is :class:`ct_sweeps.tracking.MlflowSweepCallback`)."""

from __future__ import annotations

import threading
from typing import Any

from ray.tune import Callback

from ct_sweeps.report import prepare_plots

__all__ = ["PrepareReport"]


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
