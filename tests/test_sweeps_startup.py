"""The driver's side work at a sweep's start (importing Tune, the MLflow set-up) runs behind
Ray's own start: at a lower CPU priority, in its own thread only."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from ct_sweeps.local_ray import behind_ray_start

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@linux
def test_side_work_runs_at_a_lower_priority_in_its_own_thread_only():
    main_before = _nice(threading.get_native_id())
    seen: dict[str, int] = {}

    def side_work() -> None:
        before = _nice(threading.get_native_id())
        behind_ray_start()
        seen["before"], seen["after"] = before, _nice(threading.get_native_id())

    t = threading.Thread(target=side_work)
    t.start()
    t.join()
    assert seen["after"] == min(19, seen["before"] + 10)
    # the main thread (which starts Ray's processes) and the process keep their priority
    assert _nice(threading.get_native_id()) == main_before
    assert os.getpriority(os.PRIO_PROCESS, 0) == main_before
