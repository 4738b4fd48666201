"""User data: a pandas DataFrame (``ct_core.train(cfg, data=df, target="label")``, ``data.name:
frame``) or a file (``data: {name: csv, path, target}``, CSV or parquet); both go through
:func:`user_dataset`.

Any number of classes; labels are mapped to 0..K-1 in sorted order and kept as ``class_names``.
Columns listed in ``data.categorical``, and text or ``category`` columns with at most
:data:`MAX_INFERRED_LEVELS` values, are one-hot encoded in place (all levels); every other column
must be numeric (bool counts as 0/1) and is z-scored with training-split statistics
(``data.standardize``, default on). The encoder (:class:`~ct_core.data.encoder.Encoder`) is kept
in ``Dataset.encoder``. Split: rows shuffled with ``split_seed``, then 60 % / 20 % / 20 % train /
validation / test unless ``n_train`` / ``n_val`` / ``n_test`` say otherwise. A frame that CT
cannot train on is a :class:`~ct_core.config.ConfigError` with one line per problem, each naming
its column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ct_core.config import ConfigError, DataConfig
from ct_core.data.base import Dataset
from ct_core.data.encoder import Encoder

__all__ = ["MAX_INFERRED_LEVELS", "TEST_FRACTION", "VAL_FRACTION", "read_user_table"]
__all__ += ["check_frame", "check_table", "missing_values", "user_dataset", "user_sizes"]

VAL_FRACTION = 0.2
TEST_FRACTION = 0.2
MAX_INFERRED_LEVELS = 50
"""Text columns with more distinct values are not one-hot encoded unless declared categorical."""
MAX_ABS = 1e15
"""Largest magnitude of a numeric cell: squares of larger values overflow float32 in training."""
MAX_FLOAT_CLASSES = 20
"""A float label column with more distinct values is taken for a regression target."""
_PARQUET = {".parquet", ".pq", ".parq"}


def read_user_table(cfg: DataConfig) -> pd.DataFrame:
    """The table ``data.path`` names (CSV or parquet)."""
    assert cfg.path is not None  # the schema checks this
    path = Path(cfg.path).expanduser()
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


def user_dataset(cfg: DataConfig, df: pd.DataFrame) -> Dataset:
    """The :class:`Dataset` of table ``df`` (label column ``cfg.target``)."""
    from ct_core.data.preprocess import assemble
    from ct_core.data.registry import DEFAULTS

    where = f"data.path {cfg.path}" if cfg.name == "csv" else "data (the DataFrame)"
    features, y, classes, categorical = check_frame(df, cfg.target, cfg.categorical, where)
    enc = Encoder.fit(features, categorical)
    enc.target, enc.classes = cfg.target, classes
    x = enc.encode(features)
    n = len(y)
    n_train, n_val, n_test = user_sizes(cfg, n, where)
    perm = np.random.default_rng(cfg.split_seed).permutation(n)
    tr = perm[:n_train]
    va = perm[n_train : n_train + n_val]
    te = perm[n_train + n_val : n_train + n_val + n_test]
    if cfg.standardize is None or cfg.standardize:
        enc.fit_scale(x[tr])
        x = enc.scale(x)
    splits = {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}
    return assemble(
        cfg,
        splits,
        enc.feature_names,
        n_classes=len(classes),
        class_names=classes,
        batch_size=DEFAULTS[cfg.name].batch_size,
        categorical_groups=enc.groups,
        encoder=enc,
    )


def user_sizes(cfg: DataConfig, n: int, where: str) -> tuple[int, int, int]:
    """``(n_train, n_val, n_test)`` of a table of ``n`` rows: the config's, or the default
    fractions; sizes the table cannot hold are a :class:`ConfigError`."""
    n_val = round(VAL_FRACTION * n) if cfg.n_val is None else cfg.n_val
    n_test = round(TEST_FRACTION * n) if cfg.n_test is None else cfg.n_test
    n_train = n - n_val - n_test if cfg.n_train is None else cfg.n_train
    if n_train < 1 or n_test < 1 or n_train + n_val + n_test > n:
        raise ConfigError(
            f"data.n_train/n_val/n_test: {where} has {n} rows, so n_train + n_val + n_test must "
            f"be at most {n} (each >= 1, n_val >= 0); got {n_train} + {n_val} + {n_test}"
        )
    return n_train, n_val, n_test


def check_table(cfg: DataConfig) -> None:
    """The checks :func:`user_dataset` makes of ``data.path`` (the columns, the labels, the
    sizes), without encoding it: what ``ct-sweep run`` checks before Ray starts."""
    where = f"data.path {cfg.path}"
    _, y, _, _ = check_frame(read_user_table(cfg), cfg.target, cfg.categorical, where)
    user_sizes(cfg, len(y), where)


def check_frame(
    df: pd.DataFrame, target: str | None, declared: list[str], where: str
) -> tuple[pd.DataFrame, np.ndarray, list[str], list[str]]:
    """``(features, labels (n,), class names, categorical columns)`` of a table CT can train
    on; otherwise one :class:`ConfigError` with a line per problem."""
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    df = df.rename(columns=str)
    cols = list(df.columns)
    if target not in cols:
        raise ConfigError(
            f"data.target: column {target!r} is not in {where}; columns: {', '.join(cols)}"
        )
    unknown = [c for c in declared if c not in cols]
    if unknown:
        raise ConfigError(
            f"data.categorical: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"columns: {', '.join(cols)}"
        )
    if target in declared:
        raise ConfigError(f"data.categorical: the target {target!r} cannot be a feature")
    problems = [p for c in cols if (p := missing_values(df[c], where))]
    features = df.drop(columns=[target])
    if features.shape[1] == 0:
        problems.append(f"{where}: no feature columns besides the target {target!r}")
    categorical = []
    for c in features.columns:
        kind = _kind(features[c], c in declared)
        if kind == "categorical":
            categorical.append(c)
        elif kind != "numeric":
            problems.append(f"{where}: column {c!r} {kind}")
    labels = df[target]
    classes = sorted(pd.unique(labels.dropna()), key=_class_key)
    if pd.api.types.is_float_dtype(labels) and len(classes) > MAX_FLOAT_CLASSES:
        problems.append(
            f"data.target: column {target!r} holds {len(classes)} distinct float values, a "
            "regression target; CT trains classifiers: bin it into classes first (e.g. pd.qcut)"
        )
    elif len(classes) < 2:
        problems.append(
            f"data.target: column {target!r} needs at least 2 classes, found {len(classes)}"
        )
    if problems:
        raise ConfigError(problems)
    y = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
    return features, y, [str(c) for c in classes], categorical


def missing_values(s: pd.Series, where: str) -> str | None:
    """The line for a column with missing or infinite values (``None`` if it has none)."""
    bad = s.isna().to_numpy()
    what = "missing (NaN)"
    if not bad.any() and pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        v = s.to_numpy(dtype=np.float64)
        bad, what = ~np.isfinite(v), "infinite"
        if not bad.any():
            bad, what = np.abs(v) > MAX_ABS, f"huge (|x| > {MAX_ABS:g}, beyond float32 training)"
    if not bad.any():
        return None
    first = s.index[bad][0]
    return (
        f"{where}: column {s.name!r} has {int(bad.sum())} {what} value(s), the first in row "
        f"{first!r}; drop or fill them before training (e.g. df.dropna())"
    )


def _kind(s: pd.Series, declared: bool) -> str:
    """``"categorical"``, ``"numeric"``, or why the column is neither."""
    if declared:
        return "categorical"
    if pd.api.types.is_bool_dtype(s) or (
        pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_complex_dtype(s)
    ):
        return "numeric"
    if (
        isinstance(s.dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(s)
        or (pd.api.types.is_string_dtype(s))
    ):
        n = s.nunique()
        if n <= MAX_INFERRED_LEVELS:
            return "categorical"
        return (
            f"is text with {n} distinct values (more than {MAX_INFERRED_LEVELS}, so not taken "
            "for a categorical): list it in data.categorical to one-hot encode it, or drop it"
        )
    return (
        f"is {s.dtype}, neither numeric nor categorical: convert it to numbers or list it in "
        "data.categorical"
    )


def _class_key(v: object) -> tuple[int, float, str]:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))
