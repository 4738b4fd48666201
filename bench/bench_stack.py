"""The batched-matmul path for linear stacks against ``torch.func`` (``vmap`` of
``functional_call``), both behind ``ct_core.stack.ModelStack``, on the paper's OL ``gen_params``
grid (the MLP 2-32-2; Generic/ECCo settings in a fixed shuffle, as ``bench_pack.py``).

Two levels, each alternating the two paths in this process (the first of the pair alternating
between repeats, so both see the same load), CPU seconds of this process's one thread:

* ``step``: what the path replaces, the stack's forward and backward on K settings' rows: a
  training step (a mini-batch of 30 and its chunk of pairs, 70 rows per setting, gradient into
  the parameters) and a search step (1000 counterfactuals per setting, gradient into the
  inputs), 100 calls per measurement;
* ``pack``: a whole pack trained for ``--epochs`` (per setting-epoch), everything else included.

The table gives the medians and the median of the per-repeat ratios ``torch.func / matmul``, and
for packs the largest weight difference between the two paths (float rounding only).

    python bench/bench_stack.py                       # K in {16, 45, 90}, 3 epochs, 5 repeats
    python bench/bench_stack.py --ks 90 --repeats 7

Writes ``bench/results/stack.csv``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import REPO, machine, setup, table, write_csv
from bench_pack import grid


def steps(K: int, repeats: int) -> list[dict]:
    """Forward/backward of the stack alone, per path: a training step and a search step."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from ct_core.stack import ModelStack

    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2)) for _ in range(K)]
    stacks = {True: ModelStack(models, fast_path=True), False: ModelStack(models, fast_path=False)}

    def train_step(st: ModelStack, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(st(x).flatten(0, 1), y)
        torch.autograd.grad(loss, st.flat)

    def search_step(st: ModelStack, x: torch.Tensor, y: torch.Tensor) -> None:
        s = x.clone().requires_grad_(True)
        loss = F.cross_entropy(st.forward_fn()(s, None).flatten(0, 1), y, reduction="sum")
        torch.autograd.grad(loss, s)

    rows = []
    for name, n, step in (("train step", 70, train_step), ("search step", 1000, search_step)):
        x, y = torch.randn(K, n, 2), torch.randint(2, (K * n,))
        times: dict[bool, list[float]] = {True: [], False: []}
        for rep in range(repeats):
            for fast in (True, False) if rep % 2 == 0 else (False, True):
                for _ in range(5):
                    step(stacks[fast], x, y)
                c0 = time.process_time()
                for _ in range(100):
                    step(stacks[fast], x, y)
                times[fast].append((time.process_time() - c0) / 100)
        rows.append(_row("step", name, K, times))
    return rows


def _row(level: str, what: str, K: int, times: dict[bool, list[float]], **extra: float) -> dict:
    ratios = [f / m for m, f in zip(times[True], times[False])]
    return {
        "level": level,
        "what": what,
        "K": K,
        "matmul_cpu_s": statistics.median(times[True]),
        "func_cpu_s": statistics.median(times[False]),
        "ratio_func_over_matmul": statistics.median(ratios),
        "ratios": " ".join(f"{r:.3f}" for r in ratios),
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs/base/over.yaml"))
    ap.add_argument("--ks", default="16,45,90")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--nce", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--csv", default=str(REPO / "bench/results/stack.csv"))
    args = ap.parse_args()
    setup(1)

    from ct_core.data import load_dataset
    from ct_core.stack import ModelStack
    from ct_core.training import PackTrainer

    ks = [int(k) for k in args.ks.split(",")]
    cfgs = grid(args.config, args.epochs, "cpu", args.nce, "feature", 0)
    data = load_dataset(cfgs[0].data)
    print(machine())
    for fast in (True, False):  # warm-up: first-call costs
        ModelStack.fast_path = fast
        list(PackTrainer(cfgs[:2], data=data).run())

    rows = []
    for K in ks:
        rows += steps(K, args.repeats)
        times: dict[bool, list[float]] = {True: [], False: []}
        packs: dict[bool, PackTrainer] = {}
        for rep in range(args.repeats):
            for fast in (True, False) if rep % 2 == 0 else (False, True):
                ModelStack.fast_path = fast
                c0 = time.process_time()
                packs[fast] = PackTrainer(cfgs[:K], data=data)
                list(packs[fast].run())
                times[fast].append((time.process_time() - c0) / (K * args.epochs))
        ModelStack.fast_path = True
        dw = float((packs[True].stack.flat - packs[False].stack.flat).abs().max())
        rows.append(_row("pack", f"{args.epochs} epochs, per setting-epoch", K, times, max_dw=dw))
        for r in rows[-3:]:
            print(table([r]).splitlines()[-1], flush=True)
    for r in rows:
        r.setdefault("max_dw", "")
    print()
    print(table(rows, "ModelStack: batched matmul vs torch.func, alternating (CPU seconds)"))
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
