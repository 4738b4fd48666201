"""PNG plots (matplotlib, Agg canvas; no global backend switch): the paper's Figure 1 panels for
2-D data, per-epoch training curves, robust accuracy, and a sweep's results (a metric against a
swept parameter, a Pareto front). Each function returns the Figure and, given a ``path``, writes
it at screen size (8-10 in wide at 100 dpi). Every plot has a title and labelled axes; panels
that are compared share their axes, and value axes follow the data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

if TYPE_CHECKING:
    from ct_core.config import Config
    from ct_core.data.base import Dataset

__all__ = ["plot_decision_boundary", "plot_history", "plot_metric_by_param", "plot_model"]
__all__ += ["plot_panels", "plot_pareto", "plot_robust_accuracy"]

_CLASS_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]
DPI = 100
Limits = tuple[tuple[float, float], tuple[float, float]]


def _color(k: int) -> str:
    return _CLASS_COLORS[k % len(_CLASS_COLORS)]


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI)
    return fig


def _as_tensor(x: Any) -> Tensor | None:
    if x is None:
        return None
    if isinstance(x, pd.DataFrame):
        x = x.to_numpy()
    return torch.tensor(np.array(x, dtype=np.float32))


def _check_2d(data: Dataset) -> None:
    if data.n_features != 2:
        from ct_core.config import ConfigError

        raise ConfigError(
            f"decision-boundary plots need 2 features, data {data.name!r} has {data.n_features}"
        )


def panel_limits(data: Dataset, *point_sets: Any) -> Limits:
    """The x and y ranges that show the training data and every given ``(n, 2)`` point set,
    padded by 8 %: what compared panels share."""
    pts = [data.X_train] + [t for t in map(_as_tensor, point_sets) if t is not None and t.numel()]
    allx = torch.cat(pts)
    lo, hi = allx.min(0).values, allx.max(0).values
    pad = 0.08 * (hi - lo).clamp_min(1e-3)
    lo, hi = lo - pad, hi + pad
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def draw_decision_boundary(
    ax: Axes,
    model: nn.Module,
    data: Dataset,
    counterfactuals: Any = None,
    factuals: Any = None,
    protected: int | Sequence[int] | None = None,
    title: str | None = None,
    resolution: int = 150,
    max_points: int = 1000,
    targets: Any = None,
    limits: Limits | None = None,
) -> None:
    """Draw one Figure-1 panel on ``ax`` (see :func:`plot_decision_boundary`); ``limits``
    (:func:`panel_limits`) fixes the axes' ranges."""
    from matplotlib.colors import ListedColormap

    from ct_core.evaluation import predict_proba

    _check_2d(data)
    X, y = data.X_train, data.y_train
    (x0, x1), (y0, y1) = limits or panel_limits(data, counterfactuals, factuals)
    g0 = torch.linspace(x0, x1, resolution)
    g1 = torch.linspace(y0, y1, resolution)
    G0, G1 = torch.meshgrid(g0, g1, indexing="xy")
    proba = predict_proba(model, torch.stack([G0.reshape(-1), G1.reshape(-1)], 1))
    K = proba.shape[1]
    pred = proba.argmax(1).reshape(resolution, resolution).numpy()
    # decision regions in class colours, boundary in black
    cmap = ListedColormap([_color(k) for k in range(K)])
    # an image, not a mesh: the legend's "best" place then weighs the points only, not one path
    # per grid cell
    ax.imshow(
        pred,
        cmap=cmap,
        vmin=-0.5,
        vmax=K - 0.5,
        alpha=0.18,
        extent=(x0, x1, y0, y1),
        origin="lower",
        aspect="auto",
        interpolation="nearest",
    )
    ax.contour(G0, G1, pred, levels=np.arange(K) + 0.5, colors="k", linewidths=1.2)
    n = X.shape[0]
    sel = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: min(n, max_points)]
    for k in range(data.n_classes):
        m = y[sel] == k
        name = data.class_names[k] if data.class_names and k < len(data.class_names) else str(k)
        ax.scatter(*X[sel][m].T.numpy(), s=6, color=_color(k), alpha=0.45, label=f"class {name}")
    cf, fa = _as_tensor(counterfactuals), _as_tensor(factuals)
    if fa is not None and cf is not None:
        d = (cf - fa).numpy()
        ax.quiver(
            *fa.T.numpy(),
            *d.T,
            angles="xy",
            scale_units="xy",
            scale=1,
            width=0.003,
            color="0.25",
            alpha=0.8,
        )
        ax.scatter(
            *fa.T.numpy(),
            s=18,
            facecolors="none",
            edgecolors="0.2",
            linewidths=0.8,
            label="factual",
        )
    if cf is not None:
        colors = "gold" if targets is None else [_color(int(t)) for t in np.asarray(targets)]
        ax.scatter(
            *cf.T.numpy(),
            s=40,
            marker="*",
            c=colors,
            edgecolors="k",
            linewidths=0.5,
            label="counterfactual",
        )
    names = data.feature_names or ["x1", "x2"]
    prot = [protected] if isinstance(protected, int) else list(protected or [])
    ax.set_xlabel(f"{names[0]}{' (protected)' if 0 in prot else ''}")
    ax.set_ylabel(f"{names[1]}{' (protected)' if 1 in prot else ''}")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    if title:
        ax.set_title(title, fontsize=11)
    ax.legend(loc="best", fontsize=8, framealpha=0.7)


