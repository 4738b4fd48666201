"""The Ray nodes of the local cluster: each one a `ray start --block` process of its own."""

from __future__ import annotations

import json
import os
from pathlib import Path

from clusterstate import ClusterError, bin_dir, node_temp_dir
from netutil import free_port, http_get
from supervise import spawn

# The IPv4 loopback names that `ray start` rewrites on a joining node, and the short form of
# 127.0.0.1 that it leaves alone (see `join_address`).
REWRITTEN_BY_RAY = ("127.0.0.1", "localhost")
LOOPBACK_SHORT = "127.1"


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


def join_address(gcs: str) -> str:
    """The head's GCS address as a worker node is given it: ``127.0.0.1:P`` becomes ``127.1:P``.

    `ray start` on a joining node replaces ``127.0.0.1``, ``localhost`` (and ``::1``) in
    ``--address`` and ``--node-ip-address`` with the machine's primary address, which neither
    reaches a head on loopback nor keeps the node there (cluster/README.md, "How worker nodes
    stay on loopback"). ``127.1`` is the same address in the short IPv4 form that the C library
    accepts; Ray leaves it as given. Any other address is returned unchanged.
    """
    host, port = gcs.rsplit(":", 1)
    return f"{LOOPBACK_SHORT}:{port}" if host in REWRITTEN_BY_RAY else gcs


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

    `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1`: Ray refuses to start a joining node without it. On
    loopback the node joins through `join_address` and is given no ``--node-ip-address``: Ray
    then takes the local address of its route to the head, 127.0.0.1, and a node whose address
    is exactly 127.0.0.1 binds its servers to loopback only. gRPC's default resolver does not
    read the short form, so the node's processes use gRPC's documented ``native`` resolver
    (``GRPC_DNS_RESOLVER``, the C library's), which does.
    """
    gpus = gpus or []
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    address = join_address(gcs)
    if address == gcs:
        where = [f"--address={gcs}", f"--node-ip-address={host}"]
    else:
        where = [f"--address={address}"]
        env["GRPC_DNS_RESOLVER"] = "native"
    cmd = ray_cmd(
        "start",
        "--block",
        *where,
        f"--num-cpus={cpus:g}",
        f"--num-gpus={len(gpus)}",
        f"--object-store-memory={store_mb * 1024 * 1024}",
        f"--temp-dir={node_temp_dir(state, f'worker-{index}')}",
        *_node_ports(host),
    )
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
