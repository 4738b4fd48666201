"""The sweep as a Ray Tune experiment in ``RUN_DIR/tune/``: a grid over the packs of
``packs.json`` (``{"pack": j}``) or Optuna's suggestions, and one ``trial_<id>/`` folder per trial
(``result.json``, ``params.json``, ``error.txt``, checkpoints): the source of truth for reports,
``resume`` and ``sync-mlflow``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from ray import tune

from ct_sweeps.plan import OPTUNA_FILE, Plan, RunDir
from ct_sweeps.run.trainable import TrialSpec, pack_trainable

__all__ = ["ResultLog", "build_tuner", "restore_tuner", "scheduler", "search_alg"]


class ResultLog(tune.Callback):
    """Appends every result to ``result.json`` (and writes ``params.json``) in the trial's folder
    in the run directory as it arrives, so that what a resumed or reported sweep reads is never
    behind what the driver received (Tune's own logger writes to a staging folder that reaches
    the run directory only at Tune's next experiment snapshot)."""

    def __init__(self) -> None:
        self._files: dict[str, IO[str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"_files": {}}  # Tune pickles its callbacks with the experiment

    def _file(self, trial: Any) -> IO[str]:
        if trial.trial_id not in self._files:
            folder = Path(trial.path)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "params.json").write_text(json.dumps(trial.config, default=str, indent=1))
            self._files[trial.trial_id] = (folder / "result.json").open("a")
        return self._files[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._file(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        f = self._file(trial)
        f.write(json.dumps(result, default=str) + "\n")
        f.flush()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        f = self._files.pop(trial.trial_id, None)
        if f is not None:
            f.close()

    on_trial_error = on_trial_complete


def search_alg(p: Plan, run: RunDir) -> Any:
    """Optuna's sampler for ``optuna-*`` sweeps, its study named by the sweep and kept in the
    run directory (``optuna-dashboard RUN_DIR/optuna_journal.log``); ``None`` (Tune's grid
    over packs) otherwise."""
    s = p.sweep.search
    if not s.uses_optuna:
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from ct_sweeps.run.searchers import CtOptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if s.algorithm == "optuna-gp":
        sampler = optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
    else:
        sampler = optuna.samplers.TPESampler(
            seed=s.seed, n_startup_trials=s.n_startup_trials, multivariate=True
        )
    # a define-by-run space never receives Tune's metric/mode: pass them here
    metric, mode = (s.metrics, s.modes) if s.multi_objective else (s.metric, s.mode)
    storage = JournalStorage(JournalFileBackend(str(run.path / OPTUNA_FILE)))
    return CtOptunaSearch(
        space=p.space.optuna_space(),
        metric=metric,
        mode=mode,
        sampler=sampler,
        study_name=p.sweep.name,
        storage=storage,
    )


def scheduler(p: Plan) -> Any:
    s = p.sweep.search
    if s.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",  # not training_iteration: a restored trial reports an epoch again
        max_t=s.asha.max_t,
        grace_period=s.asha.grace_period,
        reduction_factor=s.asha.reduction_factor,
    )


def _trainable(p: Plan, spec: TrialSpec) -> Any:
    r = p.sweep.resources
    res = {"cpu": r.cpu, "gpu": r.gpu} if r.gpu else {"cpu": r.cpu}
    return tune.with_resources(tune.with_parameters(pack_trainable, spec=spec), res)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def build_tuner(
    p: Plan, run: RunDir, spec: TrialSpec, callbacks: list[Any], verbose: bool = False
) -> Any:
    """The sweep's Tune experiment; ``verbose``: Tune's own status tables on the console."""
    _console(verbose)
    s = p.sweep.search
    single = not s.multi_objective
    param_space = _param_space(spec)
    num_samples = 1 if spec.book is not None else s.num_samples
    tune_config = tune.TuneConfig(
        metric=s.metrics[0] if single else None,
        mode=s.modes[0] if single else None,
        search_alg=search_alg(p, run),
        scheduler=scheduler(p),
        num_samples=num_samples,
        max_concurrent_trials=s.max_concurrent,
        reuse_actors=True,
        trial_dirname_creator=_trial_dirname,
    )
    run_config = tune.RunConfig(
        name=run.info["experiment"],
        storage_path=str(run.path),
        failure_config=tune.FailureConfig(max_failures=p.sweep.max_failures),
        # every checkpoint is kept: after a driver is killed, Tune restores a trial from the
        # checkpoint its last snapshot names, which pruning may already have deleted
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=callbacks,
        verbose=1 if verbose else 0,
    )
    trainable = _trainable(p, spec)
    return tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
    )


def _console(verbose: bool) -> None:
    """Quiet: Tune prints nothing (the sweep's own progress line replaces its tables). Its new
    output engine prints its experiment's settings even when silent; the older one
    (``RAY_AIR_NEW_OUTPUT=0``, documented) does not."""
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"


def restore_tuner(
    p: Plan, run: RunDir, spec: TrialSpec, retry_errored: bool, verbose: bool = False
) -> Any:
    """The interrupted experiment, to go on with (its callbacks are the ones it was built with,
    unpickled from Tune's experiment state)."""
    _console(verbose)
    exp, trainable = str(run.experiment_path), _trainable(p, spec)
    # the param space is given again, as Tune allows: a tuner file a full disk cut short would
    # otherwise come back with an empty one, and new trials without their pack
    return tune.Tuner.restore(
        exp,
        trainable,
        resume_unfinished=True,
        resume_errored=retry_errored,
        param_space=_param_space(spec),
    )


def _param_space(spec: TrialSpec) -> dict[str, Any]:
    """Tune's space: one grid point per pack of a grid/random sweep; empty for Optuna (its
    searcher suggests the settings)."""
    if spec.book is None:
        return {}
    return {"pack": tune.grid_search(list(range(len(spec.book))))}
