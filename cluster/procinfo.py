"""Linux process and socket inspection from /proc and `ss`, without psutil.

Used by `ctcluster.py` to stop exactly the processes it started (never by name, never `ray stop`,
which would kill every Ray on a shared machine) and by the tests to check what listens where.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The command line of `pid` joined by spaces ('' if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _parent_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            parents[int(name)] = int(fields[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
    return parents


def descendants(pid: int) -> set[int]:
    """All live descendants of `pid` (children, grandchildren, ...), excluding `pid`."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_map().items():
        children.setdefault(parent, []).append(child)
    out: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in out:
                out.add(child)
                stack.append(child)
    return {p for p in out if alive(p)}


def pids_mentioning(marker: str) -> set[int]:
    """Live processes whose command line contains `marker` (a unique state/temp path).

    This is how reparented Ray agents of *our* cluster are found: every Ray process of a node
    carries its session directory (under our private temp dir) on its command line.
    """
    me = os.getpid()
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me and marker in cmdline(int(name)):
            if alive(int(name)):
                found.add(int(name))
    return found


def terminate(pids: Iterable[int], timeout: float = 20.0) -> set[int]:
    """SIGTERM `pids`, wait up to `timeout` s, SIGKILL what is left; return pids still alive."""
    pids = {p for p in pids if alive(p)}
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    left = {p for p in pids if alive(p)}
    if left:
        _signal_all(left, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(alive(p) for p in left):
            time.sleep(0.1)
    return {p for p in left if alive(p)}


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket: local address, port and owning pids."""

    host: str
    port: int
    pids: tuple[int, ...]


_SS_PID = re.compile(r"pid=(\d+)")


def listeners() -> list[Listener]:
    """Listening TCP sockets from `ss -ltnpH` (IPv4 and IPv6), with their owning pids."""
    out = subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, check=True, timeout=20
    ).stdout
    result = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        local = cols[3]
        host, _, port = local.rpartition(":")
        host = host.strip("[]")
        if "%" in host:  # e.g. 127.0.0.53%lo
            host = host.split("%", 1)[0]
        pids = tuple(int(p) for p in _SS_PID.findall(line))
        if port.isdigit():
            result.append(Listener(host=host, port=int(port), pids=pids))
    return result


def listeners_of(pids: Iterable[int]) -> list[Listener]:
    """Listening sockets owned by any of `pids`."""
    wanted = set(pids)
    return [sock for sock in listeners() if wanted.intersection(sock.pids)]
