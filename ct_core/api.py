"""The Python API behind ``ct train``: train one configuration, on the paper's data or one's own
(a pandas DataFrame), a model built from the config, one's own ``nn.Module`` or the weights of an
earlier model (fine-tuning), and get the model, its history and its metrics
(docs/python-api.md)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_core.config import (
    Config,
    ConfigError,
    apply_overrides,
    dump_config,
    load_config,
    parse_config,
)

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from ct_core.data.base import Dataset
    from ct_core.training import Trainer

__all__ = ["Callback", "TrainResult", "compare", "train"]

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
        """Write ``config.yaml``, ``model.pt``, ``history.csv``, ``metrics.json``,
        ``checkpoint.pt`` and (but for images) ``encoder.json`` into the folder ``out``
        (created) and return it. ``model.pt`` is rebuilt by :func:`ct_core.models.load_model` from the
        config's ``model`` section (a built-in model or ``model.factory``) and holds what
        :func:`ct_core.explain` needs of the data (``Dataset.spec``)."""
        from ct_core.files import atomic_write_text
        from ct_core.models import save_model
        from ct_core.training import save_checkpoint

        p = Path(out)
        p.mkdir(parents=True, exist_ok=True)
        # each file is replaced whole (temporary file + rename); the model comes first and the
        # config last, so a config.yaml always describes the model.pt beside it
        d = self.data
        save_model(self.model, self.config, p / "model.pt", data=d)
        if d.encoder is not None:
            atomic_write_text(p / "encoder.json", json.dumps(d.encoder.to_dict(), indent=2))
        atomic_write_text(p / "history.csv", self.history.to_csv(index=False))
        atomic_write_text(p / "metrics.json", json.dumps(self.metrics, indent=2))
        save_checkpoint(self.checkpoint, p / "checkpoint.pt")
        dump_config(self.config, p / "config.yaml")
        return p


def train(
    cfg: Config | str | Path | Mapping[str, Any],
    model: nn.Module | str | Path | None = None,
    callbacks: Iterable[Callback] | None = None,
    *,
    data: Dataset | pd.DataFrame | None = None,
    target: str | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``cfg`` (a :class:`~ct_core.config.Config`, or what :func:`load_config` takes) with
    counterfactual training and return the :class:`TrainResult`.

    ``model``: any ``nn.Module`` mapping ``(N, n_features)`` to ``(N, n_classes)`` logits, trained
    in place; or a SOURCE of initial weights (a ct ``model.pt`` or run directory,
    ``runs:/<run_id>/<path>``, ``models:/<name>@<alias>``: :mod:`ct_core.sources`) loaded into the
    model ``cfg.model`` builds; default: built from ``cfg.model`` (seeded with ``cfg.seed``).
    ``callbacks``: see :data:`Callback`. ``data``: a pandas DataFrame with the label column
    ``target`` (then ``cfg.data`` becomes ``name: frame``; its ``categorical``, ``immutable``,
    ``increase_only``, ``decrease_only``, sizes and ``split_seed`` apply), a
    :class:`~ct_core.data.base.Dataset`, or ``None`` for ``load_dataset(cfg.data)``.
    ``checkpoint``: a ``TrainResult.checkpoint`` (or ``checkpoint.pt``) of the same config to
    continue from.
    """
    from ct_core.training import Trainer

    cfg, data = prepare(cfg, data, target)
    init = None
    if isinstance(model, (str, Path)):
        from ct_core.sources import initial_model

        init, model = str(model), initial_model(model, cfg, data)
    trainer = Trainer(cfg, data=data, checkpoint=checkpoint, model=model)
    cbs = list(callbacks or ())
    t0 = time.perf_counter()
    for rec in trainer.run():
        if any([bool(cb(rec, trainer) is True) for cb in cbs]):
            break
    seconds = time.perf_counter() - t0
    trained = trainer.model
    metrics = _metrics(trained, data, trainer.history, trainer.epoch, seconds)
    if init is not None:
        metrics["init"] = init
    return TrainResult(
        trained, history_frame(trainer.history), metrics, cfg, data, trainer.state_dict()
    )


def prepare(
    cfg: Config | str | Path | Mapping[str, Any],
    data: Dataset | pd.DataFrame | None = None,
    target: str | None = None,
) -> tuple[Config, Dataset]:
    """The validated config and the dataset :func:`train` trains on (see its ``data``)."""
    import pandas as pd

    from ct_core.data import load_dataset, load_frame

    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    if isinstance(data, pd.DataFrame):
        raw = cfg.to_dict()
        target = target or (raw["data"]["target"] if raw["data"]["name"] == "frame" else None)
        if not target:
            raise ConfigError(
                "data.target: name the DataFrame's label column: train(cfg, data=df, target=...)"
            )
        raw["data"].update(name="frame", path=None, target=target)
        cfg = parse_config(raw)
        return cfg, load_frame(data, cfg.data)
    if target is not None:
        raise ConfigError("target= names the label column of a DataFrame given as data=")
    return cfg, data if data is not None else load_dataset(cfg.data)


def compare(
    ct: TrainResult,
    baseline: TrainResult,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The paper's comparison of two models trained on the same data (what ``ct compare``
    prints): the protocol of ``ct.config.evaluation`` (with ``overrides``) on both models with
    the same draws, on ``ct``'s test split and constraints, and the Table-1 cells
    (:func:`ct_core.protocol.compare`: one row per metric, ``ct``, ``bl``, ``reduction_pct``,
    ``cell``, ...)."""
    from ct_core.protocol import compare as table
    from ct_core.protocol import draw_classes, evaluate_model

    cfg = parse_config(apply_overrides(ct.config.to_dict(), overrides)) if overrides else ct.config
    draws = draw_classes(ct.data.n_classes, cfg.evaluation.n_individuals, cfg.evaluation.seed)
    frames = [evaluate_model(r.model, ct.data, cfg, draws, progress=False) for r in (ct, baseline)]
    return table(*frames)


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
