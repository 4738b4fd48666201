"""The prepared-dataset container every loader returns and every other module consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ct_core.constraints import Domain, onehot_index

if TYPE_CHECKING:
    from ct_core.data.encoder import Encoder


@dataclass
class Dataset:
    """Splits as tensors (features float32 ``(n, D)``, labels int64 ``(n,)``) plus feature metadata.

    ``domain`` are the bounds counterfactuals are clamped to (``None``: unbounded);
    ``mutability`` the ``(D,)`` code vector of :mod:`ct_core.constraints`; ``categorical`` the
    encoded column indices that are one-hot levels (``categorical_groups`` one list per original
    categorical column), which counterfactual searches keep one-hot unless ``keep_onehot`` is off;
    ``encoder`` maps tables with the original columns to features and back (``None`` for images).
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
    encoder: Encoder | None = None

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

    def spec(self) -> dict[str, Any]:
        """What a trained model needs of its data, as plain data (``model.pt`` holds it): names,
        one-hot groups, domain, mutability and the encoder."""
        lo, hi = (None, None) if self.domain is None else (t.tolist() for t in self.domain)
        return {
            "name": self.name,
            "feature_names": list(self.feature_names),
            "class_names": self.class_names,
            "n_classes": self.n_classes,
            "categorical_groups": self.categorical_groups,
            "domain": None if lo is None else [lo, hi],
            "mutability": None if self.mutability is None else self.mutability.tolist(),
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "keep_onehot": self.keep_onehot,
            "encoder": None if self.encoder is None else self.encoder.to_dict(),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Dataset:
        """A dataset without rows (every split empty) that has ``spec``'s metadata."""
        from ct_core.data.encoder import Encoder

        d = len(spec["feature_names"])
        x, y = torch.zeros(0, d), torch.zeros(0, dtype=torch.long)
        dom, mut, enc = spec["domain"], spec["mutability"], spec["encoder"]
        return cls(
            spec["name"],
            x,
            y,
            x,
            y,
            x,
            y,
            list(spec["feature_names"]),
            int(spec["n_classes"]),
            categorical=sorted(i for g in spec["categorical_groups"] for i in g),
            categorical_groups=[list(g) for g in spec["categorical_groups"]],
            domain=None if dom is None else (torch.tensor(dom[0]), torch.tensor(dom[1])),
            mutability=None if mut is None else torch.tensor(mut, dtype=torch.int8),
            class_names=spec["class_names"],
            image_shape=None if spec["image_shape"] is None else tuple(spec["image_shape"]),
            keep_onehot=spec["keep_onehot"],
            encoder=None if enc is None else Encoder.from_dict(enc),
        )

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor on ``device``."""
        out = Dataset(**self.__dict__)
        for k, v in self.__dict__.items():
            if isinstance(v, Tensor):
                setattr(out, k, v.to(device))
        if self.domain is not None:
            out.domain = (self.domain[0].to(device), self.domain[1].to(device))
        return out
