"""The paper's tabular datasets (TaijaData 1.1.x loaders).

* ``adult``: raw UCI ``adult.data`` turned into TaijaData's ``adult.csv`` (recipe in
  ``shared/data/adult/SOURCE.md``): headers lowercased with spaces/hyphens as ``_``, ``?`` kept
  as a level, target ``>50K`` = 1; 8 categoricals one-hot, 6 continuous -> 108 features.
* ``california``, ``credit``, ``gmsc``: the balanced Taija CSVs (target 1 = favourable).
  ``credit`` one-hots SEX/EDUCATION/MARRIAGE in place, which puts AGE at index 14 (0-based).

Split: no row shuffle; the first ``n_train + n_val`` rows (by default all of the first
``round(0.8·N)``; credit's paper sizes leave one row out) are train+validation, the last
``N − round(0.8·N)`` rows (or ``n_test``) test, giving the authors' test sizes 6512 / 4126 /
2654 / 3343; the validation set is split off keeping class ratios.
Continuous columns are z-scored with statistics of the train+validation part only (MLJ
``Standardizer(count=true)``, fitted before the train/validation split as the authors' code
does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ct_core.config import ConfigError, DataConfig
from ct_core.data.download import DataFile, Source, locate
from ct_core.data.encoder import Encoder
from ct_core.data.preprocess import stratified_split

__all__ = ["TABULAR", "TabularSpec", "read_table", "tabular_splits"]

TRAIN_FRACTION = 0.8
_TAIJA_ARTIFACT = Source(
    url="https://github.com/JuliaTrustworthyAI/CounterfactualExplanations.jl/releases/download/"
    "artifacts-1.8/data-tabular.tar.gz",
    sha256="d8dbfb26ff80f315418f29e4a5d9686c743933614c2ab3a9d0119187c9339bcb",
)


def _taija(member: str) -> Source:
    return Source(_TAIJA_ARTIFACT.url, _TAIJA_ARTIFACT.sha256, member=f"data-tabular/{member}")


# Fixed level order of the Taija recipe (CE.jl dev/artifacts/tabular.qmd, "UCI Adult").
_ADULT_LEVELS_TEXT = {
    "workclass": "Private, Self-emp-not-inc, Self-emp-inc, Federal-gov, Local-gov, State-gov, "
    "Without-pay, Never-worked, ?",
    "education": "Bachelors, Some-college, 11th, HS-grad, Prof-school, Assoc-acdm, Assoc-voc, "
    "9th, 7th-8th, 12th, Masters, 1st-4th, 10th, Doctorate, 5th-6th, Preschool, ?",
    "marital_status": "Married-civ-spouse, Divorced, Never-married, Separated, Widowed, "
    "Married-spouse-absent, Married-AF-spouse, ?",
    "occupation": "Tech-support, Craft-repair, Other-service, Sales, Exec-managerial, "
    "Prof-specialty, Handlers-cleaners, Machine-op-inspct, Adm-clerical, Farming-fishing, "
    "Transport-moving, Priv-house-serv, Protective-serv, Armed-Forces, ?",
    "relationship": "Wife, Own-child, Husband, Not-in-family, Other-relative, Unmarried, ?",
    "race": "White, Asian-Pac-Islander, Amer-Indian-Eskimo, Other, Black, ?",
    "sex": "Female, Male",
    "country": "United-States, Cambodia, England, Puerto-Rico, Canada, Germany, "
    "Outlying-US(Guam-USVI-etc), India, Japan, Greece, South, China, Cuba, Iran, Honduras, "
    "Philippines, Italy, Poland, Jamaica, Vietnam, Mexico, Portugal, Ireland, France, "
    "Dominican-Republic, Laos, Ecuador, Taiwan, Haiti, Columbia, Hungary, Guatemala, Nicaragua, "
    "Scotland, Thailand, Yugoslavia, El-Salvador, Trinadad&Tobago, Peru, Hong, "
    "Holand-Netherlands, ?",
}
ADULT_LEVELS: dict[str, list[str]] = {
    k: [s.strip() for s in v.split(",")] for k, v in _ADULT_LEVELS_TEXT.items()
}
ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "country",
]


@dataclass(frozen=True)
class TabularSpec:
    """How to read one tabular dataset: file, target column, categoricals, class names."""

    file: DataFile
    reader: Callable[[str], pd.DataFrame]
    target: str = "target"
    categorical: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ("0", "1")
    levels: dict[str, list[str]] = field(default_factory=dict)


def _read_adult(path: str) -> pd.DataFrame:
    df = pd.read_csv(path, header=None, skipinitialspace=True, names=[*ADULT_COLUMNS, "income"])
    df = df.dropna(how="all")
    df["target"] = (df.pop("income").str.strip().str.rstrip(".") == ">50K").astype(np.int64)
    for c in ADULT_LEVELS:
        df[c] = df[c].astype(str).str.strip()
    return df


def _present(levels: dict[str, list[str]], df: pd.DataFrame) -> dict[str, list[str]]:
    """Keep only levels that occur (MLJ's pool after coercing the label-encoded columns)."""
    out = {}
    for c, lv in levels.items():
        seen = set(df[c].unique())  # once per column, not once per level
        out[c] = [v for v in lv if v in seen]
    return out


TABULAR: dict[str, TabularSpec] = {
    "adult": TabularSpec(
        DataFile(
            "adult/raw/adult.data",
            "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
            Source(
                "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/adult.data",
                "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
            ),
            "UCI Adult training file",
        ),
        _read_adult,
        categorical=tuple(ADULT_LEVELS),
        class_names=("<=50K", ">50K"),
        levels=ADULT_LEVELS,
    ),
    "california": TabularSpec(
        DataFile(
            "california_housing/taija/cal_housing.csv",
            "7777da56fae024f8a0cd2eb014c8f03b75a0eae591376828e38ff21156be4aef",
            _taija("cal_housing.csv"),
            "California Housing, Taija CSV",
        ),
        pd.read_csv,
        class_names=("below median", "at or above median"),
    ),
    "credit": TabularSpec(
        DataFile(
            "credit_default/taija/credit_default.csv",
            "9105fb70f002f4963426b16a229e35f5cd118d2613b9e90e72139e065c8c1380",
            _taija("credit_default.csv"),
            "Taiwan credit default, Taija CSV",
        ),
        pd.read_csv,
        categorical=("SEX", "EDUCATION", "MARRIAGE"),
        class_names=("default", "no default"),
    ),
    "gmsc": TabularSpec(
        DataFile(
            "gmsc/taija/gmsc.csv",
            "e00a2463dcceb90a0ac6ea37044750f417ebe62f51380a9bc75d6e08fd43e0f4",
            _taija("gmsc.csv"),
            "Give Me Some Credit, Taija CSV",
        ),
        pd.read_csv,
        class_names=("delinquent", "no delinquency"),
    ),
}


def read_table(name: str) -> tuple[Encoder, np.ndarray, np.ndarray]:
    """The encoder, features ``(N, D)`` (not yet standardised) and labels ``(N,)`` of ``name``."""
    spec = TABULAR[name]
    df = spec.reader(str(locate(spec.file)))
    y = df.pop(spec.target).to_numpy().astype(np.int64)
    levels = _present(spec.levels, df) if spec.levels else None
    enc = Encoder.fit(df, spec.categorical, levels)
    enc.target, enc.classes = spec.target, list(spec.class_names)
    return enc, enc.encode(df), y


def tabular_splits(
    cfg: DataConfig,
    enc: Encoder,
    x: np.ndarray,
    y: np.ndarray,
    n_train: int | None,
    n_val: int,
    n_test: int | None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CSV-order split (first rows train+val, last rows test) of features ``x`` ``(N, D)``,
    validation by class ratio; standardising fits ``enc``'s scale."""
    n = len(y)
    n_part = round(TRAIN_FRACTION * n)
    n_trval = n_part if n_train is None else n_train + n_val
    n_test = n - n_part if n_test is None else n_test
    if n_trval <= n_val or n_trval + n_test > n:
        raise ConfigError(
            f"data.n_train/n_val/n_test: {cfg.name} has {n} rows, so n_train + n_val + n_test "
            f"must be at most {n} with n_train >= 1; got {n_trval - n_val} + {n_val} + {n_test}"
        )
    x_trval, y_trval = x[:n_trval], y[:n_trval]
    x_test, y_test = x[n - n_test :], y[n - n_test :]
    if cfg.standardize is None or cfg.standardize:
        enc.fit_scale(x_trval)
        x_trval, x_test = enc.scale(x_trval), enc.scale(x_test)
    tr, va = stratified_split(y_trval, n_val, np.random.default_rng(cfg.split_seed))
    return {
        "train": (x_trval[tr], y_trval[tr]),
        "val": (x_trval[va], y_trval[va]),
        "test": (x_test, y_test),
    }
