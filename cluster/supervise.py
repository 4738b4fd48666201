"""Start the cluster's processes detached and logged, wait on them, and stop exactly them.

A process is stopped by its pid and the tree below it, never by name and never with `ray stop`,
which would kill every Ray process on a shared machine.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import procinfo
from clusterstate import REPO, ClusterError, child_env


def spawn(name: str, cmd: list[str], state: Path, extra_env: dict | None = None) -> dict:
    """Start `cmd` in a session of its own with the cluster's environment (plus `extra_env`),
    output appended to STATE/logs/<name>.log; return its record (name, pid, log, cmd)."""
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


def wait_for(what: str, check: Callable[[], bool], timeout: float, procs: list[dict]) -> None:
    """Poll `check` until it holds; fail early, with the log's tail, if one of `procs` exits."""
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


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file (or a note that there is none)."""
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


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
