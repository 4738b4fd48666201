"""Aggregation of the protocol's per-counterfactual frames into the paper's Table 1.

:func:`compare`: valid counterfactuals only, mean per (run, λ_egy), averaged over λ_egy ->
per-run values; per-run ratio CT/BL -> % reduction −(mean r − 1)·100 ± 100·sd(r); the 99 %
percentile interval of the per-run differences |CT| − |BL| (the runs are the bootstrap rounds)
marks ``*`` when it excludes 0 (``CTX/presentation.jl::final_table``). Each metric is reported
for three populations of counterfactuals (:data:`POPULATIONS`), and validity at p ≥ 0.5 and at
p ≥ τ side by side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "METRICS",
    "POPULATIONS",
    "POPULATION_LABELS",
    "compare",
    "format_markdown",
    "paired_frames",
    "per_run",
    "reduction_stats",
    "summarize",
]

POPULATIONS = ("0.5", "tau", "paired")
"""Which counterfactuals a metric averages: each model's own with p ≥ 0.5 (the authors'
aggregation filter), each model's own with p ≥ τ of the setting, or only the draws (run, λ_egy,
individual) where *both* models' counterfactuals reach p ≥ 0.5 (the same population for CT and
BL)."""

# (table label, setting, column, kind)
METRICS: list[tuple[str, str, str, str]] = [
    ("IP", "plausibility", "implausibility", "mean"),
    ("IP*", "plausibility", "mmd", "group"),
    ("Cost", "cost", "cost", "mean"),
    ("Cost (unconstrained)", "plausibility", "cost", "mean"),
    ("Validity", "plausibility", "valid", "share"),
    ("Validity (cost setting)", "cost", "valid", "share"),
]


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
    the setting, default) or ``valid_05`` (p ≥ 0.5, the authors' filter; IP* groups
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

    ``r = |ct|/|bl|`` per run (non-finite ratios dropped, as the authors' aggregation filters Inf/NaN);
    ``reduction = −(mean r − 1)·100``, ``sd = 100·std(r)`` (ddof 1); ``ci_lo, ci_hi`` the
    ``level`` percentile interval of ``|ct| − |bl|`` over runs; ``significant`` if it excludes 0.
    """
    both = pd.concat([ct.rename("ct"), bl.rename("bl")], axis=1, join="inner").dropna()
    a, b = both["ct"].abs().to_numpy(float), both["bl"].abs().to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    r = r[np.isfinite(r)]
    # differences within float32 rounding are ties (identical models give bit-different sums)
    d = np.where(np.isclose(a, b, rtol=1e-6, atol=1e-12), 0.0, a - b)
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


