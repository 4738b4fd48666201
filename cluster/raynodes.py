"""The Ray nodes of the local cluster: each one a `ray start --block` process of its own."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from clusterstate import ClusterError, bin_dir, node_temp_dir
from netutil import free_port, http_get
from supervise import spawn


def ray_cmd(*args: str) -> list[str]:
    """`ray ARGS...` from the venv this script runs in (jobs then run the venv's python)."""
    return [str(bin_dir() / "ray"), *args]


def start_head(state: Path, host: str, ports: dict[str, int], cpus: float, store_mb: int) -> dict:
    """Start the head node (`ray start --head --block`); return its record (not yet healthy)."""
    temp = node_temp_dir(state, "head")
    cmd = ray_cmd(
        "start",
        "--head",
        "--block",
        f"--node-ip-address={host}",
        f"--port={ports['gcs']}",
        f"--dashboard-host={host}",
        f"--dashboard-port={ports['dashboard']}",
        f"--ray-client-server-port={ports['client']}",
        f"--num-cpus={cpus:g}",
        "--num-gpus=0",
        f"--object-store-memory={store_mb * 1024 * 1024}",
        f"--temp-dir={temp}",
        "--include-dashboard=true",
        "--disable-usage-stats",
        *_node_ports(host),
    )
    return spawn("head", cmd, state)


def deal_gpus(n_gpus: int, workers: int) -> list[list[str]]:
    """The first ``n_gpus`` GPUs this process sees (``CUDA_VISIBLE_DEVICES`` if set, else 0, 1,
    ...) dealt round-robin to the worker nodes (worker ``i`` gets list ``i - 1``): each GPU
    belongs to one node, so Ray never schedules a GPU twice."""
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if "CUDA_VISIBLE_DEVICES" in os.environ and len(visible) < n_gpus:
        raise ClusterError(
            f"--gpus {n_gpus}: CUDA_VISIBLE_DEVICES shows only {len(visible)} GPU(s)"
        )
    ids = visible[:n_gpus] if visible else [str(g) for g in range(n_gpus)]
    return [ids[i::workers] for i in range(workers)]


def start_worker(
    state: Path,
    host: str,
    gcs: str,
    index: int,
    cpus: float,
    store_mb: int,
    gpus: list[str] | None = None,
) -> dict:
    """Start worker node `index` joining the head at `gcs`, holding the machine's GPUs `gpus`
    (`CUDA_VISIBLE_DEVICES`); return its record.

    Runs through `raynode.py` (Ray's CLI with loopback addresses kept; see its docstring) with
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1, which Ray requires for a node to join a cluster.
    """
    gpus = gpus or []
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    ip = host
    cmd = [
        sys.executable,
        str(Path(__file__).resolve().parent / "raynode.py"),
        "start",
        "--block",
        f"--address={gcs}",
        f"--node-ip-address={ip}",
        f"--num-cpus={cpus:g}",
        f"--num-gpus={len(gpus)}",
        f"--object-store-memory={store_mb * 1024 * 1024}",
        f"--temp-dir={node_temp_dir(state, f'worker-{index}')}",
        *_node_ports(ip),
    ]
    return spawn(f"worker-{index}", cmd, state, env)


def _node_ports(host: str) -> list[str]:
    """Per-node service ports: several raylets share one IP, so no two may use Ray's defaults."""
    names = [
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
    ]
    return [f"--{name}={free_port(host)}" for name in names]


def alive_nodes(dashboard_url: str, token: str) -> list[dict] | None:
    """Alive nodes as reported by the dashboard's state API (None if it does not answer)."""
    status, body = http_get(f"{dashboard_url}/api/v0/nodes?limit=100", token)
    if status != 200:
        return None
    try:
        rows = json.loads(body)["data"]["result"]["result"]
    except (ValueError, KeyError, TypeError):
        return None
    return [row for row in rows if row.get("state") == "ALIVE"]


def link_ray_logs(state: Path, info: dict) -> None:
    """STATE/logs/ray-<node> -> that node's Ray session logs (raylet, gcs, dashboard, workers)."""
    for node in info.get("ray", {}).get("nodes", []):
        link = state / "logs" / f"ray-{node['name']}"
        target = Path(info["ray_temp_dir"]) / node["name"] / "session_latest" / "logs"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
