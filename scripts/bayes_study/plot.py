"""The study's figure: best-so-far curves of both searches and each setting's accuracy and
validity against its implausibility."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bayes_study import METRIC


def plot(
    ds: str,
    curves: list[dict[str, Any]],
    grid: list[dict[str, Any]],
    bayes: list[dict[str, Any]],
    g_best: dict[str, Any] | None,
    b_best: dict[str, Any] | None,
    path: Path,
    do_rescore: bool,
    n_startup: int = 0,
    min_validity: float = 0.5,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(2, 2, figsize=(10.5, 8.0))
    axes = list(axs.flat)
    if not do_rescore:
        axes[1].set_visible(False)
    panels = [("", "best val_implausibility (sweep metric, 100 pts)")]
    if do_rescore:
        panels.append(("_val_implausibility_fixed", "val IP of the pick, all val pts"))
    for ax, (suffix, label) in zip(axes, panels):
        gkey = "grid_expected_best" if not suffix else f"grid_incumbent{suffix}"
        bkey = "bayes_best" if not suffix else f"bayes_incumbent{suffix}"
        gn = [c["n"] for c in curves if gkey in c]
        ax.plot(gn, [c[gkey] for c in curves if gkey in c], "C0-", label="grid, E[best of N]")
        if not suffix:
            ax.fill_between(
                gn,
                [c["grid_q10"] for c in curves if gkey in c],
                [c["grid_q90"] for c in curves if gkey in c],
                color="C0",
                alpha=0.2,
                label="grid, 10–90 % of draws",
            )
        bn = [c["n"] for c in curves if bkey in c]
        ax.step(bn, [c[bkey] for c in curves if bkey in c], "C1-", where="post", label="TPE")
        vkey = "bayes_best_valid"
        if not suffix and any(c.get(vkey) != c.get(bkey) for c in curves if bkey in c):
            ax.step(
                bn,
                [c[vkey] for c in curves if bkey in c],
                "C1--",
                where="post",
                lw=1,
                label=f"TPE, val validity ≥ {min_validity:g}",
            )
        if gn:
            ax.axhline(
                [c[gkey] for c in curves if gkey in c][-1],
                color="C0",
                ls=":",
                lw=1,
                label=f"grid, all {gn[-1]}",
            )
        rkey = suffix[1:] if suffix else METRIC
        van = [r.get(rkey, math.nan) for r in grid if r["objective"] == "vanilla"]
        van = [v for v in van if not math.isnan(v)]
        if van:
            ax.axhline(min(van), color="0.5", ls="--", lw=1, label="grid vanilla (best)")
        if 0 < n_startup < len(bayes):
            ax.axvline(n_startup + 0.5, color="C1", ls=":", lw=1, label="TPE: end of random start")
        ax.set_xlabel("trials (N)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    for ax, ykey in zip(axes[2:], ("val_acc", "val_validity")):
        for kind, rs, mk, col in (("grid", grid, "o", "C0"), ("TPE", bayes, ".", "C1")):
            for obj, m in (("full", mk), ("vanilla", "x")):
                sel = [r for r in rs if r["objective"] == obj]
                if sel:
                    ax.scatter(
                        [r[METRIC] for r in sel],
                        [r[ykey] for r in sel],
                        marker=m,
                        color=col,
                        s=22,
                        label=f"{kind} {obj}",
                        alpha=0.8,
                    )
        for r, col in ((g_best, "C0"), (b_best, "C1")):
            if r is not None:
                ax.scatter([r[METRIC]], [r[ykey]], marker="*", s=160, color=col, edgecolor="k")
        ax.set_xlabel("val_implausibility (sweep; NaN not shown)")
        ax.set_ylabel(f"{ykey} (sweep, last epoch)")
        ax.legend(fontsize=7)
    axes[2].set_title("stars: each search's pick", fontsize=9)
    fig.suptitle(f"{ds}: Optuna TPE vs the paper's tuning grid (lower IP is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
