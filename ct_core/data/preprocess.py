"""Shared preprocessing: class-ratio splits and the assembly of a
:class:`~ct_core.data.base.Dataset` with its domain and mutability (z-scoring and one-hot
encoding are :mod:`ct_core.data.encoder`'s).

Arrays here are numpy: features ``(n, D)`` float64, labels ``(n,)`` int64; :func:`assemble`
casts to float32/int64 tensors at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ct_core.config import ConfigError, DataConfig
from ct_core.constraints import BOTH, Domain, infer_domain, resolve_mutability
from ct_core.data.base import Dataset

if TYPE_CHECKING:
    from ct_core.data.encoder import Encoder

__all__ = ["assemble", "make_domain", "stratified_split", "with_constraints"]


def stratified_split(y: np.ndarray, n_val: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Split indices of ``y`` ``(n,)`` into ``(train_idx, val_idx)`` keeping class ratios.

    Like CE.jl ``train_test_split(keep_class_ratio=true)`` : each class gives a
    share of ``n_val`` proportional to its size, drawn without replacement; both index lists keep
    the original order. CE.jl floors the per-class counts (so it may return one point fewer);
    here the remainder goes to the classes with the largest fractional parts, so ``len(val_idx)``
    is exactly ``n_val``.
    """
    n = len(y)
    if not 0 <= n_val <= n:
        raise ConfigError(f"data.n_val: must be in [0, {n}] for this data, got {n_val}")
    classes, counts = np.unique(y, return_counts=True)
    quota = n_val * counts / n
    take = np.floor(quota).astype(int)
    rest = n_val - int(take.sum())
    if rest:
        order = np.argsort(-(quota - take), kind="stable")
        take[order[:rest]] += 1
    val = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in zip(classes, take)]
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx.astype(np.int64)


def make_domain(
    cfg: DataConfig,
    x_fit: torch.Tensor,
    categorical: Sequence[int],
    fixed: tuple[float, float] | None = None,
) -> Domain | None:
    """The counterfactual domain for ``cfg.domain``; ``x_fit`` ``(n, D)`` is train+validation data.

    ``inferred``: :func:`~ct_core.constraints.infer_domain` with ``cfg.domain_nsd`` (or the
    dataset's ``fixed`` bounds, MNIST's (-1, 1)); ``none``: ``None``; ``[lo, hi]``: broadcast;
    ``[[lo, hi], ...]``: one pair per feature. With ``clamp_categorical: false`` one-hot columns
    get (-inf, inf).
    """
    d = x_fit.shape[1]
    spec = cfg.domain
    if spec == "none":
        return None
    if spec == "inferred":
        if fixed is not None:
            lo, hi = torch.full((d,), float(fixed[0])), torch.full((d,), float(fixed[1]))
        else:
            lo, hi = infer_domain(x_fit, cfg.domain_nsd)
    else:
        pairs = [spec] if spec and not isinstance(spec[0], list) else spec
        if len(pairs) == 1:
            pairs = pairs * d
        if len(pairs) != d:
            raise ConfigError(
                f"data.domain: {len(pairs)} [lower, upper] pairs given but the data has {d} "
                "features; give one pair for all features or one per feature"
            )
        bounds = torch.tensor(pairs, dtype=torch.float32)
        lo, hi = bounds[:, 0].clone(), bounds[:, 1].clone()
    lo, hi = lo.to(torch.float32), hi.to(torch.float32)
    if not cfg.clamp_categorical and len(categorical):
        idx = torch.as_tensor(list(categorical), dtype=torch.long)
        lo[idx] = -torch.inf
        hi[idx] = torch.inf
    return lo, hi


def assemble(
    cfg: DataConfig,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    feature_names: Sequence[str],
    *,
    n_classes: int,
    class_names: Sequence[str],
    batch_size: int,
    categorical_groups: Sequence[Sequence[int]] = (),
    image_shape: tuple[int, ...] | None = None,
    fixed_domain: tuple[float, float] | None = None,
    encoder: Encoder | None = None,
) -> Dataset:
    """Build the :class:`Dataset` from numpy ``splits`` ``{"train"|"val"|"test": (X, y)}``."""
    t: dict[str, torch.Tensor] = {}
    for part in ("train", "val", "test"):
        x, y = splits[part]
        t[f"X_{part}"] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        t[f"y_{part}"] = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    groups = [list(map(int, g)) for g in categorical_groups]
    categorical = sorted(i for g in groups for i in g)
    names = list(feature_names)
    mutability = resolve_mutability(
        names,
        cfg.immutable,
        cfg.increase_only,
        cfg.decrease_only,
        groups if cfg.keep_onehot else (),
    )
    x_fit = torch.cat([t["X_train"], t["X_val"]])
    domain = make_domain(cfg, x_fit, categorical, fixed_domain)
    return Dataset(
        name=cfg.name,
        feature_names=names,
        n_classes=int(n_classes),
        categorical=categorical,
        categorical_groups=groups,
        domain=domain,
        mutability=mutability,
        class_names=[str(c) for c in class_names],
        image_shape=image_shape,
        batch_size=int(batch_size),
        keep_onehot=cfg.keep_onehot,
        encoder=encoder,
        **t,
    )


def with_constraints(data: Dataset, cfg: DataConfig) -> Dataset:
    """``data`` with the mutability constraints ``cfg`` names: a dataset assembled from ``cfg``
    has them already, one built by hand gets them (a copy); one with other constraints of its
    own is a :class:`ConfigError`."""
    if not (cfg.immutable or cfg.increase_only or cfg.decrease_only):
        return data
    groups = data.categorical_groups if data.keep_onehot else ()
    m = resolve_mutability(
        data.feature_names, cfg.immutable, cfg.increase_only, cfg.decrease_only, groups
    )
    have = data.mutability
    if have is not None and torch.equal(have.cpu(), m):
        return data
    if have is not None and bool((have != BOTH).any()):
        raise ConfigError(
            "data.immutable: the Dataset given as data has other mutability constraints than "
            "the config's data.immutable / increase_only / decrease_only"
        )
    out = Dataset(**data.__dict__)
    out.mutability = m.to(data.X_train.device)
    return out
