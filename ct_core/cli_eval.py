"""``ct evaluate`` and ``ct compare``: the paper's test-time protocol from the command line.

``ct evaluate MODEL_DIR --out DIR`` writes ``counterfactuals.csv`` (one row per counterfactual),
``summary.json``, ``robust_accuracy.csv`` and PNG plots. ``ct compare CT_DIR BASELINE_DIR`` runs
(or reuses) both evaluations on the same draws and prints/writes the Table-1 style comparison
(``comparison.csv``, ``comparison.md``): every metric for each model's own counterfactuals at
p ≥ 0.5 (the authors' filter) and at p ≥ τ, and for the draws where both are valid. Bad input raises :class:`ConfigError` (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ct_core.config import Config, ConfigError, apply_overrides, parse_config
from ct_core.files import atomic_write_text, check_out_dir, make_out_dir

__all__ = ["add_eval_commands", "cmd_compare", "cmd_evaluate"]


def add_eval_commands(subparsers: Any) -> None:
    """Register ``evaluate`` and ``compare`` on an ``argparse`` subparsers object."""
    e = subparsers.add_parser("evaluate", help="evaluate a trained model with the paper's protocol")
    e.add_argument("model_dir", help="output directory of `ct train` (holds model.pt)")
    _common(e)
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--overwrite", action="store_true", help="replace results OUT already holds")
    e.set_defaults(func=cmd_evaluate)

    c = subparsers.add_parser("compare", help="compare a CT model with its vanilla twin (Table 1)")
    c.add_argument("ct_dir", help="CT model directory, or a `ct evaluate` output directory")
    c.add_argument("baseline_dir", help="baseline model directory, or its `ct evaluate` output")
    _common(c)
    c.add_argument("--out", default=None, help="output directory (default: CT_DIR/comparison)")
    c.add_argument("--overwrite", action="store_true", help="replace results OUT already holds")
    c.set_defaults(func=cmd_compare)


def _common(p: argparse.ArgumentParser) -> None:
    from ct_core.cli import count_type

    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. evaluation.tau=0.9 (repeatable)",
    )
    p.add_argument("--runs", type=count_type(1), default=None, help="evaluation.n_runs")
    p.add_argument(
        "--individuals", type=count_type(1), default=None, help="evaluation.n_individuals"
    )
    p.add_argument(
        "--setting",
        choices=["both", "plausibility", "cost"],
        default="both",
        help="plausibility (tau, unconstrained), cost (tau_cost, constrained) or both",
    )
    p.add_argument(
        "--robust-samples",
        type=count_type(0),
        default=2000,
        help="test points for FGSM/PGD robust accuracy (0 = skip)",
    )
    p.add_argument(
        "--ig-rounds",
        type=count_type(0),
        default=20,
        help="bootstrap rounds of the integrated-gradients sensitivity to immutable "
        "features (0 = skip; the paper runs 100)",
    )
    p.add_argument("--no-plots", action="store_true", help="write no PNG files")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


EVAL_FILES = ("counterfactuals.csv", "summary.json", "robust_accuracy.csv")
"""What ``ct evaluate`` writes; an ``--out`` holding any of them needs ``--overwrite``."""
COMPARE_FILES = ("comparison.csv", "comparison.md", "ct", "bl")


# ----------------------------------------------------------------------------------------------
# helpers


def _model_path(d: Path, what: str) -> Path:
    if not d.exists():
        raise ConfigError(f"{what}: directory not found: {d}")
    p = d / "model.pt" if d.is_dir() else d
    if not p.is_file():
        raise ConfigError(
            f"{what}: no model.pt in {d} (expected the output directory of `ct train`)"
        )
    return p


def _eval_config(cfg: Config, args: argparse.Namespace) -> Config:
    over: dict[str, Any] = {}
    if args.runs is not None:
        over["evaluation.n_runs"] = args.runs
    if args.individuals is not None:
        over["evaluation.n_individuals"] = args.individuals
    raw = apply_overrides(cfg.to_dict(), list(args.set))
    raw = apply_overrides(raw, over)
    return parse_config(raw)


def _settings(args: argparse.Namespace) -> tuple[str, ...]:
    return ("plausibility", "cost") if args.setting == "both" else (args.setting,)


def _immutable(data: Any) -> list[int]:
    from ct_core.constraints import NONE

    if data.mutability is None:
        return []
    return [int(i) for i in (data.mutability == NONE).nonzero().flatten().tolist()]


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> null, tensors -> lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _load(model_dir: Path, what: str) -> tuple[Any, Config]:
    from ct_core.models import load_model

    model, cfg = load_model(_model_path(model_dir, what))
    return model.cpu().eval(), cfg


def _evaluate(
    model: Any,
    cfg: Config,
    data: Any,
    draws: Any,
    args: argparse.Namespace,
    out: Path,
    name: str,
    model_dir: Path,
    objective: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run the protocol and the performance metrics for one model; write its files into ``out``.
    ``cfg`` is the evaluation config (``ct compare`` uses the CT model's for both models);
    ``objective`` the model's own training objective (default: ``cfg``'s)."""
    from ct_core.evaluation import (
        accuracy,
        integrated_gradients_sensitivity,
        macro_f1,
        predict,
        robust_accuracy_table,
    )
    from ct_core.protocol import evaluate_model, summarize

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    frame = evaluate_model(
        model, data, cfg, draws, settings=_settings(args), progress=not args.quiet, desc=name
    )
    atomic_write_text(out / "counterfactuals.csv", frame.to_csv(index=False, float_format="%.8g"))
    Xt, yt = data.X_test, data.y_test
    pred = predict(model, Xt)
    summary: dict[str, Any] = {
        "model_dir": str(model_dir),
        "data": cfg.data.name,
        "n_classes": data.n_classes,
        "n_features": data.n_features,
        "objective": objective or cfg.train.objective,
        "evaluation": cfg.evaluation.model_dump(mode="json"),
        "draws": draws.to_dict(),
        "test_accuracy": accuracy(yt, pred),
        "test_macro_f1": macro_f1(yt, pred, data.n_classes),
        "settings": summarize(frame) if len(frame) else {},
    }
    rob = None
    if args.robust_samples > 0:
        import torch

        n = min(args.robust_samples, Xt.shape[0])
        sel = torch.randperm(
            Xt.shape[0], generator=torch.Generator().manual_seed(cfg.evaluation.seed)
        )[:n]
        rob = robust_accuracy_table(model, Xt[sel], yt[sel], seed=cfg.evaluation.seed)
        atomic_write_text(out / "robust_accuracy.csv", rob.to_csv(index=False))
        summary["robust_accuracy"] = rob.to_dict(orient="records")
    prot = _immutable(data)
    if args.ig_rounds > 0 and prot:
        ig = integrated_gradients_sensitivity(
            model,
            Xt,
            yt,
            prot,
            n_rounds=args.ig_rounds,
            n_samples=min(2500, Xt.shape[0]),
            n_classes=data.n_classes,
            seed=cfg.evaluation.seed,
        )
        summary["ig_sensitivity"] = {k: ig[k] for k in ("median", "lo", "hi")} | {
            "protected": prot,
            "rounds": args.ig_rounds,
        }
    if not args.no_plots:
        _plots_one(model, data, frame, rob, model_dir, out)
    summary["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / "summary.json", json.dumps(_clean(summary), indent=2))
    return frame, summary


def _example(
    frame: pd.DataFrame, setting: str, lambdas: list[float], n_features: int
) -> dict[str, Any] | None:
    """Factuals/counterfactuals of run 0 at the middle λ_egy, for a Figure-1 panel."""
    f = (
        frame[(frame["setting"] == setting) & (frame["run"] == frame["run"].min())]
        if len(frame)
        else frame
    )
    if f.empty:
        return None
    lams = sorted(f["lambda_energy"].unique())
    lam = lams[len(lams) // 2]
    f = f[f["lambda_energy"] == lam].head(60)
    xs = [c for c in f.columns if c.startswith("x_")][:n_features]
    cs = [c for c in f.columns if c.startswith("cf_")][:n_features]
    return {
        "factuals": f[xs].to_numpy(),
        "counterfactuals": f[cs].to_numpy(),
        "targets": f["target"].to_numpy(),
        "lam": lam,
        "valid": float(f["valid"].mean()),
    }


def _plots_one(
    model: Any, data: Any, frame: pd.DataFrame, rob: Any, model_dir: Path, out: Path
) -> None:
    from ct_core.plots import plot_decision_boundary, plot_history, plot_robust_accuracy

    if data.n_features == 2:
        for setting, fname in (
            ("plausibility", "decision_boundary.png"),
            ("cost", "decision_boundary_constrained.png"),
        ):
            ex = _example(frame, setting, [], 2)
            if ex is None:
                continue
            prot = _immutable(data) if setting == "cost" else None
            plot_decision_boundary(
                model,
                data,
                ex["counterfactuals"],
                ex["factuals"],
                protected=prot,
                path=out / fname,
                targets=ex["targets"],
                title=f"{setting}: λ_egy={ex['lam']:g}, valid {ex['valid']:.0%}",
            )
    hist = model_dir / "history.csv"
    if hist.is_file():
        plot_history(hist, out / "history.png")
    if rob is not None:
        plot_robust_accuracy(rob, out / "robust_accuracy.png")


# ----------------------------------------------------------------------------------------------
# commands


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``ct evaluate MODEL_DIR --out DIR``."""
    from ct_core.data import load_dataset
    from ct_core.protocol import draw_classes

    model_dir = Path(args.model_dir)
    out = Path(args.out)
    check_out_dir(out, overwrite=args.overwrite, results=EVAL_FILES)
    model, cfg = _load(model_dir, "MODEL_DIR")
    cfg = _eval_config(cfg, args)
    data = load_dataset(cfg.data)
    draws = draw_classes(data.n_classes, cfg.evaluation.n_individuals, cfg.evaluation.seed)
    make_out_dir(out)
    _, summary = _evaluate(model, cfg, data, draws, args, out, "evaluate", model_dir)
    if not args.quiet:
        s = summary["settings"]
        for setting, entry in s.items():
            a = entry["all"]
            print(
                f"{setting}: validity {a['validity']:.3f}, cost {_f(a['cost'])}, "
                f"IP {_f(a['implausibility'])}, IP* {_f(a['mmd'])} ({a['n']} counterfactuals)"
            )
        print(f"test accuracy {summary['test_accuracy']:.3f}; wrote {out}/")
    return 0


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _existing_eval(d: Path) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    if not ((d / "counterfactuals.csv").is_file() and (d / "summary.json").is_file()):
        return None
    try:
        summary = json.loads((d / "summary.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(
            f"{d / 'summary.json'}: not a readable ct evaluate summary ({e})"
        ) from None
    try:
        frame = pd.read_csv(d / "counterfactuals.csv")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{d / 'counterfactuals.csv'}: not a readable CSV ({e})") from None
    if not isinstance(summary, dict) or not {"setting", "run", "valid"} <= set(frame.columns):
        raise ConfigError(f"{d}: counterfactuals.csv / summary.json are not from `ct evaluate`")
    return frame, summary


def cmd_compare(args: argparse.Namespace) -> int:
    """``ct compare CT_DIR BASELINE_DIR [--out DIR]``: the Table-1 comparison."""
    from ct_core.protocol import compare, draw_classes, format_markdown

    ct_dir, bl_dir = Path(args.ct_dir), Path(args.baseline_dir)
    out = Path(args.out) if args.out else ct_dir / "comparison"
    for what, d in (("CT_DIR", ct_dir), ("BASELINE_DIR", bl_dir)):
        if not d.is_dir():
            raise ConfigError(f"{what}: directory not found: {d}")
    check_out_dir(
        out,
        "--out" if args.out else "--out (default)",
        overwrite=args.overwrite,
        results=COMPARE_FILES,
    )
    ct_prev, bl_prev = _existing_eval(ct_dir), _existing_eval(bl_dir)
    models: dict[str, Any] = {}
    frames: dict[str, pd.DataFrame] = {}
    summaries: dict[str, dict[str, Any]] = {}
    if ct_prev is not None and bl_prev is not None:
        (frames["CT"], summaries["CT"]), (frames["BL"], summaries["BL"]) = ct_prev, bl_prev
        if summaries["CT"].get("draws") != summaries["BL"].get("draws"):
            print(
                "warning: the two evaluations used different draws (seed or n_individuals)",
                file=sys.stderr,
            )
        data = None
    else:
        from ct_core.data import load_dataset

        ct_model, ct_cfg = _load(ct_dir, "CT_DIR")
        bl_model, bl_cfg = _load(bl_dir, "BASELINE_DIR")
        if ct_cfg.data.name != bl_cfg.data.name:
            raise ConfigError(
                f"compare: the models were trained on different data ({ct_cfg.data.name!r} vs "
                f"{bl_cfg.data.name!r})"
            )
        # the CT model's data config (with its constraints) is used for both, as in the paper
        cfg = _eval_config(ct_cfg, args)
        data = load_dataset(cfg.data)
        draws = draw_classes(data.n_classes, cfg.evaluation.n_individuals, cfg.evaluation.seed)
        models = {"CT": ct_model, "BL": bl_model}
        for name, model, d, own in (
            ("CT", ct_model, ct_dir, ct_cfg),
            ("BL", bl_model, bl_dir, bl_cfg),
        ):
            frames[name], summaries[name] = _evaluate(
                model,
                cfg,
                data,
                draws,
                args,
                out / name.lower(),
                f"{name} runs",
                d,
                objective=own.train.objective,
            )
    table = compare(frames["CT"], frames["BL"])
    make_out_dir(out)
    atomic_write_text(out / "comparison.csv", table.to_csv(index=False))
    title = f"CT ({ct_dir}) vs BL ({bl_dir}), data {summaries['CT'].get('data')}"
    extra = _perf_lines(summaries)
    md = format_markdown(table, title) + extra
    atomic_write_text(out / "comparison.md", md)
    if not args.no_plots and data is not None:
        _plots_compare(models, data, frames, summaries, out)
    print(md)
    print(f"wrote {out}/comparison.csv and comparison.md")
    return 0


def _perf_lines(summaries: dict[str, dict[str, Any]]) -> str:
    lines = [
        "",
        "| Model | Test accuracy | Macro F1 | FGSM acc. (max ε) | PGD acc. (max ε) | IG sensitivity |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summaries.items():
        rob = pd.DataFrame(s.get("robust_accuracy") or [])
        fg = pg = "n/a"
        if len(rob):
            top = rob[rob["epsilon"] == rob["epsilon"].max()]
            fg = f"{top[top['attack'] == 'fgsm']['accuracy'].iloc[0]:.3f}"
            pg = f"{top[top['attack'] == 'pgd']['accuracy'].iloc[0]:.3f}"
        ig = s.get("ig_sensitivity")
        igs = f"{ig['median']:.3g} [{ig['lo']:.3g}, {ig['hi']:.3g}]" if ig else "n/a"
        lines.append(
            f"| {name} | {_f(s.get('test_accuracy'))} | {_f(s.get('test_macro_f1'))} | {fg} | {pg} | {igs} |"
        )
    return "\n".join(lines) + "\n"


def _plots_compare(
    models: dict[str, Any],
    data: Any,
    frames: dict[str, pd.DataFrame],
    summaries: dict[str, dict[str, Any]],
    out: Path,
) -> None:
    from ct_core.plots import plot_panels, plot_robust_accuracy

    rob = {
        n: pd.DataFrame(s["robust_accuracy"])
        for n, s in summaries.items()
        if s.get("robust_accuracy")
    }
    if rob:
        plot_robust_accuracy(rob, out / "robust_accuracy.png")
    if data.n_features != 2:
        return
    for setting, fname in (("plausibility", "figure1.png"), ("cost", "figure1_protected.png")):
        panels = []
        for name in ("BL", "CT"):
            ex = _example(frames[name], setting, [], 2)
            if ex is None:
                continue
            prot = _immutable(data) if setting == "cost" else None
            panels.append(
                {
                    "model": models[name],
                    "counterfactuals": ex["counterfactuals"],
                    "factuals": ex["factuals"],
                    "targets": ex["targets"],
                    "protected": prot,
                    "title": f"{name}, {setting}: λ_egy={ex['lam']:g}, valid {ex['valid']:.0%}",
                }
            )
        if panels:
            plot_panels(panels, data, out / fname)
