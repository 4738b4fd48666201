"""FLOP estimate per setting and how far the measured time is from it (issue 6, bench d).

Per epoch of one setting, with F = 2·Σ in·out the forward FLOPs of the D-h-…-C MLP per sample:

* search: nce · (steps + 1) · 2F (forward + gradient w.r.t. the input; steps ≤ T, measured)
* targets: nce · F (the prediction that picks y⁺)
* training: n_train · 3F (forward + backward) + nce · (2 or 3) · 3F (x′, x⁺, x_AE rows)
* accuracy: (n_train + n_val) · F

The measured seconds per setting-epoch (plain ``Trainer`` and a ``PackTrainer`` of K seeds)
are set against the time the FLOPs would take at this machine's single-thread matmul peak
(measured here on a 512³ product).

    python bench/flops.py                                  # over, T from the config, K = 16
    python bench/flops.py --config configs/base/adult.yaml --pack 4
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import REPO, machine, setup, table, write_csv


def mlp_flops(dims: list[int]) -> int:
    """Forward FLOPs per sample of an MLP with layer widths ``dims`` (multiply-add = 2)."""
    return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))


def matmul_peak(n: int = 512, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs/base/over.yaml"))
    ap.add_argument("--epochs", type=int, default=2, help="measured epochs (estimate: config's)")
    ap.add_argument("--pack", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", default=str(REPO / "bench/results/flops.csv"))
    args = ap.parse_args()
    setup(args.threads)

    from ct_core.config import load_config
    from ct_core.data import load_dataset
    from ct_core.training import PackTrainer, Trainer

    over = [f"train.epochs={args.epochs}", "train.device=cpu"]
    cfg = load_config(args.config, over)
    full_epochs = load_config(args.config).train.epochs
    data = load_dataset(cfg.data)
    n_tr, n_va = data.X_train.shape[0], data.X_val.shape[0]
    dims = [data.n_features, *(cfg.model.hidden if cfg.model.type == "mlp" else []), data.n_classes]
    F = mlp_flops(dims)
    nb = -(-n_tr // cfg.train.batch_size)
    nce = max(cfg.train.nce, nb)
    rows_ce = 3 if cfg.train.lambda_adv else 2
    peak = matmul_peak()
    print(machine())
    print(
        f"{cfg.data.name}: MLP {dims}, F = {F} FLOP/sample, n_train {n_tr}, nce {nce}, "
        f"T {cfg.generator.T}; matmul peak {peak / 1e9:.1f} GFLOP/s (1 thread)"
    )

    list(Trainer(cfg, data=data).run())  # warm-up
    plain = list(Trainer(cfg, data=data).run())
    pack_cfgs = [load_config(args.config, [*over, f"seed={2025 + i}"]) for i in range(args.pack)]
    packed = [r[0] for r in PackTrainer(pack_cfgs, data=data).run()] if args.pack else []
    steps = statistics.median(r["ce_steps"] for r in plain)

    def per_epoch(s: float) -> dict[str, float]:
        return {
            "search": nce * (s + 1) * 2 * F,
            "targets": nce * F,
            "training": n_tr * 3 * F + nce * rows_ce * 3 * F,
            "accuracy": (n_tr + n_va) * F,
        }

    rows = []
    for label, s in (("bound (steps = T)", cfg.generator.T), ("measured steps", steps)):
        parts = per_epoch(s)
        total = sum(parts.values())
        for path, recs in (("plain", plain), (f"pack{args.pack}", packed)):
            if not recs:
                continue
            sec = statistics.median(r["seconds"] for r in recs)
            rows.append(
                {
                    "estimate": label,
                    "path": path,
                    "GFLOP_per_setting": total * full_epochs / 1e9,
                    "search_share": parts["search"] / total,
                    "s_per_setting_at_peak": total * full_epochs / peak,
                    "s_per_setting_measured": sec * full_epochs,
                    "x_from_peak": sec * peak / total,
                    "achieved_GFLOPs": total / sec / 1e9,
                }
            )
    print()
    print(
        table(rows, f"FLOPs per setting ({full_epochs} epochs) vs measured ({args.epochs} epochs)")
    )
    write_csv(rows, args.csv)


if __name__ == "__main__":
    main()
