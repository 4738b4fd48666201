"""Live tracking: Tune's callbacks feed a sweep's tracking :class:`~ct_sweeps.record.stream.Session`.

Tune's event loop calls :class:`TrackingCallback` for every trial start, result and end; the
callback reads what it needs from the trial and hands it to the session's thread, so neither the
loop nor the trials (which wait in ``tune.report`` for the loop) wait on the tracking store.
Tune pickles its callbacks with the experiment and unpickles them on ``ct-sweep resume``: the
callback holds only the run's id (``run.json``) and finds the session this process opened for
that run (:func:`~ct_sweeps.record.stream.session_for`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback

from ct_sweeps.record.stream import session_for
from ct_sweeps.run.results import error_reason

__all__ = ["TrackingCallback"]


class TrackingCallback(Callback):
    """Tune's trial events, handed to the run's :class:`Session` (none: nothing is tracked)."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def _submit(self, fn: str, *args: Any) -> None:
        session = session_for(self.run_id)
        if session is not None:
            session.submit(getattr(session.stream, fn), *args)

    @staticmethod
    def _trial(trial: Any) -> tuple[str, str, dict[str, Any]]:
        return trial.trial_id, str(trial), dict(trial.config)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit("trial_result", *self._trial(trial), {})

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._submit("trial_result", *self._trial(trial), result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit("trial_ended", *self._trial(trial), "", Path(trial.path))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = error_reason(trial) or "error"
        self._submit("trial_ended", *self._trial(trial), reason, Path(trial.path))
