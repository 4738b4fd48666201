"""User data: ``data: {name: csv, path, target, categorical: [...]}`` (CSV or parquet).

Any number of classes; labels are mapped to 0..K-1 in sorted order and kept as ``class_names``.
Columns listed in ``data.categorical`` are one-hot encoded in place (all levels); every other
column must be numeric and is z-scored with training-split statistics (``data.standardize``,
default on). Rows with a missing value are dropped (with a warning). Split: rows shuffled with
``split_seed``, then 60 % / 20 % / 20 % train / validation / test unless ``n_train`` / ``n_val``
/ ``n_test`` say otherwise.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ct_core.config import ConfigError, DataConfig
from ct_core.data.preprocess import Encoded, Standardizer, encode_frame

__all__ = ["VAL_FRACTION", "TEST_FRACTION", "read_user_table", "user_splits"]

VAL_FRACTION = 0.2
TEST_FRACTION = 0.2
_PARQUET = {".parquet", ".pq", ".parq"}


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise ConfigError(f"data.path: file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"data.path: not a file: {path}")
    try:
        if path.suffix.lower() in _PARQUET:
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError, ImportError) as e:
        kind = "parquet" if path.suffix.lower() in _PARQUET else "CSV"
        raise ConfigError(f"data.path: cannot read {path} as {kind}: {e}") from None


def read_user_table(cfg: DataConfig) -> tuple[Encoded, np.ndarray, list[str]]:
    """Encoded features ``(N, D)`` (not standardised), labels ``(N,)`` and class names."""
    assert cfg.path is not None and cfg.target is not None  # the schema checks this
    df = _read(Path(cfg.path).expanduser())
    cols = [str(c) for c in df.columns]
    df.columns = cols
    if cfg.target not in cols:
        raise ConfigError(
            f"data.target: column {cfg.target!r} is not in {cfg.path}; columns: {', '.join(cols)}"
        )
    unknown = [c for c in cfg.categorical if c not in cols]
    if unknown:
        raise ConfigError(
            f"data.categorical: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"columns: {', '.join(cols)}"
        )
    if cfg.target in cfg.categorical:
        raise ConfigError(f"data.categorical: the target {cfg.target!r} cannot be a feature")
    n0 = len(df)
    df = df.dropna()
    if len(df) < n0:
        warnings.warn(
            f"{cfg.path}: dropped {n0 - len(df)} of {n0} rows with missing values", stacklevel=2
        )
    labels = df.pop(cfg.target)
    classes = sorted(pd.unique(labels), key=_class_key)
    if len(classes) < 2:
        raise ConfigError(
            f"data.target: column {cfg.target!r} needs at least 2 classes, found {len(classes)}"
        )
    y = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
    enc = encode_frame(df, cfg.categorical)
    if not enc.feature_names:
        raise ConfigError(f"data.path: {cfg.path} has no feature columns besides the target")
    return enc, y, [str(c) for c in classes]


def _class_key(v: object) -> tuple[int, float, str]:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def user_splits(
    cfg: DataConfig, enc: Encoded, y: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Shuffled train/val/test split; continuous columns z-scored on the training split."""
    n = len(y)
    n_val = round(VAL_FRACTION * n) if cfg.n_val is None else cfg.n_val
    n_test = round(TEST_FRACTION * n) if cfg.n_test is None else cfg.n_test
    n_train = n - n_val - n_test if cfg.n_train is None else cfg.n_train
    if n_train < 1 or n_test < 1 or n_train + n_val + n_test > n:
        raise ConfigError(
            f"data.n_train/n_val/n_test: {cfg.path} has {n} usable rows, so n_train + n_val + "
            f"n_test must be at most {n} (each >= 1, n_val >= 0); got "
            f"{n_train} + {n_val} + {n_test}"
        )
    perm = np.random.default_rng(cfg.split_seed).permutation(n)
    tr = perm[:n_train]
    va = perm[n_train : n_train + n_val]
    te = perm[n_train + n_val : n_train + n_val + n_test]
    x = enc.x
    if cfg.standardize is None or cfg.standardize:
        x = Standardizer.fit(x[tr], enc.continuous).transform(x)
    return {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}
