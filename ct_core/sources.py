"""Initial weights for fine-tuning: ``ct train CONFIG --init SOURCE``,
``ct_core.train(cfg, model=SOURCE)`` and a sweep's ``init:``.

SOURCE is a ct ``model.pt``, a ct run directory (its ``model.pt``), or a URI ``scheme:/...``. A
URI is resolved by a plug-in: a function ``load(uri) -> torch.nn.Module`` registered as a Python
entry point of the group :data:`ENTRY_POINTS` under the scheme's name. ct's sweeps part registers
MLflow's ``runs`` and ``models`` (``runs:/<run_id>/<path>``, ``models:/<name>@<alias>``), so
ct_core itself never imports MLflow; another package adds a scheme the same way::

    [project.entry-points."ct.model_sources"]
    s3 = "my_package.sources:load"

The weights go into the model the config's ``model`` section builds, which must have the same
parameters (a clear error otherwise): the fine-tuned model saves and loads as any other ct model.
The source must have been trained on data of the same shape (and, for a ct ``model.pt``, the same
feature names). Loading a URI's model may unpickle it (MLflow's PyTorch flavour does): use
sources you would run code from. A ``model.pt`` is read with ``weights_only=True``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_core.config import Config, ConfigError
from ct_core.files import short_error

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ct_core.data.base import Dataset

__all__ = ["ENTRY_POINTS", "initial_model", "initial_models", "is_uri", "load_state", "read_init"]
__all__ += ["save_state"]

ENTRY_POINTS = "ct.model_sources"
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/")


def is_uri(source: str | Path) -> bool:
    """Whether ``source`` is a URI (``scheme:/...``) rather than a path."""
    return isinstance(source, str) and _URI.match(source) is not None


def read_init(source: str | Path, data: Dataset) -> dict[str, Tensor]:
    """The state dict of ``source``, checked against ``data``'s shape (``ConfigError`` naming
    the source otherwise)."""
    import torch

    what = f"init {str(source)!r}"
    if is_uri(source):
        module = _plugin(str(source))
        shape = (2, data.n_features)
        try:  # an exported graph (MLflow's default) has no eval(): only its output is checked
            with torch.no_grad():
                out = module(torch.zeros(shape))
        except Exception as e:
            raise ConfigError(
                f"{what}: the model fails on a {shape} batch of the data's features: "
                f"{type(e).__name__}: {e}"
            ) from None
        if tuple(getattr(out, "shape", ())) != (2, data.n_classes):
            raise ConfigError(
                f"{what}: the model maps {shape} features to {tuple(out.shape)}; the data needs "
                f"(2, {data.n_classes}) logits"
            )
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
    p = Path(source).expanduser()
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise ConfigError(f"{what}: no such model file (a ct model.pt or run directory)")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        state, meta = blob["state_dict"], blob.get("meta", {})
    except Exception as e:
        raise ConfigError(f"{what}: not a ct model file ({short_error(e)})") from None
    d, c = meta.get("n_features"), meta.get("n_classes")
    if (d, c) != (data.n_features, data.n_classes) and d is not None:
        raise ConfigError(
            f"{what}: trained on {d} features and {c} classes, the data has "
            f"{data.n_features} features and {data.n_classes} classes"
        )
    names = meta.get("feature_names")
    if names and list(names) != list(data.feature_names):
        i = next(i for i, (a, b) in enumerate(zip(names, data.feature_names)) if a != b)
        raise ConfigError(
            f"{what}: trained on other features than the data's (feature {i}: "
            f"{names[i]!r} there, {data.feature_names[i]!r} here)"
        )
    return state


def initial_model(source: str | Path | dict[str, Tensor], cfg: Config, data: Dataset) -> nn.Module:
    """The model ``cfg.model`` builds for ``data``, with the weights of ``source`` (a SOURCE or
    a state dict from :func:`read_init`)."""
    import torch

    from ct_core.models import build_model

    state = source if isinstance(source, dict) else read_init(source, data)
    g = torch.Generator().manual_seed(cfg.seed)  # replaced weights: leave torch's generator be
    model = build_model(cfg.model, data.n_features, data.n_classes, generator=g, seed=cfg.seed)
    own = model.state_dict()
    diff = [f"{k} missing" for k in own if k not in state]
    diff += [f"{k} unexpected" for k in state if k not in own]
    diff += [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if diff:
        what = "the source" if isinstance(source, dict) else f"init {str(source)!r}"
        arch = cfg.model.factory or f"{cfg.model.type}, hidden {cfg.model.hidden}"
        raise ConfigError(
            f"{what}: its weights do not fit the model the config's model section builds "
            f"({arch}): {'; '.join(diff[:4])}; set model.* to the source's architecture"
        )
    model.load_state_dict(state)
    return model


def initial_models(
    state: dict[str, Tensor], cfgs: Sequence[Config], data: Dataset
) -> list[nn.Module]:
    """One model per setting of a pack, all starting from the weights ``state``."""
    first = initial_model(state, cfgs[0], data)
    return [first, *(copy.deepcopy(first) for _ in cfgs[1:])]


def save_state(state: dict[str, Tensor], path: str | Path) -> None:
    """Write initial weights (tensors only) to ``path``."""
    import torch

    torch.save({k: v.detach().cpu() for k, v in state.items()}, Path(path))


def load_state(path: str | Path) -> dict[str, Tensor]:
    """Initial weights written by :func:`save_state` (read with ``weights_only=True``)."""
    import torch

    return torch.load(Path(path), map_location="cpu", weights_only=True)


def _plugin(uri: str) -> Any:
    from importlib.metadata import entry_points

    scheme = _URI.match(uri).group(1)  # type: ignore[union-attr]
    found = list(entry_points(group=ENTRY_POINTS, name=scheme))
    if not found:
        known = sorted({e.name for e in entry_points(group=ENTRY_POINTS)})
        raise ConfigError(
            f"init {uri!r}: no model source for {scheme}:/ URIs is installed (known: "
            f"{', '.join(known) or 'none'}; entry-point group {ENTRY_POINTS})"
        )
    try:
        model = found[0].load()(uri)
    except ConfigError:
        raise
    except Exception as e:  # the source's own error: a missing run, alias or store
        raise ConfigError(f"init {uri!r}: {type(e).__name__}: {e}") from None
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ConfigError(f"init {uri!r}: the source gave a {type(model).__name__}, not a Module")
    return model
