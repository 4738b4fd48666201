"""Writing results safely: atomic files, output folders that are never silently reused, and
private state folders.

* :func:`atomic_write_text` / :func:`atomic_save` write a temporary file beside the target and
  ``os.replace`` it, so a reader (or a crash) sees the old file or the new one, never half of one.
* :func:`check_out_dir` is the check ``ct train``, ``ct evaluate`` and ``ct compare`` make before
  any compute: the folder must be creatable and writable, and one that already holds results is
  reused only when the user says so (``--overwrite``, ``--resume``).
* :func:`private_dir` makes (or accepts) a folder only its owner can enter, and refuses one that
  is a symlink, is owned by someone else or is not a folder: a predictable path under ``/tmp``
  must not let another user plant a link or read tokens and sockets.

Every refusal is a :class:`~ct_core.config.ConfigError` naming the option and the path.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ct_core.config import ConfigError

__all__ = [
    "atomic_save",
    "atomic_write_text",
    "check_out_dir",
    "check_out_file",
    "make_out_dir",
    "private_dir",
    "short_error",
]


@contextlib.contextmanager
def _atomic(path: Path, mode: str) -> Iterator[IO[Any]]:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    with _atomic(Path(path), "w") as f:
        f.write(text)


def atomic_save(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary binary file, then move it to ``path`` (``torch.save``,
    ``DataFrame.to_csv`` and the like take the open file)."""
    with _atomic(Path(path), "wb") as f:
        write(f)


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_out_dir(
    path: str | Path,
    option: str = "--out",
    *,
    overwrite: bool = False,
    resume: bool = False,
    results: tuple[str, ...] = (),
) -> Path:
    """Check, without creating anything, that ``path`` can hold a command's results; raise
    :class:`ConfigError` if it is a file, lies where nothing can be written, has a name longer
    than the file system allows, or already holds results (any of ``results``, or anything at
    all if ``results`` is empty) and neither ``overwrite`` nor ``resume`` is set."""
    p = Path(path).expanduser().absolute()
    limit = _name_max(Path("/"))
    long = [n for n in p.parts if len(n.encode()) > limit]
    if long:
        raise ConfigError(
            f"{option} {str(path)[:60]}...: a name of {len(long[0].encode())} bytes; the file "
            f"system allows at most {limit}"
        )
    try:
        present = p.exists() or p.is_symlink()
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot use it ({e.strerror})") from None
    if present:
        if not p.is_dir():
            raise ConfigError(f"{option} {path}: exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"{option} {path}: the directory is not writable")
        held = [n for n in results if (p / n).exists()] if results else sorted(os.listdir(p))
        if held and not (overwrite or resume):
            shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
            raise ConfigError(
                f"{option} {path}: already holds results ({shown}); pass --overwrite to "
                "replace them, or choose a new directory"
            )
        return p
    cur = p
    while not cur.exists():
        if cur.parent == cur:
            break
        cur = cur.parent
    if not cur.is_dir():
        raise ConfigError(f"{option} {path}: {cur} is not a directory")
    if not os.access(cur, os.W_OK | os.X_OK) or str(cur).startswith(("/proc", "/sys")):
        raise ConfigError(f"{option} {path}: cannot create it, {cur} is not writable")
    return p


def check_out_file(path: str | Path, option: str = "--out", *, overwrite: bool = False) -> Path:
    """Check, without creating anything, that ``path`` can take a command's file: not a
    directory, not an existing file unless ``overwrite``, in a folder that exists or can be
    created (:func:`check_out_dir`); raise :class:`ConfigError` otherwise."""
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; give the name of a file")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise ConfigError(
            f"{option} {path}: exists; pass --overwrite to replace it, or choose a new name"
        )
    check_out_dir(p.parent, option, results=(p.name,), overwrite=True)
    return p


def make_out_dir(path: str | Path, option: str = "--out") -> Path:
    """Create the folder :func:`check_out_dir` accepted (an OS refusal is a :class:`ConfigError`,
    raised before any compute)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot create it ({e.strerror})") from None
    return p


def private_dir(path: str | Path, what: str = "state directory") -> Path:
    """Create ``path`` with mode 0700, or accept an existing one that is a real folder (not a
    symlink) owned by this user, tightening its mode to 0700; refuse anything else."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(p, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"{what} {p}: cannot create it ({e.strerror})") from None
    try:  # O_NOFOLLOW: a symlink planted at the path is refused, never followed
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        if stat.S_ISLNK(os.lstat(p).st_mode):
            raise ConfigError(
                f"{what} {p}: is a symbolic link; remove it (it is not followed)"
            ) from None
        raise ConfigError(
            f"{what} {p}: exists and is not a usable directory ({e.strerror})"
        ) from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise ConfigError(f"{what} {p}: owned by user id {st.st_uid}, not by this user")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return p


def short_error(e: BaseException) -> str:
    """``"Type: first line"`` of an exception, at most 160 characters of it: enough to tell a
    truncated file from a foreign one without a traceback."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, KeyError):
        text = f"no {text} entry"
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__
