"""The Ray a sweep runs on: joining a cluster, or starting and stopping one of its own.

A sweep on one machine starts a Ray of its own (:func:`ensure_ray`), and every second of that
start is overhead on a short sweep. Five things here trim it, each measured in
``bench/README.md``:

* :func:`behind_ray_start`: the driver's side work (importing Tune, the MLflow set-up) runs on
  threads at a lower CPU priority while Ray's processes start (seventh pass);
* :func:`_quick_start`: ``ray.init`` neither waits for a dashboard process the sweep never uses
  nor polls for its raylet once a second (ninth pass);
* :data:`LOCAL_SYSTEM_CONFIG`: Ray's processes retry a socket that is not listening yet after
  0.1 s, not 1 s (ninth pass);
* :func:`stop_ray`: the autoscaler monitor is killed rather than left to time out (eighth pass);
* :func:`skip_callback_census`: ``Tuner.fit`` does not import MLflow for a usage count that is
  never sent (tenth pass).

:func:`_quick_start` and :func:`stop_ray` lean on Ray's private layout, where Ray offers no
public switch, and do nothing (Ray starts and stops as it always did) where that layout is not
found. A cluster joined by address is used as it is.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from ct_sweeps.env import set_defaults

log = logging.getLogger("ct_sweeps")


LOCAL_SYSTEM_CONFIG: dict[str, Any] = {
    # Ray's idle workers prestarted for the driver: Tune's trial actors do land on them, but
    # on 2 cores the trials started no sooner, the workers only took CPU from Ray's own start
    # (bench/README.md, seventh and ninth passes)
    "prestart_worker_first_driver": False,
    # Ray's processes connect to each other's Unix sockets (the raylet to its object store,
    # a worker to the raylet) and, when a socket is not listening yet, retry after this
    # long: Ray's 1000 ms cost a whole second in about one start in three (the raylet's log:
    # store up at .609, its client connected at 1.610). Same 10 s in all before giving up.
    "raylet_client_connect_timeout_milliseconds": 100,
    "raylet_client_num_connect_attempts": 100,
}


def ensure_ray(
    address: str | None = None, num_cpus: int | None = None
) -> Literal["local", "joined"] | None:
    """Join or start Ray. ``"local"``: this call started a Ray of its own on this machine;
    ``"joined"``: it connected to a cluster; either way it should shut Ray down at the end.
    ``None``: Ray was already initialised (left as it is).

    No address: a fresh local Ray on loopback (``address="local"``, never a stray cluster of
    someone else), or the cluster of the Ray job this process runs in (``RAY_ADDRESS``).
    """
    set_defaults(address)
    import ray

    if ray.is_initialized():
        return None
    kw: dict[str, Any] = {"log_to_driver": True, "configure_logging": True}
    if address:
        ray.init(address=address, **kw)
        return "joined"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**kw)
        return "joined"
    # PL_DISABLE_FORK: see actors_inherit_env
    os.environ.setdefault("PL_DISABLE_FORK", "1")
    with _quick_start():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _system_config=LOCAL_SYSTEM_CONFIG,
            **kw,
        )
    return "local"


@contextlib.contextmanager
def _quick_start() -> Iterator[None]:
    """Within it, ``ray.init(address="local", include_dashboard=False)`` skips two waits.

    * *The dashboard process.* Without the dashboard, Ray still starts its dashboard process
      for one module (usage statistics, which ``ct_sweeps.env`` turns off) and waits for it to
      come up before it starts the raylet: 1.0-1.3 s on 2 cores. Within this block no such
      process is started; nothing of a sweep talks to it (the job server, the state API and
      the web UI are not loaded without the dashboard anyway).
    * *The raylet's registration.* ``ray.init`` returns once the raylet has registered, and
      Ray's own check for that retries once a second (in C++): it returned after 1.01 or
      2.01 s, never in between. Within this block the node table is read every 20 ms until
      the raylet is there, and Ray's check then finds it at once.

    A ``ray.init`` that starts a head node alone (no address, or ``"local"``) belongs inside;
    the changes are undone on the way out. Where Ray's private layout is not as expected,
    nothing is changed and Ray starts as it always did. ``bench/README.md``, ninth pass:
    ``ray.init`` 3.3-4.0 s before, 1.8-2.3 s after."""
    try:
        from ray._private import node as ray_node
        from ray._private import services

        start_api_server = ray_node.Node.start_api_server
        get_node = services.get_node
    except (ImportError, AttributeError):
        yield
        return

    def no_api_server(self: Any, **_: Any) -> None:
        self._webui_url = ""  # what the driver's node holds without the dashboard

    ray_node.Node.start_api_server = no_api_server
    services.get_node = _once_registered(get_node)
    try:
        yield
    finally:
        ray_node.Node.start_api_server = start_api_server
        services.get_node = get_node


def _once_registered(get_node: Callable[[str, str], Any]) -> Callable[[str, str], Any]:
    """``get_node(gcs_address, node_id)`` called once the node is in the GCS's node table,
    which is read every 20 ms for up to 10 s (it takes 1-2 s); after that, or on an error
    reading the table, or with a table of another layout, ``get_node``'s own once-a-second
    wait takes over (Ray gives up after 30 s of it)."""

    def wrapped(gcs_address: str, node_id: str) -> Any:
        try:
            from ray._private import services, state

            table = state.GlobalState()
            table._initialize_global_state(services._get_gcs_client_options(gcs_address))
            try:
                deadline = time.monotonic() + 10.0
                while time.monotonic() < deadline:
                    nodes = table.node_table()
                    if any(n.get("NodeID") == node_id and n.get("Alive") for n in nodes):
                        break
                    if any("NodeID" not in n or "Alive" not in n for n in nodes):
                        break  # a table this code does not know: Ray's own wait
                    time.sleep(0.02)
            finally:
                table.disconnect()
        except Exception as e:  # Ray's layout changed, or the GCS is not up yet: Ray's own wait
            log.debug("quick start: node table not read (%s: %s)", type(e).__name__, e)
        return get_node(gcs_address, node_id)

    return wrapped


def stop_ray(started: Literal["local", "joined"] | None) -> None:
    """``ray.shutdown()`` for a Ray that :func:`ensure_ray` started or joined (``None``: left
    as it is).

    A local Ray's autoscaler monitor is killed first. ``ray.shutdown`` stops the processes one
    by one, each with a second to exit on SIGTERM, and the GCS before the monitor; the
    monitor's SIGTERM handler then waits on the stopped GCS to report its own end, so every
    shutdown spent that whole second on it (1.0 s of 1.4 s; bench/README.md, eighth pass). A
    local sweep's Ray never scales, so the monitor has nothing to finish."""
    import ray

    if started is None:
        return
    if started == "local":
        _kill_monitor()
    ray.shutdown()


