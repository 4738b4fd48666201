"""The sweep YAML: schema, loading and ``--set`` overrides.

A sweep file (README, "Sweeps", has an example) names a ``base`` training config (a file
relative to the sweep file, or inline), ``overrides`` of it, optionally the ``init`` weights
every setting starts from, the ``search``, the ``space``
(:mod:`ct_sweeps.plan.space`), each trial's ``resources``, the ``tracking``,
``checkpoint_every`` (epochs; 0: only the final checkpoint), ``max_failures`` (retries of a
failed trial) and the run directory (``storage``). Every problem raises :class:`ct_core.config.ConfigError` with one line per problem, naming the
field (``search.algorithm must be one of grid, random, optuna-tpe, optuna-gp, got 'bayes'``).
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ct_core.config import (
    ConfigError,
    apply_overrides,
    deep_merge,
    format_errors,
    load_raw,
    parse_override,
    read_yaml,
    set_dotted,
)
from ct_core.sources import is_uri

__all__ = ["ALGORITHMS", "SCHEDULERS", "SweepConfig", "load_sweep", "parse_sweep"]
__all__ += ["TRACKING_SCHEMES", "tracking_uri_problem"]

ALGORITHMS = ("grid", "random", "optuna-tpe", "optuna-gp")
SCHEDULERS = ("none", "asha")
MODES = ("min", "max")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(\S*)$")
MAX_NAME = 100
"""Longest sweep name: it names the run directory and the MLflow experiment."""


def tracking_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not an MLflow tracking URI ct can use (``None``: it is one): a URI of
    :data:`TRACKING_SCHEMES` without spaces, or a local folder path."""
    if not uri.strip() or any(c.isspace() for c in uri):
        return (
            f"must be a URI without spaces ({', '.join(TRACKING_SCHEMES)}) or a folder, got {uri!r}"
        )
    m = _URI.match(uri)
    if m is None:
        return None if "://" not in uri else f"is not a URI, got {uri!r}"
    scheme = m.group(1).split("+", 1)[0].lower()
    if scheme not in TRACKING_SCHEMES:
        return f"scheme must be one of {', '.join(TRACKING_SCHEMES)}, got {m.group(1)!r}"
    if scheme in ("http", "https") and not m.group(2).split("/", 1)[0]:
        return f"needs a host (http://HOST:PORT), got {uri!r}"
    return None


