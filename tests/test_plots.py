"""PNG plots: Figure-1 panels for 2-D data, training curves, robust accuracy.

Each plot is checked by what it draws (the figure a plot function returns is the one it saves):
the decision regions are the model's predictions, the stars and circles are the given
counterfactuals and factuals joined by arrows, and every curve holds the values of its column.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.quiver import Quiver
from torch import nn

from ct_core.config import ConfigError
from ct_core.plots import plot_decision_boundary, plot_history, plot_panels, plot_robust_accuracy
from tests.helpers import gaussian_dataset

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG


def split_on_x1(threshold: float = 0.3) -> nn.Module:
    """A linear model that predicts class 1 where x1 > ``threshold`` (and class 0 elsewhere)."""
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([threshold, -threshold]))
    return model.eval()


def scatter(ax, label: str) -> np.ndarray:
    (pts,) = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_label() == label]
    return np.asarray(pts.get_offsets())


def regions(ax) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The decision regions drawn on ``ax``: cell centres along x1 and x2, and the class shown
    in each cell (rows along x2)."""
    (image,) = ax.get_images()
    cls = np.asarray(image.get_array())
    if image.origin == "upper":
        cls = cls[::-1]
    x0, x1, y0, y1 = image.get_extent()
    rows, cols = cls.shape
    xs = x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols
    ys = y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows
    return xs, ys, cls


def test_a_decision_boundary_panel_shows_the_models_regions_and_the_counterfactual_paths(
    tmp_path,
):
    data = gaussian_dataset(200, 2)
    model = split_on_x1(0.3)
    fa = data.X_test[:5]
    cf = fa + torch.tensor([1.0, 0.5])
    targets = [1, 0, 1, 0, 1]
    fig = plot_decision_boundary(
        model, data, cf, fa, protected=1, path=tmp_path / "a.png", targets=targets, title="demo"
    )
    assert is_png(tmp_path / "a.png")
    ax = fig.axes[0]
    xs, ys, cls = regions(ax)
    # each cell shows the class the model predicts at its centre (cells on the line aside)
    want = np.broadcast_to((xs > 0.3).astype(int), cls.shape)
    clear = np.broadcast_to(np.abs(xs - 0.3) > 1e-4, cls.shape)
    assert (cls[clear] == want[clear]).all()
    assert cls.min() == 0 and cls.max() == 1
    np.testing.assert_allclose(scatter(ax, "counterfactual"), cf.numpy(), rtol=1e-6)
    np.testing.assert_allclose(scatter(ax, "factual"), fa.numpy(), rtol=1e-6)
    (arrows,) = [c for c in ax.collections if isinstance(c, Quiver)]
    np.testing.assert_allclose(np.c_[arrows.U, arrows.V], (cf - fa).numpy(), rtol=1e-5)
    np.testing.assert_allclose(arrows.XY, fa.numpy(), rtol=1e-6)
    # every training point is drawn in its class's colour
    shown = sum(len(scatter(ax, f"class {k}")) for k in (0, 1))
    assert shown == min(len(data.X_train), 1000)
    assert ax.get_ylabel() == "x2 (protected)" and ax.get_xlabel() == "x1"
    assert ax.get_title() == "demo"


def test_side_by_side_panels_each_show_their_own_model(tmp_path):
    data = gaussian_dataset(200, 2)
    cf = data.X_test[:3] + 1.0
    fig = plot_panels(
        [
            {"model": split_on_x1(-0.5), "title": "BL"},
            {"model": split_on_x1(0.5), "counterfactuals": cf, "title": "CT"},
        ],
        data,
        tmp_path / "b.png",
    )
    assert is_png(tmp_path / "b.png")
    assert [ax.get_title() for ax in fig.axes] == ["BL", "CT"]
    for ax, threshold in zip(fig.axes, (-0.5, 0.5)):
        xs, _, cls = regions(ax)
        row = cls[0]
        first_one = xs[np.argmax(row == 1)]
        assert abs(first_one - threshold) < 2 * (xs[1] - xs[0])
    np.testing.assert_allclose(scatter(fig.axes[1], "counterfactual"), cf.numpy(), rtol=1e-6)


def test_decision_boundary_refuses_other_dimensions():
    with pytest.raises(ConfigError, match="2 features"):
        plot_decision_boundary(nn.Linear(3, 2), gaussian_dataset(100, 3))


def lines(fig) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """(panel title, curve label) -> the curve's x and y values."""
    return {
        (ax.get_title(), ln.get_label()): (list(ln.get_xdata()), list(ln.get_ydata()))
        for ax in fig.axes
        for ln in ax.get_lines()
    }


def test_the_history_plot_draws_each_column_at_its_epochs(tmp_path):
    h = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.0, 0.8, 0.7],
            "class_loss": [0.9, 0.7, 0.6],
            "train_acc": [0.6, 0.8, 0.9],
            "val_acc": [0.6, 0.7, 0.9],
            "mature": [0.1, 0.5, 0.9],
            "val_mmd": [None, 0.1, None],
            "time_search": [0.1, 0.1, 0.1],  # a clock: not a curve
        }
    )
    h.to_csv(tmp_path / "history.csv", index=False)
    fig = plot_history(tmp_path / "history.csv", tmp_path / "h.png")
    assert is_png(tmp_path / "h.png")
    got = lines(fig)
    assert got == {
        ("Loss terms", "loss"): ([1, 2, 3], [1.0, 0.8, 0.7]),
        ("Loss terms", "class_loss"): ([1, 2, 3], [0.9, 0.7, 0.6]),
        ("Accuracy", "train_acc"): ([1, 2, 3], [0.6, 0.8, 0.9]),
        ("Accuracy", "val_acc"): ([1, 2, 3], [0.6, 0.7, 0.9]),
        ("Counterfactuals found", "mature"): ([1, 2, 3], [0.1, 0.5, 0.9]),
        ("Validation counterfactual quality", "val_mmd"): ([2], [0.1]),
    }