def plot_decision_boundary(
    model: nn.Module,
    data: Dataset,
    counterfactuals: Any = None,
    factuals: Any = None,
    protected: int | Sequence[int] | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    targets: Any = None,
) -> Figure:
    """Figure 1 panel for 2-D data: decision regions and boundary of ``model``, training data by
    class, and (optionally) factuals ``(n, 2)`` with arrows to their counterfactuals ``(n, 2)``
    (stars coloured by ``targets``). ``protected`` feature indices are marked on their axis."""
    fig = Figure(figsize=(7, 6))
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.09, top=0.93)
    ax = fig.add_subplot(1, 1, 1)
    draw_decision_boundary(
        ax,
        model,
        data,
        counterfactuals,
        factuals,
        protected,
        title or "Decision boundary",
        targets=targets,
    )
    return _save(fig, path)


def plot_panels(
    panels: Sequence[dict[str, Any]],
    data: Dataset,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Several Figure-1 panels side by side, on the same axis ranges (those that show every
    panel's points) so that they compare; each dict holds the keyword arguments of
    :func:`draw_decision_boundary` (``model``, ``counterfactuals``, ``factuals``, ``protected``,
    ``title``, ``targets``)."""
    _check_2d(data)
    sets = [p.get(k) for p in panels for k in ("counterfactuals", "factuals")]
    limits = panel_limits(data, *sets)
    fig = Figure(figsize=(5.5 * len(panels), 5.6), layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    for ax, p in zip(axes, panels):
        draw_decision_boundary(ax, data=data, limits=limits, **p)
    fig.suptitle(title or f"Decision boundaries and counterfactuals ({data.name})")
    return _save(fig, path)


_HISTORY_GROUPS = [
    ("Loss terms", "loss", ["loss", "class_loss", "div", "reg", "adv", "val_loss"]),
    ("Accuracy", "accuracy", ["train_acc", "val_acc"]),
    ("Counterfactuals found", "share", ["mature", "val_validity"]),
    ("Validation counterfactual quality", "value", ["val_cost", "val_implausibility", "val_mmd"]),
]


def plot_history(
    history: str | Path | pd.DataFrame | Sequence[dict[str, Any]],
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Learning curves from ``history.csv`` (or the records themselves): loss terms, accuracies,
    the share of mature counterfactuals and of valid validation counterfactuals, and the
    validation counterfactual metrics, where present; one panel each, two per row."""
    if isinstance(history, (str, Path)):
        h = pd.read_csv(history)
    else:
        h = pd.DataFrame(list(history) if not isinstance(history, pd.DataFrame) else history)
    x = h["epoch"] if "epoch" in h else pd.Series(range(1, len(h) + 1))
    groups = [
        (t, u, [c for c in cols if c in h and h[c].notna().any()]) for t, u, cols in _HISTORY_GROUPS
    ]
    groups = [g for g in groups if g[2]] or [("Learning curves", "value", [])]
    rows = (len(groups) + 1) // 2
    fig = Figure(figsize=(10, 3.4 * rows + 0.6))
    top = 1 - 0.6 / (3.4 * rows + 0.6)
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=0.5 / (3.4 * rows), top=top - 0.04, hspace=0.45, wspace=0.2
    )
    axes = fig.subplots(rows, 2 if len(groups) > 1 else 1, squeeze=False).ravel()
    for ax, (name, unit, cols) in zip(axes, groups):
        for c in cols:
            m = h[c].notna()
            ax.plot(x[m], h[c][m], marker="o" if m.sum() < 15 else None, ms=3, label=c)
        ax.set(title=name, xlabel="epoch", ylabel=unit)
        if cols:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(groups) :]:
        ax.set_axis_off()
    fig.suptitle(title or "Learning curves")
    return _save(fig, path)


