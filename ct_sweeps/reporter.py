"""Reporting to Tune from a thread of its own, so that a pack trial trains on meanwhile.

In a Tune function trainable, ``tune.report`` returns only once the driver has taken the result,
run its callbacks (results file, MLflow) and asked the trial for the next one: Ray runs function
trainables with synchronous result reporting. On a 2-core machine, where the driver's Tune loop
shares its GIL with the MLflow logging thread, that round trip cost each OL pack trial 0.7-1.2 s
of its run with the core idle (``bench/README.md``). :class:`BackgroundReporter` makes the same
calls, in the same order, from a thread beside the training loop, one report in flight at a
time; the loop waits only when it hands over a checkpoint while another report is still queued,
and at the end, for the last one.

Used by pack trials only: packs run in grid and random sweeps without a scheduler, where no
decision depends on a report being taken before the next epoch. Single-setting trials (ASHA,
Optuna) keep ``tune.report``'s lock-step.
"""

from __future__ import annotations

import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BackgroundReporter"]

_DONE = object()


class BackgroundReporter:
    """Hands results (and checkpoint folders) to ``report(result, checkpoint=...)`` on a thread.

    ``report`` is ``ray.tune.report`` in a trial; tests pass their own. The caller submits with
    :meth:`submit` (a result) or :meth:`submit_checkpoint` (a result and a folder that ``write``
    fills now, in the caller's thread, so it holds the state of this moment), checks
    :attr:`stopped` after each epoch, and ends with :meth:`close`, which waits for every report
    handed over and re-raises a failed report's error in the caller's thread.

    ``stopped`` becomes true when Tune ended the trial while a report was waiting (``tune.report``
    then raises ``SystemExit`` in the reporting thread, as it would have in the training loop):
    the loop should return without reporting more. ``waited`` is the seconds the caller spent
    blocked in :meth:`submit_checkpoint` and :meth:`close`.
    """

    def __init__(self, report: Callable[..., None] | None = None) -> None:
        if report is None:
            from ray import tune

            report = tune.report
        self._report = report
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._in_flight = 0  # handed over, not yet returned from report()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self.stopped = False
        self.waited = 0.0
        self._thread = threading.Thread(target=self._run, name="ct-tune-report", daemon=True)
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a report handed over has not yet returned (a new plain result can wait)."""
        with self._lock:
            return self._in_flight > 0

    def submit(self, result: dict[str, Any]) -> None:
        """Hand over a result without a checkpoint."""
        self._put((result, None))

    def submit_checkpoint(self, result: dict[str, Any], write: Callable[[str], None]) -> None:
        """Hand over a result with a checkpoint: ``write(folder)`` fills a new temporary folder
        now; the folder is reported (Tune copies it to the trial's storage) and then removed."""
        folder = tempfile.mkdtemp(prefix="ct-ckpt-")
        try:
            write(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._put((result, folder))

    def raise_if_failed(self) -> None:
        """Re-raise, in the caller's thread, the error of a report that failed."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def abandon(self) -> None:
        """Report nothing more (the trial failed); a report already with Tune returns as usual."""
        self.stopped = True
        while True:  # drop what is queued (the thread reports nothing more once stopped)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _DONE:
                _remove(item[1])
                with self._lock:
                    self._in_flight -= 1
        self._queue.put_nowait(_DONE)  # only the caller's thread puts: the queue has room

    def close(self) -> None:
        """Wait until every report handed over has returned; re-raise a failed one's error."""
        t = time.perf_counter()
        self._queue.put(_DONE)
        self._thread.join()
        self.waited += time.perf_counter() - t
        self.raise_if_failed()

    def _put(self, item: tuple[dict[str, Any], str | None]) -> None:
        self.raise_if_failed()
        if self.stopped:
            _remove(item[1])
            return
        with self._lock:
            self._in_flight += 1
        t = time.perf_counter()
        self._queue.put(item)  # waits only while another report is queued behind the one in flight
        self.waited += time.perf_counter() - t

    # -- the reporting thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            result, folder = item
            try:
                if self.stopped or self._error is not None:
                    continue  # after a stop or a failure nothing more is reported
                if folder is None:
                    self._report(result)
                else:
                    from ray.tune import Checkpoint

                    self._report(result, checkpoint=Checkpoint.from_directory(folder))
            except SystemExit:  # Tune stopped the trial (``tune.report``'s own exit)
                self.stopped = True
            except BaseException as e:
                self._error = e
            finally:
                _remove(folder)
                with self._lock:
                    self._in_flight -= 1


def _remove(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
