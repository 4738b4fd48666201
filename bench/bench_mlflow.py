"""MLflow logging of a sweep's settings into a new local sqlite store, by SQLite journal mode.

The driver's MLflow work for N settings of the OL grid, through the sweep's own tracking code
(:class:`ct_sweeps.record.stream.Stream` into :class:`ct_sweeps.record.mlflow_tracker.
MlflowTracker`) with ``tracking.log_every: 5`` and 100 epochs: the sweep's parent run, a child run
per setting, three flushes of its metrics (the first with its params), the clock totals, and its
end. Each repeat makes a new run directory and store (``ct_sweeps.record.store``) in every mode,
in turn, so the modes share the machine's state; the table gives medians and the ratio to
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

RECORD = {
    "loss": 0.5,
    "class_loss": 0.4,
    "div": 0.1,
    "reg": 0.01,
    "adv": 0.2,
    "train_acc": 0.9,
    "val_acc": 0.9,
    "val_loss": 0.3,
    "mature": 0.5,
    "ce_steps": 10.0,
    "seconds": 0.1,
    "time_search": 0.05,
    "time_train": 0.04,
    "time_eval": 0.01,
}


def workload(p, run, settings: list[dict], epochs: int) -> None:
    """What a sweep logs for these settings, setting by setting."""
    from ct_sweeps.record.mlflow_tracker import MlflowTracker
    from ct_sweeps.record.stream import Stream

    tracker = MlflowTracker(run.info["tracking_uri"], run, flush_s=1e9)
    stream = Stream(tracker, p, run, None)
    stream.sweep_started()
    thirds = [range(1 + i * epochs // 3, 1 + (i + 1) * epochs // 3) for i in range(3)]
    for k, s in enumerate(settings):
        stream.start(f"t_{k}", f"s{k}", s)
        for part in thirds:
            for e in part:
                stream.record(f"t_{k}", {"epoch": float(e), **RECORD})
            tracker.flush([f"t_{k}"])
        stream.end(f"t_{k}", "FINISHED")
    if tracker.failures:
        raise RuntimeError(f"{tracker.failures} MLflow calls failed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", type=int, default=90)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--csv", default=str(REPO / "bench/results/mlflow_journal.csv"))
    args = ap.parse_args()

    from ct_sweeps.plan import new_run_dir, plan

    sets = [f"tracking.log_every={args.log_every}", f"train.epochs={args.epochs}"]
    settings = None
    print(f"{args.settings} OL settings, {args.epochs} epochs, {args.repeats} repeats")

    modes = {"delete": False, "wal": True}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="ct-bench-mlflow-") as d:
        for r in range(args.repeats):
            for mode, wal in modes.items():
                sweep = REPO / "configs/paper/gen_params_over.yaml"
                p = plan(sweep, [*sets, f"tracking.sqlite_wal={str(wal).lower()}"])
                settings = settings or p.space.settings(1, 0)[: args.settings]
                run = new_run_dir(p, str(Path(d) / f"{mode}-{r}"))
                run.save_info(tracking_uri=f"sqlite:///{run.path / 'mlflow.db'}")
                t0, c0 = time.perf_counter(), time.process_time()
                workload(p, run, settings, args.epochs)
                wall[mode].append(time.perf_counter() - t0)
                cpu[mode].append(time.process_time() - c0)

    base_cpu = statistics.median(cpu["delete"])
    rows = []
    for mode in modes:
        w, c = statistics.median(wall[mode]), statistics.median(cpu[mode])
        rows.append(
            {
                "journal": mode,
                "settings": args.settings,
                "wall_s": w,
                "cpu_s": c,
                "cpu_ms_per_setting": 1000 * c / args.settings,
                "cpu_vs_delete": c / base_cpu,
                "wall_all": " ".join(f"{v:.2f}" for v in wall[mode]),
            }
        )
    print(table(rows))
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
