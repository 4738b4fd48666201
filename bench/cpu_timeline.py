"""Where a command's CPU goes over time: every process's CPU in each interval while it runs.

Runs the command after ``--`` and samples ``/proc`` (Linux) every ``--step`` seconds for its first
``--seconds``: one line per interval with the machine's CPU-seconds used in it (2 cores give at
most 2 × step) and the busiest processes. Ray's helpers show by script name (``dashboard``,
``monitor``, ``log_monitor``, agents), trial workers as ``ray::IDLE`` / ``ray::ImplicitFunc``,
the ``ct-sweep`` process as ``DRIVER``. Made to see a sweep's start-up: which phases use both
cores, which one, and where the machine idles.

    .venv/bin/python bench/cpu_timeline.py --seconds 14 -- \\
        .venv/bin/python -m ct_sweeps.cli run configs/paper/gen_params_over.yaml \\
        --storage /tmp/ct-timeline --num-cpus 2 --set train.epochs=20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _name(cmd: str, comm: str) -> str:
    if "cpu_timeline.py" in cmd:  # this sampler (its command line names the sampled one)
        return "sampler"
    if "ct_sweeps.cli" in cmd:
        return "DRIVER"
    if comm.startswith("ray::") or not cmd:
        return comm
    words = cmd.split()
    script = next((w for w in words[1:] if w.endswith(".py")), words[0])
    return Path(script).name


def snapshot() -> dict[str, tuple[float, str]]:
    """CPU seconds used so far (user + system) and a short name, per live process."""
    out: dict[str, tuple[float, str]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[p.name] = ((int(fields[11]) + int(fields[12])) / TICK, _name(cmd.strip(), comm))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step", type=float, default=0.25, help="seconds per interval")
    ap.add_argument("--seconds", type=float, default=14.0, help="how long to sample")
    ap.add_argument("--top", type=int, default=4, help="processes shown per interval")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")

    prev, t0 = snapshot(), time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"{'t s':>5} {'CPU s':>6}  busiest processes (CPU s in the interval)")
    while time.perf_counter() - t0 < args.seconds:
        time.sleep(args.step)
        cur = snapshot()
        used = sorted(
            ((cpu - prev.get(pid, (0.0, ""))[0], name) for pid, (cpu, name) in cur.items()),
            reverse=True,
        )
        used = [(u, n) for u, n in used if u > 0.005]
        top = " | ".join(f"{n} {u:.2f}" for u, n in used[: args.top])
        print(f"{time.perf_counter() - t0:5.1f} {sum(u for u, _ in used):6.2f}  {top}", flush=True)
        prev = cur
    print(f"(sampling ended; waiting for the command, exit {proc.wait()})")


if __name__ == "__main__":
    main()
