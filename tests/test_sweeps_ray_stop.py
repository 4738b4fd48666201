"""Stopping the Ray a sweep started: every process of it ends, and the autoscaler monitor is
killed outright rather than left to time out on SIGTERM (its handler waits on the GCS that
``ray.shutdown`` has already stopped)."""

from __future__ import annotations

import signal

from ct_sweeps.runner import ensure_ray, stop_ray


def test_a_local_ray_stops_whole_and_its_monitor_is_killed_first(ray_environ):
    import ray
    from ray._private import ray_constants, worker

    from ct_sweeps.runner import _kill_monitor

    assert not ray.is_initialized()
    started = ensure_ray(None, num_cpus=1)
    assert started == "local"
    infos = {kind: [i.process for i in v] for kind, v in worker._global_node.all_processes.items()}
    monitors = infos.pop(ray_constants.PROCESS_TYPE_MONITOR)
    assert monitors and all(p.poll() is None for p in monitors)

    # the first step of stop_ray: the monitor goes, by SIGKILL, while the rest still runs
    _kill_monitor()
    assert [p.returncode for p in monitors] == [-signal.SIGKILL] * len(monitors)
    assert all(p.poll() is None for ps in infos.values() for p in ps)

    stop_ray(started)

    assert not ray.is_initialized()
    still = {kind: [p.pid for p in ps if p.poll() is None] for kind, ps in infos.items()}
    assert not any(still.values()), still


def test_a_ray_the_sweep_did_not_start_is_left_running(ray_environ):
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        stop_ray(None)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
