"""Plan a sweep: validate everything and fix what will run and where, without Ray.

:func:`plan` checks the sweep file (schema, search space, every grid point and every
distribution bound against the training-config schema), so that bad input fails in a fraction of
a second with one line per problem. :func:`pack_settings` turns a grid/random sweep into its
settings and packs (:mod:`ct_sweeps.plan.packing`). :class:`RunDir` is the run directory and
what ``run.json`` and ``sweep.yaml`` say about it. Nothing here imports Ray or MLflow.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ct_core.config import Config, ConfigError, safe_load
from ct_core.files import private_dir, short_error
from ct_core.packability import make_packs
from ct_sweeps.plan.packing import PACKS_FILE, PackBook, load_book, setting_traits
from ct_sweeps.plan.schema import SweepConfig, load_sweep, parse_sweep, tracking_uri_problem
from ct_sweeps.plan.space import Space, parse_space, trial_config, validate

__all__ = ["CF_METRICS", "INIT_FILE", "OPTUNA_FILE", "RUN_FILE", "SWEEP_FILE", "Plan", "RunDir"]
__all__ += ["check_init", "check_inputs", "check_storage", "check_tracking_uri"]
__all__ += ["new_run_dir", "pack_settings", "plan", "plan_from"]

CF_METRICS = ("val_validity", "val_cost", "val_implausibility", "val_mmd")
"""Validation-set counterfactual metrics, present only every ``train.eval_every`` epochs."""
KNOWN_METRICS = (
    *"loss class_loss div reg adv train_acc val_acc val_loss mature ce_steps skipped_batches".split(),
    *"time_search time_train time_eval seconds".split(),
    *CF_METRICS,
)
"""The metrics of a training record (``ct_core.training``) a sweep can optimise."""


RUN_FILE = "run.json"
SWEEP_FILE = "sweep.yaml"
OPTUNA_FILE = "optuna_journal.log"
"""An Optuna sweep's study (``optuna.storages.JournalStorage``), for ``optuna-dashboard``."""
INIT_FILE = "init.pt"
"""The weights of a sweep's ``init``, read once: a resumed sweep starts its trials from them
even where the source (a registry alias) has moved on."""
_INFO_LOCK = threading.Lock()


def in_ray_job() -> bool:
    """Whether this process is the entrypoint of a ``ray job submit``."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def default_run_dir(name: str, storage: str | None) -> Path:
    """``storage``, else ``$CT_RUNS_DIR/<name>-<timestamp>`` (default ``./ct_runs``; under a
    Ray job, whose working directory is a temporary copy, ``~/ct_runs``)."""
    if storage:
        return Path(storage).expanduser().resolve()
    root = os.environ.get("CT_RUNS_DIR")
    if not root:
        root = str(Path.home() / "ct_runs") if in_ray_job() else "ct_runs"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (Path(root) / f"{name}-{stamp}").resolve()


@dataclass
class RunDir:
    """A sweep's run directory and what ``run.json`` / ``sweep.yaml`` say about it."""

    path: Path
    info: dict[str, Any]
    sweep: SweepConfig
    base: dict[str, Any]
    space: Space

    @property
    def experiment_path(self) -> Path:
        """Ray Tune's experiment folder (``tune/``)."""
        return self.path / self.info["experiment"]

    def init_state(self) -> Any:
        """The initial weights of a sweep with ``init`` (:data:`INIT_FILE`), else ``None``."""
        from ct_core.sources import load_state

        path = self.path / INIT_FILE
        return load_state(path) if path.exists() else None

    def book(self) -> PackBook | None:
        """The packs of a grid/random sweep (``packs.json``), ``None`` for Optuna."""
        path = self.path / PACKS_FILE
        return load_book(path) if path.exists() else None

    @classmethod
    def load(cls, path: str | Path) -> RunDir:
        p = Path(path).resolve()
        if not (p / RUN_FILE).is_file() or not (p / SWEEP_FILE).is_file():
            raise ConfigError(
                f"{p}: not a sweep run directory (no {RUN_FILE} / {SWEEP_FILE}); "
                "pass the directory that `ct-sweep run` printed"
            )
        try:
            info = json.loads((p / RUN_FILE).read_text())
            if not isinstance(info, dict) or not isinstance(info.get("experiment"), str):
                raise ValueError("expected an object with an 'experiment' entry")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(
                f"{p / RUN_FILE}: damaged ({e}); restore it from a backup, or start the sweep "
                "again in a new directory"
            ) from None
        try:
            sweep = parse_sweep(safe_load((p / SWEEP_FILE).read_text()))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{p / SWEEP_FILE}: damaged ({short_error(e)})") from None
        except ConfigError as e:
            raise ConfigError([f"{p / SWEEP_FILE}: {m}" for m in e.messages]) from None
        if not isinstance(sweep.base, dict):
            raise ConfigError(f"{p / SWEEP_FILE}: damaged (base is not inlined)")
        space = parse_space(sweep.space, sweep.search.algorithm)
        return cls(p, info, sweep, dict(sweep.base), space)

    def save_info(self, **updates: Any) -> None:
        """Update ``run.json`` atomically (the tracking thread writes it too)."""
        with _INFO_LOCK:
            self.info.update(updates)
            tmp = self.path / f".{RUN_FILE}.tmp"
            tmp.write_text(json.dumps(self.info, indent=2))
            os.replace(tmp, self.path / RUN_FILE)


