"""The local sqlite MLflow store a sweep makes in its run directory: made fast, written fast.

* **Made from a template.** MLflow makes a new sqlite store by running all its schema
  migrations, 1.5-2 s of CPU at the start of every sweep on a 2-core machine (bench/README.md).
  The result is the same file each time, so it is made once per MLflow version, with MLflow's own
  code, in the cache (``$CT_CACHE_DIR``, default ``~/.cache/ct``) and copied.
* **Write-ahead log.** In SQLite's default journal mode every commit creates, syncs and deletes a
  rollback journal, and MLflow commits several times per call; in WAL mode (``PRAGMA
  journal_mode=WAL``, kept in the file) the same logging takes about a fifth less of the
  driver's CPU and a quarter less time (``bench/bench_mlflow.py``), and a reader such as
  ``mlflow ui`` no longer blocks the sweep's writes. WAL needs the shared memory of one host,
  so it is used only where the run directory is on a local file system
  (``tracking.sqlite_wal: auto``); :func:`checkpoint` folds the log back into ``mlflow.db`` at
  the end of a sweep, so that the file alone holds every run.

Nothing here imports Ray; MLflow only where a store is made.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import sys
from pathlib import Path

__all__ = ["checkpoint", "local_filesystem", "new_sqlite_store", "sqlite_path"]

log = logging.getLogger("ct_sweeps.tracking")

LOCAL_FS = frozenset(
    {
        "apfs",
        "bcachefs",
        "btrfs",
        "exfat",
        "ext2",
        "ext3",
        "ext4",
        "f2fs",
        "hfsplus",
        "jfs",
        "ntfs",
        "ntfs3",
        "overlay",
        "ramfs",
        "reiserfs",
        "tmpfs",
        "vfat",
        "xfs",
        "zfs",
    }
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
    """Whether ``path`` (a folder, or a file's folder) is on a local file system (:data:`LOCAL_FS`).

    Linux: read from ``/proc/self/mountinfo``. Elsewhere (macOS, Windows) it cannot be told
    without more dependencies and a laptop's disk is the usual case, so ``True``; set
    ``tracking.sqlite_wal: false`` for a run directory on a network drive there."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        info = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return False
    kind = _mount_type(Path(path).resolve(), info)
    return kind in LOCAL_FS


def new_sqlite_store(uri: str, wal: bool | str = False) -> bool:
    """Create a new local sqlite tracking store by copying an empty, migrated one; ``True`` if
    it did (``False``: not a new sqlite file, or anything unexpected, and MLflow makes it).

    ``wal``: ``True`` puts the new store in WAL mode, ``"auto"`` where its folder is on a local
    file system (:func:`local_filesystem`), ``False`` leaves SQLite's default journal. The store
    then only adds its default experiment, as it does for a new file."""
    target = sqlite_path(uri)
    if target is None or target.exists() or not target.parent.is_dir():
        return False
    try:
        import mlflow
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables

        from ct_core.data.download import cache_dir

        template = cache_dir() / "mlflow" / f"empty-{mlflow.__version__}.db"
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
            engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
            try:
                _initialize_tables(engine)
            finally:
                engine.dispose()
            os.replace(tmp, template)
        part = target.with_name(f".{target.name}.part")
        shutil.copyfile(template, part)
        if wal is True or (wal == "auto" and local_filesystem(target.parent)):
            _journal(part, "wal")
        os.replace(part, target)  # never a half-copied store under the real name
        return True
    except Exception as e:  # the store is then made by MLflow itself, as without a template
        log.debug("no sqlite template for %s: %s", uri, e)
        return False


def _journal(db: Path, mode: str) -> None:
    """Set a closed store's journal mode (kept in the file: every later connection uses it)."""
    con = sqlite3.connect(db)
    try:
        got = con.execute(f"PRAGMA journal_mode={mode}").fetchone()[0]
    finally:
        con.close()  # the last connection: SQLite removes the -wal and -shm files
    if got != mode:
        log.debug("sqlite store %s: journal mode %s, not %s", db, got, mode)


def checkpoint(uri: str) -> bool:
    """Fold a WAL-mode store's log back into its file (``PRAGMA wal_checkpoint(TRUNCATE)``), so
    that ``mlflow.db`` alone holds every run; ``True`` if it did. Stores in another journal
    mode, other backends and a store that is busy are left as they are (SQLite folds the log in
    by itself as it grows, and whenever the last connection closes)."""
    db = sqlite_path(uri)
    if db is None or not db.with_name(db.name + "-wal").exists():
        return False
    try:
        # a reader such as `mlflow ui` in the middle of a query delays it; a second at most
        con = sqlite3.connect(db, timeout=1.0)
        try:
            busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        log.debug("no WAL checkpoint for %s: %s", db, e)
        return False
    return not busy
