"""The Ray a sweep runs on: a cluster it joins, or a Ray of its own on this machine.

A Ray of its own listens on loopback only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, set by
:mod:`ct_sweeps.run.env`) and uses token authentication with a token made for this sweep alone
(``RUN_DIR/ray_auth_token``, mode 600, removed when Ray stops): a process that does not hold the
token can neither connect to it nor run work on it. ``RAY_AUTH_MODE=disabled`` in the
environment opts out. Without a dashboard, that Ray has no Jobs API either.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Literal

from ct_core.config import ConfigError
from ct_sweeps.run.env import set_defaults

__all__ = ["TOKEN_FILE", "check_fits", "ensure_ray", "slots", "stop_ray"]

TOKEN_FILE = "ray_auth_token"
_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_own: dict[str, Any] = {}
"""The environment before this process started a Ray of its own, and that Ray's token file."""


def ensure_ray(
    address: str | None = None, num_cpus: int | None = None, token_dir: Path | None = None
) -> Literal["local", "joined"] | None:
    """Join or start Ray. ``"local"``: this call started a Ray of its own on this machine (with
    a token in ``token_dir``); ``"joined"``: it connected to a cluster (``address``, or the
    cluster of the Ray job this process runs in, ``RAY_ADDRESS``). ``None``: Ray was already
    initialised and is left as it is."""
    set_defaults(address)
    import ray

    if ray.is_initialized():
        return None
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, log_to_driver=True)
        return "joined"
    _own.update(env={k: os.environ.get(k) for k in _AUTH_VARS}, token=None)
    if os.environ.get("RAY_AUTH_MODE") != "disabled" and token_dir is not None:
        token = _own["token"] = Path(token_dir) / TOKEN_FILE
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        os.environ.pop("RAY_AUTH_TOKEN", None)  # it would take precedence over the file
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    return "local"


def stop_ray(started: Literal["local", "joined"] | None) -> None:
    """``ray.shutdown()`` for a Ray that :func:`ensure_ray` started or joined (``None``: left
    as it is); a Ray of its own takes its token file along, and the environment is put back."""
    if started is None:
        return
    import ray

    ray.shutdown()
    if started == "local" and _own:
        if _own["token"] is not None:
            _own["token"].unlink(missing_ok=True)
        for k, v in _own.pop("env").items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _own.clear()


def check_fits(cpu: float, gpu: float) -> None:
    """Raise :class:`ConfigError` if one trial asks for more CPUs or GPUs than the Ray this
    process started has: Tune would wait for them for ever. (A cluster joined by address may
    still grow, so it is not checked.)"""
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
