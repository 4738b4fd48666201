"""Search spaces from the sweep YAML, validated against the training config before Ray starts.

An entry maps a dotted training-config path to

* a list: a grid axis (``grid``/``random``); a categorical choice under Optuna;
* ``{grid: [...]}``: an explicit grid axis (not allowed with Optuna);
* ``{choice: [...]}``: a random categorical choice;
* ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{quniform: [lo, hi, q]}``: floats
  (``quniform`` with integer ``lo`` and ``q`` gives integers);
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

__all__ = ["DISTRIBUTIONS", "GRID_KEY", "Entry", "Space", "parse_space", "trial_config"]

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "quniform", "randint")
GRID_KEY = "grid"
"""Trial-config key holding one enumerated grid point when a grid axis is conditional."""


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


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

    @property
    def encoded(self) -> bool:
        """Optuna categoricals hold only scalars: other values travel as JSON strings."""
        return self.kind == "choice" and not all(_is_scalar(v) for v in self.args)

    def active(self, point: Mapping[str, Any]) -> bool:
        return all(k in point and point[k] in vals for k, vals in self.when)

    def probes(self) -> list[Any]:
        """Values that must all be valid config values: every option, or both bounds."""
        if self.discrete:
            return list(self.args)
        lo, hi = self.args[0], self.args[1]
        return [int(lo), int(hi)] if self.integer else [lo, hi]

    def decode(self, v: Any) -> Any:
        if self.encoded and isinstance(v, str):
            v = json.loads(v)
        if self.integer and isinstance(v, float) and v.is_integer():
            v = int(v)
        return v

    def to_ray(self) -> Any:
        from ray import tune

        lo = self.args[0] if self.args else None
        match self.kind:
            case "grid":
                return tune.grid_search(list(self.args))
            case "choice":
                return tune.choice(list(self.args))
            case "uniform":
                return tune.uniform(lo, self.args[1])
            case "loguniform":
                return tune.loguniform(lo, self.args[1])
            case "quniform":
                if self.integer:
                    return tune.qrandint(int(lo), int(self.args[1]), int(self.args[2]))
                return tune.quniform(lo, self.args[1], self.args[2])
            case "randint":
                return tune.randint(int(lo), int(self.args[1]) + 1)
        raise AssertionError(self.kind)

    def suggest(self, trial: Any) -> Any:
        """Sample with an ``optuna.Trial`` (define-by-run); returns the decoded value."""
        lo = self.args[0] if self.args else None
        match self.kind:
            case "choice" | "grid":
                opts = [json.dumps(v) for v in self.args] if self.encoded else list(self.args)
                return self.decode(trial.suggest_categorical(self.key, opts))
            case "uniform":
                return trial.suggest_float(self.key, lo, self.args[1])
            case "loguniform":
                return trial.suggest_float(self.key, lo, self.args[1], log=True)
            case "quniform":
                if self.integer:
                    return trial.suggest_int(
                        self.key, int(lo), int(self.args[1]), step=int(self.args[2])
                    )
                return trial.suggest_float(self.key, lo, self.args[1], step=self.args[2])
            case "randint":
                return trial.suggest_int(self.key, int(lo), int(self.args[1]))
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
                values[e.key] = e.suggest(trial)
        return None


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
        """Trials a sweep will run: grid points x repeats (grid/random), samples (Optuna)."""
        if self.algorithm.startswith("optuna"):
            return num_samples
        return len(self.grid_points()) * num_samples

    def ray_param_space(self) -> dict[str, Any]:
        """``Tuner(param_space=...)`` for grid/random (Optuna uses :meth:`optuna_space`)."""
        out: dict[str, Any] = {}
        if any(e.when for e in self.grid_entries):
            from ray import tune

            out[GRID_KEY] = tune.grid_search(self.grid_points())
        else:
            out.update({e.key: e.to_ray() for e in self.grid_entries})
        out.update({e.key: e.to_ray() for e in self.sampled_entries})
        return out

    def optuna_space(self) -> OptunaSpace:
        return OptunaSpace(self.entries)

    def resolve(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's Tune config -> the dotted overrides that apply to it (inactive dropped)."""
        flat: dict[str, Any] = {}
        grid = config.get(GRID_KEY)
        if isinstance(grid, Mapping):
            flat.update(grid)
        keys = {e.key: e for e in self.entries}
        for k, v in config.items():
            if k in keys:
                flat[k] = keys[k].decode(v)
        return {k: v for k, v in flat.items() if k not in keys or keys[k].active(flat)}

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


def _attribute(messages: Sequence[str], keys: set[str], where: str = "") -> list[str]:
    """Prefix each config error with the space entry it concerns, or with ``base``."""
    out = []
    for m in messages:
        field = m.split(":", 1)[0].split(" ", 1)[0]
        out.append(f"space.{field}{where}: {m}" if field in keys else f"base: {m}")
    return list(dict.fromkeys(out))


def validate(space: Space, base: Mapping[str, Any], max_points: int = 100_000) -> Config:
    """Check every value each entry can take and every grid point against the config schema.

    Raises :class:`ConfigError` whose lines name the offending field (``space.generator.tau:
    generator.tau: must be in (0, 1), got 1.5``; ``base: ...`` for a field the space does not
    touch). Returns the config of the first grid point.
    """
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
                errors.extend(_attribute(err.messages, keys))
                break
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    for p in points:
        try:
            trial_config(base, {**probe, **p})
        except ConfigError as err:
            raise ConfigError(_attribute(err.messages, keys, f" (at {p})")) from None
    return trial_config(base, ctx)
