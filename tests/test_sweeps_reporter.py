"""The background reporter of pack trials: Tune gets the same reports in the same order while
the training loop goes on, and a stop or a failed report reaches the loop."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ct_sweeps.reporter import BackgroundReporter


class SlowTune:
    """Stands in for ``tune.report``: holds each report until the test releases it."""

    def __init__(self, hold: bool = True) -> None:
        self.calls: list[tuple[dict, list[str] | None]] = []
        self.release = threading.Semaphore(0)
        self.entered = threading.Semaphore(0)
        self.hold = hold

    def __call__(self, result: dict, checkpoint=None) -> None:
        files = sorted(os.listdir(checkpoint.path)) if checkpoint is not None else None
        self.calls.append((result, files))
        self.entered.release()
        if self.hold:
            assert self.release.acquire(timeout=10)


def test_reports_reach_tune_in_order_and_the_loop_does_not_wait_for_them():
    tune = SlowTune()
    r = BackgroundReporter(tune)
    t = time.perf_counter()
    r.submit({"epoch": 1})
    assert tune.entered.acquire(timeout=10)
    assert r.busy  # the first report is with the driver...
    r.submit({"epoch": 2})  # ...and one more can be queued behind it without waiting
    assert time.perf_counter() - t < 5
    for _ in range(2):
        tune.release.release()
    r.close()
    assert [c[0]["epoch"] for c in tune.calls] == [1, 2]
    assert not r.busy


def test_a_checkpoint_holds_what_was_written_when_it_was_handed_over_and_is_removed_after():
    tune = SlowTune(hold=False)
    r = BackgroundReporter(tune)
    folders: list[str] = []

    def write(d: str) -> None:
        folders.append(d)
        Path(d, "states.pt").write_text("epoch 5")

    r.submit_checkpoint({"epoch": 5}, write)
    r.close()
    assert tune.calls == [({"epoch": 5}, ["states.pt"])]
    assert not Path(folders[0]).exists()


def test_a_checkpoint_waits_only_while_another_report_is_queued():
    tune = SlowTune()
    r = BackgroundReporter(tune)
    r.submit({"epoch": 1})
    assert tune.entered.acquire(timeout=10)
    r.submit({"epoch": 2})  # queued behind the one in flight
    threading.Timer(0.3, tune.release.release).start()  # the driver takes epoch 1 later
    r.submit_checkpoint({"epoch": 3}, lambda d: None)
    assert r.waited >= 0.2
    tune.release.release()
    tune.release.release()
    r.close()
    assert [c[0]["epoch"] for c in tune.calls] == [1, 2, 3]


def test_a_stop_from_tune_reaches_the_loop_and_nothing_more_is_reported():
    def stopping(result: dict, checkpoint=None) -> None:
        raise SystemExit(0)  # what tune.report does when Tune ended the trial

    r = BackgroundReporter(stopping)
    r.submit({"epoch": 1})
    deadline = time.monotonic() + 10
    while not r.stopped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.stopped
    r.submit_checkpoint({"epoch": 2}, lambda d: None)  # dropped, its folder removed
    r.close()


def test_a_failed_report_is_raised_in_the_training_loop():
    def failing(result: dict, checkpoint=None) -> None:
        raise ValueError("result not serialisable")

    r = BackgroundReporter(failing)
    r.submit({"epoch": 1})
    with pytest.raises(ValueError, match="not serialisable"):
        r.close()


def test_after_a_failed_trial_what_is_queued_is_dropped():
    tune = SlowTune()
    r = BackgroundReporter(tune)
    r.submit({"epoch": 1})
    assert tune.entered.acquire(timeout=10)
    folders: list[str] = []
    r.submit_checkpoint({"epoch": 2}, folders.append)
    r.abandon()
    tune.release.release()
    r._thread.join(timeout=10)
    assert not r._thread.is_alive()
    assert [c[0]["epoch"] for c in tune.calls] == [1]
    assert not Path(folders[0]).exists()
