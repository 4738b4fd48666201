"""Seconds per epoch and per setting for CT and vanilla on each base config (issue 6, bench b).

For every ``configs/base/<name>.yaml`` in ``--datasets`` the plain ``Trainer`` runs ``--epochs``
epochs (``--repeats`` times) as CT (the config as written) and as vanilla; the per-epoch split
comes from the records' ``time_search`` / ``time_train`` / ``time_eval``. ``per_setting_s`` is
the extrapolation to the config's full epoch count. ``--pack K`` adds a row per dataset for a
``PackTrainer`` of K copies of the CT setting (different seeds): seconds per setting-epoch.

    python bench/bench_epoch.py                                   # moons, over; 2 epochs
    python bench/bench_epoch.py --datasets all --epochs 3 --pack 8
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import REPO, machine, setup, table, write_csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="moons,over", help="comma list or 'all'")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--pack", type=int, default=0, help="also time a pack of K CT settings")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", default=str(REPO / "bench/results/epoch.csv"))
    args = ap.parse_args()
    setup(args.threads)

    from ct_core.config import load_config
    from ct_core.data import load_dataset
    from ct_core.training import PackTrainer, Trainer

    names = (
        sorted(p.stem for p in (REPO / "configs/base").glob("*.yaml"))
        if args.datasets == "all"
        else args.datasets.split(",")
    )
    print(machine())
    rows = []
    for name in names:
        path = REPO / "configs/base" / f"{name}.yaml"
        t0 = time.perf_counter()
        base = load_config(path, [f"train.device={args.device}"])
        data = load_dataset(base.data)
        t_load = time.perf_counter() - t0
        full_epochs = base.train.epochs
        for mode in ("ct", "vanilla"):
            over = [f"train.epochs={args.epochs}", f"train.device={args.device}"]
            if mode == "vanilla":
                over.append("train.objective=vanilla")
            cfg = load_config(path, over)
            recs = []
            for _ in range(args.repeats):
                recs += list(Trainer(cfg, data=data).run())
            med = {
                k: statistics.median(r[k] for r in recs)
                for k in ("time_search", "time_train", "time_eval", "seconds")
            }
            rows.append(
                {
                    "dataset": name,
                    "mode": mode,
                    "path": "plain",
                    "n_train": data.X_train.shape[0],
                    "D": data.n_features,
                    "nce": cfg.train.nce if mode == "ct" else 0,
                    "T": cfg.generator.T if mode == "ct" else 0,
                    "search_s": med["time_search"],
                    "train_s": med["time_train"],
                    "eval_s": med["time_eval"],
                    "epoch_s": med["seconds"],
                    "per_setting_s": med["seconds"] * full_epochs,
                    "load_s": t_load,
                }
            )
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        if args.pack:
            cfgs = [
                load_config(
                    path,
                    [
                        f"train.epochs={args.epochs}",
                        f"train.device={args.device}",
                        f"seed={2025 + i}",
                    ],
                )
                for i in range(args.pack)
            ]
            recs = []
            for _ in range(args.repeats):
                recs += [r[0] for r in PackTrainer(cfgs, data=data).run()]
            med = {
                k: statistics.median(r[k] for r in recs)
                for k in ("time_search", "time_train", "time_eval", "seconds")
            }
            rows.append(
                {
                    "dataset": name,
                    "mode": "ct",
                    "path": f"pack{args.pack}",
                    "n_train": data.X_train.shape[0],
                    "D": data.n_features,
                    "nce": base.train.nce,
                    "T": base.generator.T,
                    "search_s": med["time_search"],
                    "train_s": med["time_train"],
                    "eval_s": med["time_eval"],
                    "epoch_s": med["seconds"],
                    "per_setting_s": med["seconds"] * full_epochs,
                    "load_s": t_load,
                }
            )
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    title = (
        f"seconds per epoch (median of {args.repeats}x{args.epochs} epochs; per_setting_s = x "
        "the config's epochs; pack rows: per setting-epoch)"
    )
    print(table(rows, title))
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
