"""The batched-matmul path for linear stacks against ``torch.func`` (``vmap`` of
``functional_call``), both behind ``ct_core.stack.ModelStack``, on packs of the paper's OL
``gen_params`` grid (the MLP 2-32-2; Generic/ECCo settings in a fixed shuffle, as
``bench_pack.py``).

In one process, per repeat and K, one pack trains with each path (``ModelStack.fast_path``), the
first of the pair alternating between repeats so both see the same load; the table gives the
median seconds per setting-epoch of each and the median of the per-repeat ratios
``torch.func / matmul``, and the largest weight difference between the two paths (float
rounding only). A fast path stays in ``ct_core`` only while this ratio is at least 1.3.

    python bench/bench_stack.py                       # K in {16, 45, 90}, 3 epochs, 3 repeats
    python bench/bench_stack.py --ks 90 --repeats 5 --generator revise

Writes ``bench/results/stack[_revise].csv``.
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
    ap.add_argument("--ks", default="16,45,90")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--nce", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    suffix = "" if args.generator == "feature" else f"_{args.generator}"
    args.csv = args.csv or str(REPO / f"bench/results/stack{suffix}.csv")
    setup(1)

    from ct_core.data import load_dataset
    from ct_core.stack import ModelStack
    from ct_core.training import PackTrainer

    ks = [int(k) for k in args.ks.split(",")]
    cfgs = grid(args.config, args.epochs, "cpu", args.nce, args.generator, args.eval_every)
    data = load_dataset(cfgs[0].data)
    print(machine())
    for fast in (True, False):  # warm-up: first-call costs, the VAE, vmap's tracing
        ModelStack.fast_path = fast
        list(PackTrainer(cfgs[:2], data=data).run())

    rows = []
    for K in ks:
        times: dict[bool, list[float]] = {True: [], False: []}
        packs: dict[bool, PackTrainer] = {}
        for rep in range(args.repeats):
            for fast in (True, False) if rep % 2 == 0 else (False, True):
                ModelStack.fast_path = fast
                t0 = time.perf_counter()
                packs[fast] = PackTrainer(cfgs[:K], data=data)
                list(packs[fast].run())
                times[fast].append(time.perf_counter() - t0)
        ModelStack.fast_path = True
        se = K * args.epochs
        ratios = [f / m for m, f in zip(times[True], times[False])]
        dw = float((packs[True].stack.flat - packs[False].stack.flat).abs().max())
        rows.append(
            {
                "generator": args.generator,
                "K": K,
                "epochs": args.epochs,
                "matmul_s_per_setting_epoch": statistics.median(times[True]) / se,
                "func_s_per_setting_epoch": statistics.median(times[False]) / se,
                "ratio_func_over_matmul": statistics.median(ratios),
                "ratios": " ".join(f"{r:.3f}" for r in ratios),
                "max_dw": dw,
            }
        )
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows, "ModelStack: batched matmul vs torch.func, alternating"))
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
