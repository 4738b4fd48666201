"""Batched counterfactual search vs a one-sample-at-a-time Python loop (issue 6, bench a).

Same model, same factuals and targets, ECCo generator of the base config: for each nce × T the
batched ``ct_core.generators.search`` over all nce factuals is timed against calling the same
function once per factual. At large nce the loop runs on the first ``--loop-max`` factuals and its
time is extrapolated linearly (marked ``extrap``); identical results are checked on those rows.

    python bench/bench_search.py                      # nce {100,1000,5000} x T {5,25,50}
    python bench/bench_search.py --loop-max 5000      # no extrapolation (slow)
"""

from __future__ import annotations

import argparse
from functools import partial

from _common import REPO, machine, setup, table, timed, write_csv


def _one_at_a_time(search, model, x0, target, gen, n: int, kw: dict) -> list:
    """The same search called once per factual (a Python loop over samples)."""
    return [search(model, x0[i : i + 1], target[i : i + 1], gen, **kw) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs/base/over.yaml"))
    ap.add_argument("--nce", default="100,1000,5000")
    ap.add_argument("--T", default="5,25,50")
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--loop-max", type=int, default=100, help="factuals run one at a time")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-epochs", type=int, default=3, help="vanilla epochs before the search")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", default=str(REPO / "bench/results/search.csv"))
    args = ap.parse_args()
    setup(args.threads)

    import torch

    from ct_core.config import load_config
    from ct_core.data import load_dataset
    from ct_core.generators import make_generator, search
    from ct_core.training import Trainer

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    cfg = load_config(
        args.config,
        [
            f"train.epochs={args.train_epochs}",
            "train.objective=vanilla",
            f"train.device={args.device}",
        ],
    )
    data = load_dataset(cfg.data).to(args.device)
    tr = Trainer(cfg, data=data)
    model = tr.fit().eval()
    print(machine())
    print(
        f"model: {cfg.model.type} {cfg.model.hidden} on {cfg.data.name}, {args.train_epochs} vanilla epochs"
    )

    X = data.X_train
    g = torch.Generator().manual_seed(0)
    rows = []
    for nce in [int(v) for v in args.nce.split(",")]:
        idx = torch.randint(X.shape[0], (nce,), generator=g).to(args.device)
        x0 = X[idx]
        with torch.no_grad():
            pred = model(x0).argmax(1)
        shift = torch.randint(1, data.n_classes, (nce,), generator=g).to(args.device)
        target = (pred + shift) % data.n_classes
        for T in [int(v) for v in args.T.split(",")]:
            gc = cfg.generator.model_copy(update={"T": T, "tau": args.tau})
            gen = make_generator(gc, data, device=args.device)
            kw = dict(
                T=T,
                tau=gc.tau,
                lr=gc.lr,
                domain=data.domain,
                mutability=data.mutability,
                epsilon=cfg.train.epsilon,
            )
            t_b, _, res = timed(partial(search, model, x0, target, gen, **kw), args.repeats, sync)
            n_loop = min(nce, args.loop_max)
            loop = partial(_one_at_a_time, search, model, x0, target, gen, n_loop, kw)
            t_l, _, one = timed(loop, args.repeats, sync)
            t_loop = t_l * nce / n_loop
            same = all(
                torch.allclose(o.x_cf, res.x_cf[i : i + 1], atol=1e-5)
                and torch.allclose(o.x_ae, res.x_ae[i : i + 1], atol=1e-5)
                and bool(o.converged == res.converged[i])
                and bool(o.steps == res.steps[i])
                for i, o in enumerate(one)
            )
            rows.append(
                {
                    "nce": nce,
                    "T": T,
                    "batched_s": t_b,
                    "loop_s": t_loop,
                    "loop": "measured" if n_loop == nce else f"extrap {n_loop}/{nce}",
                    "speedup": t_loop / t_b,
                    "mean_steps": float(res.steps.float().mean()),
                    "identical": same,
                }
            )
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows, f"batched search vs one-at-a-time loop (median of {args.repeats})"))
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
