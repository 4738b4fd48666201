"""Train a whole sweep grid as packs in this one process, without Ray or MLflow.

The arithmetic of a grid, end to end: the sweep file's settings are expanded (the same
``ct_sweeps`` space code `ct-sweep` uses), grouped by ``ct_core.packability.pack_key`` and each group is
trained as packs of at most ``--pack`` settings on one device. This isolates the compute of a
grid from the sweep machinery (compare with ``bench_sweep.py``, which goes through ``ct-sweep``),
and it is how the grids were measured on the lent GPU machine, where Ray and MLflow are not
installed.

    .venv/bin/python bench/bench_grid.py configs/paper/gen_params_over.yaml --set train.epochs=5
    .venv/bin/python bench/bench_grid.py configs/paper/tune_adult.yaml --device cuda

Prints one row per pack and a total; writes ``bench/results/grid_<name>_<device>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ct_core.data import load_dataset  # noqa: E402
from ct_core.packability import pack_key  # noqa: E402
from ct_core.training import PackTrainer  # noqa: E402
from ct_sweeps.plan.schema import load_sweep  # noqa: E402
from ct_sweeps.plan.space import parse_space, trial_config  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("sweep")
    ap.add_argument("--set", action="append", default=[], help="sweep/training override")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pack", type=int, default=0, help="max settings per pack (0: whole group)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N settings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    sweep, base = load_sweep(args.sweep, args.set)
    space = parse_space(sweep.space, sweep.search.algorithm)
    points = space.grid_points() * sweep.search.num_samples
    cfgs = [trial_config(base, space.resolve(p)) for p in points]
    cfgs = [c.model_copy(update={"train": c.train.model_copy(update={"device": args.device})})
            for c in cfgs]  # fmt: skip
    if args.limit:
        cfgs = cfgs[: args.limit]
    groups: dict[str, list] = defaultdict(list)
    for c in cfgs:
        groups[repr(pack_key(c))].append(c)

    t_all = time.perf_counter()
    data = load_dataset(cfgs[0].data)
    t_data = time.perf_counter() - t_all
    rows = []
    for g in groups.values():
        size = args.pack or len(g)
        for i in range(0, len(g), size):
            chunk = g[i : i + size]
            t0 = time.perf_counter()
            pt = PackTrainer(chunk, data=data)
            recs = [r for r in pt.run()][-1]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            accs = [r["val_acc"] for r in recs if r is not None and "failed" not in r]
            rows.append({"pack": len(rows), "settings": len(chunk),
                         "generator": chunk[0].generator.type if len(
                             {c.generator.type for c in chunk}) == 1 else "generic/ecco",
                         "seconds": round(dt, 2),
                         "s_per_setting": round(dt / len(chunk), 3),
                         "mean_val_acc": round(sum(accs) / max(len(accs), 1), 4)})  # fmt: skip
            print(rows[-1], flush=True)
    total = time.perf_counter() - t_all
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{args.threads}"
    print(f"\n{sweep.name}: {len(cfgs)} settings, {cfgs[0].train.epochs} epochs, device {dev}: "
          f"{total:.1f} s wall ({t_data:.1f} s data), {total / len(cfgs):.3f} s per setting")  # fmt: skip
    OUT.mkdir(exist_ok=True)
    name = f"grid_{sweep.name}_{args.device.split(':')[0]}.csv"
    with (OUT / name).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        f.write(f"# total {total:.1f} s, {len(cfgs)} settings, device {dev}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
