"""The Ray Tune function trainable: one trial = one :class:`ct_core.training.Trainer` run.

Each epoch's record is reported to Tune; every ``checkpoint_every`` epochs, and always after the
last one, the trainer's state dict (``state.pt``, plus the final model as ``model.pt``) is saved
as the trial's checkpoint, from which a restarted trial resumes (``tune.get_checkpoint()``).
With ``reuse_actors=True`` one worker runs many trials, so the data set is cached per process
and nothing else is kept between trials.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ct_sweeps.space import Space, trial_config

__all__ = [
    "CF_METRICS",
    "TrialSpec",
    "ct_trainable",
    "load_trainer_class",
    "resolve_trial",
    "trial_configs",
    "trial_params",
]

CF_METRICS = ("val_validity", "val_cost", "val_implausibility", "val_mmd")
"""Validation-set counterfactual metrics, present only every ``train.eval_every`` epochs."""

STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"

_DATA_CACHE: dict[str, Any] = {}
log = logging.getLogger("ct_sweeps")


WORKER_IMPORTS = ("torch", "ct_core.pack", "ct_core.data")
"""What a trial imports first (about 1.2 s on a busy 2-core machine, most of it torch)."""


def _import_ahead() -> threading.Thread | None:
    """In a Ray worker process, import :data:`WORKER_IMPORTS` on a background thread.

    Tune creates a trial's actor, which loads this module, and only then sends it the trial,
    after round trips through the driver's event loop (about a second at a sweep's start):
    the imports overlap those. The trial's own ``import torch`` waits on the module's import lock
    until this thread is done. Nothing happens in the driver (which never imports torch) or
    outside Ray."""
    ray = sys.modules.get("ray")
    try:
        # is_initialized first: get_runtime_context() would start a Ray in a bare process
        in_worker = (
            ray is not None
            and ray.is_initialized()
            and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
        )
    except Exception:
        in_worker = False
    if not in_worker:
        return None

    def target() -> None:
        for name in WORKER_IMPORTS:
            try:
                importlib.import_module(name)
            except Exception:  # the trial's own import reports it
                return

    thread = threading.Thread(target=target, name="ct-import-ahead", daemon=True)
    thread.start()
    return thread


_IMPORT_AHEAD = _import_ahead()


def imports_ahead_done() -> None:
    """Wait for :func:`_import_ahead` (a trial's first line): two threads importing the same
    packages at once can see each other's half-initialised modules."""
    if _IMPORT_AHEAD is not None:
        _IMPORT_AHEAD.join()


@dataclass(frozen=True)
class TrialSpec:
    """What every trial shares (sent once through the object store by ``tune.with_parameters``)."""

    base: dict[str, Any]
    space: Space
    checkpoint_every: int = 0
    carry: tuple[str, ...] = ()
    """Search metrics whose last value is repeated until recomputed (CF metrics)."""
    trainer: str = "ct_core.training:Trainer"
    extra: dict[str, Any] = field(default_factory=dict)


def load_trainer_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def trial_params(
    spec: TrialSpec, config: Mapping[str, Any], cpus: float = 1.0, gpus: float | None = None
) -> dict[str, Any]:
    """The dotted overrides of one trial: its sampled values, and one torch thread per CPU it
    holds (``train.threads``) unless the sweep sets that itself. A trial that holds no GPU
    (``gpus`` 0) trains on the CPU where ``train.device`` is ``auto``: Ray leaves every GPU of
    the machine visible to a trial that asked for none, and it would otherwise take one."""
    params = spec.space.resolve(config)
    if "train.threads" not in params and "train.threads" not in _flat_keys(spec.base):
        params = {"train.threads": max(1, int(cpus)), **params}
    device = params.get("train.device", (spec.base.get("train") or {}).get("device", "auto"))
    if gpus == 0 and device == "auto":
        params = {**params, "train.device": "cpu"}
    return params


def _flat_keys(d: Mapping[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flat_keys(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


def _dataset(cfg: Any) -> Any:
    """Load a trial's data once per worker process (keyed by the data config)."""
    key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
    if key not in _DATA_CACHE:
        from ct_core.data import load_dataset

        _DATA_CACHE.clear()  # one data set per worker is enough
        _DATA_CACHE[key] = load_dataset(cfg.data)
    return _DATA_CACHE[key]


def _trial_resources() -> tuple[float, float | None]:
    """The CPUs and GPUs this Tune trial holds; ``(1.0, None)`` outside a Tune session."""
    from ray import tune

    try:
        res = tune.get_context().get_trial_resources().required_resources
    except Exception:  # outside a Tune session
        return 1.0, None
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))


def resolve_trial(
    spec: TrialSpec, config: Mapping[str, Any], cpus: float = 1.0, gpus: float | None = None
) -> Any:
    """The config a setting trains with in a trial holding ``cpus`` and ``gpus``: the base, its
    sampled values and the trial's resources (:func:`trial_params`). The trials and the params
    MLflow shows for them both come from here."""
    return trial_config(spec.base, trial_params(spec, config, cpus, gpus))


def trial_configs(spec: TrialSpec, configs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The configs of the settings a Tune trial trains (one, or a pack's), each with the trial's
    resources (:func:`trial_params`: threads, device), and torch's threads set to the CPUs the
    trial holds."""
    import torch

    cpus, gpus = _trial_resources()
    torch.set_num_threads(max(1, int(cpus)))
    return [resolve_trial(spec, c, cpus, gpus) for c in configs]


def _epoch_of(state: Any) -> int:
    """The epoch a trainer state (or a pack's list of them) was saved at."""
    states = state if isinstance(state, list) else [state]
    return max((int(s.get("epoch", 0)) for s in states if isinstance(s, dict)), default=0)


def _trial_storage_dir() -> Path | None:
    """The trial's folder in the sweep's storage, where a local path (the checkpoints live
    there); ``None`` elsewhere (cloud storage) or outside a Tune session."""
    try:
        from ray.train._internal.session import get_session

        path = Path(get_session().storage.trial_fs_path)
    except Exception:
        return None
    return path if path.is_dir() else None


def _load_state(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def newest_state(trial_dir: Path, filename: str, skip: str | None = None) -> Any:
    """The state with the highest epoch among the trial folder's ``checkpoint_*/filename``
    (``skip``: a checkpoint folder name to leave out), or ``None``; a file cut short by a
    crash is passed over."""
    best = None
    for p in trial_dir.glob("checkpoint_*"):
        if p.name == skip:
            continue
        try:
            state = _load_state(p / filename)
        except Exception:  # missing, or cut short by the crash
            continue
        if best is None or _epoch_of(state) > _epoch_of(best):
            best = state
    return best


def restore_state(ckpt: Any, filename: str, trial_dir: Path | None = None) -> Any:
    """The newest state this trial saved, or ``None`` to start afresh.

    That is Tune's checkpoint ``ckpt``, or a later checkpoint in the trial's folder that Tune's
    last experiment snapshot does not list yet: a driver or node killed after the checkpoint was
    persisted, before the snapshot recorded it (then ``ckpt`` can be ``None`` too, for a trial
    that had not started by the last snapshot). Without this a trial that had finished just
    before a driver kill would retrain. Training is deterministic given a state, so resuming
    from the later one changes nothing but the time."""
    state, here = None, None
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = _load_state(Path(d) / filename)
        here = Path(str(ckpt.path))
        trial_dir = here.parent if here.is_dir() else None
    if trial_dir is None:  # remote storage: Tune's checkpoint is all there is
        return state
    later = newest_state(trial_dir, filename, skip=here.name if here else None)
    if later is None or _epoch_of(later) <= _epoch_of(state):
        return state
    log.info("resuming from epoch %d, newer than Tune's checkpoint", _epoch_of(later))
    return later


def report_with_checkpoint(result: dict[str, Any], write: Any) -> None:
    """``tune.report(result)`` with a checkpoint: a temporary folder that ``write(folder)``
    fills, which Tune persists to the trial's storage."""
    from ray import tune
    from ray.tune import Checkpoint

    with tempfile.TemporaryDirectory(prefix="ct-ckpt-") as d:
        write(d)
        tune.report(result, checkpoint=Checkpoint.from_directory(d))


def ct_trainable(config: dict[str, Any], spec: TrialSpec) -> None:
    """Train one setting and report every epoch (Tune function API)."""
    imports_ahead_done()
    import torch
    from ray import tune

    from ct_core.models import save_model

    # one line per checkpoint from every worker drowns Tune's progress table
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    (cfg,) = trial_configs(spec, [config])
    data = _dataset(cfg)

    state = restore_state(tune.get_checkpoint(), STATE_FILE, _trial_storage_dir())

    trainer = load_trainer_class(spec.trainer)(cfg, data=data, checkpoint=state)
    last: dict[str, float] = {}
    eval_epoch = 0.0

    def metrics_of(record: dict[str, Any]) -> dict[str, float]:
        """The record as reported: CF metrics carried from the last epoch that computed them."""
        nonlocal eval_epoch
        metrics = {key: float(v) for key, v in record.items()}
        if any(m in record for m in CF_METRICS):
            eval_epoch = float(metrics["epoch"])
        for m in spec.carry:
            if m in metrics:
                last[m] = metrics[m]
            elif m in last:
                metrics[m] = last[m]
        metrics["eval_epoch"] = eval_epoch
        return metrics

    epochs = cfg.train.epochs
    k = spec.checkpoint_every

    def report(metrics: dict[str, float], save: bool, final: bool) -> None:
        if not save:
            tune.report(metrics)
            return

        def write(d: str) -> None:
            torch.save(trainer.state_dict(), os.path.join(d, STATE_FILE))
            if final:
                save_model(
                    trainer.model,
                    cfg,
                    os.path.join(d, MODEL_FILE),
                    n_features=int(data.n_features),
                    n_classes=int(data.n_classes),
                )

        report_with_checkpoint(metrics, write)

    restored = [metrics_of(h) for h in getattr(trainer, "history", [])]
    if state is not None and restored:
        # The checkpoint's own epoch may never have reached the driver (a node that died
        # between persisting the checkpoint and the driver taking the result): report it
        # again; results and MLflow keep one record per epoch. A trial restored at its last
        # epoch ends here, with its final checkpoint.
        done = int(restored[-1]["epoch"]) >= epochs
        report(restored[-1], save=done, final=done)
    for record in trainer.run():
        metrics = metrics_of(record)
        epoch = int(metrics["epoch"])
        loss = metrics.get("loss", 0.0)
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}: loss={loss}")
        final = epoch >= epochs
        report(metrics, save=final or bool(k and epoch % k == 0), final=final)
