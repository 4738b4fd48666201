"""The driver's MLflow work at a sweep's end: a recorded last round replayed through the callback.

A kept OL sweep (``bench_sweep.py --keep``) holds each pack trial's ``result.json`` and final
checkpoint. This script replays its last two pack trials (the REVISE packs of 45 settings) through
a real ``MlflowSweepCallback`` into a new local sqlite store, in real time: each result reaches the
callback as many seconds after its trial's start as it reached Tune, and the second trial is
shifted to end ``--spread`` seconds after the first (the slots' imbalance; 0: both end together).
What it measures, from the last trial's end:

* ``end_s``: until everything the callback was handed is logged (what the driver waits for
  before it writes the report);
* ``logging_s``: the logging thread's busy seconds over the whole replay (its CPU, roughly);
* ``calls``: the MLflow calls it made.

There is no training beside it, so the logging thread has a core to itself throughout; on a
2-core machine with two trials training, the same work takes longer (bench/README.md).

    .venv/bin/python bench/bench_sweep.py --case 270 --epochs 100 --modes packed --keep
    .venv/bin/python bench/bench_tracking_end.py /tmp/ct-bench-sweep-XXXX/run --spread 0,2.5

Compare code versions by running each tree's copy (``PYTHONPATH=<tree>``) on the same kept run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, table, write_csv

SWEEP = REPO / "configs" / "paper" / "gen_params_over.yaml"


class Trial:
    """What the callback reads of a Tune trial."""

    def __init__(self, trial_id: str, pack: int, path: Path):
        self.trial_id, self.config, self.path = trial_id, {"pack": pack}, str(path)
        self.status, self.run_metadata = "PENDING", None

    def __str__(self) -> str:
        return f"trial_{self.trial_id}"


def _last_round(run: Path) -> list[tuple[Path, list[dict[str, Any]], int]]:
    """The two trials that started last: (trial dir, results, pack index)."""
    trials = []
    for f in run.glob("tune/trial_*/result.json"):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        trials.append((f.parent, lines, int(lines[0]["config"]["pack"])))
    trials.sort(key=lambda t: t[1][0]["started"])
    return trials[-2:]


def replay(run: Path, spread: float, verbose: bool = False) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    from ct_sweeps.runner import plan
    from ct_sweeps.sqlite_store import new_sqlite_store
    from ct_sweeps.tracking import MlflowSweepCallback, warm_model_logging

    p = plan(SWEEP)
    packs_doc = json.loads((run / "packs.json").read_text())["packs"]
    last = _last_round(run)
    tmp = Path(tempfile.mkdtemp(prefix="ct-bench-end-"))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    new_sqlite_store(uri, wal="auto")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("end", artifact_location=(tmp / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    t = p.sweep.tracking
    packs = [[s["config"] for s in packs_doc[pack]] for _, _, pack in last]
    cb = MlflowSweepCallback(
        uri,
        exp,
        parent,
        p.spec(),
        p.sweep.name,
        packs=packs,
        models=t.models_for(p.n_trials),
        n_settings=p.n_trials,
        metric=p.sweep.search.metrics[0],
        mode=p.sweep.search.modes[0],
        log_every=t.log_every,
        new_parent=True,
    )
    # as in a sweep, where earlier packs ended before the last round: MLflow's model code is
    # loaded (the callback does it at the first trial's end) and the first round's best known
    warm_model_logging()
    cb._warm = True

    # count the logging thread's busy time and calls, and time each work item
    busy = [0.0]
    items: list[tuple[float, str, float]] = []
    calls = [0]
    inner = cb.tracker.call

    def counted(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        return inner(*a, **k)

    cb.tracker.call = counted  # type: ignore[method-assign]
    log_batch = cb.tracker.log_batch

    def counted_batch(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        return log_batch(*a, **k)

    cb.tracker.log_batch = counted_batch  # type: ignore[method-assign]
    work = cb._work

    def timed_work() -> None:
        q = cb._queue
        get = q.get

        def timed_get(*a: Any, **k: Any) -> Any:
            item = get(*a, **k)
            fn, args = item

            def run(*args: Any) -> None:
                t0 = time.perf_counter()
                try:
                    fn(*args)
                finally:
                    busy[0] += time.perf_counter() - t0
                    name = getattr(fn, "__name__", str(fn))
                    items.append((t0, name, time.perf_counter() - t0))

            return run, args

        q.get = timed_get  # type: ignore[method-assign]
        work()

    cb._work = timed_work  # type: ignore[method-assign]

    # the events: each trial's start, results and end, B shifted to end `spread` s after A
    trials = [Trial(f"t{k}", k, d) for k, (d, _, _) in enumerate(last)]
    durations = [lines[-1]["reported"] - lines[0]["started"] for _, lines, _ in last]
    starts = [0.0, durations[0] + spread - durations[1]]
    shift = -min(starts)
    starts = [s + shift for s in starts]
    events: list[tuple[float, int, str, Any]] = []
    for k, (_, lines, _) in enumerate(last):
        t0 = lines[0]["started"]
        events.append((starts[k], k, "start", None))
        for line in lines:
            result = {key: v for key, v in line.items() if key != "config"}
            events.append((starts[k] + line["reported"] - t0, k, "result", result))
        events.append((starts[k] + lines[-1]["reported"] - t0 + 0.01, k, "complete", None))
    events.sort(key=lambda e: (e[0], e[1]))

    clock = time.perf_counter()
    for at, k, kind, result in events:
        wait = clock + at - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        trial = trials[k]
        if kind == "start":
            trial.status = "RUNNING"
            cb.on_trial_start(0, trials, trial)
        elif kind == "result":
            cb.on_trial_result(0, trials, trial, result)
        else:
            trial.status = "TERMINATED"
            cb.on_trial_complete(0, trials, trial)
    ended = time.perf_counter()
    cb.on_experiment_end(trials)
    cb.drain()
    end_s = time.perf_counter() - ended
    if verbose:  # the work items that ended after the last trial's end
        print(f"spread {spread}: after the last trial's end ({end_s:.2f} s)")
        for t0, name, took in items:
            if t0 + took > ended:
                print(f"  {t0 - ended:+6.2f} s  {name:<22} {took:.3f} s")
    finished = client.search_runs([exp], filter_string="attributes.status = 'FINISHED'")
    n = sum(len(pk) for pk in packs)
    if len(finished) != n:  # every child run ended (the parent stays open)
        raise SystemExit(f"{len(finished)} of {n} child runs FINISHED")
    return {"spread_s": spread, "end_s": end_s, "logging_s": busy[0], "calls": float(calls[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a kept OL sweep's run directory")
    ap.add_argument("--spread", default="0,2.5", help="seconds between the two trials' ends")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("-v", "--verbose", action="store_true", help="list the end's work items")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "tracking_end.csv"))
    args = ap.parse_args()
    rows = []
    for spread in (float(s) for s in args.spread.split(",")):
        runs = [replay(args.run, spread, args.verbose) for _ in range(args.repeats)]
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        row["end_s_all"] = " ".join(f"{r['end_s']:.2f}" for r in runs)
        row["repeats"] = args.repeats
        rows.append(row)
        print(table([row], f"spread {spread} s"), flush=True)
    write_csv(rows, args.out)


if __name__ == "__main__":
    main()
