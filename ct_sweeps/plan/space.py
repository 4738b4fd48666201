"""Search spaces from the sweep YAML, validated against the training config before Ray starts.

An entry maps a dotted training-config path to

* a list: a grid axis (``grid``/``random``); a categorical choice under Optuna;
* ``{grid: [...]}``: an explicit grid axis (not allowed with Optuna);
* ``{choice: [...]}``: a random categorical choice;
* ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``: floats; ``{quniform: [lo, hi, q]}``:
  one of ``lo, lo + q, ...`` up to ``hi`` (integers where ``lo`` and ``q`` are);
* ``{randint: [lo, hi]}``: integers, both ends included.

Any mapping entry may add ``when: {other.path: value-or-list}``, which makes it conditional: it
is only sampled (Optuna) or applied (grid/random) when every named entry takes one of the listed
values, otherwise the base value stays. ``when`` may only name unconditional list/choice entries,
e.g. ``generator.lambda_energy: {loguniform: [0.1, 20], when: {generator.type: ecco}}``.
Conditional grid axes only expand where their condition holds, so they shrink the grid.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ct_core.config import Config, ConfigError, apply_overrides, parse_config

__all__ = ["DISTRIBUTIONS", "Entry", "RandomTrial", "Space", "parse_space"]
__all__ += ["resolve_setting", "trial_config", "trial_params"]

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "quniform", "randint")


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


class RandomTrial:
    """The ``suggest_*`` calls of an ``optuna.Trial``, drawn from a seeded
    ``numpy.random.Generator`` (the plan imports no Optuna); a ``step`` picks one of the values
    ``lo, lo + step, ...`` up to ``hi``, all equally likely (as Optuna does)."""

    def __init__(self, rng: Any):
        self.rng = rng

    def suggest_categorical(self, key: str, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def suggest_float(
        self, key: str, lo: float, hi: float, log: bool = False, step: float | None = None
    ) -> float:
        if step:
            n = int(math.floor((hi - lo) / step + 1e-9)) + 1
            return round(lo + int(self.rng.integers(n)) * step, 12)
        if log:
            return float(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))
        return float(self.rng.uniform(lo, hi))

    def suggest_int(self, key: str, lo: int, hi: int, step: int = 1) -> int:
        return lo + int(self.rng.integers((hi - lo) // step + 1)) * step


@dataclass(frozen=True)
class Entry:
    """One swept config path. ``args``: the values (grid/choice) or the bounds."""

    key: str
    kind: str
    args: tuple
    when: tuple[tuple[str, tuple], ...] = ()
    integer: bool = False

    @property
    def discrete(self) -> bool:
        return self.kind in ("grid", "choice")

    def active(self, point: Mapping[str, Any]) -> bool:
        return all(k in point and point[k] in vals for k, vals in self.when)

    def probes(self) -> list[Any]:
        """Values that must all be valid config values: every option, or both bounds."""
        if self.discrete:
            return list(self.args)
        lo, hi = self.args[0], self.args[1]
        return [int(lo), int(hi)] if self.integer else [lo, hi]

    def decode(self, v: Any) -> Any:
        """A value as a trial's config holds it (a JSON string for a non-scalar Optuna choice,
        a float for an integer) -> the config value."""
        if self.discrete and isinstance(v, str) and not all(_is_scalar(a) for a in self.args):
            v = json.loads(v)
        if self.integer and isinstance(v, float) and v.is_integer():
            v = int(v)
        return v

    def sample(self, trial: Any) -> Any:
        """The one place a distribution is sampled, through an ``optuna.Trial`` (Optuna sweeps)
        or a :class:`RandomTrial` (grid/random sweeps). Optuna's categoricals hold only
        scalars, so other options travel as JSON strings."""
        a, key = self.args, self.key
        match self.kind:
            case "grid" | "choice" if all(_is_scalar(v) for v in a):
                return trial.suggest_categorical(key, list(a))
            case "grid" | "choice":
                return json.loads(trial.suggest_categorical(key, [json.dumps(v) for v in a]))
            case "uniform" | "loguniform":
                return trial.suggest_float(key, a[0], a[1], log=self.kind == "loguniform")
            case "quniform" if self.integer:
                return trial.suggest_int(key, int(a[0]), int(a[1]), step=int(a[2]))
            case "quniform":
                return trial.suggest_float(key, a[0], a[1], step=a[2])
            case "randint":
                return trial.suggest_int(key, int(a[0]), int(a[1]))
        raise AssertionError(self.kind)

    def describe(self) -> Any:
        body: dict[str, Any] = {self.kind: list(self.args)}
        if self.when:
            body["when"] = {k: list(v) for k, v in self.when}
        return body


class OptunaSpace:
    """Define-by-run space for ``OptunaSearch``: conditional entries are sampled only when
    active, so TPE/GP never see parameters that do not apply to a trial."""

    def __init__(self, entries: Sequence[Entry]):
        self.entries = sorted(entries, key=lambda e: bool(e.when))

    def __call__(self, trial: Any) -> None:
        values: dict[str, Any] = {}
        for e in self.entries:
            if e.active(values):
                values[e.key] = e.sample(trial)


@dataclass
class Space:
    entries: list[Entry] = field(default_factory=list)
    algorithm: str = "grid"

    def __getitem__(self, key: str) -> Entry:
        return next(e for e in self.entries if e.key == key)

    @property
    def grid_entries(self) -> list[Entry]:
        return [e for e in self.entries if e.kind == "grid"]

    @property
    def sampled_entries(self) -> list[Entry]:
        return [e for e in self.entries if e.kind != "grid"]

    def grid_points(self) -> list[dict[str, Any]]:
        """Every grid point (dotted path -> value); ``[{}]`` without grid axes."""
        plain = [e for e in self.grid_entries if not e.when]
        cond = [e for e in self.grid_entries if e.when]
        points = [
            dict(zip([e.key for e in plain], combo))
            for combo in itertools.product(*[e.args for e in plain])
        ]
        for e in cond:
            expanded: list[dict[str, Any]] = []
            for p in points:
                if e.active(p):
                    expanded.extend({**p, e.key: v} for v in e.args)
                else:
                    expanded.append(p)
            points = expanded
        return points

    def num_trials(self, num_samples: int) -> int:
        """Settings a sweep runs: grid points x repeats (grid/random), samples (Optuna)."""
        if self.algorithm.startswith("optuna"):
            return num_samples
        return len(self.grid_points()) * num_samples

    def settings(self, num_samples: int, seed: int | None) -> list[dict[str, Any]]:
        """Every setting of a grid/random sweep (dotted path -> value): the grid points, each
        with its distributions drawn by a generator seeded with ``search.seed``, repeated
        ``num_samples`` times. Packed or not, a sweep trains these same settings."""
        import numpy as np

        trial = RandomTrial(np.random.default_rng(seed))
        out: list[dict[str, Any]] = []
        for _ in range(num_samples):
            for point in self.grid_points():
                out.append({**point, **{e.key: e.sample(trial) for e in self.sampled_entries}})
        return out

    def optuna_space(self) -> OptunaSpace:
        return OptunaSpace(self.entries)

    def resolve(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A setting (or an Optuna trial's config) -> the dotted overrides that apply to it
        (entries whose ``when`` does not hold are dropped)."""
        keys = {e.key: e for e in self.entries}
        flat = {k: keys[k].decode(v) for k, v in config.items() if k in keys}
        return {k: v for k, v in flat.items() if keys[k].active(flat)}

    def describe(self) -> dict[str, Any]:
        return {e.key: e.describe() for e in self.entries}


