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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procinfo  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
DEFAULT_PORTS = {"gcs": 6390, "dashboard": 8275, "client": 23010, "mlflow": 5050}
START_TIMEOUT_S = 120.0


class ClusterError(RuntimeError):
    """A cluster operation failed; the message says what and where the logs are."""


# --------------------------------------------------------------------------- paths and env


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


# --------------------------------------------------------------------------- small helpers


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as sock:
        # as the servers themselves bind: a port whose old connections sit in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(requested: int | None, default: int, host: str) -> int:
    """`requested` if given (0 = any free port), else `default` if free, else any free port."""
    if requested is not None:
        if requested == 0:
            return free_port(host)
        if not port_free(requested, host):
            raise ClusterError(f"port {requested} on {host} is in use; pick another one")
        return requested
    return default if port_free(default, host) else free_port(host)


def http_get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url` (with a bearer token if given); (status, body), status 0 if unreachable."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback URL)
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def url_host(host: str) -> str:
    """Host as it goes into a URL (0.0.0.0 is reached through loopback locally)."""
    return LOOPBACK if host in ("0.0.0.0", "") else host


# --------------------------------------------------------------------------- state file


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


# --------------------------------------------------------------------------- ray nodes


def _ray_cmd(*args: str) -> list[str]:
    return [str(bin_dir() / "ray"), *args]


def start_head(state: Path, host: str, ports: dict[str, int], cpus: float, store_mb: int) -> dict:
    """Start the head node (`ray start --head --block`); return its record (not yet healthy)."""
    temp = node_temp_dir(state, "head")
    cmd = _ray_cmd(
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
    return _spawn("head", cmd, state)


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
    return _spawn(f"worker-{index}", cmd, state, env)


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


def _spawn(name: str, cmd: list[str], state: Path, extra_env: dict | None = None) -> dict:
    log = state / "logs" / f"{name}.log"
    env = {**child_env(state), **(extra_env or {})}
    with open(log, "ab") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,  # survives this script; Ctrl-C in the shell does not reach it
        )
    return {"name": name, "pid": proc.pid, "log": str(log), "cmd": cmd}


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


def _wait(what: str, check, timeout: float, procs: list[dict]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        dead = [p for p in procs if not procinfo.alive(p["pid"])]
        if dead:
            raise ClusterError(
                f"{dead[0]['name']} exited while waiting for {what}; log {dead[0]['log']}:\n"
                + tail(Path(dead[0]["log"]))
            )
        time.sleep(0.5)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")


# --------------------------------------------------------------------------- mlflow


def prepare_mlflow_store(db: Path) -> bool:
    """Make the server's sqlite store before its first start as a sweep's own store is made
    (ct_sweeps/record/store.py): copied from a migrated template, in SQLite's WAL mode on a local
    file system, so that logging costs the server less and the UI's reads do not block writes.
    `False` (MLflow then makes the store itself): the store exists, or ct is not installed in
    the Python running this script."""
    try:
        from ct_sweeps.record.store import new_sqlite_store
    except ImportError:
        return False
    return new_sqlite_store(f"sqlite:///{db}", wal="auto")


def fold_mlflow_store(db: Path) -> None:
    """After the server stopped: fold a WAL store's log back into `mlflow.db`, so that the file
    alone holds every run (a server stopped by a signal may not have done it)."""
    try:
        from ct_sweeps.record.store import checkpoint
    except ImportError:
        return
    checkpoint(f"sqlite:///{db}")


def start_mlflow(state: Path, host: str, port: int) -> dict:
    """Start `mlflow server` (sqlite backend, artifact root in STATE) on `host:port`."""
    (state / "mlartifacts").mkdir(exist_ok=True)
    prepare_mlflow_store(state / "mlflow.db")
    cmd = [
        str(bin_dir() / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{state / 'mlflow.db'}",
        "--artifacts-destination",
        str(state / "mlartifacts"),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    rec = _spawn("mlflow", cmd, state)
    rec["uri"] = f"http://{url_host(host)}:{port}"
    rec["host"], rec["port"] = host, port
    return rec


def mlflow_healthy(uri: str) -> bool:
    status, body = http_get(f"{uri}/health", timeout=3.0)
    return status == 200 and body.strip() == "OK"


def stop_process_tree(rec: dict, marker: str | None = None, timeout: float = 20.0) -> set[int]:
    """Stop a started process, its descendants and (if `marker`) processes naming it; return leftovers."""
    pid = rec["pid"]
    tree = procinfo.descendants(pid) if procinfo.alive(pid) else set()
    # The parent first: `ray start --block` and `mlflow server` shut their children down cleanly.
    procinfo.terminate([pid], timeout=timeout)
    stray = {p for p in tree if procinfo.alive(p)}
    if marker:
        stray |= procinfo.pids_mentioning(marker)
    return procinfo.terminate(stray, timeout=5.0)


# --------------------------------------------------------------------------- commands


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
        _wait("the Ray head", lambda: alive_nodes(dash, token) is not None, START_TIMEOUT_S, [head])
        for i in range(1, args.workers + 1):
            _join_worker(state, info, host, gcs, i, args, token)
        if "mlflow" in info:
            uri = info["mlflow"]["uri"]
            _wait("MLflow /health", lambda: mlflow_healthy(uri), START_TIMEOUT_S, [info["mlflow"]])
    except BaseException:
        print("start failed; stopping what was started", file=sys.stderr)
        _stop_all(state, info)
        (state / "cluster.json").unlink(missing_ok=True)
        raise
    info["started_s"] = round(time.monotonic() - t0, 1)
    save_state(state, info)
    _link_ray_logs(state, info)
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
            _wait(
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
            _wait("MLflow /health", lambda: mlflow_healthy(rec["uri"]), START_TIMEOUT_S, [rec])
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
            _ray_cmd("status", f"--address={info['ray']['address']}"),
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


def _link_ray_logs(state: Path, info: dict) -> None:
    """STATE/logs/ray-<node> -> that node's Ray session logs (raylet, gcs, dashboard, workers)."""
    for node in info.get("ray", {}).get("nodes", []):
        link = state / "logs" / f"ray-{node['name']}"
        target = Path(info["ray_temp_dir"]) / node["name"] / "session_latest" / "logs"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)


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
