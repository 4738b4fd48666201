"""Pack width: the same N settings trained as packs of K, for several K (issue 6; the CPU cap
``ct_core.packability.CAP_CPU``).

Settings as in ``bench_pack.py`` (the paper's OL ``gen_params`` grid, a fixed shuffle, nested:
Generic/ECCo with ``--generator feature``, REVISE with ``--generator revise``), the first N. For
each K the N settings are cut in consecutive packs of K and trained one pack after the other in
this process; ``per_setting_epoch_s`` is the total over N x epochs. The Ks alternate within a
repeat, so that all see the same load; medians of ``--repeats``. ``vs_first`` is each K's time
against the first K's. A pack shares its per-operation work (Python, op dispatch) over its
settings, so a wider pack costs less per setting until the tensor arithmetic dominates.

    python bench/bench_width.py                         # N 180, K in {45, 90, 180}, 5 epochs
    python bench/bench_width.py --generator revise --n 90 --ks 45,90
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import REPO, machine, setup, table, write_csv
from bench_pack import GENERATORS, grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs/base/over.yaml"))
    ap.add_argument("--generator", choices=sorted(GENERATORS), default="feature")
    ap.add_argument("--n", type=int, default=180, help="settings (at most the grid's)")
    ap.add_argument("--ks", default="45,90,180")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--nce", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", default=None, help="default bench/results/width[_revise].csv")
    args = ap.parse_args()
    if args.csv is None:
        suffix = "" if args.generator == "feature" else f"_{args.generator}"
        args.csv = str(REPO / f"bench/results/width{suffix}.csv")
    setup(args.threads)

    from ct_core.data import load_dataset
    from ct_core.training import PackTrainer

    ks = [int(k) for k in args.ks.split(",")]
    cfgs = grid(args.config, args.epochs, "cpu", args.nce, args.generator)[: args.n]
    data = load_dataset(cfgs[0].data)
    print(machine())
    print(
        f"{cfgs[0].data.name}: {len(cfgs)} settings ({args.generator}), nce {args.nce}, "
        f"{args.epochs} epochs, K in {ks}, median of {args.repeats}"
    )
    list(PackTrainer(cfgs[:2], data=data).run())  # warm-up (first-call costs, REVISE's VAE)

    times: dict[int, list[float]] = {k: [] for k in ks}
    for _ in range(args.repeats):
        for k in ks:
            t0 = time.perf_counter()
            for i in range(0, len(cfgs), k):
                list(PackTrainer(cfgs[i : i + k], data=data).run())
            times[k].append(time.perf_counter() - t0)

    first = statistics.median(times[ks[0]])
    rows = []
    for k in ks:
        med = statistics.median(times[k])
        rows.append(
            {
                "K": k,
                "packs": -(-len(cfgs) // k),
                "total_s": med,
                "per_setting_epoch_s": med / (len(cfgs) * args.epochs),
                "vs_first": med / first,
            }
        )
    print(table(rows, f"the same {len(cfgs)} settings in packs of K"))
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
