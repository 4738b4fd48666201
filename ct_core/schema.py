"""The schema of one CT training run: every section and field, with what each allows.

:mod:`ct_core.config` reads, overrides and validates configs against it (and re-exports every
name here). Defaults follow the authors' code (docs/method.md §1.5); where the paper differs,
the paper's variant is one setting away (``train.mature``, ``train.epsilon_strict``,
``evaluation.length_scale``, ``data.domain_nsd``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ct_core.data.registry import DATASET_NAMES

__all__ = [
    "SEED_MAX",
    "Config",
    "DataConfig",
    "EvaluationConfig",
    "GeneratorConfig",
    "ModelConfig",
    "TrainConfig",
    "flatten",
]


# ----------------------------------------------------------------------------------------------
# Constrained scalar types with messages that say what is allowed.


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool):
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    desc = f"{left}{'-inf' if lo is None else _fmt(lo)}, {'inf' if hi is None else _fmt(hi)}{right}"

    def check(v: float) -> float:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"must be a finite number in {desc}")
        ok = True
        if lo is not None:
            ok &= v > lo if lo_open else v >= lo
        if hi is not None:
            ok &= v < hi if hi_open else v <= hi
        if not ok:
            raise ValueError(f"must be in {desc}")
        return v

    check.bounds = (lo, hi, lo_open, hi_open)  # type: ignore[attr-defined]  # read by tests
    return AfterValidator(check)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _not_bool(kind: str):
    """YAML reads ``true``/``yes`` as booleans, which pydantic would take for 1: a number field
    given a boolean is an error instead."""

    def check(v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError(f"must be {kind}, not a boolean")
        return v

    return BeforeValidator(check)


_NUM, _INT = _not_bool("a number"), _not_bool("an integer")
Prob = Annotated[float, _NUM, _interval(0.0, 1.0, True, True)]
UnitClosed = Annotated[float, _NUM, _interval(0.0, 1.0, False, False)]
UnitHalfOpen = Annotated[float, _NUM, _interval(0.0, 1.0, False, True)]
NonNeg = Annotated[float, _NUM, _interval(0.0, None, False, True)]
Pos = Annotated[float, _NUM, _interval(0.0, None, True, True)]
PosInt = Annotated[int, _INT, _interval(1, None, False, True)]
NonNegInt = Annotated[int, _INT, _interval(0, None, False, True)]
SEED_MAX = 2**32 - 1
Seed = Annotated[int, _INT, _interval(0, SEED_MAX, False, False)]
"""A random seed: numpy's legacy generators and the Julia streams take 32-bit seeds."""

FeatureRef = int | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# ----------------------------------------------------------------------------------------------