# ----------------------------------------------------------------------------------------------
# Parsing


def _known_fields() -> dict[str, Any]:
    return Config().flat()


def _suggest(key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"space.{key}: bounds must be finite numbers, got {v!r}")
    return v


def _parse_entry(key: str, spec: Any, algorithm: str, known: Mapping[str, Any]) -> Entry:
    optuna = algorithm.startswith("optuna")
    int_field = isinstance(known.get(key), int) and not isinstance(known.get(key), bool)
    when: tuple[tuple[str, tuple], ...] = ()
    if isinstance(spec, list):
        kind, args = ("choice" if optuna else "grid"), spec
    elif isinstance(spec, Mapping):
        spec = dict(spec)
        raw_when = spec.pop("when", None)
        kinds = [k for k in spec if k in DISTRIBUTIONS]
        unknown = [k for k in spec if k not in DISTRIBUTIONS]
        if unknown or len(kinds) != 1:
            raise ConfigError(
                f"space.{key}: a mapping needs exactly one of {', '.join(DISTRIBUTIONS)}"
                f" (plus an optional when), got {', '.join(map(str, spec)) or 'nothing'}"
            )
        kind, args = kinds[0], spec[kinds[0]]
        if raw_when is not None:
            if not isinstance(raw_when, Mapping) or not raw_when:
                raise ConfigError(f"space.{key}.when must map config paths to values")
            when = tuple(
                (str(k), tuple(v) if isinstance(v, list) else (v,)) for k, v in raw_when.items()
            )
    else:
        raise ConfigError(
            f"space.{key}: must be a list (grid axis) or a mapping with one of "
            f"{', '.join(DISTRIBUTIONS)}, got {spec!r}; put fixed values under overrides"
        )
    if not isinstance(args, list) or not args:
        raise ConfigError(f"space.{key}.{kind}: must be a non-empty list, got {args!r}")
    if kind == "grid" and optuna:
        raise ConfigError(
            f"space.{key}: grid axes cannot be combined with search.algorithm {algorithm!r}; "
            "use a list or {choice: [...]} (a categorical parameter) instead"
        )
    if kind in ("uniform", "loguniform", "randint"):
        if len(args) != 2:
            raise ConfigError(f"space.{key}.{kind}: expects [low, high], got {args!r}")
    if kind == "quniform" and len(args) != 3:
        raise ConfigError(f"space.{key}.quniform: expects [low, high, step], got {args!r}")
    integer = kind == "randint"
    if kind not in ("grid", "choice"):
        nums = [_number(key, v) for v in args]
        if nums[0] >= nums[1]:
            raise ConfigError(f"space.{key}.{kind}: low must be < high, got {args!r}")
        if kind == "loguniform" and nums[0] <= 0:
            raise ConfigError(f"space.{key}.loguniform: low must be > 0, got {nums[0]!r}")
        if kind == "quniform":
            if nums[2] <= 0:
                raise ConfigError(f"space.{key}.quniform: step must be > 0, got {nums[2]!r}")
            integer = all(float(x).is_integer() for x in nums)
        if kind == "randint" and not all(float(x).is_integer() for x in nums):
            raise ConfigError(f"space.{key}.randint: bounds must be integers, got {args!r}")
        if int_field and not integer:
            raise ConfigError(
                f"space.{key}: {key} is an integer field; use randint, quniform with an "
                f"integer step, or a list, not {kind}"
            )
    return Entry(key=key, kind=kind, args=tuple(args), when=when, integer=integer)


