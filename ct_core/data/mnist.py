"""MNIST as the paper uses it (TaijaData ``load_mnist``, ``CTX/mnist.jl``).

Training data: a class-balanced subsample *with replacement* of ``(n_train + n_val) / 10``
images per digit (1100 by default, ``seed``; a remainder goes to the lowest digits) from the
60 000 training images, in original order; the validation set is split off keeping class ratios
(100 per digit by default). Test: the official 10 000 test images (the first ``n_test`` if fewer
are asked for). Pixels are scaled to [-1, 1] (``x / 255 · 2 − 1``) and flattened to 784
features; the domain is fixed to (-1, 1) and ``data.standardize`` does not apply.
"""

from __future__ import annotations

import numpy as np

from ct_core.config import ConfigError, DataConfig
from ct_core.data.download import DataFile, Source, locate
from ct_core.data.preprocess import stratified_split

__all__ = ["IMAGE_SHAPE", "MNIST_FILE", "mnist_splits", "pixel_names", "scale_pixels"]

IMAGE_SHAPE = (1, 28, 28)
N_PIXELS = 784
MNIST_FILE = DataFile(
    "mnist/mnist.npz",
    "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
    Source(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    ),
    "MNIST (Keras mnist.npz layout)",
)


def pixel_names() -> list[str]:
    """``pixel1`` … ``pixel784`` in row-major order (0-based index = row·28 + column)."""
    return [f"pixel{i + 1}" for i in range(N_PIXELS)]


def scale_pixels(x: np.ndarray) -> np.ndarray:
    """uint8 images ``(n, 28, 28)`` -> float32 ``(n, 784)`` in [-1, 1]."""
    return (x.reshape(len(x), N_PIXELS).astype(np.float32) / 255.0) * 2.0 - 1.0


def mnist_splits(
    cfg: DataConfig, n_train: int, n_val: int, n_test: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train/val/test arrays: features float32 ``(n, 784)``, labels int64 ``(n,)``."""
    with np.load(locate(MNIST_FILE)) as f:
        x_tr, y_tr = f["x_train"], f["y_train"].astype(np.int64)
        x_te, y_te = f["x_test"], f["y_test"].astype(np.int64)
    if n_test > len(y_te):
        raise ConfigError(f"data.n_test: MNIST has {len(y_te)} test images, got {n_test}")
    n_total = n_train + n_val
    if n_total > len(y_tr):
        raise ConfigError(
            f"data.n_train/n_val: MNIST has {len(y_tr)} training images, so n_train + n_val must "
            f"be at most {len(y_tr)}; got {n_train} + {n_val}"
        )
    per_class = [n_total // 10 + (c < n_total % 10) for c in range(10)]
    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(
        np.concatenate([rng.choice(np.flatnonzero(y_tr == c), k) for c, k in enumerate(per_class)])
    )
    y = y_tr[idx]
    tr, va = stratified_split(y, n_val, np.random.default_rng(cfg.split_seed))
    x = scale_pixels(x_tr[idx])
    return {
        "train": (x[tr], y[tr]),
        "val": (x[va], y[va]),
        "test": (scale_pixels(x_te[:n_test]), y_te[:n_test]),
    }