def _one_of(field: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AshaConfig(_Strict):
    """ASHA early stopping on ``search.metric`` (rungs at ``grace_period`` × ``reduction_factor``^k
    epochs)."""

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = Field(None, ge=1)
    """Epochs of the longest trial (``null``: ``train.epochs`` of the base)."""


class SearchConfig(_Strict):
    algorithm: str = "grid"
    metric: str | list[str] = "val_acc"
    mode: str | list[str] = "max"
    num_samples: int = Field(1, ge=1)
    """grid/random: repeats of the grid; Optuna: number of trials."""
    max_concurrent: int | None = Field(None, ge=1)
    seed: int | None = Field(2025, ge=0, le=2**32 - 1)
    n_startup_trials: int = Field(10, ge=1)
    """Optuna: random trials before the TPE/GP model takes over."""
    scheduler: str = "none"
    asha: AshaConfig = Field(default_factory=AshaConfig)
    pack: Any = "auto"
    """Settings per trial (grid/random without ASHA): ``auto``, 0 or 1 (one), or at most K."""

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        _one_of("search.algorithm", self.algorithm, ALGORITHMS)
        pack = self.pack
        if pack != "auto" and not (type(pack) is int and pack >= 0):
            raise ValueError(
                "search.pack must be 'auto', 0 or 1 (off) or the most settings per pack "
                f"(an integer >= 2), got {self.pack!r}"
            )
        _one_of("search.scheduler", self.scheduler, SCHEDULERS)
        metrics = self.metrics
        modes = [self.mode] if isinstance(self.mode, str) else list(self.mode)
        if not metrics or not all(isinstance(m, str) and m for m in metrics):
            raise ValueError("search.metric must be a metric name or a non-empty list of names")
        for m in modes:
            _one_of("search.mode", m, MODES)
        if len(modes) == 1 and len(metrics) > 1:
            modes = modes * len(metrics)
        if len(modes) != len(metrics):
            raise ValueError(
                f"search.mode needs one mode per metric: {len(metrics)} metrics, {len(modes)} modes"
            )
        self.mode = modes[0] if isinstance(self.metric, str) else modes
        if self.multi_objective and self.scheduler == "asha":
            raise ValueError("search.scheduler 'asha' needs a single search.metric, got a list")
        return self

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def modes(self) -> list[str]:
        return [self.mode] if isinstance(self.mode, str) else list(self.mode)

    @property
    def multi_objective(self) -> bool:
        return isinstance(self.metric, list) and len(self.metric) > 1

    @property
    def uses_optuna(self) -> bool:
        return self.algorithm.startswith("optuna")

    @property
    def packs(self) -> bool:
        """Whether settings are packed: asked for, and a search that fixes them up front."""
        return self.pack not in (0, 1) and not self.uses_optuna and self.scheduler != "asha"


class ResourcesConfig(_Strict):
    """What one Tune trial (a setting, or a pack of settings) holds."""

    cpu: float = Field(1.0, gt=0)
    """CPUs per trial; the trial uses as many torch threads (unless ``train.threads`` is set)."""
    gpu: float = Field(0.0, ge=0)
    """Share of a GPU per trial (0.5: two trials per GPU). With 0, ``train.device: auto``
    trains on the CPU even on a machine with GPUs."""


# the field `register` hides pydantic's (abc's) classmethod of that name on instances only
warnings.filterwarnings("ignore", 'Field name "register"', UserWarning)


class TrackingConfig(_Strict):
    enabled: bool = True
    uri: str | None = None
    """``null``: ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///RUN_DIR/mlflow.db``."""
    experiment: str | None = None
    """``null``: the sweep's name."""
    log_model: Any = "auto"
    """Models logged to the child runs: ``true`` an MLflow PyTorch model (``model/``) for every
    finished setting; an integer N: for the best N settings by ``search.metric`` at the end of the
    sweep; ``auto``: all for sweeps of up to 20 settings, else the best 10; ``false``: none.
    Unless ``false``, every finished setting also gets its raw ``checkpoint/model.pt``."""
    log_every: int = Field(1, ge=1)
    """Metrics go to MLflow every N epochs and at a setting's last (``results.csv`` and
    ``result.json`` keep every epoch)."""
    flush_s: float = Field(30.0, gt=0)
    """Seconds between the driver's batched writes of metrics (and at each setting's end)."""
    register: Any = True
    """The best setting's MLflow model in the Model Registry, as a new version with the alias
    ``best``: ``true`` under the sweep's name, a name of one's own, or ``false``. It needs a
    logged model (``log_model`` not ``false``)."""
    sqlite_wal: Any = "auto"
    """A new local sqlite store (the default ``RUN_DIR/mlflow.db``) in SQLite's WAL mode (cheaper
    commits; ``mlflow ui`` reads without blocking the sweep). ``auto``: where the run directory is
    on a local file system, never on network or cluster file systems, where WAL is unsafe
    (:mod:`ct_sweeps.record.store`)."""

    @model_validator(mode="after")
    def _check(self) -> TrackingConfig:
        why = tracking_uri_problem(self.uri) if isinstance(self.uri, str) else None
        if why:
            raise ValueError(f"tracking.uri {why}")
        ok = self.log_model == "auto" or isinstance(self.log_model, bool)
        ok = ok or (isinstance(self.log_model, int) and self.log_model >= 0)
        if not ok:
            raise ValueError(
                "tracking.log_model must be true, false, auto or a number of best settings "
                f"(an integer >= 0), got {self.log_model!r}"
            )
        if not (isinstance(self.register, bool) or _NAME.match(str(self.register))):
            raise ValueError(
                "tracking.register must be true, false or a model name (letters, digits, '_', "
                f"'-', '.'), got {self.register!r}"
            )
        if not (self.sqlite_wal == "auto" or isinstance(self.sqlite_wal, bool)):
            raise ValueError(
                f"tracking.sqlite_wal must be true, false or auto, got {self.sqlite_wal!r}"
            )
        return self

    def models_for(self, n_settings: int) -> int:
        """How many settings get an MLflow PyTorch model (``n_settings`` means all)."""
        v = self.log_model
        if v == "auto":
            return n_settings if n_settings <= 20 else 10
        if isinstance(v, bool):
            return n_settings if v else 0
        return min(int(v), n_settings)

    def model_name(self, sweep: str) -> str | None:
        """The registered model the best setting goes to (``None``: none)."""
        return None if self.register is False else sweep if self.register is True else self.register


class SweepConfig(_Strict):
    name: str
    base: str | dict[str, Any]
    overrides: dict[str, Any] = Field(default_factory=dict)
    init: str | None = None
    """Fine-tune: every setting starts from these weights (a ct ``model.pt`` or run directory,
    relative to the sweep file; ``runs:/<run_id>/<path>``; ``models:/<name>@<alias>``), read once
    when the sweep starts (``RUN_DIR/init.pt``)."""
    search: SearchConfig = Field(default_factory=SearchConfig)
    space: dict[str, Any] = Field(default_factory=dict)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    checkpoint_every: int = Field(0, ge=0)
    max_failures: int = Field(0, ge=-1)
    storage: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if not _NAME.match(self.name):
            raise ValueError(f"name must be letters, digits, '_', '-' or '.', got {self.name!r}")
        if len(self.name) > MAX_NAME:
            raise ValueError(
                f"name must be at most {MAX_NAME} characters (it names the run directory), "
                f"got {len(self.name)}"
            )
        return self


def parse_sweep(raw: Any) -> SweepConfig:
    """Validate a sweep mapping (raises :class:`ConfigError`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a sweep file must be a mapping, got {type(raw).__name__}")
    try:
        return SweepConfig.model_validate(dict(raw))
    except ValidationError as e:
        raise ConfigError(format_errors(e, SweepConfig)) from None


_SWEEP_KEYS = set("name search resources tracking checkpoint_every max_failures storage".split())


def apply_sets(raw: Mapping[str, Any], sets: Iterable[str] | None) -> dict[str, Any]:
    """Apply ``--set k=v``: ``search.num_samples=20`` changes the sweep, ``space.generator.T=[5,
    10]`` one space entry, anything else (``train.epochs=5``) the training config (a swept key
    set this way is fixed: removed from the space)."""
    out = copy.deepcopy(dict(raw))
    for item in sets or []:
        key, value = parse_override(item)
        head = key.split(".", 1)[0]
        if head in _SWEEP_KEYS:
            set_dotted(out, key, value)
        elif head == "space" and "." in key:
            space = out.setdefault("space", {})
            if not isinstance(space, dict):
                raise ConfigError("space must be a mapping of dotted config paths")
            space[key.split(".", 1)[1]] = value
        else:
            overrides = out.setdefault("overrides", {})
            if not isinstance(overrides, dict):
                raise ConfigError("overrides must be a mapping of dotted config paths to values")
            overrides[key] = value
            if isinstance(out.get("space"), dict):
                out["space"].pop(key, None)
    return out


def resolve_base(sweep: SweepConfig, sweep_dir: Path) -> dict[str, Any]:
    """The base training config as a raw dict: a file relative to the sweep, or inline."""
    if isinstance(sweep.base, str):
        path = Path(sweep.base).expanduser()
        if not path.is_absolute():
            path = sweep_dir / path
        try:
            return load_raw(path)
        except ConfigError as e:
            raise ConfigError([f"base: {m}" for m in e.messages]) from None
    base = copy.deepcopy(sweep.base)
    parent = base.pop("base", None)
    if isinstance(parent, str):
        p = Path(parent).expanduser()
        base = deep_merge(load_raw(p if p.is_absolute() else sweep_dir / p), base)
    return base


def load_sweep(path: str | Path, sets: Iterable[str] | None = None) -> tuple[SweepConfig, dict]:
    """Read a sweep file, apply ``--set``, validate it and resolve its base: ``(sweep, base)``,
    ``base`` the training config with the sweep's ``overrides`` (:func:`validate` checks it)."""
    p = Path(path)
    raw = read_yaml(p, what="sweep")
    if raw is None:
        raise ConfigError(f"{p}: the sweep file is empty")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{p}: a sweep file must be a mapping, got {type(raw).__name__}")
    sweep = parse_sweep(apply_sets(raw, sets))
    if sweep.init and not is_uri(sweep.init):
        sweep.init = str((p.parent / Path(sweep.init).expanduser()).resolve())
    base = resolve_base(sweep, p.parent.resolve())
    try:
        return sweep, apply_overrides(base, sweep.overrides)
    except ConfigError as e:
        raise ConfigError([f"overrides: {m}" for m in e.messages]) from None