def parse_space(raw: Mapping[str, Any] | None, algorithm: str) -> Space:
    """Parse the ``space:`` mapping (raises :class:`ConfigError` naming the entry)."""
    known = _known_fields()
    errors: list[str] = []
    entries: list[Entry] = []
    for key, spec in (raw or {}).items():
        key = str(key)
        if key not in known:
            errors.append(f"space.{key}: unknown config field{_suggest(key, known)}")
            continue
        try:
            entries.append(_parse_entry(key, spec, algorithm, known))
        except ConfigError as e:
            errors.extend(e.messages)
    by_key = {e.key: e for e in entries}
    for e in entries:
        for k, vals in e.when:
            other = by_key.get(k)
            if other is None or not other.discrete or other.when:
                errors.append(
                    f"space.{e.key}.when: {k} must be an unconditional list or choice entry "
                    "of this space"
                )
            elif e.kind == "grid" and other.kind != "grid":
                errors.append(f"space.{e.key}.when: a grid axis can only depend on grid axes")
            elif not any(v in other.args for v in vals):
                errors.append(
                    f"space.{e.key}.when: {k} never takes {list(vals)!r} "
                    f"(its values: {list(other.args)!r})"
                )
    if errors:
        raise ConfigError(errors)
    return Space(entries=entries, algorithm=algorithm)


