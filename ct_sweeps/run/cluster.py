"""The Ray a sweep runs on: a cluster it joins, or a Ray of its own on this machine.

The process environment (:func:`set_defaults`: documented variables of Ray, Tune and MLflow,
each explained in ``docs/ecosystem.md``) is set before any of them is imported; a value the user
exported wins. A Ray of its own listens on loopback only and uses token authentication: a
process without the token can neither connect to it nor run work on it, and without a dashboard
it has no Jobs API. The token is made for the sweep alone (:func:`sweep_token`), unless the
environment names one (``RAY_AUTH_MODE=token`` with ``RAY_AUTH_TOKEN`` or
``RAY_AUTH_TOKEN_PATH``) or opts out (``RAY_AUTH_MODE=disabled``). Ray reads these variables
when it is imported: a process that imported Ray before gets Ray's own default, token
authentication with ``~/.ray/auth_token`` (docs/ecosystem.md, "Token authentication").
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ct_core.config import ConfigError

__all__ = ["DEFAULTS", "TOKEN_FILE", "check_fits", "ensure_ray", "set_defaults", "slots"]
__all__ += ["DRIVER_VAR", "mark_driver", "reap_orphans", "stop_ray", "sweep_token"]

DEFAULTS: dict[str, str] = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    # Ray's node address: 127.0.0.1, so that every port of a Ray this process starts listens
    # on loopback only (docs/ecosystem.md, "Loopback")
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # validation-set counterfactual metrics arrive every k-th epoch only (train.eval_every):
    # Tune must not reject the results before the first one
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # results go to result.json (run/tune.py: ResultLog) and MLflow; Tune's CSV and
    # TensorBoard loggers would cost the driver CPU on every result
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # an unreachable tracking server costs seconds, not minutes of retries (the tracker then
    # skips MLflow for a while; `ct-sweep sync-mlflow` backfills)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def set_defaults(address: str | None = None) -> None:
    """Export :data:`DEFAULTS`. Joining a cluster by ``address`` sends a token
    (``RAY_AUTH_MODE=token``): a client with auth disabled cannot talk to a token-enabled head
    (the clusters of ``cluster/`` all use tokens)."""
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)
    if address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


TOKEN_FILE = "ray_auth_token"


def sweep_token(token_dir: Path, address: str | None = None) -> Path | None:
    """Give the Ray this process is about to start a token of its own, in ``token_dir``; call
    it before anything imports Ray. ``None`` (nothing done): the sweep joins a cluster, opts out
    of tokens, names its own token, or this process imported Ray already."""
    env = os.environ
    if address or env.get("RAY_ADDRESS") or "ray" in sys.modules:
        return None
    mode = env.get("RAY_AUTH_MODE")
    if mode == "disabled" or (
        mode == "token" and (env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH"))
    ):
        return None
    token = Path(token_dir) / TOKEN_FILE
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    env.pop("RAY_AUTH_TOKEN", None)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    return token


def ensure_ray(
    address: str | None = None, num_cpus: int | None = None, verbose: bool = True
) -> str | None:
    """Join or start Ray: ``"local"`` (a Ray of its own on this machine), ``"joined"`` (a
    cluster: ``address``, or the Ray job's, ``RAY_ADDRESS``) or ``None`` (Ray was already
    initialised and is left as it is). The workers' output reaches the driver's console
    (``log_to_driver``); without ``verbose``, Ray's own log says warnings and errors only (level
    30; 20 with it)."""
    set_defaults(address)
    import ray

    if ray.is_initialized():
        return None
    kw: dict[str, Any] = {"log_to_driver": True, "logging_level": 20 if verbose else 30}
    if address or os.environ.get("RAY_ADDRESS"):
        from ray.exceptions import AuthenticationError

        try:
            ray.init(address=address, **kw)
        except ConnectionError as e:  # `--address auto` and no cluster here: say so plainly
            raise ConfigError(
                f"--address {address}: {e} (is it up, and is RAY_AUTH_TOKEN_PATH its token?)"
            ) from None
        except AuthenticationError:
            raise ConfigError(
                f"--address {address}: the cluster refused this client's token; give the "
                "cluster's token with RAY_AUTH_TOKEN_PATH=FILE (or RAY_AUTH_TOKEN), e.g. the "
                "auth_token file in the state directory of cluster/local.sh"
            ) from None
        return "joined"
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kw)
    return "local"


def stop_ray(started: str | None) -> None:
    """``ray.shutdown()`` for a Ray that :func:`ensure_ray` started or joined."""
    if started is not None:
        import ray

        ray.shutdown()


def check_fits(cpu: float, gpu: float) -> None:
    """Raise :class:`ConfigError` if one trial asks for more CPUs or GPUs than the Ray this
    process started has: Tune would wait for them for ever (a cluster may still grow)."""
    import ray

    total = ray.cluster_resources()
    if not total:  # nothing reported (yet): better to let Tune wait than to refuse a sweep
        return
    for name, key, want in (("cpu", "CPU", cpu), ("gpu", "GPU", gpu)):
        have = float(total.get(key, 0.0))
        if want > have:
            raise ConfigError(
                f"resources.{name}: each trial asks for {want:g} {key}s but this machine's "
                f"Ray has {have:g}; allowed: 0 to {have:g} (or a cluster: --address)"
            )


def slots(cpu: float, gpu: float, max_concurrent: int | None) -> int:
    """Trials Ray can run at once: the cluster's CPUs (and GPUs) over one trial's."""
    import ray

    total: dict[str, Any] = ray.cluster_resources()
    n = int(float(total.get("CPU", 1.0)) // cpu) or 1
    if gpu:
        n = min(n, int(float(total.get("GPU", 0.0)) // gpu) or 1)
    return min(n, max_concurrent) if max_concurrent else n


DRIVER_VAR = "CT_SWEEP_DRIVER"
"""Set by a sweep driver before it starts a Ray of its own: ``<pid>:<start time>``. Ray's
processes (GCS, raylet, agents, workers) inherit it, which is how the next driver recognises
those a killed driver left behind (Ray's own agents outlive a SIGKILLed driver by minutes)."""


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the process name (state first), ``None`` if the
    process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), ``None`` if it is gone."""
    stat = _stat(pid)
    return stat[19] if stat else None


def mark_driver() -> None:
    """Export :data:`DRIVER_VAR` for this process (Linux; elsewhere nothing is marked)."""
    start = _start_time(os.getpid())
    if start is not None:
        os.environ[DRIVER_VAR] = f"{os.getpid()}:{start}"


def _driver_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    key = DRIVER_VAR.encode() + b"="
    for item in env.split(b"\0"):
        if item.startswith(key):
            return item[len(key) :].decode(errors="replace")
    return None


def reap_orphans(grace_s: float = 5.0) -> list[int]:
    """End this user's processes whose :data:`DRIVER_VAR` names a driver that no longer runs
    (SIGTERM, then SIGKILL after ``grace_s``); return their pids. Called at the start of every
    sweep and resume, before Ray starts; only processes a sweep driver marked are touched."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    uid, me, orphans = os.getuid(), os.getpid(), []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        pid_s, colon, start = (_driver_of(int(entry.name)) or "").partition(":")
        if colon and not (pid_s.isdigit() and _start_time(int(pid_s)) == start):
            orphans.append(int(entry.name))  # its driver no longer runs
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in orphans if _start_time(p) is not None]
        for p in alive:
            with contextlib.suppress(OSError):
                os.kill(p, sig)
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [p for p in alive if (_stat(p) or ["Z"])[0] != "Z"]
        if not alive:
            break
    return orphans