def plot_robust_accuracy(
    tables: dict[str, pd.DataFrame] | pd.DataFrame,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Accuracy against ε for FGSM and PGD (one line per model when given a dict of tables with
    columns ``attack, epsilon, accuracy``). Both panels share a value axis fitted to the data,
    so that the models' differences show."""
    if isinstance(tables, pd.DataFrame):
        tables = {"model": tables}
    fig = Figure(figsize=(10, 4.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, attack in zip(axes, ("fgsm", "pgd")):
        for name, t in tables.items():
            t = t[t["attack"] == attack]
            ax.plot(t["epsilon"], t["accuracy"], marker="o", ms=4, label=name)
        ax.set(title=attack.upper(), xlabel="attack radius ε")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    acc = pd.concat([t["accuracy"] for t in tables.values()]).astype(float)
    if len(acc):
        lo, hi = float(acc.min()), float(acc.max())
        pad = max(0.05 * (hi - lo), 0.005)
        axes[0].set_ylim(lo - pad, hi + pad)
    axes[0].set_ylabel("accuracy")
    fig.suptitle(title or "Robust accuracy under adversarial attacks")
    return _save(fig, path)


def plot_metric_by_param(
    df: pd.DataFrame,
    x: str,
    y: str,
    mode: str = "min",
    log: bool = False,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """A sweep's settings: metric ``y`` against swept parameter ``x`` (one point per setting;
    a categorical ``x`` as jittered columns), the best setting by ``mode`` starred."""
    d = df[[x, y]].dropna(subset=[y])
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    xs = pd.to_numeric(d[x], errors="coerce")
    if len(d) and xs.isna().any():  # categorical (or mixed): one column per value
        labels = d[x].map(lambda v: "(not set)" if pd.isna(v) else str(v))
        cats = sorted(labels.unique())
        pos = labels.map({c: i for i, c in enumerate(cats)}).to_numpy(float)
        jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(pos))
        xs = pd.Series(pos + jitter, index=d.index)
        ax.set_xticks(range(len(cats)), cats)
    ax.scatter(xs, d[y], s=28, alpha=0.75, label="setting")
    if len(d):
        best = d[y].idxmin() if mode == "min" else d[y].idxmax()
        ax.scatter(
            [xs[best]],
            [d[y][best]],
            s=220,
            marker="*",
            color="gold",
            edgecolors="k",
            zorder=3,
            label=f"best ({d[y][best]:.4g})",
        )
        ax.legend(fontsize=9)
    ax.set(xlabel=x, ylabel=f"{y} ({'lower' if mode == 'min' else 'higher'} is better)")
    if log:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(title or f"{y} by {x}")
    return _save(fig, path)


def plot_pareto(
    df: pd.DataFrame,
    x: str,
    y: str,
    modes: Sequence[str] = ("min", "min"),
    front: str = "pareto",
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Two metrics of every setting, the non-dominated ones (column ``front``) joined."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(df[x], df[y], s=24, alpha=0.6, label="setting")
    if front in df.columns:
        f = df[df[front].astype(bool)].sort_values(x)
        ax.plot(f[x], f[y], "o-", color="#d62728", label=f"Pareto front ({len(f)})")
    better = {"min": "lower", "max": "higher"}
    ax.set(
        xlabel=f"{x} ({better[modes[0]]} is better)", ylabel=f"{y} ({better[modes[1]]} is better)"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title or f"Pareto front: {x} and {y}")
    return _save(fig, path)


def plot_model(
    model: nn.Module,
    data: Dataset,
    cfg: Config,
    path: str | Path | None = None,
    title: str | None = None,
    n: int = 40,
) -> Figure:
    """A trained model's Figure-1 panel on 2-D data: its decision boundary and the
    counterfactuals of ``n`` validation points (seeded by ``evaluation.seed``) that the test-time
    generator of the validation metrics finds (ECCo with ``evaluation``'s T, τ and λ_cost, the
    middle λ_egy of ``evaluation.lambda_energies``), each towards another class than predicted."""
    from ct_core.evaluation import predict
    from ct_core.generators import ECCo, search

    _check_2d(data)
    ev = cfg.evaluation
    lams = sorted(ev.lambda_energies) or [1.0]
    lam = lams[len(lams) // 2]
    X = data.X_val if data.X_val.shape[0] else data.X_test
    g = torch.Generator().manual_seed(ev.seed)
    x0 = X[torch.randperm(X.shape[0], generator=g)[:n]].cpu()
    shift = torch.randint(1, max(data.n_classes, 2), (x0.shape[0],), generator=g)
    target = (predict(model, x0).cpu() + shift) % data.n_classes
    gen = ECCo(
        lambda_cost=ev.lambda_cost,
        lambda_energy=lam,
        T=ev.T,
        energy_reg=cfg.generator.energy_reg,
        decay=cfg.generator.energy_decay,
    )
    domain = None if data.domain is None else (data.domain[0].cpu(), data.domain[1].cpu())
    res = search(model, x0, target, gen, T=ev.T, tau=ev.tau, lr=cfg.generator.lr, domain=domain)
    valid = float((res.p_target >= ev.tau).float().mean()) if len(x0) else 0.0
    return plot_decision_boundary(
        model,
        data,
        res.x_cf.detach(),
        x0,
        path=path,
        targets=target,
        title=title or f"Decision boundary and counterfactuals (λ_egy={lam:g}, {valid:.0%} valid)",
    )
