"""The table encoder: from a table's columns to the model's features and back.

Categorical columns become one-hot groups in place (all levels, none dropped, named
``"<column>=<level>"``, like MLJ's ``ContinuousEncoder``); numeric columns are z-scored with
statistics of the training rows (mean and Bessel-corrected sd, constant columns only centred,
like MLJ's ``Standardizer(count=true)``). :meth:`Encoder.encode` maps a frame with the original
columns to features ``(n, D)``, :meth:`Encoder.decode` maps features back to the original
columns and units (a group to its largest level). An encoder is plain data (:meth:`to_dict`):
``TrainResult.save`` writes it to ``encoder.json`` beside the model, and ``model.pt`` holds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported where tables are read: synthetic data never need it
    import pandas as pd

__all__ = ["Column", "Encoder"]


@dataclass
class Column:
    """One original column: categorical (its ``levels``) or numeric (``mean``, ``std``)."""

    name: str
    levels: list[Any] | None = None
    mean: float = 0.0
    std: float = 1.0


@dataclass
class Encoder:
    """The columns of a table in order, and its label column's name and classes."""

    columns: list[Column]
    target: str | None = None
    classes: list[str] = field(default_factory=list)

    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        categorical: Sequence[str],
        levels: Mapping[str, Sequence[Any]] | None = None,
    ) -> Encoder:
        """The columns of ``df``; ``categorical`` ones get ``levels`` (default: the sorted values
        present). Numeric columns start unscaled (:meth:`fit_scale` fits their scale)."""
        cat, levels = set(categorical), dict(levels or {})
        cols = []
        for c in df.columns:
            lv = None
            if c in cat:
                lv = [_plain(v) for v in levels.get(c, _sorted_levels(df[c]))]
            cols.append(Column(str(c), lv))
        return cls(cols)

    @property
    def feature_names(self) -> list[str]:
        out: list[str] = []
        for c in self.columns:
            out += [c.name] if c.levels is None else [f"{c.name}={v}" for v in c.levels]
        return out

    @property
    def slices(self) -> list[slice]:
        """The encoded columns of each original column, in order."""
        out, i = [], 0
        for c in self.columns:
            width = 1 if c.levels is None else len(c.levels)
            out.append(slice(i, i + width))
            i += width
        return out

    @property
    def groups(self) -> list[list[int]]:
        """The encoded column indices of each categorical's one-hot group."""
        cols = zip(self.columns, self.slices)
        return [list(range(s.start, s.stop)) for c, s in cols if c.levels is not None]

    @property
    def continuous(self) -> list[int]:
        cat = {i for g in self.groups for i in g}
        return [i for i in range(len(self.feature_names)) if i not in cat]

    def encode(self, df: pd.DataFrame, field: str = "data.categorical") -> np.ndarray:
        """Features ``(n, D)`` float64 of the rows of ``df`` (which has every column; others are
        ignored), numeric columns scaled as fitted (unscaled before :meth:`fit_scale`). A value
        outside a categorical's levels raises ``ConfigError`` naming ``field``."""
        import pandas as pd

        from ct_core.config import ConfigError

        missing = [c.name for c in self.columns if c.name not in df.columns]
        if missing:
            raise ConfigError(f"{field}: missing column(s) {', '.join(map(repr, missing))}")
        blocks = []
        for c in self.columns:
            s = df[c.name]
            if c.levels is None:
                v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
                if np.isnan(v).any() and not s.isna().all():
                    raise ConfigError(f"{field}: column {c.name!r} must be numeric ({s.dtype})")
                blocks.append(v[:, None])
                continue
            codes = pd.Categorical(s, categories=c.levels).codes
            if (codes < 0).any() and all(isinstance(v, str) for v in c.levels):
                codes = pd.Categorical(s.astype(str), categories=c.levels).codes
            if (codes < 0).any():
                bad = sorted({str(v) for v in s[codes < 0].unique()})[:5]
                raise ConfigError(
                    f"{field}: column {c.name!r} has values outside its levels {c.levels}: {bad}"
                )
            blocks.append(np.eye(len(c.levels))[codes])
        return self.scale(np.concatenate(blocks, axis=1) if blocks else np.zeros((len(df), 0)))

    def fit_scale(self, x_fit: np.ndarray) -> None:
        """Fit the numeric columns' scale on unscaled features ``x_fit`` ``(m, D)``."""
        sub = x_fit[:, self.continuous]
        mean = sub.mean(0) if len(sub) else np.zeros(sub.shape[1])
        std = sub.std(0, ddof=1) if len(sub) > 1 else np.ones(sub.shape[1])
        std = np.where(std > 0, std, 1.0)
        for c, m, sd in zip((c for c in self.columns if c.levels is None), mean, std):
            c.mean, c.std = float(m), float(sd)

    def scale(self, x: np.ndarray) -> np.ndarray:
        """Unscaled features ``x`` ``(n, D)`` with the numeric columns z-scored."""
        numeric = [c for c in self.columns if c.levels is None]
        out = np.array(x, dtype=np.float64, copy=True)
        idx = self.continuous
        out[:, idx] = (out[:, idx] - [c.mean for c in numeric]) / [c.std for c in numeric]
        return out

    def decode(self, x: np.ndarray) -> pd.DataFrame:
        """The original columns of features ``x`` ``(n, D)``: numeric ones in their own units,
        each categorical the level of its group's largest entry."""
        import pandas as pd

        out = {}
        for c, s in zip(self.columns, self.slices):
            if c.levels is None:
                out[c.name] = x[:, s.start] * c.std + c.mean
            else:
                out[c.name] = np.asarray(c.levels, dtype=object)[x[:, s].argmax(1)]
        return pd.DataFrame(out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Encoder:
        cols = [Column(**c) for c in d["columns"]]
        return cls(cols, d.get("target"), list(d.get("classes", [])))


def _plain(v: Any) -> Any:
    """A JSON scalar for a level: numpy scalars become Python ones, anything else (a date) text,
    which :meth:`Encoder.encode` matches against the values' text."""
    v = v.item() if isinstance(v, np.generic) else v
    return v if isinstance(v, (str, int, float, bool)) else str(v)


def _sorted_levels(s: pd.Series) -> list[Any]:
    import pandas as pd

    vals = list(pd.unique(s.dropna()))
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)
