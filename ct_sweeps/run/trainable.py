"""The Ray Tune function trainable: one trial trains a pack of K >= 1 settings.

A trial's settings are its pack's (grid/random) or its own config (Optuna). It reports
``{"epoch": e, "settings": {"<k>": [record, ...]}, <metric>: best}``: each setting's epoch
records since the last report (``failed`` holds the reason in the epoch a setting fails), and the
best live setting's last value of the search metric for Tune's searchers and schedulers. Packed
sweeps report every ``report_s`` seconds (a Tune round trip per epoch costs more than a pack's
epoch), the others every epoch, so that ASHA and Optuna see each. The checkpoint (every
``checkpoint_every`` epochs and at the end) holds the K trainer states, and at the end one
``model_<k>.pt`` per finished setting. A trial whose settings have all failed fails, so that
Tune retries it and records its error. Every ``ct_core`` training call is in :func:`make_trainer`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ct_sweeps.plan.packing import PackBook, settings_of
from ct_sweeps.plan.space import Space, resolve_setting

__all__ = ["STATES_FILE", "TrialSpec", "make_trainer", "model_file", "newest_state"]
__all__ += ["pack_trainable", "restore_state"]

STATES_FILE = "states.pt"
_DATA: dict[str, Any] = {}


def model_file(k: int) -> str:
    """The final model of setting ``k`` in a trial's last checkpoint."""
    return f"model_{k:02d}.pt"


@dataclass(frozen=True)
class TrialSpec:
    """What every trial shares (sent once through Ray's object store)."""

    base: dict[str, Any]
    space: Space
    book: PackBook | None
    experiment_path: str
    """Tune's experiment folder, which holds ``trial_<id>/`` (its checkpoints)."""
    checkpoint_every: int = 0
    metric: str | None = None
    mode: str = "max"
    report_s: float = 0.0
    init: Any = None
    """The initial weights of every setting (a state dict) where the sweep fine-tunes."""


def make_trainer(
    cfgs: Sequence[Any],
    data: Any,
    states: Sequence[dict[str, Any]] | None,
    init: dict[str, Any] | None = None,
) -> Any:
    """The trainer of a trial's K >= 1 settings (they share a pack key,
    :mod:`ct_sweeps.plan.packing`): ``ct_core.training.PackTrainer``, every setting starting
    from the weights ``init`` where given."""
    from ct_core.training import PackTrainer

    models = None
    if init is not None and states is None:
        from ct_core.sources import initial_models

        models = initial_models(init, cfgs, data)
    return PackTrainer(list(cfgs), data=data, checkpoints=states, models=models)


def _dataset(cfg: Any) -> Any:
    """A trial's data, loaded once per worker process (Tune reuses the workers)."""
    key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
    if key not in _DATA:
        from ct_core.data import load_dataset

        _DATA.clear()
        _DATA[key] = load_dataset(cfg.data)
    return _DATA[key]