def paired_frames(
    ct_frame: pd.DataFrame, bl_frame: pd.DataFrame, setting: str, valid: str = "valid_05"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of ``setting`` whose draw (run, λ_egy, individual) is valid in *both* frames.

    The two models share the draws (factual class, target, the random number that picks the
    factual point), not necessarily the factual point itself (each picks among the points it
    predicts as the factual class). Returns the two filtered frames, every row valid."""
    key = ["run", "lambda_energy", "individual"]
    sel = [f[(f["setting"] == setting) & f[valid].astype(bool)] for f in (ct_frame, bl_frame)]
    both = sel[0][key].merge(sel[1][key], on=key)
    return sel[0].merge(both, on=key), sel[1].merge(both, on=key)


def _population(
    ct_frame: pd.DataFrame, bl_frame: pd.DataFrame, setting: str, column: str, population: str
) -> tuple[pd.DataFrame, pd.DataFrame, str, str] | None:
    """Frames, filter column and value column of one population (None where not available)."""
    if population == "paired":
        if column == "mmd" or "valid_05" not in ct_frame or "valid_05" not in bl_frame:
            return None  # IP* is a group statistic of each model's own counterfactuals
        ct, bl = paired_frames(ct_frame, bl_frame, setting)
        return ct, bl, "valid_05", column
    valid = "valid_05" if population == "0.5" else "valid"
    if valid not in ct_frame or valid not in bl_frame:
        return None
    if column == "mmd" and population == "0.5":
        column = "mmd_05"
        if column not in ct_frame or column not in bl_frame:
            return None
    return ct_frame, bl_frame, valid, column


def compare(
    ct_frame: pd.DataFrame,
    bl_frame: pd.DataFrame,
    level: float = 0.99,
    populations: Sequence[str] = POPULATIONS,
) -> pd.DataFrame:
    """The paper-style table from two :func:`evaluate_model` frames evaluated on the same draws.

    One row per metric and population (:data:`POPULATIONS`): IP, IP*, Cost with constraints at
    τ_cost, Cost unconstrained at τ_eval, and validity at p ≥ 0.5 and at p ≥ τ of the setting.
    Columns ``metric, setting, population, ct, bl`` (means of the per-run values),
    ``reduction_pct, sd_pct, diff, ci_lo, ci_hi, significant, n_runs`` and ``cell``
    (``"26.26±0.67*"``; validity rows: ``"0.68 vs 0.99"``). Where τ of the setting is 0.5 (the
    cost setting) the ``tau`` rows are left out as duplicates of ``0.5``. Metrics whose setting
    was not evaluated are left out.
    """
    rows = []
    for label, setting, column, kind in METRICS:
        if column not in ct_frame or column not in bl_frame:
            continue
        taus = ct_frame.loc[ct_frame["setting"] == setting, "tau"]
        if taus.empty:
            continue
        for pop in populations:
            if pop == "tau" and float(taus.iloc[0]) == 0.5:
                continue
            if kind == "share":
                if pop == "paired":
                    continue
                col = "valid_05" if pop == "0.5" else "valid"
                if col not in ct_frame or col not in bl_frame:
                    continue
                ct = per_run(ct_frame, col, setting, "share")
                bl = per_run(bl_frame, col, setting, "share")
                s = reduction_stats(ct, bl, level)
                s.update(ct=float(ct.mean()), bl=float(bl.mean()), reduction_pct=math.nan)
                s.update(sd_pct=math.nan, ci_lo=math.nan, ci_hi=math.nan, significant=False)
                cell = f"{s['ct']:.2f} vs {s['bl']:.2f}"
            else:
                picked = _population(ct_frame, bl_frame, setting, column, pop)
                if picked is None:
                    continue
                f_ct, f_bl, valid, col = picked
                ct = per_run(f_ct, col, setting, kind, valid)
                bl = per_run(f_bl, col, setting, kind, valid)
                if ct.empty and bl.empty:
                    continue
                s = reduction_stats(ct, bl, level)
                cell = _cell(s)
            rows.append({"metric": label, "setting": setting, "population": pop, **s, "cell": cell})
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
        "| Metric | Setting | Counterfactuals | CT | BL | Reduction (%) | 99% CI of CT−BL |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        ci = "" if math.isnan(r["ci_lo"]) else f"[{r['ci_lo']:.4g}, {r['ci_hi']:.4g}]"
        red = "" if math.isnan(r["reduction_pct"]) else r["cell"]
        who = POPULATION_LABELS.get(str(r.get("population", "")), str(r.get("population", "")))
        lines.append(
            f"| {r['metric']} | {r['setting']} | {who} | {_fmt(r['ct'])} | {_fmt(r['bl'])} "
            f"| {red} | {ci} |"
        )
    lines.append("")
    lines.append(
        "Reduction = −(mean over runs of CT/BL − 1)·100 ± 100·sd; * = 99 % interval excludes 0."
    )
    return "\n".join(lines) + "\n"


POPULATION_LABELS = {
    "0.5": "own, p ≥ 0.5",
    "tau": "own, p ≥ τ",
    "paired": "both valid (p ≥ 0.5)",
}


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"
