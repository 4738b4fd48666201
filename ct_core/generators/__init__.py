"""Counterfactual generators: what each adds to the one batched search (:func:`search`).

A generator is registered under its ``generator.type`` name (the config schema accepts exactly
the registered names) with what the sweep driver needs to know without importing torch: whether
it searches a latent space, and which config fields the settings of one pack must share for it.
Feature-space generators pack with one another, each setting with its own penalty; a latent one
only with its own type (REVISE: one VAE, so the same data and ``generator.vae_*``). A new
generator is a penalty and a registration, nothing in the search loop::

    @register_generator("l2")
    def l2(x, x0, logits, target, t, w):  # (K, N, D), (K, N, D), (K, N, C), (K, N), int, dict
        return w["lambda_cost"] * (x - x0).square().sum(-1)  # (K, N)

``generator.type: "package.module:l2"`` names one by import path (imported where the config is
validated: how it reaches a sweep's workers). This ``__init__`` stays free of torch; the classes
and :func:`search` load on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ct_core.config import import_object

if TYPE_CHECKING:
    import torch

    from ct_core.config import GeneratorConfig
    from ct_core.data.base import Dataset
    from ct_core.generators.base import Generator

_LAZY = {
    **dict.fromkeys(("Generator", "LatentGenerator", "l1_distance"), "ct_core.generators.base"),
    **dict.fromkeys(("Generic",), "ct_core.generators.generic"),
    **dict.fromkeys(("ECCo", "energy_schedule"), "ct_core.generators.ecco"),
    **dict.fromkeys(("REVISE",), "ct_core.generators.revise"),
    **dict.fromkeys(("VAE", "cached_vae", "train_vae"), "ct_core.generators.vae"),
    **dict.fromkeys(("SearchResult", "search"), "ct_core.search"),
}
__all__ = [*_LAZY, "GeneratorInfo", "generator_info", "generator_names", "make_generator"]
__all__ += ["register_generator", "unregister_generator"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class GeneratorInfo:
    """A registered generator: its implementation and how it packs."""

    name: str
    target: Any
    """A :class:`~ct_core.generators.base.Generator` subclass, a penalty function (see the module
    docstring), or ``"module:attribute"`` naming one (imported on first use)."""
    latent: bool = False
    """Searches a latent space (the class is a ``LatentGenerator``): packs only with its own type."""
    shared: tuple[str, ...] = ()
    """Dotted config fields that every setting of a pack must share for this generator."""

    def load(self) -> Any:
        return import_object(self.target) if isinstance(self.target, str) else self.target

    @property
    def family(self) -> str:
        """What the settings of one pack must agree on: ``feature`` (any feature-space
        generator) or ``latent:<name>``."""
        return f"latent:{self.name}" if self.latent else "feature"


_REGISTRY: dict[str, GeneratorInfo] = {}
_BY_PATH: dict[str, GeneratorInfo] = {}  # generator.type values that name an import path


def register_generator(
    name: str, target: Any = None, *, latent: bool = False, shared: Sequence[str] = ()
) -> Any:
    """Register ``target`` (a ``Generator`` subclass, a penalty function, or ``"module:attr"``)
    as ``generator.type: name``; without ``target``, a decorator. Registering a name again
    replaces it. Returns ``target``."""

    def add(t: Any) -> Any:
        _REGISTRY[name] = GeneratorInfo(name, t, bool(latent), tuple(shared))
        return t

    return add if target is None else add(target)


def unregister_generator(name: str) -> None:
    """Forget the generator ``name`` (a no-op for a name not registered)."""
    _REGISTRY.pop(name, None)


def generator_names() -> tuple[str, ...]:
    """The registered ``generator.type`` values, sorted."""
    return tuple(sorted(_REGISTRY))


def generator_info(name: str) -> GeneratorInfo:
    """The registration of ``generator.type`` ``name`` (``KeyError`` naming the allowed ones).

    A name ``"package.module:attribute"`` that is not registered is imported (once per process):
    a penalty function, or a ``Generator`` subclass (``latent`` and ``shared`` from the class).
    That is how a generator of one's own reaches every process of a sweep."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        if name not in _BY_PATH:
            try:
                target = import_object(name)
            except Exception as e:  # ImportError, AttributeError or the module's own error
                raise KeyError(f"generator.type {name!r} cannot be imported: {e}") from None
            latent = bool(getattr(target, "latent", False))
            _BY_PATH[name] = GeneratorInfo(name, target, latent, getattr(target, "shared", ()))
        return _BY_PATH[name]
    raise KeyError(
        f"generator.type must be one of {', '.join(generator_names())} (or "
        f"'package.module:attribute' of a generator), got {name!r}"
    )


register_generator("generic", "ct_core.generators.generic:Generic")
register_generator("ecco", "ct_core.generators.ecco:ECCo")
register_generator(
    "revise",
    "ct_core.generators.revise:REVISE",
    latent=True,
    shared=("generator.vae_latent", "generator.vae_hidden", "generator.vae_epochs"),
)


def make_generator(
    cfgs: GeneratorConfig | Sequence[GeneratorConfig],
    data: Dataset | None = None,
    *,
    data_key: dict | None = None,
    device: torch.device | str = "cpu",
) -> Generator:
    """The generator of K settings' searches (one config, or K that may share a search: see
    :func:`ct_core.packability.check_packable`). Settings of different feature-space types
    share one :class:`~ct_core.generators.base.Mixture`. ``data`` (with ``data_key``, e.g. the
    data config, keying the on-disk cache) is what latent generators fit their model on."""
    from ct_core.generators.base import Generator, Mixture, PenaltyFunction

    cfgs = [cfgs] if not isinstance(cfgs, Sequence) else list(cfgs)
    groups: dict[str, list[int]] = {}
    for k, c in enumerate(cfgs):
        groups.setdefault(c.type, []).append(k)
    parts = []
    for name, rows in groups.items():
        info = generator_info(name)
        target = info.load()
        sub = [cfgs[k] for k in rows]
        if isinstance(target, type) and issubclass(target, Generator):
            assert target.latent == info.latent, f"generator {name!r}: registered as latent"
            gen = target.from_configs(sub, data, data_key=data_key, device=device)
        elif callable(target):
            fields = PenaltyFunction.fields
            gen = PenaltyFunction(target, **{f: [getattr(c, f) for c in sub] for f in fields})
        else:
            raise TypeError(f"generator {name!r} is neither a Generator class nor a function")
        parts.append((gen.to(device), rows))
    if len(parts) == 1:
        return parts[0][0]
    if any(g.latent for g, _ in parts):
        raise ValueError("a latent generator shares its search only with its own type")
    return Mixture(parts, len(cfgs)).to(device)
