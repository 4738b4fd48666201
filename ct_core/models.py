"""Classifiers (reference §5). Any ``nn.Module`` mapping ``(N, D)`` features to ``(N, K)`` logits
works with the rest of ct; these are the ones the paper uses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ct_core.config import Config, ModelConfig, parse_config

__all__ = ["LeNet", "build_model", "load_model", "save_model"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def _flux_init(module: nn.Module, generator: torch.Generator | None) -> None:
    """Flux's default init (Glorot-uniform weights, zero bias), drawn from ``generator``."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            with torch.no_grad():
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()


class LeNet(nn.Module):
    """LeNet-5 as in the reference (``CTX/cnn.jl``); takes flattened 28×28 inputs ``(N, 784)``."""

    def __init__(self, n_classes: int = 10, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            activation(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2),
            activation(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, 120),
            activation(),
            nn.Linear(120, 84),
            activation(),
            nn.Linear(84, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.reshape(-1, 1, 28, 28)))


def build_model(
    cfg: ModelConfig, n_features: int, n_classes: int, generator: torch.Generator | None = None
) -> nn.Module:
    """Linear (multinomial logistic regression), MLP (``hidden`` sizes, ``activation``) or LeNet."""
    act = _ACTIVATIONS[cfg.activation]
    if cfg.type == "linear":
        model: nn.Module = nn.Sequential(nn.Linear(n_features, n_classes))
    elif cfg.type == "mlp":
        layers: list[nn.Module] = []
        width = n_features
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), act()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        model = nn.Sequential(*layers)
    elif cfg.type == "lenet":
        model = LeNet(n_classes, act)
    else:  # pragma: no cover - the schema rejects other values
        raise ValueError(f"model.type {cfg.type!r}")
    _flux_init(model, generator)
    return model


def save_model(model: nn.Module, cfg: Config, path: str | Path, **meta: Any) -> None:
    """Write the state dict, the resolved config and shape metadata (safe to load)."""
    torch.save(
        {"state_dict": model.state_dict(), "config": cfg.to_dict(), "meta": meta},
        Path(path),
    )


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, Config]:
    """Load a model written by :func:`save_model` (or a run directory holding ``model.pt``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    blob = torch.load(p, map_location=map_location, weights_only=True)
    cfg = parse_config(blob["config"])
    meta = blob.get("meta", {})
    model = build_model(cfg.model, int(meta["n_features"]), int(meta["n_classes"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, cfg