def test_the_robust_accuracy_plot_draws_each_models_accuracy_per_attack(tmp_path):
    def table(fgsm: list[float], pgd: list[float]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "attack": ["fgsm"] * 3 + ["pgd"] * 3,
                "epsilon": [0.0, 0.05, 0.1] * 2,
                "accuracy": fgsm + pgd,
            }
        )

    ct, bl = table([0.9, 0.7, 0.5], [0.9, 0.6, 0.3]), table([0.95, 0.5, 0.2], [0.95, 0.4, 0.1])
    fig = plot_robust_accuracy({"CT": ct, "BL": bl}, tmp_path / "r.png")
    assert is_png(tmp_path / "r.png")
    got = {k: (x, [round(v, 6) for v in y]) for k, (x, y) in lines(fig).items()}
    eps = [0.0, 0.05, 0.1]
    assert got == {
        ("FGSM", "CT"): (eps, [0.9, 0.7, 0.5]),
        ("FGSM", "BL"): (eps, [0.95, 0.5, 0.2]),
        ("PGD", "CT"): (eps, [0.9, 0.6, 0.3]),
        ("PGD", "BL"): (eps, [0.95, 0.4, 0.1]),
    }
    assert not any(math.isnan(v) for _, y in got.values() for v in y)


def _pixels(path) -> tuple[int, int]:
    import matplotlib.image

    h, w = matplotlib.image.imread(path).shape[:2]
    return w, h


def test_compared_panels_share_axes_that_show_every_panels_points(tmp_path):
    data = gaussian_dataset(200, 2)
    fa = data.X_test[:5]
    far = fa + torch.tensor([12.0, -9.0])  # one panel's counterfactuals far from the data
    panels = [
        {"model": nn.Linear(2, 2), "title": "BL"},
        {"model": nn.Linear(2, 2), "counterfactuals": far, "factuals": fa, "title": "CT"},
    ]
    fig = plot_panels(panels, data, tmp_path / "p.png", title="CT against BL")
    bl, ct = fig.axes[:2]
    assert bl.get_xlim() == ct.get_xlim() and bl.get_ylim() == ct.get_ylim()
    (x0, x1), (y0, y1) = ct.get_xlim(), ct.get_ylim()
    assert x1 > float(far[:, 0].max()) and y0 < float(far[:, 1].min())
    assert x0 < float(data.X_train[:, 0].min()) and y1 > float(data.X_train[:, 1].max())
    assert fig.get_suptitle() == "CT against BL"
    assert [ax.get_title() for ax in (bl, ct)] == ["BL", "CT"]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in (bl, ct))
    w, h = _pixels(tmp_path / "p.png")
    assert w >= 1000 and h >= 500  # screen size, not a thumbnail


def test_robust_accuracy_is_scaled_to_the_accuracies_so_that_models_differ_visibly(tmp_path):
    def table(acc: list[float]) -> pd.DataFrame:
        return pd.DataFrame(
            {"attack": ["fgsm"] * 2 + ["pgd"] * 2, "epsilon": [0, 0.1] * 2, "accuracy": acc}
        )

    fig = plot_robust_accuracy(
        {"CT": table([0.92, 0.90, 0.92, 0.89]), "BL": table([0.91, 0.86, 0.91, 0.85])},
        tmp_path / "r.png",
    )
    lo, hi = fig.axes[0].get_ylim()
    assert 0.8 < lo < 0.85 and 0.92 < hi < 0.95  # not 0-1, where 0.85 and 0.89 look alike
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim()
    assert fig.get_suptitle() and fig.axes[0].get_ylabel() == "accuracy"
    assert all(ax.get_title() and ax.get_xlabel() for ax in fig.axes[:2])
    w, h = _pixels(tmp_path / "r.png")
    assert w >= 800 and h >= 400


def test_sweep_plots_are_titled_labelled_and_screen_sized(tmp_path):
    from ct_core.plots import plot_metric_by_param, plot_pareto

    df = pd.DataFrame(
        {
            "generator.tau": [0.5, 0.7, 0.9],
            "val_implausibility": [1.4, 1.2, 1.3],
            "val_cost": [0.9, 1.1, 1.0],
            "pareto": [True, True, False],
        }
    )
    by = plot_metric_by_param(
        df, "generator.tau", "val_implausibility", "min", path=tmp_path / "b.png"
    )
    front = plot_pareto(df, "val_implausibility", "val_cost", path=tmp_path / "f.png")
    for fig, name in ((by, "b.png"), (front, "f.png")):
        ax = fig.axes[0]
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
        w, h = _pixels(tmp_path / name)
        assert w >= 800 and h >= 500
    assert "lower is better" in by.axes[0].get_ylabel()
