"""The Python API behind ``ct train``: train one configuration, on the paper's models or one's
own ``nn.Module``, and get the model, its history and its metrics (docs/python-api.md)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_core.config import Config, dump_config, load_config

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from ct_core.data.base import Dataset
    from ct_core.training import Trainer

__all__ = ["Callback", "TrainResult", "train"]

Callback = Callable[[dict[str, Any], "Trainer"], Any]
"""Called after every epoch as ``callback(record, trainer)`` with the epoch's record (the keys
of :data:`ct_core.training.RECORD_KEYS`) and the :class:`~ct_core.training.Trainer`
(``trainer.model``, ``trainer.state_dict()``, ``trainer.history``). Returning ``True`` stops
training after this epoch (all callbacks of the epoch still run); any other return value goes
on. An exception a callback raises ends :func:`train` with that exception."""


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module
    """The trained model, in evaluation mode (the module passed to :func:`train`, if any)."""
    history: pd.DataFrame
    """One row per epoch; the columns of ``history.csv``."""
    metrics: dict[str, Any]
    """``metrics.json``: test accuracy and macro F1, epochs, seconds, ``final_<key>``."""
    config: Config
    data: Dataset
    checkpoint: dict[str, Any]
    """The trainer's state: ``train(cfg, checkpoint=...)`` continues it."""

    def save(self, out: str | Path) -> Path:
        """Write ``config.yaml``, ``model.pt``, ``history.csv``, ``metrics.json`` and
        ``checkpoint.pt`` into the folder ``out`` (created) and return it. ``model.pt`` is
        rebuilt by :func:`ct_core.models.load_model` from the config's ``model`` section (a
        built-in model or ``model.factory``)."""
        from ct_core.models import save_model
        from ct_core.training import save_checkpoint

        p = Path(out)
        p.mkdir(parents=True, exist_ok=True)
        dump_config(self.config, p / "config.yaml")
        d = self.data
        save_model(
            self.model,
            self.config,
            p / "model.pt",
            n_features=d.n_features,
            n_classes=d.n_classes,
            feature_names=list(d.feature_names),
        )
        self.history.to_csv(p / "history.csv", index=False)
        (p / "metrics.json").write_text(json.dumps(self.metrics, indent=2))
        save_checkpoint(self.checkpoint, p / "checkpoint.pt")
        return p


def train(
    cfg: Config | str | Path | Mapping[str, Any],
    model: nn.Module | None = None,
    callbacks: Iterable[Callback] | None = None,
    *,
    data: Dataset | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``cfg`` (a :class:`~ct_core.config.Config`, or what :func:`load_config` takes) with
    counterfactual training and return the :class:`TrainResult`.

    ``model``: any ``nn.Module`` mapping ``(N, n_features)`` to ``(N, n_classes)`` logits, trained
    in place; default: built from ``cfg.model`` (seeded with ``cfg.seed``). ``callbacks``: see
    :data:`Callback`. ``data``: the dataset (default ``load_dataset(cfg.data)``);
    ``checkpoint``: a ``TrainResult.checkpoint`` (or ``checkpoint.pt``) of the same config to
    continue from.
    """
    from ct_core.data import load_dataset
    from ct_core.training import Trainer

    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    data = data if data is not None else load_dataset(cfg.data)
    trainer = Trainer(cfg, data=data, checkpoint=checkpoint, model=model)
    cbs = list(callbacks or ())
    t0 = time.perf_counter()
    for rec in trainer.run():
        if any([bool(cb(rec, trainer) is True) for cb in cbs]):
            break
    seconds = time.perf_counter() - t0
    trained = trainer.model
    return TrainResult(
        trained,
        history_frame(trainer.history),
        _metrics(trained, data, trainer.history, trainer.epoch, seconds),
        cfg,
        data,
        trainer.state_dict(),
    )


def history_frame(history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame: columns in the order keys first appear, ``epoch`` an integer."""
    import pandas as pd

    frame = pd.DataFrame(list(history))
    return frame.astype({"epoch": int}) if "epoch" in frame else frame


def _metrics(
    model: nn.Module,
    data: Dataset,
    history: Sequence[Mapping[str, Any]],
    epochs: int,
    seconds: float,
) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    from ct_core.evaluation import predict

    pred = predict(model, data.X_test).numpy()
    yt = data.y_test.cpu().numpy()
    last = history[-1] if history else {}

    def finite(v: Any) -> float | None:
        return v if isinstance(v, (int, float)) and math.isfinite(v) else None

    return {
        "test_acc": float((pred == yt).mean()),
        "test_f1": float(f1_score(yt, pred, average="macro")),
        "epochs": epochs,
        "seconds": seconds,
        "seconds_per_epoch": sum(r["seconds"] for r in history) / max(len(history), 1),
        **{f"final_{k}": finite(v) for k, v in last.items() if k != "epoch"},
    }