@dataclass
class Plan:
    """A validated sweep, ready to run."""

    sweep: SweepConfig
    base: dict[str, Any]
    space: Space
    base_cfg: Config
    n_trials: int
    """Settings the sweep trains (grid/random), or Optuna trials."""
    init_state: Any = None
    """The weights of ``init`` once :func:`check_init` has read them."""

    def resolved_yaml(self) -> str:
        """The sweep with its base inlined (overrides applied): what ``sweep.yaml`` holds."""
        d = self.sweep.model_dump(mode="json")
        d["base"] = self.base
        d["overrides"] = {}
        return yaml.safe_dump(d, sort_keys=False)


def plan(sweep_file: str | Path, sets: Iterable[str] | None = None) -> Plan:
    """Load and validate a sweep file; raises :class:`ConfigError` (nothing is started)."""
    sweep, base = load_sweep(sweep_file, sets)
    return plan_from(sweep, base)


def plan_from(sweep: SweepConfig, base: dict[str, Any]) -> Plan:
    s = sweep.search
    unknown = [m for m in s.metrics if m not in KNOWN_METRICS]
    if unknown:
        raise ConfigError(
            f"search.metric must be one of {', '.join(KNOWN_METRICS)}, got {unknown[0]!r}"
        )
    space = parse_space(sweep.space, s.algorithm)
    base_cfg = validate(space, base, overrides=[str(k) for k in sweep.overrides])
    needs_eval = [m for m in s.metrics if m in CF_METRICS]
    if needs_eval and base_cfg.train.eval_every == 0 and "train.eval_every" not in sweep.space:
        raise ConfigError(
            f"search.metric {needs_eval[0]!r} is computed only with train.eval_every > 0 "
            "(set it under overrides, e.g. train.eval_every: 5)"
        )
    tc = base_cfg.train
    if needs_eval and 0 < tc.epochs < tc.eval_every and "train.epochs" not in sweep.space:
        raise ConfigError(
            f"train.eval_every ({tc.eval_every}) is larger than train.epochs ({tc.epochs}): "
            f"search.metric {needs_eval[0]!r} would never be computed"
        )
    if tc.device == "cuda" and sweep.resources.gpu == 0 and "train.device" not in sweep.space:
        raise ConfigError(
            "train.device 'cuda' needs resources.gpu > 0 (each trial's share of a GPU, e.g. "
            "0.25), or train.device: auto to use a GPU only where a trial holds one"
        )
    if s.scheduler == "asha" and s.asha.max_t is None:
        s.asha.max_t = base_cfg.train.epochs
    if not space.entries and s.uses_optuna:
        raise ConfigError(f"space: search.algorithm {s.algorithm!r} needs at least one entry")
    return Plan(sweep, base, space, base_cfg, space.num_trials(s.num_samples))


def _variants(p: Plan, prefixes: tuple[str, ...]) -> list[Config]:
    """The base config and the config of each grid point that changes a field under
    ``prefixes``."""
    configs = [p.base_cfg]
    if any(e.key.startswith(prefixes) for e in p.space.entries):
        for point in p.space.grid_points():
            if any(k.startswith(prefixes) for k in point):
                configs.append(trial_config(p.base, point))
    return configs


def check_tracking_uri(uri: str | None, option: str = "--tracking-uri") -> None:
    """``--tracking-uri`` must be a URI MLflow can use (the sweep file's ``tracking.uri`` is
    checked with the schema)."""
    why = tracking_uri_problem(uri) if uri is not None else None
    if why:
        raise ConfigError(f"{option} {why}")


