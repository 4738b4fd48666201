"""Datasets: the paper's synthetic, tabular and MNIST sets, and the user's tables (a CSV or
parquet file, or a pandas DataFrame).

``load_dataset(cfg.data) -> Dataset`` is the one entry point for data named in a config
(``load_frame(df, cfg.data)`` for a DataFrame). It is memoised per process on the
config (and the data-location environment), so sweep workers that call it once per trial share
one object: callers must treat the returned tensors as read-only.

This package's ``__init__`` stays import-light (no torch, pandas or scikit-learn at import time)
because :mod:`ct_core.config` imports :mod:`ct_core.data.registry` to validate ``data.name``.
Data files are found via ``$CT_DATA_DIR``, the cache ``$CT_CACHE_DIR`` (``~/.cache/ct``) or a
checksummed download (:mod:`ct_core.data.download`).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_core.data.registry import DATASET_NAMES, DEFAULTS, check_sizes

if TYPE_CHECKING:
    import pandas as pd

    from ct_core.config import DataConfig
    from ct_core.data.base import Dataset

__all__ = [
    "DATASET_NAMES",
    "DEFAULTS",
    "Dataset",
    "check_data",
    "clear_cache",
    "feature_names",
    "load_dataset",
    "load_frame",
]

_MEMO: dict[str, Any] = {}
_LOCK = threading.Lock()
_ENV = ("CT_DATA_DIR", "CT_CACHE_DIR", "CT_DATA_URL")


def __getattr__(name: str) -> Any:
    if name == "Dataset":
        from ct_core.data.base import Dataset

        return Dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _data_cfg(cfg: Any) -> DataConfig:
    """Accept a ``DataConfig``, a full ``Config`` or a plain dict of ``data`` keys."""
    from ct_core.config import Config, DataConfig, parse_config

    if isinstance(cfg, Config):
        return cfg.data
    if isinstance(cfg, DataConfig):
        return cfg
    if isinstance(cfg, dict):
        return parse_config({"data": cfg}).data
    raise TypeError(f"load_dataset expects a DataConfig, got {type(cfg).__name__}")


def _memo_key(cfg: DataConfig) -> str:
    env = {k: os.environ.get(k) for k in _ENV}
    stamp = None
    if cfg.path:
        try:
            st = Path(cfg.path).expanduser().stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
    return json.dumps([cfg.model_dump(mode="json"), env, stamp], sort_keys=True, default=str)


def load_dataset(cfg: DataConfig | Any) -> Dataset:
    """The prepared :class:`Dataset` for ``cfg`` (a ``DataConfig``; memoised, do not mutate)."""
    cfg = _data_cfg(cfg)
    key = _memo_key(cfg)
    with _LOCK:
        hit = _MEMO.get(key)
        if hit is None:
            hit = _MEMO[key] = _build(cfg)
    return hit


def load_frame(df: pd.DataFrame, cfg: DataConfig | Any) -> Dataset:
    """The :class:`Dataset` of a pandas DataFrame (``cfg``: a ``data.name: frame`` config, whose
    ``target`` names the label column; the frame is not memoised)."""
    from ct_core.data.user import user_dataset

    return user_dataset(_data_cfg(cfg), df)


def clear_cache() -> None:
    """Forget every memoised dataset (tests; after files changed on disk)."""
    with _LOCK:
        _MEMO.clear()


def check_data(cfg: DataConfig | Any) -> None:
    """Raise the :class:`~ct_core.config.ConfigError` that :func:`load_dataset` would for
    ``cfg`` (a missing or unusable file, one class, sizes larger than the data), as cheaply as
    the data allow: ``ct-sweep run`` calls it for every data setting before Ray starts, where
    ``ct train`` loads the data."""
    cfg = _data_cfg(cfg)
    kind = DEFAULTS.get(cfg.name, DEFAULTS["csv"]).kind if cfg.name != "frame" else "frame"
    if cfg.name == "csv":
        from ct_core.data.user import check_table

        check_table(cfg)
    elif kind == "synthetic":
        n_train, n_val, n_test = _sizes(cfg)
        assert n_train is not None and n_test is not None
        check_sizes(cfg.name, n_train, n_val, n_test)
    elif kind != "frame":
        load_dataset(cfg)


def feature_names(cfg: DataConfig | Any) -> list[str]:
    """Encoded feature names for ``cfg`` (cheap for synthetic data and MNIST).

    Synthetic features are ``x1`` … ``xD`` and MNIST pixels ``pixel1`` … ``pixel784`` (1-based
    as in the paper's notation; numeric references in ``data.immutable`` are 0-based indices).
    """
    cfg = _data_cfg(cfg)
    kind = DEFAULTS[cfg.name].kind
    if kind == "synthetic":
        from ct_core.data.synthetic import n_features

        return [f"x{i + 1}" for i in range(n_features(cfg.name))]
    if kind == "image":
        from ct_core.data.mnist import pixel_names

        return pixel_names()
    return list(load_dataset(cfg).feature_names)


def _sizes(cfg: DataConfig) -> tuple[int | None, int, int | None]:
    d = DEFAULTS[cfg.name]
    n_train = d.n_train if cfg.n_train is None else cfg.n_train
    n_val = d.n_val if cfg.n_val is None else cfg.n_val
    n_test = d.n_test if cfg.n_test is None else cfg.n_test
    return n_train, n_val, n_test


def _build(cfg: DataConfig) -> Dataset:
    from ct_core.data.preprocess import assemble

    d = DEFAULTS[cfg.name]
    n_train, n_val, n_test = _sizes(cfg)
    extra: dict[str, Any] = {}
    if d.kind == "synthetic":
        from ct_core.data.encoder import Column, Encoder
        from ct_core.data.synthetic import synthetic_splits

        assert n_train is not None and n_test is not None
        splits = synthetic_splits(cfg, n_train, n_val, n_test)
        names = feature_names(cfg)
        classes: list[str] = ["0", "1"]
        enc = Encoder([Column(n) for n in names], "y", classes)
        if cfg.standardize:
            enc.fit_scale(splits["train"][0])
            splits = {k: (enc.scale(x), y) for k, (x, y) in splits.items()}
        extra["encoder"] = enc
    elif d.kind == "tabular":
        from ct_core.data.tabular import TABULAR, read_table, tabular_splits

        enc, x, y = read_table(cfg.name)
        splits = tabular_splits(cfg, enc, x, y, n_train, n_val, n_test)
        names, classes = enc.feature_names, list(TABULAR[cfg.name].class_names)
        extra.update(categorical_groups=enc.groups, encoder=enc)
    elif d.kind == "image":
        from ct_core.data.mnist import IMAGE_SHAPE, mnist_splits, pixel_names

        assert n_train is not None and n_test is not None
        splits = mnist_splits(cfg, n_train, n_val, n_test)
        names, classes = pixel_names(), [str(c) for c in range(10)]
        extra.update(image_shape=IMAGE_SHAPE, fixed_domain=(-1.0, 1.0))
    elif cfg.name == "csv":
        from ct_core.data.user import read_user_table, user_dataset

        return user_dataset(cfg, read_user_table(cfg))
    else:
        from ct_core.config import ConfigError

        raise ConfigError(
            "data.name 'frame' is a pandas DataFrame given in Python: "
            "ct_core.train(cfg, data=df, target=...); a file is data.name: csv with data.path"
        )
    return assemble(
        cfg,
        splits,
        names,
        n_classes=len(classes),
        class_names=classes,
        batch_size=d.batch_size,
        **extra,
    )
