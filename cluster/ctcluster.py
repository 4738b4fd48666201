#!/usr/bin/env python3
"""Local multi-node Ray cluster + MLflow tracking server on one machine, secure by default.

    python cluster/ctcluster.py up [--workers 2 --cpus-per-worker 1] [--gpus 0] [--no-mlflow]
    python cluster/ctcluster.py status | health | logs [NAME] | env | down
    python cluster/ctcluster.py mlflow up|down     (the MLflow server alone)

Every node is a separate `ray start --block` process (its own CPU count) on 127.0.0.1, with
token authentication on (`RAY_AUTH_MODE=token`, a random token in STATE/auth_token, mode 600).
STATE is `$CT_CLUSTER_DIR` or `cluster/.state` (git-ignored). Logs of every process are under
STATE/logs; STATE/env.sh can be `source`d to talk to the cluster. `down` stops exactly the
processes this script started (by pid, and by the cluster's private temp dir on their command
line); it never runs `ray stop`, which would kill every Ray process on a shared machine.
Threat model and details: cluster/README.md.

This module holds the commands; the pieces they use are `clusterstate` (STATE, token, env),
`raynodes` (head and worker nodes), `mlflowserver`, `supervise` (start, wait, stop processes)
and `netutil` (ports, HTTP probes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procinfo  # noqa: E402
from clusterstate import (  # noqa: E402
    ClusterError,
    bind_host,
    child_env,
    ensure_state,
    load_state,
    ray_temp_dir,
    save_state,
    state_dir,
    write_env_file,
    write_token,
)
from mlflowserver import fold_mlflow_store, mlflow_healthy, start_mlflow  # noqa: E402
from netutil import LOOPBACK, free_port, port_free, url_host  # noqa: E402
from raynodes import (  # noqa: E402
    alive_nodes,
    deal_gpus,
    link_ray_logs,
    ray_cmd,
    start_head,
    start_worker,
)
from supervise import stop_process_tree, tail, wait_for  # noqa: E402

DEFAULT_PORTS = {"gcs": 6390, "dashboard": 8275, "client": 23010, "mlflow": 5050}
START_TIMEOUT_S = 120.0


def pick_port(requested: int | None, default: int, host: str) -> int:
    """`requested` if given (0 = any free port), else `default` if free, else any free port."""
    if requested is not None:
        if requested == 0:
            return free_port(host)
        if not port_free(requested, host):
            raise ClusterError(f"port {requested} on {host} is in use; pick another one")
        return requested
    return default if port_free(default, host) else free_port(host)


def cmd_up(args: argparse.Namespace) -> int:
    state = state_dir()
    args.gpu_ids = deal_gpus(args.gpus, args.workers)  # checked before anything starts
    if _running(load_state(state)):
        raise ClusterError(f"a cluster is already running from {state}; run `down` first")
    token_path = ensure_state(state)
    token = token_path.read_text().strip()
    host = bind_host(args.host)
    if host != LOOPBACK:
        print(
            f"WARNING: binding to {host}, not loopback. Anyone who can reach it and holds the "
            "token can run arbitrary code through the Ray Jobs API; MLflow has no auth at all.",
            file=sys.stderr,
        )
    ports = {
        "gcs": pick_port(args.port, DEFAULT_PORTS["gcs"], host),
        "dashboard": pick_port(args.dashboard_port, DEFAULT_PORTS["dashboard"], host),
        "client": pick_port(None, DEFAULT_PORTS["client"], host),
    }
    if not args.no_mlflow:
        ports["mlflow"] = pick_port(args.mlflow_port, DEFAULT_PORTS["mlflow"], host)
    t0 = time.monotonic()
    info: dict = {"state_dir": str(state), "host": host, "ray_temp_dir": str(ray_temp_dir(state))}
    try:
        if not args.no_mlflow:
            info["mlflow"] = start_mlflow(state, host, ports["mlflow"])
        head = start_head(state, host, ports, args.head_cpus, args.object_store_mb)
        gcs = f"{url_host(host)}:{ports['gcs']}"
        dash = f"http://{url_host(host)}:{ports['dashboard']}"
        info["ray"] = {"address": gcs, "dashboard_url": dash, "nodes": [head]}
        save_state(state, info)  # from here on, `down` can clean up even if we crash
        wait_for(
            "the Ray head", lambda: alive_nodes(dash, token) is not None, START_TIMEOUT_S, [head]
        )
        for i in range(1, args.workers + 1):
            _join_worker(state, info, host, gcs, i, args, token)
        if "mlflow" in info:
            uri = info["mlflow"]["uri"]
            wait_for(
                "MLflow /health", lambda: mlflow_healthy(uri), START_TIMEOUT_S, [info["mlflow"]]
            )
    except BaseException:
        print("start failed; stopping what was started", file=sys.stderr)
        _stop_all(state, info)
        (state / "cluster.json").unlink(missing_ok=True)
        raise
    info["started_s"] = round(time.monotonic() - t0, 1)
    save_state(state, info)
    link_ray_logs(state, info)
    env_file = write_env_file(state, info)
    print(f"cluster up in {info['started_s']} s: head + {args.workers} worker node(s)")
    _print_addresses(info, env_file)
    return 0


def _join_worker(
    state: Path, info: dict, host: str, gcs: str, index: int, args: argparse.Namespace, token: str
) -> dict:
    """Start worker `index` and wait until Ray sees it alive; retry once if it dies on startup.

    One node at a time: on a loaded 2-core machine two raylets registering at once can miss
    Ray's fixed 30 s registration window (`ray/_private/node.py`), which kills the node.
    """
    dash = info["ray"]["dashboard_url"]
    want = 1 + index
    for attempt in range(2):
        gpus = args.gpu_ids[index - 1]
        node = start_worker(
            state, host, gcs, index, args.cpus_per_worker, args.object_store_mb, gpus
        )
        info["ray"]["nodes"].append(node)
        save_state(state, info)
        try:
            wait_for(
                f"{want} alive Ray nodes",
                lambda: len(alive_nodes(dash, token) or []) >= want,
                START_TIMEOUT_S,
                [node, info["ray"]["nodes"][0]],
            )
            return node
        except ClusterError as err:
            if attempt == 1 or procinfo.alive(node["pid"]):
                raise
            print(f"worker-{index} failed to start, retrying: {str(err)[:200]}", file=sys.stderr)
            stop_process_tree(node, timeout=10.0)
            info["ray"]["nodes"].remove(node)
    raise AssertionError("unreachable")


def cmd_mlflow(args: argparse.Namespace) -> int:
    state = state_dir()
    info = load_state(state)
    if args.action == "up":
        if "mlflow" in info and procinfo.alive(info["mlflow"]["pid"]):
            raise ClusterError(f"MLflow already runs at {info['mlflow']['uri']}")
        ensure_state(state)
        host = bind_host(args.host)
        port = pick_port(args.port, DEFAULT_PORTS["mlflow"], host)
        info.setdefault("state_dir", str(state))
        info["mlflow"] = rec = start_mlflow(state, host, port)
        save_state(state, info)
        try:
            wait_for("MLflow /health", lambda: mlflow_healthy(rec["uri"]), START_TIMEOUT_S, [rec])
        except BaseException:
            stop_process_tree(rec)
            info.pop("mlflow")
            save_state(state, info)
            raise
        env_file = write_env_file(state, info)
        print(f"MLFLOW_TRACKING_URI={rec['uri']}\nsource {env_file}")
        return 0
    if "mlflow" in info:
        left = stop_process_tree(info.pop("mlflow"))
        fold_mlflow_store(state / "mlflow.db")
        save_state(state, info)
        write_env_file(state, info)
        if left:
            raise ClusterError(f"MLflow processes survived: {sorted(left)}")
    print("MLflow server stopped")
    return 0


def _stop_all(state: Path, info: dict) -> set[int]:
    """Stop every node and the MLflow server of `info`; return pids that survived."""
    left: set[int] = set()
    marker = info.get("ray_temp_dir")
    nodes = info.get("ray", {}).get("nodes", [])
    # Workers and head in parallel: each `ray start --block` tears down its own node on SIGTERM.
    with ThreadPoolExecutor(max_workers=max(1, len(nodes) + 1)) as pool:
        futures = [pool.submit(stop_process_tree, n) for n in nodes]
        if "mlflow" in info:
            futures.append(pool.submit(stop_process_tree, info["mlflow"]))
        for fut in futures:
            left |= fut.result()
    if marker:  # agents that were reparented away from their node process
        left |= procinfo.terminate(procinfo.pids_mentioning(marker), timeout=5.0)
    if "mlflow" in info:
        fold_mlflow_store(state / "mlflow.db")
    return left


def cmd_down(args: argparse.Namespace) -> int:
    state = state_dir()
    info = load_state(state)
    if not info:
        print(f"nothing to stop (no {state / 'cluster.json'})")
        return 0
    t0 = time.monotonic()
    left = _stop_all(state, info)
    (state / "cluster.json").unlink(missing_ok=True)
    write_env_file(state, {})
    if left:
        raise ClusterError(f"processes survived the stop: {sorted(left)}")
    print(f"stopped in {time.monotonic() - t0:.1f} s; logs kept in {state / 'logs'}")
    return 0


def _running(info: dict) -> bool:
    recs = list(info.get("ray", {}).get("nodes", []))
    if "mlflow" in info:
        recs.append(info["mlflow"])
    return any(procinfo.alive(r["pid"]) for r in recs)


def health_report(info: dict, token: str) -> list[tuple[str, bool, str]]:
    """(check, ok, detail) rows: node processes alive, alive nodes in Ray, MLflow /health."""
    rows = []
    nodes = info.get("ray", {}).get("nodes", [])
    for node in nodes:
        rows.append((f"process {node['name']}", procinfo.alive(node["pid"]), f"pid {node['pid']}"))
    if nodes:
        seen = alive_nodes(info["ray"]["dashboard_url"], token)
        ok = seen is not None and len(seen) >= len(nodes)
        detail = "dashboard not answering" if seen is None else f"{len(seen)}/{len(nodes)} alive"
        rows.append(("ray nodes", ok, detail))
    if "mlflow" in info:
        ok = mlflow_healthy(info["mlflow"]["uri"])
        rows.append(("mlflow /health", ok, info["mlflow"]["uri"]))
    return rows


def cmd_health(args: argparse.Namespace) -> int:
    state = state_dir()
    info = load_state(state)
    if not info:
        print("not running")
        return 1
    token = (state / "auth_token").read_text().strip()
    rows = health_report(info, token)
    for name, ok, detail in rows:
        print(f"{'ok  ' if ok else 'FAIL'} {name:20s} {detail}")
    return 0 if rows and all(ok for _, ok, _ in rows) else 1


def cmd_status(args: argparse.Namespace) -> int:
    state = state_dir()
    info = load_state(state)
    if not info:
        print(f"not running (state dir {state})")
        return 1
    _print_addresses(info, state / "env.sh")
    for rec in info.get("ray", {}).get("nodes", []) + (
        [info["mlflow"]] if "mlflow" in info else []
    ):
        print(
            f"  {rec['name']:10s} pid {rec['pid']:<8d} {'up' if procinfo.alive(rec['pid']) else 'DOWN'}"
        )
    if "ray" in info:
        env = child_env(state)
        res = subprocess.run(
            ray_cmd("status", f"--address={info['ray']['address']}"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(res.stdout + res.stderr)
        return res.returncode
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    logs = state_dir() / "logs"
    files = sorted(p for p in logs.glob("*.log")) if logs.exists() else []
    if args.name:
        files = [f for f in files if f.stem == args.name]
        if not files:
            raise ClusterError(f"no log named {args.name!r} in {logs}")
    for path in files:
        print(f"==> {path} <==\n{tail(path, args.lines)}\n")
    for ray_logs in sorted(logs.glob("ray-*")):
        print(f"Ray's own logs (raylet, gcs, dashboard, workers, jobs): {ray_logs}/")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else ensure_state(state_dir())
    print(write_token(path))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    path = state_dir() / "env.sh"
    if not path.exists():
        raise ClusterError("no env file yet; run `up` first")
    print(path.read_text(), end="")
    return 0


def _print_addresses(info: dict, env_file: Path) -> None:
    if "ray" in info:
        print(
            f"RAY_ADDRESS={info['ray']['address']}     (GCS; ray.init, ray status, ray job submit)"
        )
        print(
            f"dashboard  {info['ray']['dashboard_url']}  (REST needs 'Authorization: Bearer <token>')"
        )
    if "mlflow" in info:
        print(f"MLFLOW_TRACKING_URI={info['mlflow']['uri']}")
    print(f"token      {Path(info['state_dir']) / 'auth_token'} (mode 600)")
    print(f"source {env_file}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start head + worker nodes + MLflow server")
    up.add_argument("--workers", type=int, default=2, help="worker nodes (default 2)")
    up.add_argument("--cpus-per-worker", type=float, default=1.0)
    up.add_argument("--head-cpus", type=float, default=0.0, help="CPUs of the head (default 0)")
    up.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs of this machine, dealt round-robin to the workers (default 0)",
    )
    up.add_argument("--object-store-mb", type=int, default=256, help="object store per node")
    up.add_argument("--host", help="bind host (default $CT_BIND_HOST or 127.0.0.1)")
    up.add_argument("--port", type=int, help="GCS port (0 = any free)")
    up.add_argument("--dashboard-port", type=int, help="dashboard / Jobs API port (0 = any free)")
    up.add_argument("--mlflow-port", type=int, help="MLflow port (0 = any free)")
    up.add_argument("--no-mlflow", action="store_true", help="do not start the MLflow server")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything started by `up`").set_defaults(func=cmd_down)
    sub.add_parser("status", help="addresses, pids, `ray status`").set_defaults(func=cmd_status)
    sub.add_parser("health", help="exit 0 iff all nodes and MLflow are healthy").set_defaults(
        func=cmd_health
    )
    logs = sub.add_parser("logs", help="tail the logs (head, worker-N, mlflow)")
    logs.add_argument("name", nargs="?")
    logs.add_argument("-n", "--lines", type=int, default=30)
    logs.set_defaults(func=cmd_logs)
    sub.add_parser("env", help="print the env file to `source`").set_defaults(func=cmd_env)
    tok = sub.add_parser("token", help="create a token file (mode 600) if missing, print its path")
    tok.add_argument("--path", help="where (default STATE/auth_token); e.g. for the launcher")
    tok.set_defaults(func=cmd_token)
    mlf = sub.add_parser("mlflow", help="start/stop the MLflow server alone")
    mlf.add_argument("action", choices=["up", "down"])
    mlf.add_argument("--host", help="bind host (default $CT_BIND_HOST or 127.0.0.1)")
    mlf.add_argument("--port", type=int, help="port (0 = any free)")
    mlf.set_defaults(func=cmd_mlflow)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (1 with a message on failure, 2 on bad usage)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "workers", 0) < 0 or getattr(args, "cpus_per_worker", 1) <= 0:
        print("error: --workers must be >= 0 and --cpus-per-worker > 0", file=sys.stderr)
        return 2
    if getattr(args, "gpus", 0) < 0 or (getattr(args, "gpus", 0) and not args.workers):
        print("error: --gpus must be >= 0, and > 0 only with --workers >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