def check_storage(p: Plan, storage: str | None) -> Path:
    """The run directory the sweep would make: one that can be created, and not one that
    already holds a sweep (that one is resumed, not overwritten)."""
    from ct_core.files import check_out_dir

    path = default_run_dir(p.sweep.name, storage or p.sweep.storage)
    option = "--storage" if storage else ("storage" if p.sweep.storage else "run directory")
    check_out_dir(path, option, overwrite=True)  # can be made and written
    _check_new(path, option)
    return path


def _check_new(path: Path, option: str) -> None:
    if (path / SWEEP_FILE).exists() or (path / RUN_FILE).exists():
        raise ConfigError(
            f"{option} {path} already holds a sweep; use `ct-sweep resume {path}` "
            "or choose a new directory"
        )


def check_inputs(p: Plan) -> None:
    """What ``ct train`` would refuse, checked for the base config and each grid point that
    changes ``data.*`` or ``model.*``: an error here, before Ray starts, rather than in every
    trial. The data (:func:`ct_core.data.check_data`: the file, its columns and labels, sizes
    the data can hold), the feature names of ``data.immutable`` / ``increase_only`` /
    ``decrease_only`` (the data are otherwise loaded only in the trials), each
    ``model.factory``'s model (only a sweep that names one imports torch in the driver) and the
    weights of ``init`` (:func:`check_init`)."""
    from ct_core.data import check_data, feature_names

    # torch is imported only where a check needs it: it costs the driver a second before Ray
    # starts, and the driver otherwise needs it only once the first trial has started (the
    # tracking reads the fields of its settings' generators)
    seen: set[str] = set()
    for cfg in _variants(p, ("data.", "model.")):
        data, key = cfg.data, cfg.data.model_dump_json()
        if key not in seen:
            seen.add(key)
            check_data(data)
            fields = (data.immutable, data.increase_only, data.decrease_only)
            try:
                names = feature_names(data) if any(fields) else None
            except ConfigError:
                raise
            except Exception:  # data problems surface in the trial, with its own message
                names = None
            if names is not None:
                from ct_core.constraints import resolve_mutability

                resolve_mutability(names, *fields)
        if cfg.model.factory and key + cfg.model.model_dump_json() not in seen:
            seen.add(key + cfg.model.model_dump_json())
            from ct_core.models import check_factory

            check_factory(cfg)
    check_init(p)


def check_init(p: Plan) -> None:
    """Read the weights of the sweep's ``init`` and check them against the base config and each
    grid point that changes ``data.*`` or ``model.*`` (the data's shape, the model's
    parameters): an error here, before Ray starts, rather than in every trial."""
    if not p.sweep.init:
        return
    from ct_core.data import load_dataset
    from ct_core.sources import initial_model, read_init

    try:
        p.init_state = read_init(p.sweep.init, load_dataset(p.base_cfg.data))
        for cfg in _variants(p, ("data.", "model.")):
            initial_model(p.init_state, cfg, load_dataset(cfg.data))
    except ConfigError as e:
        raise ConfigError([f"init: {m}" for m in e.messages]) from None


def new_run_dir(p: Plan, storage: str | None) -> RunDir:
    """Create the run directory with ``sweep.yaml``, ``run.json`` and, for a sweep with
    ``init``, its weights (:data:`INIT_FILE`)."""
    path = default_run_dir(p.sweep.name, storage or p.sweep.storage)
    option = "--storage" if storage else "storage"
    _check_new(path, option)
    if p.sweep.init and p.init_state is None:
        check_init(p)
    try:
        private_dir(path, option)  # it holds the sweep's Ray token
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot create it ({e.strerror})") from None
    if p.init_state is not None:
        from ct_core.sources import save_state

        save_state(p.init_state, path / INIT_FILE)
    (path / SWEEP_FILE).write_text(p.resolved_yaml())
    info = {"experiment": "tune", "n_trials": p.n_trials, "created": time.time()}
    run = RunDir(path, info, p.sweep, p.base, p.space)
    run.save_info()
    return run


def pack_settings(p: Plan, slots: int, gpu: bool) -> PackBook:
    """A grid/random sweep's settings (:meth:`Space.settings`) and their packs for ``slots``
    trials at once: ``search.pack`` settings per trial, or one each where the sweep does not
    pack (``pack`` 0/1, or an ASHA scheduler, which stops trials one setting at a time)."""
    s = p.sweep.search
    settings = p.space.settings(s.num_samples, s.seed)
    traits = setting_traits(settings, p.base, p.space)
    pack = s.pack if s.packs else 1
    packs = make_packs(*traits, pack, slots, gpu=gpu)
    return PackBook(tuple(settings), tuple(tuple(pk) for pk in packs))
