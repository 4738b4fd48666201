"""This checkout's packs against another checkout's (a baseline commit), alternating runs.

Each measurement is one process that imports ``ct_core`` from one checkout (``PYTHONPATH``),
expands a sweep file's grid (the ``ct_sweeps`` space code `ct-sweep` uses), keeps the settings of
one generator family (``--family feature``: Generic/ECCo, ``latent``: REVISE) in a fixed shuffle,
warms up (first-call costs, REVISE's VAE) and times one pack of the first K settings: building
the trainer and training all epochs, nothing else. Baseline and current alternate within each
repeat (the first of the pair alternating too), so both see the same load; the table gives the
median seconds per setting-epoch of each and the median of the per-repeat ratios current/baseline.

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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    """Time one pack in this process (``ct_core`` from ``PYTHONPATH``); print a JSON line."""
    import torch

    import ct_core
    from ct_core.data import load_dataset
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
    t0 = time.perf_counter()
    list(Pack(cfgs[: args.k], data=data).run())
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "k": len(cfgs[: args.k]), "ct_core": ct_core.__file__}))


def measure(checkout: Path, args: argparse.Namespace, k: int) -> float:
    cmd = [sys.executable, __file__, "--child", "--sweep", args.sweep, "--family", args.family]
    cmd += ["--k", str(k), "--epochs", str(args.epochs)]
    for s in args.set:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=checkout, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{checkout}: {out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(res["ct_core"]).resolve().is_relative_to(checkout.resolve()), res
    return res["seconds"] / (res["k"] * args.epochs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="another checkout of this repository (required)")
    ap.add_argument("--sweep", default=str(REPO / "configs/paper/gen_params_over.yaml"))
    ap.add_argument("--family", choices=["feature", "latent"], default="feature")
    ap.add_argument("--ks", default="16,45,90")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="training override k=v")
    ap.add_argument("--name", default=None, help="CSV name (default: <sweep>_<family>)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if not args.baseline:
        ap.error("--baseline is required")
    sys.path.insert(0, str(REPO / "bench"))
    from _common import machine, table, write_csv

    base, cur = Path(args.baseline).resolve(), REPO
    name = args.name or f"{Path(args.sweep).stem}_{args.family}"
    print(machine())
    rows = []
    for k in (int(v) for v in args.ks.split(",")):
        times: dict[str, list[float]] = {"baseline": [], "current": []}
        for rep in range(args.repeats):
            order = [("baseline", base), ("current", cur)]
            for label, checkout in order if rep % 2 == 0 else order[::-1]:
                times[label].append(measure(checkout, args, k))
        ratios = [c / b for b, c in zip(times["baseline"], times["current"])]
        rows.append(
            {
                "sweep": Path(args.sweep).stem,
                "family": args.family,
                "K": k,
                "epochs": args.epochs,
                "baseline_s_per_setting_epoch": statistics.median(times["baseline"]),
                "current_s_per_setting_epoch": statistics.median(times["current"]),
                "ratio_current_over_baseline": statistics.median(ratios),
                "ratios": " ".join(f"{r:.3f}" for r in ratios),
            }
        )
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows, f"current ({cur}) vs baseline ({base}), {args.repeats} alternating repeats"))
    write_csv(rows, REPO / f"bench/results/versions_{name}.csv")


if __name__ == "__main__":
    main()
