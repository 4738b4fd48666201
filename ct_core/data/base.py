"""The prepared-dataset container every loader returns and every other module consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ct_core.constraints import Domain, onehot_index


@dataclass
class Dataset:
    """Splits as tensors (features float32 ``(n, D)``, labels int64 ``(n,)``) plus feature metadata.

    ``domain`` are the bounds counterfactuals are clamped to (``None``: unbounded);
    ``mutability`` the ``(D,)`` code vector of :mod:`ct_core.constraints`; ``categorical`` the
    encoded column indices that are one-hot levels (``categorical_groups`` one list per original
    categorical column), which counterfactual searches keep one-hot unless ``keep_onehot`` is off.
    """

    name: str
    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor
    feature_names: list[str]
    n_classes: int
    categorical: list[int] = field(default_factory=list)
    categorical_groups: list[list[int]] = field(default_factory=list)
    domain: Domain | None = None
    mutability: Tensor | None = None
    class_names: list[str] | None = None
    image_shape: tuple[int, ...] | None = None
    batch_size: int = 30
    keep_onehot: bool = True

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """``("train"|"val"|"test")`` -> ``(X, y)``."""
        return getattr(self, f"X_{name}"), getattr(self, f"y_{name}")

    @property
    def onehot(self) -> Tensor | None:
        """The one-hot groups searches keep one-hot, as the ``onehot`` argument of
        :func:`ct_core.search.search` (``None``: no groups, or ``keep_onehot`` is off)."""
        if not self.keep_onehot:
            return None
        return onehot_index(self.categorical_groups, self.X_train.device)

    @property
    def continuous(self) -> list[int]:
        cat = set(self.categorical)
        return [i for i in range(self.n_features) if i not in cat]

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor on ``device``."""
        out = Dataset(**self.__dict__)
        for k, v in self.__dict__.items():
            if isinstance(v, Tensor):
                setattr(out, k, v.to(device))
        if self.domain is not None:
            out.domain = (self.domain[0].to(device), self.domain[1].to(device))
        return out
