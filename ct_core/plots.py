"""PNG plots (matplotlib, Agg canvas; no global backend switch): the paper's Figure 1 panels for
2-D data, per-epoch training curves, robust accuracy. Each function returns the Figure and, given
a ``path``, writes it."""

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
    from ct_core.data.base import Dataset

__all__ = ["plot_decision_boundary", "plot_history", "plot_panels", "plot_robust_accuracy"]

_CLASS_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]


def _color(k: int) -> str:
    return _CLASS_COLORS[k % len(_CLASS_COLORS)]


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def _as_tensor(x: Any) -> Tensor | None:
    if x is None:
        return None
    if isinstance(x, pd.DataFrame):
        x = x.to_numpy()
    return torch.tensor(np.array(x, dtype=np.float32))


def draw_decision_boundary(
    ax: Axes,
    model: nn.Module,
    data: Dataset,
    counterfactuals: Any = None,
    factuals: Any = None,
    protected: int | Sequence[int] | None = None,
    title: str | None = None,
    resolution: int = 200,
    max_points: int = 1000,
    targets: Any = None,
) -> None:
    """Draw one Figure-1 panel on ``ax`` (see :func:`plot_decision_boundary`)."""
    from ct_core.evaluation import predict_proba

    if data.n_features != 2:
        from ct_core.config import ConfigError

        raise ConfigError(
            f"decision-boundary plots need 2 features, data {data.name!r} has {data.n_features}"
        )
    X, y = data.X_train, data.y_train
    pts = [X]
    for extra in (_as_tensor(counterfactuals), _as_tensor(factuals)):
        if extra is not None and extra.numel():
            pts.append(extra)
    allx = torch.cat(pts)
    lo, hi = allx.min(0).values, allx.max(0).values
    pad = 0.08 * (hi - lo).clamp_min(1e-3)
    lo, hi = lo - pad, hi + pad
    g0 = torch.linspace(float(lo[0]), float(hi[0]), resolution)
    g1 = torch.linspace(float(lo[1]), float(hi[1]), resolution)
    G0, G1 = torch.meshgrid(g0, g1, indexing="xy")
    grid = torch.stack([G0.reshape(-1), G1.reshape(-1)], 1)
    proba = predict_proba(model, grid)
    K = proba.shape[1]
    pred = proba.argmax(1).reshape(resolution, resolution).numpy()
    # decision regions in class colours, boundary in black
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap([_color(k) for k in range(K)])
    ax.pcolormesh(
        G0.numpy(), G1.numpy(), pred, cmap=cmap, vmin=-0.5, vmax=K - 0.5, alpha=0.18, shading="auto"
    )
    ax.contour(G0.numpy(), G1.numpy(), pred, levels=np.arange(K) + 0.5, colors="k", linewidths=1.2)
    # training data
    n = X.shape[0]
    sel = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: min(n, max_points)]
    for k in range(data.n_classes):
        m = y[sel] == k
        name = data.class_names[k] if data.class_names and k < len(data.class_names) else str(k)
        ax.scatter(*X[sel][m].T.numpy(), s=6, color=_color(k), alpha=0.45, label=f"class {name}")
    cf = _as_tensor(counterfactuals)
    fa = _as_tensor(factuals)
    tg = None if targets is None else np.asarray(targets)
    if fa is not None and cf is not None:
        d = (cf - fa).numpy()
        ax.quiver(
            fa[:, 0].numpy(),
            fa[:, 1].numpy(),
            d[:, 0],
            d[:, 1],
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
        colors = [_color(int(t)) for t in tg] if tg is not None else "gold"
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
    labels = [f"{names[i]}{' (protected)' if i in prot else ''}" for i in range(2)]
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_xlim(float(lo[0]), float(hi[0]))
    ax.set_ylim(float(lo[1]), float(hi[1]))
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=7, framealpha=0.7)


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
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    draw_decision_boundary(
        ax, model, data, counterfactuals, factuals, protected, title, targets=targets
    )
    return _save(fig, path)


def plot_panels(
    panels: Sequence[dict[str, Any]], data: Dataset, path: str | Path | None = None
) -> Figure:
    """Several Figure-1 panels side by side; each dict holds the keyword arguments of
    :func:`draw_decision_boundary` (``model``, ``counterfactuals``, ``factuals``, ``protected``,
    ``title``, ``targets``)."""
    fig = Figure(figsize=(4.8 * len(panels), 4.4))
    for i, p in enumerate(panels):
        draw_decision_boundary(fig.add_subplot(1, len(panels), i + 1), data=data, **p)
    return _save(fig, path)


def plot_history(history: str | Path | pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Per-epoch curves from ``history.csv``: loss terms, accuracies, mature share and search
    steps, and the validation counterfactual metrics where present."""
    h = pd.read_csv(history) if isinstance(history, (str, Path)) else history
    x = h["epoch"] if "epoch" in h else pd.Series(range(1, len(h) + 1))
    groups = [
        ("loss terms", ["loss", "class_loss", "div", "reg", "adv", "val_loss"]),
        ("accuracy", ["train_acc", "val_acc"]),
        ("counterfactuals", ["mature", "val_validity"]),
        ("validation CE metrics", ["val_cost", "val_implausibility", "val_mmd"]),
    ]
    groups = [(t, [c for c in cols if c in h and h[c].notna().any()]) for t, cols in groups]
    groups = [g for g in groups if g[1]]
    fig = Figure(figsize=(4.2 * max(len(groups), 1), 3.4))
    for i, (title, cols) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), i + 1)
        for c in cols:
            m = h[c].notna()
            ax.plot(x[m], h[c][m], marker="o" if m.sum() < 15 else None, ms=3, label=c)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_robust_accuracy(
    tables: dict[str, pd.DataFrame] | pd.DataFrame, path: str | Path | None = None
) -> Figure:
    """Accuracy against ε for FGSM and PGD (one line per model when given a dict of tables with
    columns ``attack, epsilon, accuracy``)."""
    if isinstance(tables, pd.DataFrame):
        tables = {"model": tables}
    fig = Figure(figsize=(8.4, 3.4))
    for i, attack in enumerate(("fgsm", "pgd")):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, t in tables.items():
            t = t[t["attack"] == attack]
            ax.plot(t["epsilon"], t["accuracy"], marker="o", ms=3, label=name)
        ax.set_title(attack.upper(), fontsize=10)
        ax.set_xlabel("ε")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)
