"""Faults of a sweep on its own Ray (integration, slow): a SIGKILLed driver's Ray processes are
ended when the sweep resumes, and a disk that fills up mid-sweep ends it with exit code 75 and
the resume command, after which the resume finishes every setting."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ct_sweeps.run.cluster import DRIVER_VAR

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SWEEP = {
    "name": "faults",
    "base": str(ROOT / "configs" / "base" / "moons.yaml"),
    "overrides": {
        "data.n_train": 200,
        "data.n_val": 50,
        "data.n_test": 50,
        "train.epochs": 25,
        "train.nce": 40,
        "train.batch_size": 50,
        "generator.type": "generic",
        "generator.T": 5,
    },
    "search": {"algorithm": "grid", "metric": "val_acc", "mode": "max", "pack": 0},
    "space": {"train.lambda_reg": [0.1, 0.2]},
    "resources": {"cpu": 1},
    "checkpoint_every": 1,
}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", DRIVER_VAR)}


def marked_by(driver: int) -> dict[int, str]:
    """This user's processes that a sweep driver with pid ``driver`` marked, with their mark."""
    key = f"{DRIVER_VAR}=".encode()
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            env = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            marks = [i[len(key) :].decode() for i in env.split(b"\0") if i.startswith(key)]
            if stat != "Z" and marks and marks[0].startswith(f"{driver}:"):
                out[int(entry.name)] = marks[0]
    return out


def wait_for(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def checkpointed(run: Path) -> bool:
    return any(run.glob("tune/trial_*/checkpoint_*"))


def start(tmp: Path, run: Path) -> subprocess.Popen:
    sweep = tmp / "s.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    argv = [str(BIN / "ct-sweep"), "run", str(sweep), "--storage", str(run), "--num-cpus", "2"]
    return subprocess.Popen(
        argv, cwd=tmp, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def resume(run: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [str(BIN / "ct-sweep"), "resume", str(run), "--num-cpus", "2", *extra]
    return subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc (Linux)")
def test_the_ray_processes_of_a_killed_driver_are_ended_when_the_sweep_resumes(tmp_path):
    run = tmp_path / "run"
    driver = start(tmp_path, run)
    try:
        wait_for("a checkpoint", lambda: checkpointed(run), 300)
        ray_procs = marked_by(driver.pid)
        assert ray_procs, "the driver's Ray carries no mark"
        mark = next(iter(ray_procs.values()))
        driver.send_signal(signal.SIGKILL)
        driver.communicate(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    # Ray's agents usually outlive a SIGKILLed driver by minutes, but not always: a process
    # that carries the dead driver's mark stands for them, so that the clean-up is always due
    stand_in = subprocess.Popen(["sleep", "600"], env={**_env(), DRIVER_VAR: mark})
    try:
        left = marked_by(driver.pid)
        assert stand_in.pid in left
        res = resume(run)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "processes a killed sweep driver had left" in res.stderr, res.stderr[-2000:]
        assert stand_in.wait(timeout=30) < 0, "the stand-in was not ended by a signal"
        assert not marked_by(driver.pid), "processes of the killed driver still run"
    finally:
        if stand_in.poll() is None:
            stand_in.kill()


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (root only), unmounted afterwards."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write into ``disk`` until it is full; return the filler file."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_ends_the_sweep_with_its_own_exit_code_and_the_resume_command(tmp_path):
    with small_disk(tmp_path / "disk", "96m") as disk:
        run = disk / "run"
        driver = start(tmp_path, run)
        try:
            wait_for("a checkpoint", lambda: checkpointed(run), 300)
            filler = fill(disk)
            out, err = driver.communicate(timeout=600)
        finally:
            if driver.poll() is None:
                driver.kill()
        assert driver.returncode == 75, (out[-2000:], err[-3000:])
        assert f"ct-sweep resume {run} --retry-errored" in err, err[-3000:]
        assert "Traceback" not in err.split("error: the disk")[-1]
        filler.unlink()
        res = resume(run, "--retry-errored")
        assert res.returncode == 0, res.stderr[-3000:]
        results = (run / "results.csv").read_text().splitlines()
        assert len(results) == 3 and all("TERMINATED" in r for r in results[1:]), results
