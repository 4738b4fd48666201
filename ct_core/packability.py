"""Which settings may share a pack (:class:`ct_core.training.PackTrainer`), without torch.

Any setting can train in a pack, with the settings that share its data, its model, the epoch
loop's shape (:data:`SHARED_FIELDS`) and its generator's search: each generator's registration
(:mod:`ct_core.generators`) says whether it searches in feature space (then it packs with any
feature-space generator) or in a latent space (then only with its own type, sharing the fields it
names). A sweep's driver groups its settings by :func:`pack_key` before any trial starts; keeping
these rules free of torch saves the driver the import (about 1.5-2 s on a 2-core machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ct_core.config import Config, flatten
from ct_core.generators import generator_info

__all__ = ["SHARED_FIELDS", "check_packable", "generator_family", "pack_key"]

# Fields every setting of a pack must share (dotted paths; a trailing "." means a whole section).
SHARED_FIELDS = (
    "data.",
    "model.",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.optimizer",
    "train.device",
    "train.epsilon_norm",
)


def generator_family(cfg: Config) -> str:
    """``feature`` for feature-space generators, ``latent:<type>`` for latent ones (REVISE)."""
    return generator_info(cfg.generator.type).family


def pack_key(cfg: Config) -> tuple[tuple[str, Any], ...]:
    """The values settings of one pack must share; group configs by it to form packs."""
    flat = flatten(cfg.to_dict())
    info = generator_info(cfg.generator.type)
    shared = SHARED_FIELDS + info.shared
    items: list[tuple[str, Any]] = [("generator.family", info.family)]
    for key in sorted(flat):
        if any(key.startswith(f) if f.endswith(".") else key == f for f in shared):
            v = flat[key]
            items.append((key, tuple(v) if isinstance(v, list) else v))
    return tuple(items)


def check_packable(cfgs: Sequence[Config]) -> None:
    """Raise ``ValueError`` naming the field when ``cfgs`` cannot be trained as one pack."""
    if not cfgs:
        raise ValueError("a pack needs at least one configuration")
    ref = dict(pack_key(cfgs[0]))
    for i, c in enumerate(cfgs[1:], start=1):
        for key, v in pack_key(c):
            if ref.get(key) != v:
                if key == "generator.family":
                    raise ValueError(
                        f"settings 0 and {i} cannot share a pack: generator.type "
                        f"{cfgs[0].generator.type!r} vs {c.generator.type!r} (a latent-space "
                        "generator packs only with its own type)"
                    )
                raise ValueError(
                    f"settings 0 and {i} cannot share a pack: {key} differs "
                    f"({ref.get(key)!r} vs {v!r})"
                )
