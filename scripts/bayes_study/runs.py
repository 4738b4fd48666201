"""Reading a finished sweep's run directory back: its results, the order its trials were
proposed in, its resolved base config, and every final model re-scored on fixed points."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import yaml

from bayes_study import METRIC

TEST_POINTS = 1000


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_results(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``results.csv``: the swept parameters as written, the metrics as floats."""
    with (run_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in (METRIC, "val_acc", "val_validity", "val_cost", "time_total_s", "train_seconds"):
            r[k] = _float(r.get(k))
    return rows


def trial_order(run_dir: Path) -> dict[str, int]:
    """Creation index of each trial (Tune's experiment state lists trials as they were added:
    the order the searcher proposed them); falls back to each trial's first reported timestamp."""
    states = sorted((run_dir / "tune").glob("experiment_state-*.json"))
    if states:
        data = json.loads(states[-1].read_text())
        ids = [
            json.loads(t[0] if isinstance(t, list) else t)["trial_id"] for t in data["trial_data"]
        ]
        return {t: i for i, t in enumerate(ids)}
    first: dict[str, float] = {}
    for p in (run_dir / "tune").glob("*/result.json"):
        line = p.read_text().splitlines()[:1]
        if line:
            d = json.loads(line[0])
            first[str(d["trial_id"])] = float(d.get("timestamp", math.inf))
    return {t: i for i, t in enumerate(sorted(first, key=lambda t: first[t]))}


def flat_base(run_dir: Path) -> tuple[dict[str, Any], set[str], dict[str, Any]]:
    """The run's resolved base training config (dotted), its searched keys, its search block."""
    from ct_core.config import parse_config

    sweep = yaml.safe_load((run_dir / "sweep.yaml").read_text())
    return parse_config(sweep["base"]).flat(), set(sweep.get("space") or {}), sweep["search"]


def rescore(run_dir: Path, data_cache: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every finished setting's final model on fixed points: all validation points and up to
    ``TEST_POINTS`` test points (same points, targets and samples for every model)."""
    import dataclasses

    import torch

    from ct_core.config import parse_config
    from ct_core.data import load_dataset
    from ct_core.evaluation import validation_metrics
    from ct_core.models import load_model
    from ct_sweeps.plan import RunDir
    from ct_sweeps.run.results import collect

    run = RunDir.load(run_dir)
    out: dict[str, dict[str, float]] = {}
    for rec in collect(run):
        if rec.status != "TERMINATED" or rec.path is None:
            continue
        model_file = rec.model()
        if model_file is None:
            continue
        model, cfg = load_model(model_file)
        key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
        if key not in data_cache:
            data_cache[key] = load_dataset(cfg.data)
        data = data_cache[key]
        res: dict[str, float] = {}
        for split, n_max in (("val", None), ("test", TEST_POINTS)):
            X, y = data.split(split)
            n = X.shape[0] if n_max is None else min(n_max, X.shape[0])
            d = cfg.to_dict()
            d["evaluation"]["n_val_individuals"] = int(n)
            c = parse_config(d)
            dd = data if split == "val" else dataclasses.replace(data, X_val=X, y_val=y)
            m = validation_metrics(model, dd, c, seed=c.evaluation.seed)
            for k in ("validity", "implausibility", "cost"):
                res[f"{split}_{k}_fixed"] = m[f"val_{k}"]
            with torch.no_grad():
                res[f"{split}_acc_fixed"] = float((model(X).argmax(1) == y).float().mean())
        out[rec.trial_id] = res
    return out
