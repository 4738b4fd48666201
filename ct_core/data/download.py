"""Finding data files: local copy, user cache, or a checksummed download.

Lookup order for a file with layout path ``rel`` (the layout of ``shared/data``, e.g.
``gmsc/taija/gmsc.csv``):

1. ``$CT_DATA_DIR/rel`` (a local copy; not verified, it is the user's choice),
2. ``$CT_CACHE_DIR/rel`` (default ``~/.cache/ct/rel``; written only after verification),
3. a download into the cache. With ``$CT_DATA_URL`` set, from ``$CT_DATA_URL/rel`` (a mirror of
   the ``shared/data`` layout, verified against the sha256 of our reference copy); otherwise
   from the file's public source (``shared/data/CANONICAL_URLS.md``), verified against the
   checksum public loaders pin, and extracted when the source is an archive.

Downloads go to a temporary file next to the target and are moved into place with
:func:`os.replace` only after the sha256 matched, so the cache never holds partial or corrupt
files. Every failure raises :class:`DataError` naming the file, the URL and ``CT_DATA_DIR``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ct_core.config import ConfigError

__all__ = [
    "DataError",
    "DataFile",
    "Source",
    "cache_dir",
    "data_dir",
    "fetch",
    "locate",
    "mirror_url",
    "sha256_file",
]

ENV_DATA_DIR = "CT_DATA_DIR"
ENV_CACHE_DIR = "CT_CACHE_DIR"
ENV_DATA_URL = "CT_DATA_URL"
TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class DataError(ConfigError):
    """A data file is missing and could not be downloaded or verified."""


@dataclass(frozen=True)
class Source:
    """A public download location; ``member`` is the file inside a ``.tar.gz``/``.zip``."""

    url: str
    sha256: str
    member: str | None = None
    gunzip: bool = False


@dataclass(frozen=True)
class DataFile:
    """One data file: its layout path, the sha256 of our reference copy, and its public origin."""

    relpath: str
    sha256: str | None = None
    source: Source | None = None
    what: str = ""


def data_dir() -> Path | None:
    v = os.environ.get(ENV_DATA_DIR)
    return Path(v).expanduser() if v else None


def cache_dir() -> Path:
    v = os.environ.get(ENV_CACHE_DIR)
    return Path(v).expanduser() if v else Path.home() / ".cache" / "ct"


def mirror_url() -> str | None:
    v = os.environ.get(ENV_DATA_URL)
    return v.rstrip("/") if v else None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def locate(f: DataFile) -> Path:
    """Path of a readable copy of ``f``, downloading it into the cache if needed."""
    local = data_dir()
    if local is not None and (local / f.relpath).is_file():
        return local / f.relpath
    cached = cache_dir() / f.relpath
    if cached.is_file():
        return cached
    mirror = mirror_url()
    if mirror is not None:
        if f.sha256 is None:
            raise _error(f, f"{mirror}/{f.relpath}", "no checksum is known for a mirror copy")
        fetch(f"{mirror}/{f.relpath}", cached, f.sha256, f)
        return cached
    if f.source is None:
        raise _error(f, None, "it has no public download location")
    src = f.source
    if src.member is None and not src.gunzip:
        fetch(src.url, cached, src.sha256, f)
        return cached
    archive = cache_dir() / "_downloads" / Path(src.url.split("?")[0]).name
    if not (archive.is_file() and sha256_file(archive) == src.sha256):
        fetch(src.url, archive, src.sha256, f)
    _extract(archive, src, cached, f)
    return cached


def fetch(url: str, dest: Path, sha256: str, f: DataFile | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its sha256 (raises :class:`DataError`)."""
    f = f or DataFile(relpath=dest.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
                while chunk := r.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise _error(f, url, f"download failed ({reason}; offline?)") from None
        got = h.hexdigest()
        if got != sha256:
            raise _error(f, url, f"checksum mismatch: expected sha256 {sha256}, got {got}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _extract(archive: Path, src: Source, dest: Path, f: DataFile) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if src.gunzip:
                with gzip.open(archive, "rb") as r:
                    shutil.copyfileobj(r, out)
            elif zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z, z.open(str(src.member)) as r:
                    shutil.copyfileobj(r, out)
            else:
                with tarfile.open(archive, "r:*") as t:
                    r = t.extractfile(str(src.member))
                    if r is None:
                        raise KeyError(src.member)
                    shutil.copyfileobj(r, out)
        os.replace(tmp, dest)
    except (KeyError, OSError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise _error(f, src.url, f"cannot extract {src.member!r} from {archive}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _error(f: DataFile, url: str | None, reason: str) -> DataError:
    name = f.what or f.relpath
    tried = f" from {url}" if url else ""
    local = data_dir()
    where = f" (now {local})" if local else ""
    return DataError(
        f"data file {f.relpath!r} ({name}) is not available: cannot get it{tried}: {reason}. "
        f"Set {ENV_DATA_DIR}{where} to a folder that holds {f.relpath} (the layout of "
        f"shared/data), or put the file at {cache_dir() / f.relpath}."
    )
