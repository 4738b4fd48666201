"""Sweep-level bench: N settings through ``ct-sweep run``, time split into training and
overhead, with and without packs (``search.pack``).

Each run is a real ``ct-sweep run`` in a subprocess (its own local Ray with ``--num-cpus``, the
default sqlite MLflow store in the run directory). From the run's ``results.csv``:

* ``wall_s``: the subprocess, start to exit (Python and Ray start-up, the sweep, the report);
* ``train_s``: the sum of the settings' epoch clocks (``train_seconds``: search, training and
  validation metrics; a pack's clock is shared out over its settings);
* ``overhead_s`` = ``wall_s`` - ``train_s`` / parallelism (parallelism = the trial slots the
  sweep planned for, ``slots`` in ``run.json``: ``--num-cpus`` over the CPUs of a trial, and for
  GPU trials (``--set resources.gpu=0.5``) the GPUs over a trial's share too; at most the number
  of trials or packs); ``overhead_pct`` = its share of ``wall_s``;
* ``per_setting_s`` = ``wall_s`` / N;
* ``eval_last_s``: the settings' ``time_eval`` summed over the last epoch (one with validation
  metrics: ``train.eval_every`` divides the epochs, or it is the last), i.e. one validation pass
  of all N settings.

Where the overhead goes (packed runs: each pack trial reports its start and report wall clocks),
per trial slot (a worker process, as actors are reused) and averaged over the slots, so that the
four add up to ``overhead_s``:

* ``before_s``: from the command's start to its first trial's start (Python, Ray, Tune, the
  worker process; MLflow's set-up runs alongside);
* ``in_trials_s``: inside the trials but not in epochs (imports and data in a fresh worker,
  trainer set-up, reports, checkpoints);
* ``between_s``: between one trial's last report and the next trial's start (Tune);
* ``after_s``: from the last report to the command's exit (Tune's end, Ray stop, report, MLflow).

``slot_spread_s`` (part of ``after_s``): how long before the last slot the first one ended
(its last report): the end's imbalance, which the slots' averaged ``after_s`` holds at
``slot_spread_s / 2`` on two slots.

``driver_cpu_s`` is the CPU time of the ``ct-sweep`` process itself (all its threads: Tune's
event loop, MLflow logging, the report). On a 2-core machine it competes with the trials, so most
of it is not in ``overhead_s`` but in slower epochs (``train_s``).

    .venv/bin/python bench/bench_sweep.py                  # N = 20 (tune_moons, 5 epochs)
    .venv/bin/python bench/bench_sweep.py --case 270 --epochs 2
    .venv/bin/python bench/bench_sweep.py --case 270 --epochs 100 --modes packed   # the target
    .venv/bin/python bench/bench_sweep.py --case adult --epochs 100 --modes packed

Compare ``packed`` and ``unpacked`` from the same invocation (shared machines vary).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, table, write_csv  # noqa: E402

CASES = {
    # 2 tau x 5 lambda_reg x {full, vanilla} = 20 settings on moons (nce 1000)
    "20": (
        "configs/paper/tune_moons.yaml",
        ["space.generator.tau=[0.5,0.9]", "space.train.lambda_reg=[0.1,0.25,0.5,1.0,2.0]"],
    ),
    # the paper's OL generator grid: 270 settings, nce 1000, T in {5, 25, 50}
    "270": ("configs/paper/gen_params_over.yaml", []),
    # the paper's Adult tuning grid: 18 settings; the nce 5000 (the file says 1000)
    "adult": ("configs/paper/tune_adult.yaml", ["train.nce=5000"]),
}
MODES = {"packed": "search.pack=auto", "unpacked": "search.pack=0"}
SPLIT = ("before_s", "in_trials_s", "between_s", "after_s")


def load(path: Path) -> tuple[int, float, float]:
    """(rows, sums of train_seconds and time_eval) of a ``results.csv``."""
    with path.open() as f:
        rows = list(csv.DictReader(f))

    def total(col: str) -> float:
        return sum(float(r[col]) for r in rows if r.get(col) not in (None, "", "nan"))

    return len(rows), total("train_seconds"), total("time_eval")


def timeline(run_dir: Path, t0: float, wall: float) -> dict[str, float]:
    """The overhead split per trial slot (see the module docstring); NaN without packs."""
    slots: dict[object, list[tuple[float, float, float]]] = {}
    for f in (run_dir / "tune").glob("trial_*/result.json"):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if not lines or "started" not in lines[0]:
            return dict.fromkeys((*SPLIT, "slot_spread_s"), math.nan)
        # a pack's epoch clock is shared out over its settings' records: their sum
        epochs = sum(
            float(r.get("seconds", 0.0))
            for line in lines
            for recs in (line.get("settings") or {}).values()
            for r in recs
        )
        start, end = float(lines[0]["started"]), float(lines[-1]["reported"])
        pid = lines[0].get("pid")
        slots.setdefault(pid, []).append((start, end, epochs))
    before = inside = between = after = 0.0
    for trials in slots.values():
        trials.sort()
        before += trials[0][0] - t0
        after += t0 + wall - trials[-1][1]
        inside += sum(end - start - ep for start, end, ep in trials)
        between += sum(b[0] - a[1] for a, b in zip(trials, trials[1:]))
    n = max(1, len(slots))
    ends = [trials[-1][1] for trials in slots.values()]
    return {
        "before_s": before / n,
        "in_trials_s": inside / n,
        "between_s": between / n,
        "after_s": after / n,
        "slot_spread_s": max(ends) - min(ends) if ends else math.nan,
    }


def run_once(sweep: str, sets: list[str], mode: str, cpus: int, keep: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ct-bench-sweep-"))
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "ct_sweeps.cli", "run", sweep, "--storage", str(run_dir)]
    cmd += ["--num-cpus", str(cpus)]
    for s in [*sets, MODES[mode]]:
        cmd += ["--set", s]
    env = {**os.environ, "CT_SWEEP_VERBOSE": "0"}
    env.setdefault("CT_DATA_DIR", str((REPO / ".." / "shared" / "data").resolve()))
    t0, clock = time.perf_counter(), time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if keep:
        (tmp / "ct-sweep.log").write_text(out)
    if proc.returncode != 0 or not (run_dir / "results.csv").exists():
        print(out[-4000:], file=sys.stderr)
        raise SystemExit(f"ct-sweep failed ({proc.returncode}): {' '.join(cmd)}")
    n, train, eval_last = load(run_dir / "results.csv")
    m = re.search(r"MLflow in the driver ([\d.]+) s", out)
    info = json.loads((run_dir / "run.json").read_text())
    packs = int(info.get("n_packs") or n)
    slots = int(info.get("slots") or cpus)  # GPU trials: the GPU's share limits them too
    par = max(1, min(slots, n if mode == "unpacked" else packs))
    overhead = wall - train / par
    row = {
        "mode": mode,
        "settings": n,
        "packs": packs,
        "wall_s": wall,
        "train_s": train,
        "eval_last_s": eval_last,
        "parallelism": par,
        "overhead_s": overhead,
        "overhead_pct": 100 * overhead / wall,
        "per_setting_s": wall / n,
        "mlflow_driver_s": float(m.group(1)) if m else float("nan"),
        **timeline(run_dir, clock, wall),
        "driver_cpu_s": info.get("timings", {}).get("driver_cpu", math.nan),
    }
    if keep:
        row["run_dir"] = str(run_dir)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=sorted(CASES), default="20")
    ap.add_argument("--epochs", type=int, default=5, help="train.epochs (the paper: 100)")
    ap.add_argument("--modes", default="packed,unpacked")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra --set")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--out", default=None, help="CSV (default bench/results/sweep_<case>.csv)")
    args = ap.parse_args()

    sweep, sets = CASES[args.case]
    sets = [*sets, f"train.epochs={args.epochs}", *args.sets]
    if args.epochs < 5:  # the paper configs evaluate every 5 epochs (and always at the last)
        sets.append(f"train.eval_every={args.epochs}")
    load_before = os.getloadavg()[0]
    rows = []
    for mode in args.modes.split(","):
        runs = [run_once(sweep, sets, mode, args.num_cpus, args.keep) for _ in range(args.repeats)]
        row = dict(runs[0])
        medians = ("wall_s", "train_s", "eval_last_s", "overhead_s", "overhead_pct")
        medians += (*SPLIT, "slot_spread_s", "mlflow_driver_s", "driver_cpu_s")
        for k in (*medians, "per_setting_s"):
            row[k] = statistics.median(r[k] for r in runs)
        row.update(case=args.case, epochs=args.epochs, repeats=args.repeats)
        rows.append(row)
        print(table([row], f"{mode}: {sweep} {' '.join(sets)}"), flush=True)
    if len(rows) == 2:
        a, b = rows
        print(f"\nunpacked / packed wall: {b['wall_s'] / a['wall_s']:.2f}x")
    print(f"load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
    write_csv(rows, args.out or REPO / "bench" / "results" / f"sweep_{args.case}.csv")


if __name__ == "__main__":
    main()
