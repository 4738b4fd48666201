"""Counterfactuals for chosen rows: :func:`explain` (``ct_core.explain``) and ``ct explain``.

The rows come in the original columns and units of the model's data; all of them go through one
batched search (:func:`ct_core.search.search`) with the generator of the model's config
(``generator.type``, ``T``, ``tau``, ``lr`` and penalties; ``overrides`` change them) and the
data's constraints: the domain, mutability (immutable columns stay as they are) and the one-hot
groups (one category each). Each counterfactual goes out in the original columns and units
(numeric columns de-standardised, categories decoded; a column the search left alone keeps the
row's own value), with the search's outcome per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_core.config import Config, ConfigError, apply_overrides, parse_config

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from ct_core.data.base import Dataset

__all__ = ["OUTCOME_COLUMNS", "explain", "load_explainable"]

OUTCOME_COLUMNS = ("predicted", "target", "valid", "p_target", "cost", "steps", "changed")
"""What :func:`explain` adds to the counterfactual's columns: the class the model predicts for
the row, the target class, whether p(target) reached ``generator.tau``, that probability, the L1
distance in the model's feature space (standardised, one-hot), the search steps taken and the
original columns that changed (``;``-separated)."""


def load_explainable(path: str | Path) -> tuple[nn.Module, Config, Dataset]:
    """A saved model (``model.pt`` or a run directory), its config and what it knows of its data
    (a :class:`~ct_core.data.base.Dataset` without rows, from ``model.pt``; for model files
    written before ``model.pt`` held it, the data its config names)."""
    import torch

    from ct_core.data.base import Dataset
    from ct_core.models import load_model

    p = Path(path)
    file = p / "model.pt" if p.is_dir() else p
    if not file.is_file():
        raise ConfigError(f"MODEL_DIR: no model.pt at {p} (the output directory of `ct train`)")
    model, cfg = load_model(file)
    spec = torch.load(file, map_location="cpu", weights_only=True).get("meta", {}).get("data")
    if spec is not None:
        return model, cfg, Dataset.from_spec(spec)
    from ct_core.data import load_dataset

    return model, cfg, load_dataset(cfg.data)


def explain(
    model_or_dir: Any,
    rows: pd.DataFrame | str | Path,
    target: str | int | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    *,
    config: Config | None = None,
    data: Dataset | None = None,
) -> pd.DataFrame:
    """One counterfactual per row of ``rows`` (a DataFrame or a CSV/parquet file in the model's
    original columns; other columns, such as the label, are ignored).

    ``model_or_dir``: a run directory or ``model.pt``, a :class:`~ct_core.api.TrainResult`, or
    an ``nn.Module`` with its ``data`` (a ``Dataset``) and ``config``. ``target``: a class name
    (or index) for every row; ``None``: per row, the most probable class other than the predicted
    one. ``overrides``: config changes (``"generator.type=generic"``, ``{"generator.T": 100}``).
    Returns the counterfactuals in the rows' columns, plus :data:`OUTCOME_COLUMNS`, indexed as
    ``rows``.
    """
    import numpy as np
    import torch

    from ct_core.generators import generator_info, make_generator
    from ct_core.search import search

    model, cfg, data = _resolve(model_or_dir, config, data)
    cfg = parse_config(apply_overrides(cfg.to_dict(), overrides)) if overrides else cfg
    frame = _read_rows(rows)
    x0 = torch.as_tensor(_encode(frame, data), dtype=torch.float32)
    names = list(data.class_names or range(data.n_classes))
    model = model.cpu().eval()
    with torch.no_grad():
        logits = model(x0)
    pred = logits.argmax(1)
    tgt = _targets(target, names, logits, pred)
    g = cfg.generator
    if generator_info(g.type).latent and data.X_train.shape[0] == 0:
        from ct_core.data import load_dataset

        data = load_dataset(cfg.data)  # a latent generator fits its model on the training data
    res = search(
        model,
        x0,
        tgt,
        make_generator(g, data, data_key=cfg.data.model_dump(mode="json")),
        T=g.T,
        tau=g.tau,
        lr=g.lr,
        domain=data.domain,
        mutability=data.mutability,
        onehot=data.onehot,
    )
    x_cf = res.x_cf.numpy().astype(np.float64)
    out, changed = _decode(x_cf, x0.numpy().astype(np.float64), frame, data)
    out.index = frame.index
    out["predicted"] = [str(names[i]) for i in pred.tolist()]
    out["target"] = [str(names[i]) for i in tgt.tolist()]
    out["valid"] = (res.p_target >= g.tau).numpy()
    out["p_target"] = res.p_target.numpy()
    out["cost"] = np.abs(x_cf - x0.numpy()).sum(1)
    out["steps"] = res.steps.numpy()
    out["changed"] = changed
    return out


def _resolve(obj: Any, config: Config | None, data: Dataset | None) -> tuple[Any, Config, Any]:
    from torch import nn

    from ct_core.api import TrainResult

    if isinstance(obj, TrainResult):
        return obj.model, config or obj.config, data or obj.data
    if isinstance(obj, nn.Module):
        if data is None:
            raise ConfigError("explain: a model given as a module needs its data= (a Dataset)")
        return obj, config or Config(), data
    model, cfg, saved = load_explainable(obj)
    return model, config or cfg, data or saved


def _read_rows(rows: Any) -> pd.DataFrame:
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        return rows.rename(columns=str)
    p = Path(rows)
    if not p.is_file():
        raise ConfigError(f"--rows: file not found: {p}")
    try:
        return pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    except (OSError, ValueError, ImportError) as e:
        raise ConfigError(f"--rows: cannot read {p}: {e}") from None


def _encode(frame: pd.DataFrame, data: Dataset) -> Any:
    """The rows' features ``(n, D)`` as the model sees them."""
    from ct_core.data.user import missing_values

    enc = data.encoder
    cols = [c.name for c in enc.columns] if enc is not None else list(data.feature_names)
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        shown = ", ".join(map(repr, missing[:10]))
        raise ConfigError(f"--rows: missing column(s) {shown} (the model's data has {len(cols)})")
    bad = [m for c in cols if (m := missing_values(frame[c], "--rows"))]
    if bad:
        raise ConfigError(bad)
    if enc is None:
        return frame[cols].to_numpy(dtype="float64")
    return enc.encode(frame, field="--rows")


