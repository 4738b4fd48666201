"""PNG plots: Figure-1 panels for 2-D data, training curves, robust accuracy."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from ct_core.config import ConfigError
from ct_core.plots import plot_decision_boundary, plot_history, plot_panels, plot_robust_accuracy
from tests.helpers import gaussian_dataset

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


def test_decision_boundary_panels_are_written_for_2d_data(tmp_path):
    data = gaussian_dataset(200, 2)
    model = nn.Sequential(nn.Linear(2, 2))
    fa = data.X_test[:5]
    cf = fa + torch.tensor([1.0, 0.0])
    fig = plot_decision_boundary(
        model, data, cf, fa, protected=1, path=tmp_path / "a.png", targets=[1] * 5, title="demo"
    )
    assert is_png(tmp_path / "a.png")
    assert "protected" in fig.axes[0].get_ylabel()
    plot_panels(
        [{"model": model, "title": "BL"}, {"model": model, "counterfactuals": cf}],
        data,
        tmp_path / "b.png",
    )
    assert is_png(tmp_path / "b.png")


def test_decision_boundary_refuses_other_dimensions():
    with pytest.raises(ConfigError, match="2 features"):
        plot_decision_boundary(nn.Linear(3, 2), gaussian_dataset(100, 3))


def test_history_and_robust_accuracy_plots(tmp_path):
    h = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.0, 0.8, 0.7],
            "class_loss": [0.9, 0.7, 0.6],
            "train_acc": [0.6, 0.8, 0.9],
            "val_acc": [0.6, 0.7, 0.9],
            "mature": [0.1, 0.5, 0.9],
            "val_mmd": [None, 0.1, None],
        }
    )
    h.to_csv(tmp_path / "history.csv", index=False)
    fig = plot_history(tmp_path / "history.csv", tmp_path / "h.png")
    assert is_png(tmp_path / "h.png") and len(fig.axes) == 4
    t = pd.DataFrame(
        {
            "attack": ["fgsm", "fgsm", "pgd", "pgd"],
            "epsilon": [0, 0.1, 0, 0.1],
            "accuracy": [0.9, 0.5, 0.9, 0.4],
        }
    )
    plot_robust_accuracy({"CT": t, "BL": t}, tmp_path / "r.png")
    assert is_png(tmp_path / "r.png")
