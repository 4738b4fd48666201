"""MLflow logging of a sweep's settings into a new local sqlite store, by SQLite journal mode.

The driver's MLflow work for N settings of the OL grid, as ``MlflowSweepCallback`` does it with
``tracking.log_every: 5`` and 100 epochs: a child run per setting (its tags), three flushes of
its per-epoch metrics (the first with its ~60 params), the clock totals, and its end. Each
repeat makes a new store with ``ct_sweeps.sqlite_store.new_sqlite_store`` in every mode, in
turn, so the modes share the machine's state; the table gives medians and the ratio to
SQLite's default journal (``delete``).

    .venv/bin/python bench/bench_mlflow.py                 # 90 settings (one OL pack), 3 repeats
    .venv/bin/python bench/bench_mlflow.py --settings 270 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import REPO, table, write_csv

KEYS = ("adv", "class_loss", "div", "loss", "reg", "train_acc", "val_acc", "val_loss")
TOTALS = ("train_seconds", "time_search_total", "time_train_total", "time_eval_total")


def workload(uri: str, params: list[dict], epochs: int, every: int) -> None:
    """What the callback logs for these settings (``params``: each setting's), run by run."""
    from ct_sweeps.tracking import Tracker

    tr = Tracker(uri)
    exp = tr.call("create experiment", "create_experiment", "bench", None)
    parent = tr.call("create run", "create_run", exp).info.run_id
    steps = list(range(every, epochs + 1, every))
    thirds = [steps[i::3] for i in range(3)]
    for k, p in enumerate(params):
        tags = {"mlflow.parentRunId": parent, "ct.trial_id": f"t_{k}", "ct.sweep": "bench"}
        rid = tr.call("create run", "create_run", exp, run_name=f"s{k}", tags=tags).info.run_id
        for i, part in enumerate(thirds):
            ms = [(key, 0.5, s) for s in sorted(part) for key in KEYS]
            if i == 2:
                ms += [(key, 1.0, epochs) for key in TOTALS]
            tr.log_batch(
                rid, metrics=ms, params=p if i == 0 else None, tags={"ct.last_step": str(i)}
            )
        tr.call("end run", "set_terminated", rid, "FINISHED")
    if tr.failures:
        raise RuntimeError(f"{tr.failures} MLflow calls failed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", type=int, default=90)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--csv", default=str(REPO / "bench/results/mlflow_journal.csv"))
    args = ap.parse_args()

    from ct_sweeps.packing import expand_settings
    from ct_sweeps.runner import plan_from
    from ct_sweeps.schema import load_sweep
    from ct_sweeps.sqlite_store import new_sqlite_store
    from ct_sweeps.tracking import child_params

    sweep, base = load_sweep(str(REPO / "configs/paper/gen_params_over.yaml"))
    plan = plan_from(sweep, base)
    settings = expand_settings(plan.space, 1, 0)[: args.settings]
    params = [child_params(plan.spec(), s, 1.0, 0.0) for s in settings]
    print(
        f"{len(params)} OL settings, {len(params[0])} params each, {args.epochs} epochs logged "
        f"every {args.log_every}, {args.repeats} repeats"
    )

    modes = {"delete": False, "wal": True}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="ct-bench-mlflow-") as d:
        for r in range(args.repeats):
            for mode, wal in modes.items():
                uri = f"sqlite:///{Path(d) / f'{mode}-{r}.db'}"
                if not new_sqlite_store(uri, wal=wal):
                    raise RuntimeError(f"could not make {uri}")
                t0, c0 = time.perf_counter(), time.process_time()
                workload(uri, params, args.epochs, args.log_every)
                wall[mode].append(time.perf_counter() - t0)
                cpu[mode].append(time.process_time() - c0)

    base_cpu = statistics.median(cpu["delete"])
    rows = []
    for mode in modes:
        w, c = statistics.median(wall[mode]), statistics.median(cpu[mode])
        rows.append(
            {
                "journal": mode,
                "settings": len(params),
                "wall_s": w,
                "cpu_s": c,
                "cpu_ms_per_setting": 1000 * c / len(params),
                "cpu_vs_delete": c / base_cpu,
                "wall_all": " ".join(f"{v:.2f}" for v in wall[mode]),
            }
        )
    print(table(rows))
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