def _targets(target: Any, names: list, logits: Any, pred: Any) -> Any:
    import torch

    if target is None:  # the most probable class other than the predicted one
        others = logits.scatter(1, pred[:, None], -torch.inf)
        return others.argmax(1)
    labels = [str(n) for n in names]
    if str(target) in labels:
        k = labels.index(str(target))
    elif isinstance(target, int) and 0 <= target < len(labels):
        k = target
    else:
        raise ConfigError(f"--target must be one of {', '.join(labels)}, got {target!r}")
    return torch.full_like(pred, k)


def _decode(x_cf: Any, x0: Any, frame: pd.DataFrame, data: Dataset) -> tuple[Any, list[str]]:
    """The counterfactuals in the original columns (a column whose features did not move keeps
    the row's value) and, per row, the columns that changed."""
    import numpy as np
    import pandas as pd

    enc = data.encoder
    if enc is None:
        names = list(data.feature_names)
        spans = [slice(i, i + 1) for i in range(len(names))]
        out = pd.DataFrame(x_cf, columns=names)
    else:
        names, spans = [c.name for c in enc.columns], enc.slices
        out = enc.decode(x_cf)
    moved = np.stack([(x_cf[:, s] != x0[:, s]).any(1) for s in spans], axis=1)
    for j, name in enumerate(names):
        kept = ~moved[:, j]
        if kept.any():
            col = out[name].astype(object)
            col[kept] = frame[name].to_numpy()[kept]
            out[name] = col.infer_objects()
    changed = [";".join(n for n, m in zip(names, row) if m) for row in moved]
    return out, changed
