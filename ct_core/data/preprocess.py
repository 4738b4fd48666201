"""Shared preprocessing (reference §4): class-ratio splits, z-scoring, one-hot encoding, and the
assembly of a :class:`~ct_core.data.base.Dataset` with its domain (§2.3) and mutability (§2.1).

Arrays here are numpy: features ``(n, D)`` float64, labels ``(n,)`` int64; :func:`assemble`
casts to float32/int64 tensors at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ct_core.config import ConfigError, DataConfig
from ct_core.constraints import Domain, infer_domain, resolve_mutability
from ct_core.data.base import Dataset

if TYPE_CHECKING:  # pandas is imported where tables are read: synthetic data never need it
    import pandas as pd

__all__ = [
    "Encoded",
    "Standardizer",
    "assemble",
    "encode_frame",
    "make_domain",
    "stratified_split",
]


def stratified_split(y: np.ndarray, n_val: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Split indices of ``y`` ``(n,)`` into ``(train_idx, val_idx)`` keeping class ratios.

    Like CE.jl ``train_test_split(keep_class_ratio=true)`` (reference §4): each class gives a
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


@dataclass
class Standardizer:
    """z-scoring of the ``columns`` of a ``(n, D)`` array, fitted on training rows only.

    Like MLJ's ``Standardizer(count=true)``: mean and Bessel-corrected sd; constant columns are
    only centred.
    """

    columns: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, columns: Sequence[int]) -> Standardizer:
        cols = np.asarray(list(columns), dtype=np.int64)
        sub = x[:, cols]
        mean = sub.mean(0) if len(sub) else np.zeros(len(cols))
        std = sub.std(0, ddof=1) if len(sub) > 1 else np.ones(len(cols))
        std = np.where(std > 0, std, 1.0)
        return cls(cols, mean, std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float64, copy=True)
        out[:, self.columns] = (out[:, self.columns] - self.mean) / self.std
        return out


@dataclass
class Encoded:
    """A frame encoded to numbers: ``x`` ``(n, D)``, one name per column, one-hot groups."""

    x: np.ndarray
    feature_names: list[str]
    categorical_groups: list[list[int]]

    @property
    def continuous(self) -> list[int]:
        cat = {i for g in self.categorical_groups for i in g}
        return [i for i in range(len(self.feature_names)) if i not in cat]


def encode_frame(
    df: pd.DataFrame,
    categorical: Sequence[str],
    levels: dict[str, Sequence[object]] | None = None,
    field: str = "data.categorical",
) -> Encoded:
    """One-hot every categorical column in place (all levels, none dropped; ``"<col>=<level>"``).

    Like MLJ's ``ContinuousEncoder`` (reference §4). Levels default to the sorted values present
    in ``df``. Other columns must be numeric (bool counts as 0/1).
    """
    import pandas as pd

    cat = set(categorical)
    levels = dict(levels or {})
    blocks: list[np.ndarray] = []
    names: list[str] = []
    groups: list[list[int]] = []
    for col in df.columns:
        s = df[col]
        if col in cat:
            lv = list(levels.get(col, _sorted_levels(s)))
            codes = pd.Categorical(s, categories=lv).codes
            if (codes < 0).any():
                bad = sorted({str(v) for v in s[codes < 0].unique()})[:5]
                raise ConfigError(f"{field}: column {col!r} has values outside its levels: {bad}")
            block = np.zeros((len(s), len(lv)))
            block[np.arange(len(s)), codes] = 1.0
            groups.append(list(range(len(names), len(names) + len(lv))))
            names.extend(f"{col}={v}" for v in lv)
            blocks.append(block)
        else:
            if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
                raise ConfigError(
                    f"{field}: column {col!r} is not numeric ({s.dtype}); list it in {field} "
                    "to one-hot encode it, or drop it from the file"
                )
            names.append(str(col))
            blocks.append(s.to_numpy(dtype=np.float64).reshape(-1, 1))
    x = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(df), 0))
    return Encoded(x, names, groups)


def _sorted_levels(s: pd.Series) -> list[object]:
    import pandas as pd

    vals = list(pd.unique(s.dropna()))
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)


def make_domain(
    cfg: DataConfig,
    x_fit: torch.Tensor,
    categorical: Sequence[int],
    fixed: tuple[float, float] | None = None,
) -> Domain | None:
    """The domain of §2.3 for ``cfg.domain``; ``x_fit`` ``(n, D)`` is train+validation data.

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
        **t,
    )
