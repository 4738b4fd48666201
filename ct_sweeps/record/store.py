"""Where a sweep's MLflow store is, and the local sqlite store it makes in its run directory.

A new sqlite store runs all of MLflow's schema migrations (seconds of CPU), the same each time:
it is made once per MLflow version by MLflow's public client in a process of its own, in the
cache (``$CT_CACHE_DIR``, default ``~/.cache/ct``), and copied. In SQLite's write-ahead-log
mode, set on our own file with ``sqlite3``, logging costs the driver less CPU
(``bench/bench_mlflow.py``) and ``mlflow ui`` reads without blocking the sweep; WAL needs one
host's shared memory, so ``auto`` uses it on local file systems only, and :func:`checkpoint`
folds the log back into ``mlflow.db`` at the end, so that the file alone holds every run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

__all__ = ["checkpoint", "default_tracking_uri", "local_filesystem", "new_sqlite_store"]

log = logging.getLogger("ct_sweeps.record")


def default_tracking_uri(run_dir: str | Path) -> str:
    """The local store of a run: ``sqlite:///RUN_DIR/mlflow.db``."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cli: str | None, sweep: str | None, run_dir: str | Path) -> str:
    """``--tracking-uri`` > the sweep's ``tracking.uri`` > ``$MLFLOW_TRACKING_URI`` > local."""
    return cli or sweep or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(run_dir)


def is_local(uri: str) -> bool:
    """Whether a store keeps its artifacts wherever the client says (a file on this machine)."""
    return uri.startswith("sqlite:") or "://" not in uri


LOCAL_FS = frozenset(
    "apfs bcachefs btrfs exfat ext2 ext3 ext4 f2fs hfsplus jfs ntfs ntfs3 overlay ramfs "
    "reiserfs tmpfs vfat xfs zfs".split()
)
"""File systems of one host's own disks (or memory), where SQLite's WAL mode is safe; network
and cluster file systems (NFS, SMB, Lustre, GPFS, CephFS, FUSE mounts, ...) are not."""


_OCTAL = re.compile(r"\\([0-7]{3})")


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI, else ``None``."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def _mount_type(path: Path, mountinfo: str) -> str | None:
    """The file system type of the mount holding ``path`` in a ``/proc/self/mountinfo`` text
    (fields: ``id parent major:minor root mount-point options ... - type source options``)."""
    best, kind = -1, None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])  # "\040": a space
        inside = point == "/" or str(path) == point or str(path).startswith(point + "/")
        if inside and len(point) > best:
            best, kind = len(point), right.split()[0]
    return kind


def local_filesystem(path: str | Path) -> bool:
    """Whether folder ``path`` is on a local file system (:data:`LOCAL_FS`): on Linux from
    ``/proc/self/mountinfo``; elsewhere assumed (``tracking.sqlite_wal: false`` for a network
    drive there)."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        info = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    kind = _mount_type(Path(path).resolve(), info)
    return kind in LOCAL_FS


_MAKE_STORE = (
    "import sys; from mlflow import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"
)


def _template() -> Path:
    """An empty store that MLflow migrated, made once per MLflow version (in a process of its
    own, whose working directory is the cache: its Default experiment, which sweeps never use,
    keeps its artifacts there)."""
    from importlib.metadata import version

    from ct_core.data.download import cache_dir

    folder = cache_dir() / "mlflow"
    template = folder / f"empty-{version('mlflow')}.db"
    if not template.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{template.name}.{os.getpid()}.tmp"
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        cmd = [sys.executable, "-c", _MAKE_STORE, f"sqlite:///{tmp}"]
        subprocess.run(cmd, cwd=folder, env=env, check=True, capture_output=True, timeout=300)
        os.replace(tmp, template)
    return template


def new_sqlite_store(uri: str, wal: bool | str = False) -> bool:
    """Make a new local sqlite store as a copy of an empty, migrated one; ``False``: not a new
    sqlite file (or anything unexpected: MLflow makes it). ``wal``: ``True``, ``False`` or
    ``"auto"`` (on a local file system, :func:`local_filesystem`)."""
    target = sqlite_path(uri)
    if target is None or target.exists() or not target.parent.is_dir():
        return False
    try:
        part = target.with_name(f".{target.name}.part")
        shutil.copyfile(_template(), part)
        if wal is True or (wal == "auto" and local_filesystem(target.parent)):
            # kept in the file; closing the last connection removes the -wal and -shm files
            with contextlib.closing(sqlite3.connect(part)) as con:
                con.execute("PRAGMA journal_mode=WAL")
        os.replace(part, target)  # never a half-copied store under the real name
        return True
    except Exception as e:  # the store is then made by MLflow itself, as without a template
        log.debug("no sqlite template for %s: %s", uri, e)
        return False


def checkpoint(uri: str) -> bool:
    """Fold a WAL-mode store's log back into its file, so that ``mlflow.db`` alone holds every
    run; ``True`` if it did (a busy store is left: SQLite folds the log in by itself later)."""
    db = sqlite_path(uri)
    if db is None or not db.with_name(db.name + "-wal").exists():
        return False
    try:  # a reader such as `mlflow ui` in the middle of a query delays it, a second at most
        with contextlib.closing(sqlite3.connect(db, timeout=1.0)) as con:
            busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as e:
        log.debug("no WAL checkpoint for %s: %s", db, e)
        return False
    return not busy