# ----------------------------------------------------------------------------------------------
# Validation against the training config


def trial_config(base: Mapping[str, Any], params: Mapping[str, Any]) -> Config:
    """The validated training config of one trial: ``base`` with dotted ``params`` applied."""
    return parse_config(apply_overrides(base, dict(params)))


def trial_params(
    space: Space,
    base: Mapping[str, Any],
    config: Mapping[str, Any],
    cpus: float = 1.0,
    gpus: float | None = None,
) -> dict[str, Any]:
    """The dotted overrides of one setting in a trial that holds ``cpus`` and ``gpus``: its
    swept values, and one torch thread per CPU (``train.threads``) unless the sweep sets that
    itself. A trial that holds no GPU (``gpus`` 0) trains on the CPU where ``train.device`` is
    ``auto``: Ray leaves every GPU of the machine visible to a trial that asked for none."""
    params = space.resolve(config)
    if "train.threads" not in params and "threads" not in (base.get("train") or {}):
        params = {"train.threads": max(1, int(cpus)), **params}
    device = params.get("train.device", (base.get("train") or {}).get("device", "auto"))
    if gpus == 0 and device == "auto":
        params = {**params, "train.device": "cpu"}
    return params


def resolve_setting(
    space: Space,
    base: Mapping[str, Any],
    config: Mapping[str, Any],
    cpus: float = 1.0,
    gpus: float | None = None,
) -> Config:
    """The config a setting trains with (:func:`trial_params`): what the trial trains and what
    MLflow shows for it both come from here."""
    return trial_config(base, trial_params(space, base, config, cpus, gpus))


def _attribute(
    messages: Sequence[str], keys: set[str], where: str = "", overrides: Sequence[str] = ()
) -> list[str]:
    """Prefix each config error with the space entry it concerns, ``overrides`` (a field the
    sweep's ``overrides`` set) or ``base``."""
    out = []
    for m in messages:
        field = m.split(":", 1)[0].split(" ", 1)[0]
        if field in keys:
            out.append(f"space.{field}{where}: {m}")
        elif any(field == k or field.startswith(f"{k}.") for k in overrides):
            out.append(f"overrides: {m}")
        else:
            out.append(f"base: {m}")
    return list(dict.fromkeys(out))


def validate(
    space: Space,
    base: Mapping[str, Any],
    max_points: int = 100_000,
    overrides: Sequence[str] = (),
) -> Config:
    """Check every value each entry can take and every grid point against the config schema;
    the :class:`ConfigError` lines name the field (``space.generator.tau: generator.tau: must be
    in (0, 1), got 1.5``, or ``base: ...``). Returns the config of the first grid point."""
    keys = {e.key for e in space.entries}
    points = space.grid_points()
    if len(points) > max_points:
        raise ConfigError(f"space: the grid has {len(points)} points, more than {max_points}")
    probe = {e.key: e.probes()[0] for e in space.sampled_entries if not e.when}
    ctx = {**probe, **points[0]}
    errors: list[str] = []
    for e in space.entries:
        for v in e.probes():
            try:
                trial_config(base, {**ctx, e.key: v})
            except ConfigError as err:
                errors.extend(_attribute(err.messages, keys, "", overrides))
                break
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    for p in points:
        try:
            trial_config(base, {**probe, **p})
        except ConfigError as err:
            raise ConfigError(_attribute(err.messages, keys, f" (at {p})", overrides)) from None
    return trial_config(base, ctx)
