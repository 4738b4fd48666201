"""The paper's counterfactual comparison protocol (reference §6.1, format of Table 1 / §8.1).

1. :func:`draw_classes` draws ``n_individuals`` factual classes uniformly and for each a target
   uniformly among the other classes — once, reused by every run and every model.
2. :func:`evaluate_model`: for each of ``n_runs`` runs and each individual, a random evaluation
   point *predicted* as the factual class (per model; the random numbers are shared), one
   counterfactual per λ_egy from the test-time generator (ECCo, λ_cost = 0, T = 50), scored per
   counterfactual. Two settings: ``plausibility`` (τ_eval = 0.95, unconstrained unless
   ``evaluation.constrained``) and ``cost`` (τ = 0.5 with the data's mutability constraints, the
   cost column of Table 1).
3. :func:`compare`: valid counterfactuals only, mean per (run, λ_egy), averaged over λ_egy ->
   per-run values; per-run ratio CT/BL -> % reduction −(mean r − 1)·100 ± 100·sd(r); the 99 %
   percentile interval of the per-run differences |CT| − |BL| (the runs are the bootstrap rounds)
   marks ``*`` when it excludes 0 (``CTX/presentation.jl::final_table``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ct_core.evaluation import (
    cost,
    implausibility,
    mmd_unbiased,
    predict,
    redundancy,
    sample_rows,
    validity,
)

if TYPE_CHECKING:
    from ct_core.config import Config
    from ct_core.data.base import Dataset

__all__ = [
    "SETTINGS",
    "Draws",
    "compare",
    "draw_classes",
    "evaluate_model",
    "format_markdown",
    "per_run",
    "reduction_stats",
    "summarize",
]

SETTINGS = ("plausibility", "cost")

# (table label, setting, column, kind)
METRICS: list[tuple[str, str, str, str]] = [
    ("IP", "plausibility", "implausibility", "mean"),
    ("IP*", "plausibility", "mmd", "group"),
    ("Cost", "cost", "cost", "mean"),
    ("Cost (unconstrained, tau_eval)", "plausibility", "cost", "mean"),
    ("Validity", "plausibility", "valid", "share"),
    ("Validity (cost setting)", "cost", "valid", "share"),
]


@dataclass
class Draws:
    """Factual and target classes of the individuals, ``(n_individuals,)`` int64 each."""

    factual: Tensor
    target: Tensor
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"factual": self.factual.tolist(), "target": self.target.tolist(), "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Draws:
        return cls(torch.tensor(d["factual"]), torch.tensor(d["target"]), int(d["seed"]))


def draw_classes(n_classes: int, n_individuals: int, seed: int) -> Draws:
    """Factual classes uniform over ``n_classes``, targets uniform over the other classes."""
    if n_classes < 2:
        from ct_core.config import ConfigError

        raise ConfigError(f"the protocol needs at least 2 classes, the data has {n_classes}")
    g = torch.Generator().manual_seed(seed)
    factual = torch.randint(n_classes, (n_individuals,), generator=g)
    target = (factual + torch.randint(1, n_classes, (n_individuals,), generator=g)) % n_classes
    return Draws(factual, target, seed)


def _run_generator(seed: int, run: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + run * 7919 + salt) % (2**63 - 1))


def _pick_points(pred: Tensor, factual: Tensor, u: Tensor) -> Tensor:
    """For each individual, an index of an evaluation point predicted as its factual class.

    ``pred`` ``(M,)`` predictions on the evaluation split, ``factual`` ``(n,)``, ``u`` ``(n,)``
    uniform numbers in [0, 1) (shared between models). ``-1`` where no point has that prediction.
    """
    order = torch.argsort(pred, stable=True)
    K = int(max(int(pred.max()) if pred.numel() else 0, int(factual.max())) + 1)
    counts = torch.bincount(pred, minlength=K)
    starts = torch.cumsum(counts, 0) - counts
    c = counts[factual]
    pos = starts[factual] + torch.minimum((u * c).long(), (c - 1).clamp_min(0))
    idx = order[pos.clamp(0, max(pred.numel() - 1, 0))]
    return torch.where(c > 0, idx, torch.full_like(idx, -1))


def _generator_for(cfg: Config, lam: float) -> Any:
    from ct_core.generators import ECCo

    return ECCo(
        lambda_cost=cfg.evaluation.lambda_cost,
        lambda_energy=lam,
        T=cfg.evaluation.T,
        energy_reg=cfg.generator.energy_reg,
        decay=cfg.generator.energy_decay,
    )


def _chunks(n_runs: int, n_individuals: int, n_features: int) -> list[range]:
    per = max(
        1,
        min(
            n_runs, 50_000 // max(n_individuals, 1), 5_000_000 // max(n_individuals * n_features, 1)
        ),
    )
    return [range(s, min(s + per, n_runs)) for s in range(0, n_runs, per)]


def evaluate_model(
    model: nn.Module,
    data: Dataset,
    cfg: Config,
    draws: Draws,
    *,
    settings: Sequence[str] = SETTINGS,
    n_runs: int | None = None,
    progress: bool | None = None,
    desc: str = "runs",
) -> pd.DataFrame:
    """Counterfactuals of ``model`` under the protocol: one row per counterfactual.

    Columns: ``setting, run, lambda_energy, individual, index`` (row of the evaluation split),
    ``factual, target, tau, constrained, valid`` (p ≥ τ of the setting), ``valid_05`` (p ≥ 0.5,
    the reference's filter), ``converged, p_target, steps, cost, implausibility, redundancy,
    mmd`` (IP* of the run × λ × target group over its valid counterfactuals, repeated on each of
    its rows; NaN elsewhere and in the cost setting), then ``x_<feature>`` and ``cf_<feature>``.
    All individuals × runs of a chunk go through one batched search per λ_egy.
    """
    from tqdm.auto import tqdm

    from ct_core.generators import search

    ev = cfg.evaluation
    n_runs = ev.n_runs if n_runs is None else n_runs
    X, y = (t.cpu() for t in data.split(ev.split))
    dev = next(model.parameters()).device
    domain = None if data.domain is None else (data.domain[0].to(dev), data.domain[1].to(dev))
    model.eval()
    pred = predict(model, X)
    feats = list(data.feature_names) or [str(i) for i in range(X.shape[1])]
    n_ind = draws.factual.shape[0]
    by_class = {k: X[y == k] for k in range(data.n_classes)}
    frames: list[pd.DataFrame] = []
    show = _isatty() if progress is None else progress
    bar = tqdm(total=n_runs * len(settings), desc=desc, disable=not show, leave=False)
    for setting in settings:
        if setting not in SETTINGS:
            from ct_core.config import ConfigError

            raise ConfigError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
        tau = ev.tau if setting == "plausibility" else ev.tau_cost
        constrained = bool(ev.constrained) if setting == "plausibility" else True
        mut = data.mutability if constrained else None
        for chunk in _chunks(n_runs, n_ind, X.shape[1]):
            runs = list(chunk)
            # per-run random numbers, identical for every model evaluated on these draws
            u = torch.stack(
                [torch.rand(n_ind, generator=_run_generator(draws.seed, r)) for r in runs]
            )
            idx = torch.stack([_pick_points(pred, draws.factual, u[i]) for i in range(len(runs))])
            ok = idx >= 0
            run_col = torch.tensor(runs)[:, None].expand(-1, n_ind)[ok]
            ind_col = torch.arange(n_ind)[None, :].expand(len(runs), -1)[ok]
            idx_f = idx[ok]
            x0 = X[idx_f]
            tgt = draws.target[ind_col]
            fac = draws.factual[ind_col]
            for lam in ev.lambda_energies:
                res = search(
                    model,
                    x0.to(dev),
                    tgt.to(dev),
                    _generator_for(cfg, lam),
                    T=ev.T,
                    tau=tau,
                    lr=cfg.generator.lr,
                    domain=domain,
                    mutability=mut,
                    onehot=data.onehot,
                )
                x_cf = res.x_cf.detach().cpu()
                p = res.p_target.detach().cpu()
                valid = validity(p, tau)
                ip = torch.full((x0.shape[0],), math.nan)
                mmd = torch.full((x0.shape[0],), math.nan)
                for r in runs:
                    g = _run_generator(draws.seed, r, salt=1)
                    g_mmd = _run_generator(draws.seed, r, salt=2 + int(1000 * lam))
                    g_ref = _run_generator(draws.seed, r, salt=1_000_001)
                    in_run = run_col == r
                    for k in range(data.n_classes):
                        rows = in_run & (tgt == k)
                        # same target samples for every model and λ of this run (drawn per class)
                        samples = sample_rows(by_class[k], ev.n_target_samples, g, replace=True)
                        ref = sample_rows(by_class[k], ev.mmd_samples, g_ref, replace=False)
                        if not rows.any():
                            continue
                        ip[rows] = implausibility(x_cf[rows], samples)
                        vrows = rows & valid
                        if setting == "plausibility" and int(vrows.sum()) >= 2:
                            mmd[rows] = mmd_unbiased(
                                x_cf[vrows], ref, ev.length_scale, ev.mmd_samples, g_mmd
                            )
                df = pd.DataFrame(
                    {
                        "setting": setting,
                        "run": run_col.numpy(),
                        "lambda_energy": float(lam),
                        "individual": ind_col.numpy(),
                        "index": idx_f.numpy(),
                        "factual": fac.numpy(),
                        "target": tgt.numpy(),
                        "tau": tau,
                        "constrained": constrained,
                        "valid": valid.numpy(),
                        "valid_05": validity(p, 0.5).numpy(),
                        "converged": res.converged.cpu().numpy(),
                        "p_target": p.numpy(),
                        "steps": res.steps.cpu().numpy(),
                        "cost": cost(x0, x_cf).numpy(),
                        "implausibility": ip.numpy(),
                        "redundancy": redundancy(x0, x_cf).numpy(),
                        "mmd": mmd.numpy(),
                    }
                )
                fx = pd.DataFrame(x0.numpy(), columns=[f"x_{f}" for f in feats])
                fc = pd.DataFrame(x_cf.numpy(), columns=[f"cf_{f}" for f in feats])
                frames.append(pd.concat([df, fx, fc], axis=1))
            bar.update(len(runs))
    bar.close()
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()


# ----------------------------------------------------------------------------------------------
# Aggregation


def per_run(
    frame: pd.DataFrame,
    column: str,
    setting: str = "plausibility",
    kind: str = "mean",
    valid: str = "valid",
) -> pd.Series:
    """Per-run values of one metric (reference ``aggregate_ce_evaluation``).

    ``kind="mean"``: mean over valid counterfactuals per (run, λ_egy), then over λ_egy;
    ``"group"``: the group-level column (IP*) taken once per (run, λ_egy, target) group with
    valid counterfactuals, mean over targets, then over λ_egy; ``"share"``: mean of the column
    over all counterfactuals (validity). ``valid`` names the filter column: ``valid`` (p ≥ τ of
    the setting, default) or ``valid_05`` (p ≥ 0.5, the reference's filter, §9.15; IP* groups
    are always formed from the τ-valid counterfactuals). Index: run.
    """
    f = frame[frame["setting"] == setting]
    if f.empty:
        return pd.Series(dtype=float)
    if kind == "share":
        return f.groupby("run")[column].mean().astype(float)
    f = f[f[valid].astype(bool)]
    if kind == "group":
        grp = f.groupby(["run", "lambda_energy", "target"])[column].first().dropna()
        by_lam = grp.groupby(level=["run", "lambda_energy"]).mean()
    else:
        by_lam = f.groupby(["run", "lambda_energy"])[column].mean().dropna()
    return by_lam.groupby(level="run").mean().astype(float)


def reduction_stats(ct: pd.Series, bl: pd.Series, level: float = 0.99) -> dict[str, Any]:
    """% reduction CT vs BL from per-run values (both indexed by run).

    ``r = |ct|/|bl|`` per run (non-finite ratios dropped, as the reference filters Inf/NaN);
    ``reduction = −(mean r − 1)·100``, ``sd = 100·std(r)`` (ddof 1); ``ci_lo, ci_hi`` the
    ``level`` percentile interval of ``|ct| − |bl|`` over runs; ``significant`` if it excludes 0.
    """
    both = pd.concat([ct.rename("ct"), bl.rename("bl")], axis=1, join="inner").dropna()
    a, b = both["ct"].abs().to_numpy(float), both["bl"].abs().to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    r = r[np.isfinite(r)]
    d = a - b
    out: dict[str, Any] = {
        "ct": float(np.mean(a)) if a.size else math.nan,
        "bl": float(np.mean(b)) if b.size else math.nan,
        "reduction_pct": float(-(np.mean(r) - 1) * 100) if r.size else math.nan,
        "sd_pct": float(100 * np.std(r, ddof=1)) if r.size > 1 else math.nan,
        "diff": float(np.mean(d)) if d.size else math.nan,
        "ci_lo": math.nan,
        "ci_hi": math.nan,
        "significant": False,
        "n_runs": int(r.size),
    }
    if d.size:
        q = (1 - level) / 2
        lo, hi = np.quantile(d, [q, 1 - q])
        out.update(ci_lo=float(lo), ci_hi=float(hi), significant=bool(lo > 0 or hi < 0))
    return out


def _cell(s: dict[str, Any]) -> str:
    if math.isnan(s["reduction_pct"]):
        return "n/a"
    sd = "nan" if math.isnan(s["sd_pct"]) else f"{s['sd_pct']:.2f}"
    return f"{s['reduction_pct']:.2f}±{sd}{'*' if s['significant'] else ''}"


def compare(
    ct_frame: pd.DataFrame, bl_frame: pd.DataFrame, level: float = 0.99, valid: str = "valid"
) -> pd.DataFrame:
    """The paper-style table from two :func:`evaluate_model` frames evaluated on the same draws.

    One row per metric (IP, IP*, Cost with constraints at τ_cost, Cost at τ_eval, validity):
    ``metric, setting, ct, bl`` (means of the per-run values), ``reduction_pct, sd_pct, diff,
    ci_lo, ci_hi, significant, n_runs`` and ``cell`` (``"26.26±0.67*"``). Validity rows carry
    the two shares only (no reduction). Metrics whose setting was not evaluated are left out.
    ``valid``: the filter column (see :func:`per_run`).
    """
    rows = []
    for label, setting, column, kind in METRICS:
        if column not in ct_frame or column not in bl_frame:
            continue
        ct = per_run(ct_frame, column, setting, kind, valid)
        bl = per_run(bl_frame, column, setting, kind, valid)
        if ct.empty and bl.empty:
            continue
        s = reduction_stats(ct, bl, level)
        if kind == "share":
            s.update(
                ct=float(ct.mean()), bl=float(bl.mean()), reduction_pct=math.nan, sd_pct=math.nan
            )
            s.update(ci_lo=math.nan, ci_hi=math.nan, significant=False)
            cell = f"{s['ct']:.2f} vs {s['bl']:.2f}"
        else:
            cell = _cell(s)
        rows.append({"metric": label, "setting": setting, **s, "cell": cell})
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Per setting (and per λ_egy): counts, validity, and valid-only means of cost, IP, IP*."""
    out: dict[str, Any] = {}
    for setting, f in frame.groupby("setting"):
        entry: dict[str, Any] = {}
        for key, g in [
            ("all", f),
            *[(f"lambda={lam:g}", h) for lam, h in f.groupby("lambda_energy")],
        ]:
            v = g[g["valid"].astype(bool)]
            grp = v.groupby(["run", "lambda_energy", "target"])["mmd"].first().dropna()
            entry[key] = {
                "n": int(len(g)),
                "validity": float(g["valid"].mean()),
                "validity_05": float(g["valid_05"].mean()),
                "cost": _nanmean(v["cost"]),
                "implausibility": _nanmean(v["implausibility"]),
                "mmd": _nanmean(grp),
                "redundancy": _nanmean(v["redundancy"]),
                "steps": _nanmean(g["steps"]),
            }
        out[str(setting)] = entry
    return out


def _nanmean(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.mean()) if len(s) else None


def format_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """The comparison table as Markdown (Table 1 cells plus raw means and the 99 % interval)."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| Metric | Setting | CT | BL | Reduction (%) | 99% CI of CT−BL |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        ci = "" if math.isnan(r["ci_lo"]) else f"[{r['ci_lo']:.4g}, {r['ci_hi']:.4g}]"
        red = "" if math.isnan(r["reduction_pct"]) else r["cell"]
        lines.append(
            f"| {r['metric']} | {r['setting']} | {_fmt(r['ct'])} | {_fmt(r['bl'])} | {red} | {ci} |"
        )
    lines.append("")
    lines.append(
        "Reduction = −(mean over runs of CT/BL − 1)·100 ± 100·sd; * = 99 % interval excludes 0."
    )
    return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"