class DataConfig(_Strict):
    """Which data, how it is split, and the actionability constraints on its features."""

    name: str = "moons"
    path: str | None = None
    """For ``name: csv``: a CSV or parquet file (relative paths resolve against the config file)."""
    target: str | None = None
    """For ``name: csv`` and ``frame`` (a DataFrame given in Python): the label column."""
    categorical: list[str] = Field(default_factory=list)
    """For ``name: csv`` and ``frame``: columns to one-hot encode (text and ``category`` columns
    are one-hot encoded without being listed, docs/python-api.md)."""
    n_train: PosInt | None = None
    """Training points; ``null`` uses the dataset's paper default."""
    n_val: NonNegInt | None = None
    n_test: PosInt | None = None
    seed: Seed = 42
    """Seed of the data generator / subsampling (the authors' code's ``data_seed``)."""
    split_seed: Seed = 2025
    """Seed of the train/test shuffle (the authors' code's ``train_test_seed``)."""
    rng: Literal["julia", "numpy"] = "julia"
    """Random streams of the synthetic sets: ``julia`` draws the authors' points (Julia's
    ``Xoshiro``, ``docs/julia_streams.md``), ``numpy`` the same recipes on numpy's stream."""
    standardize: bool | None = None
    """Standardise continuous columns on the training part; ``null`` = the dataset's default."""
    immutable: list[FeatureRef] = Field(default_factory=list)
    """Features that must not change: names (a categorical's name covers all its one-hot columns)
    or 0-based column indices of the encoded data."""
    increase_only: list[FeatureRef] = Field(default_factory=list)
    decrease_only: list[FeatureRef] = Field(default_factory=list)
    domain: Literal["inferred", "none"] | list[float] | list[list[float]] = "inferred"
    """``inferred`` (mean ± nσ·sd widened to the observed range, on train+val), ``none``, one
    ``[lo, hi]`` for every feature, or one ``[lo, hi]`` per feature."""
    domain_nsd: Pos = 2.0
    """nσ of the inferred domain: 2 as the authors' code runs it, 3 as the paper writes."""
    clamp_categorical: bool = True
    """Clamp one-hot columns to the domain as well (the authors' code does during training)."""
    keep_onehot: bool = True
    """Counterfactual searches (training, validation metrics, the protocol, ``ct explain``) keep
    each categorical's one-hot group one-hot (docs/categorical.md); ``false`` searches its columns
    as continuous ones, as the authors' training does."""

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.name not in DATASET_NAMES:
            raise ValueError(
                f"data.name must be one of {', '.join(DATASET_NAMES)}, got {self.name!r}"
            )
        if self.name == "csv" and not self.path:
            raise ValueError("data.path is required when data.name is 'csv'")
        if self.name in ("csv", "frame") and not self.target:
            raise ValueError(f"data.target is required when data.name is {self.name!r}")
        if self.name != "csv" and self.path is not None:
            raise ValueError("data.path is only allowed when data.name is 'csv'")
        if self.name not in ("csv", "frame") and (self.target is not None or self.categorical):
            raise ValueError(
                "data.target and data.categorical are only allowed when data.name is 'csv' or "
                "'frame'"
            )
        d = self.domain
        if isinstance(d, list):
            pairs = [d] if d and not isinstance(d[0], list) else d
            for p in pairs:
                if len(p) != 2 or not (p[0] < p[1]):
                    raise ValueError(
                        f"data.domain bounds must be [lower, upper] with lower < upper, got {p!r}"
                    )
        seen: dict[str, str] = {}
        for field in ("immutable", "increase_only", "decrease_only"):
            for f in getattr(self, field):
                if isinstance(f, int) and f < 0:
                    raise ValueError(f"data.{field} indices must be >= 0, got {f}")
                key = str(f)
                if key in seen and seen[key] != field:
                    raise ValueError(
                        f"feature {f!r} appears in both data.{seen[key]} and data.{field}"
                    )
                seen[key] = field
        return self


