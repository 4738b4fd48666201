"""Why CT's counterfactuals stop short of p = 0.95, and which training settings restore it.

For one dataset, CT is trained over a grid of τ (training), λ_reg and λ_adv (the sweep config
``configs/paper/studies/confidence_<ds>.yaml``; everything else at the paper's final setting)
next to the vanilla model, and every model is evaluated with the paper's protocol (plausibility
setting, τ_eval = 0.95). Per model the summary records validity at p ≥ 0.5 and p ≥ 0.95, the mean
final p(y⁺) of the counterfactuals, their mean number of search steps and the share that used up
all T = 50 steps below 0.95, validity at p ≥ 0.95 with T = 200 steps (5 runs), IP of the p ≥ 0.5
counterfactuals, the test accuracy, and two measures of the model's confidence on the test data:
the share of test points whose top softmax probability reaches 0.95 and the median gap between
the two logits.

    .venv/bin/python scripts/confidence_study.py --dataset gmsc --publish

writes ``OUT/confidence_<ds>.csv`` (``--publish``: to docs/results/ and the figure
``docs/figures/confidence_<ds>.png``, then re-renders docs/results.md's tables).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import reproduce  # noqa: E402

STUDIES = ROOT / "configs" / "paper" / "studies"


def _models(run_dir: Path) -> list[Path]:
    """The final model file of every trial under a sweep directory (one per setting)."""
    seen: dict[str, tuple[float, Path]] = {}
    for p in run_dir.rglob("*.pt"):
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:
            continue
        if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
            continue
        if blob["config"]["train"]["objective"] != "full":
            continue
        key = json.dumps(_setting(blob["config"]), sort_keys=True)
        if key not in seen or p.stat().st_mtime > seen[key][0]:
            seen[key] = (p.stat().st_mtime, p)
    return [p for _, p in seen.values()]


def _setting(cfg: dict) -> dict:
    t, g = cfg["train"], cfg["generator"]
    return {"objective": t["objective"], "tau": g["tau"], "lambda_reg": t["lambda_reg"],
            "lambda_adv": t["lambda_adv"]}  # fmt: skip


def evaluate_all(paths: list[Path], runs: int, individuals: int) -> pd.DataFrame:
    from ct_core.config import apply_overrides, parse_config
    from ct_core.data import load_dataset
    from ct_core.evaluation import accuracy, predict, predict_proba
    from ct_core.models import load_model
    from ct_core.protocol import draw_classes, evaluate_model

    rows = []
    draws = data = cfg = None
    for p in paths:
        model, own = load_model(p)
        if cfg is None:
            raw = apply_overrides(own.to_dict(), [f"evaluation.n_runs={runs}",
                                                  f"evaluation.n_individuals={individuals}"])  # fmt: skip
            cfg = parse_config(raw)
            data = load_dataset(cfg.data)
            draws = draw_classes(data.n_classes, individuals, cfg.evaluation.seed)
        f = evaluate_model(model, data, cfg, draws, settings=("plausibility",), progress=False)
        v05 = f[f["valid_05"].astype(bool)]
        # the same search with four times the step budget, on a few runs
        long_cfg = cfg.model_copy(
            update={"evaluation": cfg.evaluation.model_copy(update={"T": 200})}
        )
        g = evaluate_model(model, data, long_cfg, draws, settings=("plausibility",), n_runs=5,
                           progress=False)  # fmt: skip
        T = cfg.evaluation.T
        with torch.no_grad():
            logits = model(data.X_test)
        top2 = logits.topk(2, dim=1).values
        proba = predict_proba(model, data.X_test)
        rows.append({
            **_setting(own.to_dict()),
            "validity_05": float(f["valid_05"].mean()),
            "validity_95": float((f["p_target"] >= 0.95).mean()),
            "p_target_mean": float(f["p_target"].mean()),
            "steps_mean": float(f["steps"].mean()),
            "exhausted": float(((f["steps"] >= T) & (f["p_target"] < 0.95)).mean()),
            "validity_95_T200": float((g["p_target"] >= 0.95).mean()),
            "implausibility_05": float(v05["implausibility"].mean()) if len(v05) else float("nan"),
            "accuracy": accuracy(data.y_test, predict(model, data.X_test)),
            "share_test_p95": float((proba.max(1).values >= 0.95).float().mean()),
            "median_logit_gap": float((top2[:, 0] - top2[:, 1]).median()),
        })  # fmt: skip
    return pd.DataFrame(rows).sort_values(["objective", "tau", "lambda_adv", "lambda_reg"])


def figure(df: pd.DataFrame, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct = df[df["objective"] == "full"]
    bl = df[df["objective"] == "vanilla"].head(1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, col, label in zip(
        axes,
        ("validity_95", "share_test_p95", "median_logit_gap"),
        ("validity at p ≥ 0.95", "test points with top p ≥ 0.95", "median logit gap (test)"),
    ):
        for (tau, adv), g in ct.groupby(["tau", "lambda_adv"]):
            g = g.sort_values("lambda_reg")
            ax.plot(g["lambda_reg"], g[col], marker="o", label=f"CT τ={tau:g}, λ_adv={adv:g}")
        for v in bl[col]:
            ax.axhline(v, color="black", linestyle="--", label="vanilla")
        ax.set_xlabel("λ_reg (ridge on the energies)")
        ax.set_title(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{name}: CT's confidence against λ_reg, τ and λ_adv")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--individuals", type=int)
    ap.add_argument("--out")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--publish", action="store_true")
    args = ap.parse_args(argv)
    ds = args.dataset
    name = f"confidence_{ds}"
    out = Path(args.out or ROOT / "results" / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "study.log"
    targs = argparse.Namespace(trainer="sweep", epochs=args.epochs, device=None, address=None,
                               tracking_uri=None, jobs=1)  # fmt: skip
    t0 = time.perf_counter()
    vanilla = out / "vanilla"
    if not args.skip_train:
        reproduce.train(STUDIES / f"{name}.yaml", out / "sweep", targs, log)
        cmd = [*reproduce.CT, "train", str(ROOT / "configs" / "base" / f"{ds}.yaml"), "--set",
               "train.objective=vanilla", "--out", str(vanilla), "--quiet", "--overwrite"]  # fmt: skip
        if args.epochs:
            cmd += ["--set", f"train.epochs={args.epochs}"]
        reproduce.run(cmd, log)
    ind = args.individuals or reproduce.INDIVIDUALS.get(ds, 250)
    paths = sorted(_models(out / "sweep")) + [vanilla / "model.pt"]
    df = evaluate_all(paths, args.runs, ind)
    df.insert(0, "dataset", reproduce.PAPER[ds])
    df.to_csv(out / f"{name}.csv", index=False, float_format="%.4g")
    fig = out / f"{name}.png"
    figure(df, reproduce.PAPER[ds], fig)
    print(df.to_string(index=False))
    print(f"{round(time.perf_counter() - t0, 1)} s; wrote {out / f'{name}.csv'}")
    if args.publish:
        shutil.copy2(out / f"{name}.csv", ROOT / "docs" / "results" / f"{name}.csv")
        shutil.copy2(fig, ROOT / "docs" / "figures" / f"{name}.png")
        import results_tables

        results_tables.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
