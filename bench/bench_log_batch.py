"""What one MLflow ``log_batch`` costs, by its size: the unit of the driver's MLflow work.

Each row times one call into a new child run of a local sqlite store made as a sweep makes it
(``ct_sweeps.sqlite_store.new_sqlite_store``, WAL where the folder allows), 20 metric keys per
step as a CT setting's epoch records have, medians of ``--repeats`` runs. The last rows log a
second batch into a run that already holds the first, as a trial's later flushes do.

    .venv/bin/python bench/bench_log_batch.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import REPO, table, write_csv

KEYS = [f"metric_{i}" for i in range(20)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "log_batch.csv"))
    args = ap.parse_args()

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from ct_sweeps.sqlite_store import new_sqlite_store

    tmp = Path(tempfile.mkdtemp(prefix="ct-bench-log-batch-"))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    new_sqlite_store(uri, wal="auto")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bench", artifact_location=(tmp / "art").as_uri())

    def batch(rid: str, steps: range | list[int], params: int = 0) -> float:
        metrics = [Metric(k, 0.5, 0, s) for s in steps for k in KEYS]
        ps = [Param(f"param_{i}", str(i)) for i in range(params)]
        t = time.perf_counter()
        client.log_batch(rid, metrics=metrics, params=ps)
        return time.perf_counter() - t

    def end(rid: str) -> float:
        t = time.perf_counter()
        client.set_terminated(rid, "FINISHED")
        return time.perf_counter() - t

    cases = {
        "1 step (20 rows)": lambda r: batch(r, [5]),
        "10 steps (200 rows)": lambda r: batch(r, range(5, 55, 5)),
        "20 steps (400 rows)": lambda r: batch(r, range(5, 105, 5)),
        "60 params, no metrics": lambda r: batch(r, [], params=60),
        "10 steps, after 10 steps": lambda r: (
            batch(r, range(5, 55, 5)),
            batch(r, range(55, 105, 5)),
        )[1],
        "1 step, after 19 steps": lambda r: (batch(r, range(5, 100, 5)), batch(r, [100]))[1],
        "set_terminated": end,
    }
    rows = []
    for name, fn in cases.items():
        times = [fn(client.create_run(exp).info.run_id) for _ in range(args.repeats)]
        rows.append({"call": name, "ms": 1000 * statistics.median(times), "repeats": args.repeats})
    print(table(rows, f"MLflow calls into {uri}"))
    write_csv(rows, args.out)


if __name__ == "__main__":
    main()
