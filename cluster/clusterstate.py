"""The local cluster's state on disk and the environment of everything it starts.

STATE is `$CT_CLUSTER_DIR` or `cluster/.state` (git-ignored, mode 700): the token file (mode 600),
`cluster.json` (pids, ports, addresses), `env.sh` for users to `source`, the logs, and Ray's
per-node temp dirs (below it, or under a short /tmp path when STATE's path is long).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import sys
from pathlib import Path

from netutil import LOOPBACK

REPO = Path(__file__).resolve().parent.parent


class ClusterError(RuntimeError):
    """A cluster operation failed; the message says what and where the logs are."""


def state_dir() -> Path:
    """The state directory: `$CT_CLUSTER_DIR` or `<repo>/cluster/.state`."""
    return Path(os.environ.get("CT_CLUSTER_DIR") or REPO / "cluster" / ".state").resolve()


def bin_dir() -> Path:
    """The directory of the Python running this script (the project venv's `bin`)."""
    return Path(sys.executable).parent


def ray_temp_dir(state: Path) -> Path:
    """Ray's private temp root for this cluster; each node gets its own `<root>/<node>` below it.

    Ray puts unix sockets under it (limit ~107 chars), so a long state path falls back to a short
    /tmp path derived from it. It must be unique per cluster: `down` finds stray processes by it.
    """
    inside = state / "ray"
    if len(str(inside)) <= 40:
        return inside
    digest = hashlib.sha1(str(state).encode()).hexdigest()[:10]
    return Path("/tmp") / f"ctray-{digest}"


def node_temp_dir(state: Path, name: str) -> Path:
    """A node's own Ray temp dir. Nodes must not share one on a single machine: each node's
    runtime-env agent deletes job working dirs it no longer uses from `<temp>/session_*/
    runtime_resources`, which would pull the cwd away from a job driver running on another node
    (seen as FileNotFoundError from os.getcwd() and MKL failing to load libtorch_cpu.so)."""
    root = private(ray_temp_dir(state), "Ray temp dir")
    path = root / name
    path.mkdir(exist_ok=True)
    return path


def private(path: Path, what: str) -> Path:
    """`path` as a folder only this user can enter (mode 700): made so, or an existing real
    folder of this user. A symlink or another user's folder at a predictable path (the /tmp
    fallback above) is refused, never followed or reused."""
    from ct_core.config import ConfigError
    from ct_core.files import private_dir

    try:
        return private_dir(path, what)
    except ConfigError as e:
        raise ClusterError(str(e)) from None


def ensure_state(state: Path) -> Path:
    """Create STATE (mode 700) with a `*` .gitignore and a token file (mode 600); return the token path."""
    private(state, "state directory")
    (state / "logs").mkdir(exist_ok=True)
    ignore = state / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# ct cluster state: tokens, logs, databases. Never commit.\n*\n")
    return write_token(state / "auth_token")


def write_token(path: Path) -> Path:
    """Create a token file (mode 600, parent 700) at `path` unless one exists; return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or not path.read_text().strip():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            # Same format as `ray get-auth-token --generate` (secrets.token_hex(32)).
            fh.write(secrets.token_hex(32))
    os.chmod(path, 0o600)
    return path


def child_env(state: Path) -> dict[str, str]:
    """Environment for every process we start and every client call we make."""
    env = dict(os.environ)
    env.pop("RAY_AUTH_TOKEN", None)  # would take precedence over the token file
    env.pop("RAY_ADDRESS", None)  # a stale address must not redirect `ray start`
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(state / "auth_token"),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # node IP 127.0.0.1 (docs/ecosystem.md, "Loopback")
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0",
        PATH=f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}",  # jobs run the venv's python
    )
    return env


def bind_host(cli_host: str | None) -> str:
    """The bind/advertise host: `--host`, else `$CT_BIND_HOST`, else 127.0.0.1."""
    return cli_host or os.environ.get("CT_BIND_HOST") or LOOPBACK


def load_state(state: Path) -> dict:
    path = state / "cluster.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(state: Path, info: dict) -> None:
    path = state / "cluster.json"
    path.write_text(json.dumps(info, indent=2) + "\n")
    os.chmod(path, 0o600)


def write_env_file(state: Path, info: dict) -> Path:
    """STATE/env.sh: `source` it to reach the cluster (no secret inside, only the token path)."""
    lines = [
        "# generated by cluster/ctcluster.py; `source` this file",
        "export RAY_AUTH_MODE=token",
        f"export RAY_AUTH_TOKEN_PATH={shlex.quote(str(state / 'auth_token'))}",
        "unset RAY_AUTH_TOKEN",
        "export RAY_USAGE_STATS_ENABLED=0",
        "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0",
        "export MLFLOW_DISABLE_TELEMETRY=true",
        "export DO_NOT_TRACK=true",
    ]
    if "ray" in info:
        lines += [
            f"export RAY_ADDRESS={info['ray']['address']}",
            f"export CT_RAY_DASHBOARD={info['ray']['dashboard_url']}",
        ]
    if "mlflow" in info:
        lines.append(f"export MLFLOW_TRACKING_URI={info['mlflow']['uri']}")
    path = state / "env.sh"
    path.write_text("\n".join(lines) + "\n")
    return path
