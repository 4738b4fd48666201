"""Small Tune callbacks of the sweep driver (MLflow's is :class:`ct_sweeps.tracking.MlflowSweepCallback`)."""

from __future__ import annotations

import threading
from typing import Any

from ray.tune import Callback

from ct_sweeps.report import prepare_plots

__all__ = ["PrepareReport"]


class PrepareReport(Callback):
    """Imports the report's plotting library when the first trial ends, while the others
    still train: half a second less between the last trial and the report."""

    def __init__(self) -> None:
        self.started = False

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.started:
            self.started = True
            threading.Thread(target=prepare_plots, name="ct-prepare", daemon=True).start()
