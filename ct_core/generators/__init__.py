"""Counterfactual generators: what each one adds to the one batched search (:func:`search`).

A generator is registered under a name, the value of ``generator.type`` (the config schema
accepts exactly the registered names), together with what the sweep driver needs to know without
importing torch: whether it searches a latent space and which config fields the settings of one
pack must share for it. Feature-space generators pack with one another (a pack may mix Generic
and ECCo settings); a latent generator packs only with settings of its own type that share its
latent space (REVISE: one VAE, so the same data section and ``generator.vae_*``).

Adding a generator takes its penalty and a registration, nothing in the search loop::

    from ct_core.generators import register_generator

    @register_generator("l2")
    def l2(x, x0, logits, target, t, w):  # (K, N, D), (K, N, D), (K, N, C), (K, N), int, dict
        return w["lambda_cost"] * (x - x0).square().sum(-1)  # (K, N)

``generator.type: "package.module:l2"`` names such a function (or ``Generator`` subclass) without
a registration in code; it is imported where the config is validated, which is how it reaches a
sweep's workers. This package's ``__init__`` stays free of torch (:mod:`ct_core.config` and the
sweep driver read the registry); the classes and :func:`search` are loaded on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ct_core.config import GeneratorConfig
    from ct_core.data.base import Dataset
    from ct_core.generators.base import Generator

__all__ = [
    "ECCo",
    "Generator",
    "GeneratorInfo",
    "Generic",
    "LatentGenerator",
    "REVISE",
    "SearchResult",
    "VAE",
    "energy_schedule",
    "generator_info",
    "generator_names",
    "l1_distance",
    "make_generator",
    "register_generator",
    "search",
    "train_vae",
    "unregister_generator",
]

_LAZY = {
    "Generator": "ct_core.generators.base",
    "LatentGenerator": "ct_core.generators.base",
    "l1_distance": "ct_core.generators.base",
    "Generic": "ct_core.generators.generic",
    "ECCo": "ct_core.generators.ecco",
    "energy_schedule": "ct_core.generators.ecco",
    "REVISE": "ct_core.generators.revise",
    "VAE": "ct_core.generators.vae",
    "cached_vae": "ct_core.generators.vae",
    "train_vae": "ct_core.generators.vae",
    "SearchResult": "ct_core.search",
    "search": "ct_core.search",
}


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
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.target

    @property
    def family(self) -> str:
        """What the settings of one pack must agree on: ``feature`` (any feature-space
        generator) or ``latent:<name>``."""
        return f"latent:{self.name}" if self.latent else "feature"


_REGISTRY: dict[str, GeneratorInfo] = {}


def register_generator(
    name: str,
    target: Any = None,
    *,
    latent: bool = False,
    shared: Sequence[str] = (),
) -> Any:
    """Register ``target`` (a ``Generator`` subclass, a penalty function, or ``"module:attr"``)
    as ``generator.type: name``; without ``target``, a decorator. Registering a name again
    replaces it. Returns ``target``."""

    def add(t: Any) -> Any:
        if not name or not isinstance(name, str):
            raise ValueError(f"a generator's name must be a non-empty string, got {name!r}")
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

    A name ``"package.module:attribute"`` that is not registered yet is imported and registered:
    a penalty function, or a ``Generator`` subclass (``latent`` and ``shared`` from the class).
    That is how a generator of one's own reaches every process of a sweep."""
    if name not in _REGISTRY and ":" in name:
        module, _, attr = name.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except Exception as e:  # ImportError, AttributeError or the module's own error
            raise KeyError(f"generator.type {name!r} cannot be imported: {e}") from None
        latent = bool(getattr(target, "latent", False))
        register_generator(name, target, latent=latent, shared=getattr(target, "shared", ()))
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"generator.type must be one of {', '.join(generator_names())} (or "
            f"'package.module:attribute' of a generator), got {name!r}"
        ) from None


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
            if target.latent != info.latent:
                raise TypeError(f"generator {name!r}: registered latent={info.latent}")
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