class ModelConfig(_Strict):
    """The classifier: a built-in one (the paper's) or a user's ``nn.Module`` (``factory``)."""

    type: Literal["linear", "mlp", "lenet"] = "mlp"
    hidden: list[PosInt] = Field(default_factory=lambda: [32])
    activation: Literal["relu", "swish", "tanh", "sigmoid", "gelu", "elu", "leaky_relu"] = "relu"
    factory: str | None = None
    """``"package.module:function"``, called as ``function(n_features=..., n_classes=...)``, that
    returns an ``nn.Module`` mapping ``(N, n_features)`` to ``(N, n_classes)`` logits; it builds
    the model instead of ``type``, ``hidden`` and ``activation``. The module is imported wherever
    the model is built or loaded (trainers, sweep workers, ``load_model``)."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        f = self.factory
        if f is not None:
            module, sep, attr = f.partition(":")
            names = module.split(".") + attr.split(".")
            if not sep or not all(n.isidentifier() for n in names):
                raise ValueError(f"model.factory must be 'package.module:function', got {f!r}")
        return self


class TrainConfig(_Strict):
    """The CT objective (the paper's Eq. 1) and the epoch loop."""

    objective: Literal["full", "vanilla", "energy", "adversarial"] = "full"
    epochs: PosInt = 100
    batch_size: PosInt = 30
    lr: Pos = 0.001
    optimizer: Literal["adam", "amsgrad", "sgd"] = "adam"
    nce: PosInt = 1000
    """Counterfactuals generated per epoch (one sweep against the start-of-epoch model)."""
    burnin: UnitHalfOpen = 0.0
    """Fraction of epochs trained conventionally before CT starts."""
    lambda_class: NonNeg = 1.0
    lambda_div: NonNeg = 0.5
    lambda_reg: NonNeg = 0.1
    lambda_adv: NonNeg = 0.25
    epsilon: Pos = 0.3
    """Radius of the ball that nascent counterfactuals must stay in to serve as adversarial
    examples (L∞ by default, fixed at 0.3 in the authors' code)."""
    epsilon_norm: Literal["inf", "1", "2"] = "inf"
    epsilon_strict: bool = False
    """``false``: ‖Δ‖ ≤ ε as the code does; ``true``: ‖Δ‖ < ε as the paper writes."""
    mature: Literal["converged", "converged_or_exhausted"] = "converged"
    """Which counterfactuals enter the contrastive term: only converged ones (code) or also those
    that exhausted T (the seed paper's notation)."""
    shuffle: bool = False
    """Shuffle mini-batches each epoch (the authors' DataLoader does not)."""
    checkpoint_every: NonNegInt = 0
    """``ct train`` writes ``checkpoint.pt`` every k epochs (0 = only at the end)."""
    eval_every: NonNegInt = 0
    """Compute validation-set counterfactual metrics every k epochs and at the last one
    (0 = never during training)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: NonNegInt = 1
    """torch intra-op threads (0 = leave torch's default)."""


class GeneratorConfig(_Strict):
    """The counterfactual search used during training."""

    type: str = "ecco"
    """A registered generator (:func:`ct_core.generators.register_generator`): ``generic``,
    ``ecco``, ``revise`` or one registered by the user's code."""
    T: PosInt = 30
    tau: Prob = 0.75
    lr: Pos = 0.1
    """Step size of plain gradient descent in input (or latent) space. The authors configure
    0.25, but their code ignores it and runs 0.1."""
    lambda_cost: NonNeg = 0.001
    lambda_energy: NonNeg = 5.0
    energy_reg: NonNeg = 0.001
    """Weight of the quadratic part of the ECCo energy penalty, E + energy_reg·E²."""
    energy_decay: bool = True
    """Apply the authors' step schedule φ_t = a·(b+t)^-0.9 to the energy penalty."""
    vae_latent: PosInt | None = None
    """REVISE: latent size (``null``: 2 for D ≤ 2, else 4, as the authors' code)."""
    vae_hidden: PosInt | None = None
    vae_epochs: PosInt = 100

    @model_validator(mode="after")
    def _check(self) -> GeneratorConfig:
        from ct_core.generators import generator_info

        try:
            generator_info(self.type)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        return self


class EvaluationConfig(_Strict):
    """The paper's test-time protocol (:mod:`ct_core.protocol`)."""

    T: PosInt = 50
    tau: Prob = 0.95
    tau_cost: Prob = 0.5
    lambda_energies: list[NonNeg] = Field(default_factory=lambda: [0.1, 0.5, 1.0, 5.0, 10.0])
    lambda_cost: NonNeg = 0.0
    n_runs: PosInt = 100
    n_individuals: PosInt = 250
    n_target_samples: PosInt = 1000
    mmd_samples: PosInt = 100
    length_scale: Pos = 5.0
    """Gaussian-kernel length scale of IP* (MMD): 5.0 as the code runs, 0.5 as the paper writes."""
    constrained: bool = False
    """Respect the data's mutability constraints at test time (the cost column of Table 1)."""
    split: Literal["test", "val", "train"] = "test"
    seed: Seed = 2025
    n_val_individuals: PosInt = 100
    """Counterfactuals per validation-metric pass during training (``train.eval_every``)."""


class Config(_Strict):
    seed: Seed = 2025
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @model_validator(mode="after")
    def _cross(self) -> Config:
        if self.model.type == "lenet" and not self.model.factory and self.data.name != "mnist":
            raise ValueError("model.type 'lenet' needs 28x28 images (data.name: mnist)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """Dotted-path view of every leaf (``{"generator.tau": 0.75, ...}``)."""
        return flatten(self.to_dict())


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
