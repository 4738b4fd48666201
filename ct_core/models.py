"""Classifiers. The paper's (linear, MLP, LeNet; Flux's default initialisation) and any
``nn.Module`` mapping ``(N, D)`` features to ``(N, C)`` logits, given directly or built by a
``model.factory`` named in the config.

Loading a model file (:func:`load_model`) of a factory model imports the module its config names
and calls the factory: load model files only from sources you would run code from."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ct_core.config import Config, ConfigError, ModelConfig, import_object, parse_config
from ct_core.files import atomic_save, short_error

if TYPE_CHECKING:
    from ct_core.data.base import Dataset

__all__ = ["LeNet", "build_model", "check_factory", "check_model", "device_of", "load_model"]
__all__ += ["save_model"]

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
    """LeNet-5 as in the authors' code (``CTX/cnn.jl``); takes flattened 28×28 inputs ``(N, 784)``."""

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
    cfg: ModelConfig,
    n_features: int,
    n_classes: int,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> nn.Module:
    """The model ``cfg`` describes: linear (multinomial logistic regression), MLP (``hidden``
    sizes, ``activation``) or LeNet, initialised from ``generator``; or what ``cfg.factory``
    returns, built with torch's global generator seeded with ``seed`` (and restored after), so
    that a seed gives the same initial weights wherever the model is built, and checked
    (:func:`check_model`)."""
    if cfg.factory:
        model = _from_factory(cfg.factory, n_features, n_classes, seed)
        check_model(model, n_features, n_classes, f"model.factory {cfg.factory!r}")
        return model
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


def _from_factory(path: str, n_features: int, n_classes: int, seed: int | None) -> nn.Module:
    try:
        fn = import_object(path)
    except Exception as e:  # ImportError, AttributeError, or the module's own error
        raise ConfigError(f"model.factory {path!r} cannot be imported: {e}") from None
    if not callable(fn):
        raise ConfigError(f"model.factory {path!r} is not callable")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = fn(n_features=n_features, n_classes=n_classes)
        except Exception as e:
            raise ConfigError(
                f"model.factory {path!r} failed when called with n_features={n_features}, "
                f"n_classes={n_classes}: {type(e).__name__}: {e}"
            ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.factory {path!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def check_model(model: nn.Module, n_features: int, n_classes: int, what: str = "model") -> None:
    """Raise :class:`ConfigError` (naming ``what``) unless ``model`` maps ``(N, n_features)``
    float32 features to ``(N, n_classes)`` logits and can train in a pack
    (:class:`ct_core.stack.ModelStack`)."""
    from ct_core.stack import ModelStack

    try:
        ModelStack([model])
    except ValueError as e:
        raise ConfigError(f"{what}: {e}") from None
    x = torch.zeros(2, n_features, device=device_of(model))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:
        raise ConfigError(
            f"{what}: the model fails on a (2, {n_features}) batch of features: "
            f"{type(e).__name__}: {e}"
        ) from None
    finally:
        model.train(was)
    shape = tuple(getattr(out, "shape", ()))
    if shape != (2, n_classes):
        raise ConfigError(
            f"{what}: the model maps (2, {n_features}) features to {shape or type(out).__name__}; "
            f"CT needs (N, n_classes) = (2, {n_classes}) logits"
        )


def check_factory(cfg: Config, data: Dataset | None = None) -> None:
    """Build ``cfg``'s ``model.factory`` model for its data (``data``, or loaded) and check it
    (:func:`check_model`); raises :class:`ConfigError` naming ``model.factory``."""
    if cfg.model.factory:
        if data is None:
            from ct_core.data import load_dataset

            data = load_dataset(cfg.data)
        build_model(cfg.model, data.n_features, data.n_classes, seed=cfg.seed)


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def save_model(
    model: nn.Module, cfg: Config, path: str | Path, data: Dataset | None = None, **meta: Any
) -> None:
    """Write the state dict, the resolved config and metadata (safe to load): ``meta``, and with
    ``data`` its shape, feature names and :meth:`~ct_core.data.base.Dataset.spec`."""
    if data is not None:
        meta = {
            "n_features": data.n_features,
            "n_classes": data.n_classes,
            "feature_names": list(data.feature_names),
            "data": data.spec(),
            **meta,
        }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"state_dict": state, "config": cfg.to_dict(), "meta": meta}
    atomic_save(path, lambda f: torch.save(blob, f))


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, Config]:
    """Load a model written by :func:`save_model` (or a run directory holding ``model.pt``).

    The file holds tensors and plain data only (read with ``weights_only=True``); a factory
    model is rebuilt by importing and calling the ``model.factory`` its config names."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    try:
        blob = torch.load(p, map_location=map_location, weights_only=True)
        cfg = parse_config(blob["config"])
        meta = blob.get("meta", {})
        model = build_model(cfg.model, int(meta["n_features"]), int(meta["n_classes"]))
        model.load_state_dict(blob["state_dict"])
    except ConfigError as e:
        raise ConfigError([f"{p}: {m}" for m in e.messages]) from None
    except Exception as e:  # truncated, empty, foreign or not a ct model file at all
        raise ConfigError(f"{p}: not a readable ct model file ({short_error(e)})") from None
    model.eval()
    return model, cfg
