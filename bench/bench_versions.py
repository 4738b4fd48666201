"""This checkout's packs against another checkout's (a baseline commit), alternating runs.

Two worker processes, one per checkout (``ct_core`` from its ``PYTHONPATH``), each expand a sweep
file's grid (the ``ct_sweeps`` space code `ct-sweep` uses), keep the settings of one generator
family (``--family feature``: Generic/ECCo, ``latent``: REVISE) in a fixed shuffle and warm up
(first-call costs, REVISE's VAE). Then, per K and repeat, each trains one pack of the first K
settings (building the trainer and training all epochs; nothing else is timed), baseline and
current alternating (the first of the pair alternating too), so that both see the same load.
The table gives per setting-epoch the median wall and CPU seconds (CPU time of the worker's one
thread, less disturbed by other processes on a shared machine) and the medians of the
per-repeat ratios current/baseline.

    python bench/bench_versions.py --baseline ../main --ks 16,45,90 --epochs 3
    python bench/bench_versions.py --baseline ../main --family latent --ks 16,45
    python bench/bench_versions.py --baseline ../main --sweep configs/paper/tune_adult.yaml \\
        --ks 18 --epochs 2 --name adult

Writes ``bench/results/versions_<name>.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    """Serve timings of packs (``ct_core`` from ``PYTHONPATH``): read a K per line from stdin,
    train a pack of the first K settings, print a JSON line."""
    import torch

    import ct_core
    from ct_core.data import load_dataset

    try:
        from ct_sweeps.plan.schema import load_sweep
        from ct_sweeps.plan.space import parse_space, trial_config
    except ImportError:  # a checkout from before ct_sweeps' plan/run/record parts
        from ct_sweeps.schema import load_sweep
        from ct_sweeps.space import parse_space, trial_config

    try:
        from ct_core.training import PackTrainer as Pack
    except ImportError:  # a checkout from before PackTrainer
        from ct_core.pack import PackedTrainer as Pack

    torch.set_num_threads(1)
    sets = [f"train.epochs={args.epochs}", "train.device=cpu", *args.set]
    sweep, base = load_sweep(args.sweep, sets)
    space = parse_space(sweep.space, sweep.search.algorithm)
    cfgs = [trial_config(base, space.resolve(p)) for p in space.grid_points()]
    cfgs = [c for c in cfgs if (c.generator.type == "revise") == (args.family == "latent")]
    random.Random(0).shuffle(cfgs)
    data = load_dataset(cfgs[0].data)
    warm = [
        c.model_copy(update={"train": c.train.model_copy(update={"epochs": 1})}) for c in cfgs[:2]
    ]
    list(Pack(warm, data=data).run())
    print(json.dumps({"ready": True, "ct_core": ct_core.__file__}), flush=True)
    for line in sys.stdin:
        k = int(line)
        t0, c0 = time.perf_counter(), time.process_time()
        list(Pack(cfgs[:k], data=data).run())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(json.dumps({"wall": wall, "cpu": cpu, "k": len(cfgs[:k])}), flush=True)


class Worker:
    """A child process of one checkout, warm, timing packs on request."""

    def __init__(self, checkout: Path, args: argparse.Namespace, extra: Sequence[str] = ()):
        cmd = [sys.executable, __file__, "--child", "--sweep", args.sweep, "--family", args.family]
        cmd += ["--epochs", str(args.epochs)]
        for s in [*args.set, *extra]:
            cmd += ["--set", s]
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=checkout, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        ready = self._read()
        if not Path(ready["ct_core"]).resolve().is_relative_to(checkout.resolve()):
            raise SystemExit(f"{checkout}: imported {ready['ct_core']}")

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"a worker ended early (exit {self.proc.wait()})")
        return json.loads(line)

    def time(self, k: int, epochs: int) -> tuple[float, float]:
        """Wall and CPU seconds per setting-epoch of a pack of the first ``k`` settings."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        r = self._read()
        return r["wall"] / (r["k"] * epochs), r["cpu"] / (r["k"] * epochs)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="another checkout of this repository (required)")
    ap.add_argument("--current", default=str(REPO), help="the checkout to compare (default: this)")
    ap.add_argument("--sweep", default=str(REPO / "configs/paper/gen_params_over.yaml"))
    ap.add_argument("--family", choices=["feature", "latent"], default="feature")
    ap.add_argument("--ks", default="16,45,90")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], help="training override k=v")
    ap.add_argument(
        "--current-set",
        action="append",
        default=[],
        help="override for the current checkout only (a key the baseline lacks, e.g. "
        "data.rng=numpy to draw the baseline's points)",
    )
    ap.add_argument("--name", default=None, help="CSV name (default: <sweep>_<family>)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if not args.baseline:
        ap.error("--baseline is required")
    sys.path.insert(0, str(REPO / "bench"))
    from _common import machine, table, write_csv

    base, cur = Path(args.baseline).resolve(), Path(args.current).resolve()
    name = args.name or f"{Path(args.sweep).stem}_{args.family}"
    print(machine())
    workers = {"baseline": Worker(base, args), "current": Worker(cur, args, args.current_set)}
    rows = []
    for k in (int(v) for v in args.ks.split(",")):
        wall: dict[str, list[float]] = {"baseline": [], "current": []}
        cpu: dict[str, list[float]] = {"baseline": [], "current": []}
        for rep in range(args.repeats):
            order = ["baseline", "current"] if rep % 2 == 0 else ["current", "baseline"]
            for label in order:
                w, c = workers[label].time(k, args.epochs)
                wall[label].append(w)
                cpu[label].append(c)

        def ratio(t: dict[str, list[float]]) -> list[float]:
            return [c / b for b, c in zip(t["baseline"], t["current"])]

        rows.append(
            {
                "sweep": Path(args.sweep).stem,
                "family": args.family,
                "K": k,
                "epochs": args.epochs,
                "repeats": args.repeats,
                "current_set": " ".join(args.current_set),
                "baseline_wall_s": statistics.median(wall["baseline"]),
                "current_wall_s": statistics.median(wall["current"]),
                "ratio_wall": statistics.median(ratio(wall)),
                "baseline_cpu_s": statistics.median(cpu["baseline"]),
                "current_cpu_s": statistics.median(cpu["current"]),
                "ratio_cpu": statistics.median(ratio(cpu)),
                "ratios_wall": " ".join(f"{r:.3f}" for r in ratio(wall)),
            }
        )
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    for w in workers.values():
        w.close()
    print()
    print(table(rows, f"current ({cur}) vs baseline ({base}), {args.repeats} alternating repeats"))
    write_csv(rows, REPO / f"bench/results/versions_{name}.csv")


if __name__ == "__main__":
    main()
