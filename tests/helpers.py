"""Small in-memory datasets for unit tests (no loader involved)."""

from __future__ import annotations

import torch

from ct_core.constraints import infer_domain
from ct_core.data.base import Dataset


def gaussian_dataset(
    n: int = 600, d: int = 2, shift: float = 2.0, seed: int = 0, mutability=None
) -> Dataset:
    """Two Gaussian classes with a shared diagonal covariance, means ±shift/2 on every axis."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, d, generator=g) + (y[:, None].float() - 0.5) * shift
    n_tr, n_va = int(0.6 * n), int(0.2 * n)
    ds = Dataset(
        name="gauss",
        X_train=x[:n_tr],
        y_train=y[:n_tr],
        X_val=x[n_tr : n_tr + n_va],
        y_val=y[n_tr : n_tr + n_va],
        X_test=x[n_tr + n_va :],
        y_test=y[n_tr + n_va :],
        feature_names=[f"x{i + 1}" for i in range(d)],
        n_classes=2,
        batch_size=30,
    )
    ds.domain = infer_domain(x[: n_tr + n_va])
    ds.mutability = mutability
    return ds