def _kill_monitor() -> None:
    """SIGKILL (and reap) the autoscaler monitor of the Ray this process started, if it runs.
    Ray's private layout may change: then nothing is done and ``ray.shutdown`` waits as
    before."""
    try:
        from ray._private import ray_constants
        from ray._private.worker import _global_node as node

        infos = node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node else []
    except (ImportError, AttributeError):
        return
    for info in infos:
        proc = getattr(info, "process", None)
        if proc is None or proc.poll() is not None:
            continue
        proc.kill()
        try:
            proc.wait(timeout=5)
        except Exception:  # a process stuck in the kernel: ray.shutdown deals with it
            pass


def actors_inherit_env() -> None:
    """Start Tune's trial actors without a runtime env on a Ray this process started.

    Tune gives every trial actor the runtime env ``{"env_vars": {"PL_DISABLE_FORK": "1"}}``
    (for PyTorch Lightning), and Ray starts a worker with any runtime env through an extra
    set-up process: 0.8 s instead of 0.5 s per actor, measured on an idle 2-core machine. The
    workers of a local Ray inherit the environment of the process that started it, so
    :func:`ensure_ray` exports the variable before ``ray.init`` and Tune's copy is dropped.
    Variables Tune forwards from the driver's environment (cloud credentials, Train settings)
    still make a runtime env, as before; a Ray without this constant is left as it is."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return
    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict) and defaults.get("PL_DISABLE_FORK") == "1":
        defaults.pop("PL_DISABLE_FORK")


_TUNE_IMPORT: list[threading.Thread] = []
_TUNE_IMPORT_LOCK = threading.Lock()


def import_tune() -> threading.Thread:
    """Import Ray Tune (about a second) on one background thread, so that it overlaps Ray's
    start, which mostly waits on its processes (at a lower priority: :func:`behind_ray_start`);
    every caller gets the same thread. Ray's packages are not safe to import from two threads
    at once (a circular import fails half-way: measured), so code that needs Tune off the main
    thread joins this one instead."""
    with _TUNE_IMPORT_LOCK:
        if not _TUNE_IMPORT:
            # Ray itself first, here: the caller starts Ray next, and would otherwise wait for
            # the thread (at its lower priority) to import it
            importlib.import_module("ray")
            t = threading.Thread(target=_import_tune_behind, name="ct-import-tune")
            t.daemon = True
            t.start()
            _TUNE_IMPORT.append(t)
        return _TUNE_IMPORT[0]


def _import_tune_behind() -> None:
    behind_ray_start()
    importlib.import_module("ray.tune")
    skip_callback_census()


def skip_callback_census() -> None:
    """With Ray's usage statistics off (``ct_sweeps.env``), ``Tuner.fit`` no longer counts the
    callbacks by type for them.

    The count imports Ray's MLflow integration to compare classes, and with it MLflow (about a
    second on 2 cores). The sweep's MLflow set-up imports MLflow at the same time, at its lower
    priority (:func:`behind_ray_start`), so ``fit`` waited on that import's lock before it
    started any trial: 0.26 s in one profiled start, while a core idled. The count is only ever
    sent with usage statistics, so nothing is lost. Where usage statistics are on, or Ray's
    layout differs, nothing changes."""
    if os.environ.get("RAY_USAGE_STATS_ENABLED", "1") != "0":
        return
    try:
        from ray.air._internal import usage as air_usage
    except ImportError:
        return
    if callable(getattr(air_usage, "tag_callbacks", None)):
        air_usage.tag_callbacks = _no_census


def _no_census(callbacks: Any) -> bool:
    """``tag_callbacks`` as it returns when nothing is recorded."""
    return False


def behind_ray_start() -> None:
    """Lower the calling thread's CPU priority (Linux: ``nice`` +10 for this thread only).

    For the driver's side work while Ray starts (importing Tune, the MLflow set-up), which on a
    small machine competes for the cores with Ray's own processes. ``ray.init`` returns once
    the raylet has registered, which waits for Ray's agents (Python processes) to start; agents
    slowed by the driver delay it (a whole second, before :func:`_quick_start`, of Ray's
    once-a-second check). Behind them, the trials start sooner (bench/README.md, seventh pass;
    in the ninth, the Tune import at normal priority gained nothing). The processes Ray starts
    come from the main thread and keep its priority; a thread started from a lowered one
    inherits the priority (Linux), so only short-lived work belongs here. Elsewhere (no
    per-thread priority) nothing changes."""
    if not sys.platform.startswith("linux"):  # elsewhere a thread id is not a process id
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 10))
    except OSError:  # a sandbox that forbids it: the work runs as before
        pass
