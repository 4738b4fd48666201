"""K runs of one setting (``Trainer``) vs one ``PackTrainer`` of the K settings (issue 6, bench c).

Settings are drawn (fixed shuffle, nested: the first K of one list) from the paper's OL
``gen_params`` grid (the paper's appendix, "Grid Searches"): generator {ecco, generic} (``--generator feature``, the
default) or {revise} (``--generator revise``: latent search through the shared VAE) x T {5, 25, 50}
x λ_egy {0.1, 0.5, 5, 10, 20} x τ {0.75, 0.9, 0.95} x objective {full, vanilla}, nce 1000, the
rest from ``configs/base/over.yaml``, epochs reduced. The VAE is trained (or read from the cache)
before timing, as both paths share the cached one. The plain time of K settings is the sum of
the K settings' own runs (each setting trained alone, in this process, sequentially); the pack
trains them in one process at once. Both are medians of ``--repeats`` runs, measured in the same
run; the pack's final weights and records are compared with the plain ones (results-equal check).

With ``--eval-every N`` (``train.eval_every``, 0 in the base config) every setting also computes
the validation-set counterfactual metrics every N epochs and at the last one; ``eval_s`` is the
pack's validation time (``time_eval``).

    python bench/bench_pack.py                    # K in {1, 4, 16}, 2 epochs
    python bench/bench_pack.py --full             # K in {1, 4, 16, 45}, 5 epochs
    python bench/bench_pack.py --generator revise # the REVISE third of the grid
    python bench/bench_pack.py --ks 45 --epochs 5 --eval-every 5   # validation as in the sweeps
    python bench/bench_pack.py --ks 16,45,90 --skip-plain   # the pack only (no K runs of one)
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import time

from _common import REPO, machine, setup, table, write_csv

TIME_KEYS = {"time_search", "time_train", "time_eval", "seconds"}


GENERATORS = {"feature": ["ecco", "generic"], "revise": ["revise"]}


def grid(
    config: str, epochs: int, device: str, nce: int, family: str = "feature", eval_every: int = 0
) -> list:
    from ct_core.config import load_config

    combos = list(
        itertools.product(
            GENERATORS[family],
            [5, 25, 50],
            [0.1, 0.5, 5.0, 10.0, 20.0],
            [0.75, 0.9, 0.95],
            ["full", "vanilla"],
        )
    )
    random.Random(0).shuffle(combos)
    return [
        load_config(
            config,
            [
                f"generator.type={g}",
                f"generator.T={T}",
                f"generator.lambda_energy={le}",
                f"generator.tau={tau}",
                f"train.objective={obj}",
                f"train.epochs={epochs}",
                f"train.nce={nce}",
                f"train.device={device}",
                f"train.eval_every={eval_every}",
            ],
        )
        for g, T, le, tau, obj in combos
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs/base/over.yaml"))
    ap.add_argument("--ks", default="1,4,16")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--nce", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="K in {1,4,16,45}, 5 epochs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--generator", choices=sorted(GENERATORS), default="feature")
    ap.add_argument("--skip-plain", action="store_true", help="time the packs only")
    ap.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="train.eval_every: validation metrics every N epochs",
    )
    ap.add_argument("--csv", default=None, help="default bench/results/pack[_revise][_eval].csv")
    args = ap.parse_args()
    if args.csv is None:
        suffix = "" if args.generator == "feature" else f"_{args.generator}"
        suffix += "_eval" if args.eval_every else ""
        args.csv = str(REPO / f"bench/results/pack{suffix}.csv")
    if args.full:
        args.ks, args.epochs = "1,4,16,45", 5
    setup(args.threads)

    import torch

    from ct_core.data import load_dataset
    from ct_core.training import PackTrainer, Trainer

    ks = [int(k) for k in args.ks.split(",")]
    cfgs = grid(args.config, args.epochs, args.device, args.nce, args.generator, args.eval_every)
    cfgs = cfgs[: max(ks)]
    data = load_dataset(cfgs[0].data)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    print(machine())
    print(
        f"{cfgs[0].data.name}: n_train {data.X_train.shape[0]}, nce {args.nce}, "
        f"{args.epochs} epochs, K in {ks}, median of {args.repeats}, generator {args.generator}, "
        f"eval_every {args.eval_every}"
    )

    # warm-up (first-call costs are not the method's; for REVISE this fits or loads the VAE)
    ct = next(c for c in cfgs if c.train.objective != "vanilla")
    list(Trainer(ct.model_copy(deep=True), data=data).run())
    list(PackTrainer([ct, *cfgs[:1]], data=data).run())

    plain_times: list[list[float]] = [[] for _ in cfgs]
    plain_models, plain_hist = [], []
    for rep in range(0 if args.skip_plain else args.repeats):
        for i, c in enumerate(cfgs):
            t0 = time.perf_counter()
            tr = Trainer(c, data=data)
            tr.fit()
            sync()
            plain_times[i].append(time.perf_counter() - t0)
            if rep == 0:
                plain_models.append(tr.model.state_dict())
                plain_hist.append(tr.history)
    plain_med = [statistics.median(t) if t else math.nan for t in plain_times]

    rows = []
    for K in ks:
        times: list[float] = []
        evals: list[float] = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pt = PackTrainer(cfgs[:K], data=data)
            ev = 0.0
            for recs in pt.run():
                ev += sum(r["time_eval"] for r in recs if r is not None)
            sync()
            times.append(time.perf_counter() - t0)
            evals.append(ev)
        pack_s = statistics.median(times)
        plain_s = sum(plain_med[:K])
        dw, drec = 0.0, 0.0
        for k, m in enumerate(pt.models() if plain_models else []):
            for n, v in m.state_dict().items():
                dw = max(dw, float((v.cpu() - plain_models[k][n].cpu()).abs().max()))
            for r, q in zip(plain_hist[k], pt.histories[k]):
                for key, v in r.items():
                    if key not in TIME_KEYS and not math.isnan(v):
                        drec = max(drec, abs(v - q[key]))
        se = K * args.epochs
        rows.append(
            {
                "K": K,
                "n_ct": sum(c.train.objective != "vanilla" for c in cfgs[:K]),
                "plain_s": plain_s,
                "pack_s": pack_s,
                "plain_per_setting_epoch_s": plain_s / se,
                "pack_per_setting_epoch_s": pack_s / se,
                "speedup": plain_s / pack_s,
                "max_dw": dw,
                "max_drecord": drec,
                "equal": dw < 1e-4 and drec < 1e-4,
                **({"eval_s": statistics.median(evals)} if args.eval_every else {}),
            }
        )
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows, "Trainer x K vs PackTrainer(K)"))
    best = rows[-1]
    print(
        f"\nprojection, 100 epochs: {best['pack_per_setting_epoch_s'] * 100 / 60:.2f} CPU-min per "
        f"setting packed (K={best['K']}) vs {best['plain_per_setting_epoch_s'] * 100 / 60:.2f} "
        "plain; the paper: ~29 CPU-min per OL setting"
    )
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
