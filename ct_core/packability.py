"""Which settings may share a pack (:mod:`ct_core.pack`), without importing torch.

A sweep's driver groups its settings by :func:`pack_key` before any trial starts; keeping these
rules free of torch saves the driver the import (about 1.5-2 s on a 2-core machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ct_core.config import Config, flatten

__all__ = [
    "SHARED_FIELDS",
    "VAE_FIELDS",
    "can_pack",
    "check_packable",
    "generator_family",
    "pack_key",
]

# Fields every setting of a pack must share (dotted paths; a trailing "." means a whole section).
SHARED_FIELDS = (
    "data.",
    "model.",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.optimizer",
    "train.shuffle",
    "train.device",
    "train.epsilon_norm",
)


# REVISE settings also share the VAE, which the data section and these fields determine
# (ct_core.generators.make_generator -> cached_vae).
VAE_FIELDS = ("generator.vae_latent", "generator.vae_hidden", "generator.vae_epochs")


def can_pack(cfg: Config) -> bool:
    """Whether ``cfg`` can join a pack: an MLP or linear model and unshuffled batches (any
    generator: Generic/ECCo search in feature space, REVISE in the latent space of a VAE)."""
    return cfg.model.type in ("linear", "mlp") and not cfg.train.shuffle


def generator_family(cfg: Config) -> str:
    """``"latent"`` for REVISE (search through the VAE), ``"feature"`` for Generic/ECCo."""
    return "latent" if cfg.generator.type == "revise" else "feature"


def pack_key(cfg: Config) -> tuple[tuple[str, Any], ...]:
    """The values settings of one pack must share; group configs by it to form packs."""
    flat = flatten(cfg.to_dict())
    family = generator_family(cfg)
    shared = SHARED_FIELDS + (VAE_FIELDS if family == "latent" else ())
    items: list[tuple[str, Any]] = [("generator.family", family)]
    for key in sorted(flat):
        if any(key.startswith(f) if f.endswith(".") else key == f for f in shared):
            v = flat[key]
            items.append((key, tuple(v) if isinstance(v, list) else v))
    return tuple(items)


def check_packable(cfgs: Sequence[Config]) -> None:
    """Raise ``ValueError`` naming the field when ``cfgs`` cannot be trained as one pack."""
    if not cfgs:
        raise ValueError("a pack needs at least one configuration")
    for i, c in enumerate(cfgs):
        if not can_pack(c):
            why = (
                f"model.type {c.model.type!r} (packs need 'linear' or 'mlp')"
                if c.model.type not in ("linear", "mlp")
                else "train.shuffle true (packs need shuffle: false)"
            )
            raise ValueError(f"setting {i} cannot be packed: {why}")
    ref = dict(pack_key(cfgs[0]))
    for i, c in enumerate(cfgs[1:], start=1):
        for key, v in pack_key(c):
            if ref.get(key) != v:
                if key == "generator.family":
                    raise ValueError(
                        f"settings 0 and {i} cannot share a pack: generator.type "
                        f"{cfgs[0].generator.type!r} vs {c.generator.type!r} (REVISE searches "
                        "in a latent space and packs only with REVISE)"
                    )
                raise ValueError(
                    f"settings 0 and {i} cannot share a pack: {key} differs "
                    f"({ref.get(key)!r} vs {v!r})"
                )
