"""A user's models for ``model.factory`` (tests put this folder on the import path, as a user
puts their own package there): a residual network, and factories that go wrong in the ways the
config check must name."""

from __future__ import annotations

import torch
from torch import nn


class ResidualMLP(nn.Module):
    """Input layer, one pre-norm residual block, output layer: ``(N, D) -> (N, C)``."""

    def __init__(self, n_features: int, n_classes: int, width: int = 16):
        super().__init__()
        self.inp = nn.Linear(n_features, width)
        self.block = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, width)
        )
        self.out = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        return self.out(h + self.block(h))


def residual_mlp(n_features: int, n_classes: int) -> nn.Module:
    return ResidualMLP(n_features, n_classes)


def not_a_module(n_features: int, n_classes: int) -> object:
    return {"n_features": n_features}


def wrong_shape(n_features: int, n_classes: int) -> nn.Module:
    return nn.Linear(n_features, n_classes + 1)


def with_batchnorm(n_features: int, n_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_features, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, n_classes)
    )


NOT_CALLABLE = 3


def squared_cost(x, x0, logits, target, t, w):
    """A generator's penalty: ``λ_cost·‖x′ − x‖₂²`` per row, ``(K, N)``."""
    return w["lambda_cost"] * (x - x0).square().sum(-1)


def failing_penalty(x, x0, logits, target, t, w):
    """A generator's penalty that raises: a trial that uses it fails in its first search."""
    raise RuntimeError("failing_penalty fails on purpose")
