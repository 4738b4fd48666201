"""The MLflow tracking server of the local cluster (sqlite store and artifacts in STATE)."""

from __future__ import annotations

from pathlib import Path

from clusterstate import bin_dir
from netutil import http_get, url_host
from supervise import spawn


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
    rec = spawn("mlflow", cmd, state)
    rec["uri"] = f"http://{url_host(host)}:{port}"
    rec["host"], rec["port"] = host, port
    return rec


def mlflow_healthy(uri: str) -> bool:
    status, body = http_get(f"{uri}/health", timeout=3.0)
    return status == 200 and body.strip() == "OK"
