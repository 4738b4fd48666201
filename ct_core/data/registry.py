"""Names and paper defaults of the built-in datasets. Import-light on purpose:
the config schema validates ``data.name`` against this list without loading any data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetDefaults:
    key: str
    paper_name: str
    kind: str  # "synthetic" | "tabular" | "image" | "user"
    n_train: int | None
    n_val: int
    n_test: int | None
    batch_size: int
    nce: int


DEFAULTS: dict[str, DatasetDefaults] = {
    d.key: d
    for d in [
        DatasetDefaults("lin_sep", "LS", "synthetic", 3000, 600, 900, 30, 1000),
        DatasetDefaults("over", "OL", "synthetic", 3000, 600, 900, 30, 1000),
        DatasetDefaults("moons", "Moon", "synthetic", 3000, 600, 900, 30, 1000),
        DatasetDefaults("circles", "Circ", "synthetic", 3000, 600, 900, 30, 1000),
        DatasetDefaults("gaussm", "GaussM", "synthetic", 3000, 600, 900, 30, 1000),
        DatasetDefaults("adult", "Adult", "tabular", 25049, 1000, None, 1000, 5000),
        DatasetDefaults("california", "CH", "tabular", 15504, 1000, None, 1000, 5000),
        DatasetDefaults("credit", "Cred", "tabular", 9617, 1000, None, 1000, 5000),
        DatasetDefaults("gmsc", "GMSC", "tabular", 12371, 1000, None, 1000, 5000),
        DatasetDefaults("mnist", "MNIST", "image", 10000, 1000, 10000, 1000, 5000),
        DatasetDefaults("csv", "user data", "user", None, 0, None, 64, 1000),
        DatasetDefaults("frame", "user DataFrame", "user", None, 0, None, 64, 1000),
    ]
}

DATASET_NAMES: tuple[str, ...] = tuple(DEFAULTS)

N_GENERATED = 100_000
"""Points a synthetic set generates before the shuffle, as the authors' code does."""


def check_sizes(name: str, n_train: int, n_val: int, n_test: int) -> None:
    """The splits must fit into the :data:`N_GENERATED` points a synthetic set draws."""
    from ct_core.config import ConfigError

    if n_train + n_val + n_test > N_GENERATED:
        raise ConfigError(
            f"data.n_train/n_val/n_test: {name} draws {N_GENERATED} points, so n_train + "
            f"n_val + n_test must be at most {N_GENERATED}; got {n_train} + {n_val} + {n_test}"
        )
