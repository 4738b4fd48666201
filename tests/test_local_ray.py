"""The Ray a sweep starts for itself: a quick start (no dashboard process, no one-second polls),
and a whole stop, the autoscaler monitor killed outright rather than left to time out on
SIGTERM (its handler waits on the GCS that ``ray.shutdown`` has already stopped)."""

from __future__ import annotations

import signal

from ct_sweeps.local_ray import LOCAL_SYSTEM_CONFIG, _once_registered, ensure_ray, stop_ray


def test_a_local_ray_starts_without_a_dashboard_process_and_runs_tasks(ray_environ):
    import ray
    from ray._private import node, ray_constants, services, state, worker

    api_server, get_node = node.Node.start_api_server, services.get_node
    started = ensure_ray(None, num_cpus=1)
    try:
        assert started == "local"
        kinds = set(worker._global_node.all_processes)
        assert ray_constants.PROCESS_TYPE_DASHBOARD not in kinds
        assert {ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET} <= kinds

        @ray.remote
        def double(x: int) -> int:
            return 2 * x

        assert ray.get(double.remote(21)) == 42
        # every process of this Ray gets the sweep's settings (from the GCS)
        config = state.state.get_system_config()
        for key, value in LOCAL_SYSTEM_CONFIG.items():
            assert config[key] == value, key
    finally:
        stop_ray(started)
    # Ray's own code is put back: a later ray.init elsewhere in the process is Ray's own
    assert (node.Node.start_api_server, services.get_node) == (api_server, get_node)


class _Table:
    """A stand-in for Ray's GCS node table (``ray._private.state.GlobalState``)."""

    def __init__(self, rows=None, fail=False):
        self.rows, self.fail, self.reads = rows, fail, 0

    def __call__(self):  # Ray's class is called to make one
        return self

    def _initialize_global_state(self, options):
        if self.fail:
            raise RuntimeError("no GCS")

    def node_table(self):
        self.reads += 1
        return self.rows(self.reads) if callable(self.rows) else self.rows

    def disconnect(self):
        pass


def _wait_with(monkeypatch, table: _Table) -> list:
    from ray._private import state

    monkeypatch.setattr(state, "GlobalState", table)
    calls: list = []
    wait = _once_registered(lambda address, node_id: calls.append(node_id) or "info")
    assert wait("127.0.0.1:1", "abc") == "info"
    return calls


def test_the_registration_wait_reads_the_node_table_until_the_node_is_alive(monkeypatch):
    alive = [{"NodeID": "abc", "Alive": True}]
    table = _Table(lambda reads: alive if reads >= 3 else [{"NodeID": "abc", "Alive": False}])
    assert _wait_with(monkeypatch, table) == ["abc"]  # then Ray's own check, which finds it
    assert table.reads == 3


def test_the_registration_wait_is_left_to_ray_when_the_table_cannot_be_read(monkeypatch):
    # no GCS to read, or a table of a layout this code does not know: no 10-s spin
    assert _wait_with(monkeypatch, _Table(fail=True)) == ["abc"]
    table = _Table([{"node_id": "abc", "state": "ALIVE"}])
    assert _wait_with(monkeypatch, table) == ["abc"]
    assert table.reads == 1


def test_a_local_ray_stops_whole_and_its_monitor_is_killed_first(ray_environ):
    import ray
    from ray._private import ray_constants, worker

    from ct_sweeps.local_ray import _kill_monitor

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


def test_tune_skips_its_callback_count_only_while_usage_statistics_are_off(monkeypatch):
    from ray.air._internal import usage as air_usage

    from ct_sweeps import local_ray

    own = air_usage.tag_callbacks
    monkeypatch.setattr(air_usage, "tag_callbacks", own)  # put back after the test
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    local_ray.skip_callback_census()
    assert air_usage.tag_callbacks is own  # statistics on: Tune counts as it always did

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    local_ray.skip_callback_census()
    # off: the count (which imports MLflow through Ray's integration) is skipped
    assert air_usage.tag_callbacks is not own
    assert air_usage.tag_callbacks([object()]) is False
