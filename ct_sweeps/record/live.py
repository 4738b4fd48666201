"""Live tracking: Tune's callbacks feed a sweep's :class:`~ct_sweeps.record.stream.Stream`,
which runs on a thread of its own.

Tune's event loop calls :class:`TrackingCallback` for every trial start, result and end; the
callback reads what it needs from the trial and hands it to the :class:`Session`'s thread, so
neither the loop nor the trials (which wait in ``tune.report`` for the loop) ever wait on the
tracking store. Tune pickles its callbacks with the experiment and unpickles them on
``ct-sweep resume``: the callback holds only the run's id (``run.json``), and finds the session
that this process opened for that run (:func:`session_for`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ct_sweeps.record.stream import Stream
from ct_sweeps.run.results import error_reason

__all__ = ["Session", "TrackingCallback", "session_for"]

log = logging.getLogger("ct_sweeps.record")
_SESSIONS: dict[str, Session] = {}


def session_for(run_id: str) -> Session | None:
    """The session this process opened for a run, if any."""
    return _SESSIONS.get(run_id)


class Session:
    """A stream of tracker events and the one thread that produces them, in submission order."""

    def __init__(self, run_id: str, stream: Stream):
        self.stream, self.key = stream, run_id
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ct-tracking")
        self._last: Future | None = None
        _SESSIONS[run_id] = self

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._last = self._pool.submit(_logged, fn, *args)

    def wait(self) -> None:
        """Wait until everything submitted so far is done."""
        if self._last is not None:
            self._last.result()

    def close(self) -> None:
        """Finish the work submitted, then end the thread and the session."""
        self._pool.shutdown(wait=True)
        _SESSIONS.pop(self.key, None)


def _logged(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as e:  # a bug in logging must never stop the sweep
        log.warning("tracking failed (%s: %s)", type(e).__name__, e)


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
        self._submit("trial_started", *self._trial(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._submit("trial_result", *self._trial(trial), result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._submit("trial_ended", *self._trial(trial), "", Path(trial.path))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = error_reason(trial) or "error"
        self._submit("trial_ended", *self._trial(trial), reason, Path(trial.path))