def _load(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def newest_state(trial_dir: Path) -> Any:
    """The trainer states with the highest epoch among a trial folder's checkpoints, or
    ``None``; a file cut short by a crash is passed over."""
    found = []
    for p in Path(trial_dir).glob(f"checkpoint_*/{STATES_FILE}"):
        try:
            states = _load(p)
            found.append((max(int(s.get("epoch", 0)) for s in states), p.parent.name, states))
        except Exception:  # cut short
            continue
    return max(found, key=lambda f: f[:2])[2] if found else None


def restore_state(ckpt: Any, trial_dir: Path) -> Any:
    """The newest states this trial saved, or ``None`` to start afresh: the newest checkpoint in
    the trial's folder, which can be later than the one Tune's last experiment snapshot names (a
    driver killed after the checkpoint was written, before the snapshot recorded it; otherwise a
    trial that finished just before the kill would train again), or Tune's checkpoint ``ckpt``
    where this worker cannot see the folder."""
    if Path(trial_dir).is_dir():
        return newest_state(trial_dir)
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return _load(Path(d) / STATES_FILE)


def _clean(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A record as Tune stores it: floats, and the failure reason as text."""
    return {
        k: (v if isinstance(v, str) else float(v))
        for k, v in rec.items()
        if isinstance(v, str | bool | int | float)
    }


def pack_trainable(config: dict[str, Any], spec: TrialSpec) -> None:
    """Train a trial's settings, reporting their epoch records to Tune (function API)."""
    started = time.time()
    import torch
    from ray import tune
    from ray.tune import Checkpoint

    from ct_core.models import save_model

    # one log line per checkpoint from every worker drowns Tune's progress table
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    ctx = tune.get_context()
    res = ctx.get_trial_resources().required_resources
    cpus, gpus = float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))
    cfgs = [
        resolve_setting(spec.space, spec.base, s, cpus, gpus)
        for s in settings_of(config, spec.book)
    ]
    data = _dataset(cfgs[0])
    trial_dir = Path(spec.experiment_path) / f"trial_{ctx.get_trial_id()}"
    states = restore_state(tune.get_checkpoint(), trial_dir)
    trainer = make_trainer(cfgs, data, states, spec.init)
    epochs, every = cfgs[0].train.epochs, spec.checkpoint_every
    last: dict[int, float] = {}  # each setting's last value of the search metric

    def note(k: int, rec: Mapping[str, Any]) -> None:
        if spec.metric in rec and "failed" not in rec:
            last[k] = float(rec[spec.metric])

    for k, h in enumerate(trainer.histories):
        for r in h:
            note(k, r)

    def alive() -> int:
        return sum(f is None for f in trainer.failed)

    def report(epoch: int, pending: dict[str, list[dict[str, Any]]], save: bool) -> None:
        result: dict[str, Any] = {"epoch": float(epoch), "settings": pending}
        result.update(started=started, reported=time.time(), settings_alive=float(alive()))
        values = [v for k, v in last.items() if trainer.failed[k] is None]
        if spec.metric and values:  # NaN where no live setting has a finite value yet
            finite = [v for v in values if math.isfinite(v)]
            best = (min if spec.mode == "min" else max)(finite) if finite else math.nan
            result[spec.metric] = best
        if not save:
            tune.report(result)
            return
        final = epoch >= epochs or alive() == 0
        with tempfile.TemporaryDirectory(prefix="ct-ckpt-") as d:
            torch.save(trainer.state_dicts(), os.path.join(d, STATES_FILE))
            for k, model in enumerate(trainer.models() if final else []):
                if trainer.failed[k] is None:
                    save_model(model.cpu(), cfgs[k], os.path.join(d, model_file(k)), data=data)
            tune.report(result, checkpoint=Checkpoint.from_directory(d))

    if states is not None and any(trainer.histories):
        # The checkpoint's epochs may never have reached the driver (a node that died between
        # writing the checkpoint and the driver taking the result): report those since the
        # checkpoint before it again; results and MLflow keep one record per epoch. A trial
        # restored at its end ends here, with its final checkpoint.
        top = max(int(h[-1]["epoch"]) for h in trainer.histories if h)
        since = top - every if every else 0
        again = {
            str(k): [_clean(r) for r in h if int(r["epoch"]) > since]
            for k, h in enumerate(trainer.histories)
        }
        report(top, {k: v for k, v in again.items() if v}, save=top >= epochs or alive() == 0)
    pending: dict[str, list[dict[str, Any]]] = {}
    reported = time.monotonic()
    for records in trainer.run():
        epoch = int(max(float(r["epoch"]) for r in records if r is not None))
        for k, r in enumerate(records):
            if r is not None:
                pending.setdefault(str(k), []).append(_clean(r))
                note(k, r)
        save = epoch >= epochs or alive() == 0 or bool(every and epoch % every == 0)
        if save or time.monotonic() - reported >= spec.report_s:
            report(epoch, pending, save)
            pending, reported = {}, time.monotonic()
    if alive() == 0:
        raise FloatingPointError(next(f for f in trainer.failed if f))
