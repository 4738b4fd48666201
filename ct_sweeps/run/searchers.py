"""Optuna through Ray Tune's public `OptunaSearch` (imported only once Ray is needed)."""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search.optuna import OptunaSearch

__all__ = ["CtOptunaSearch", "worst_for_nan"]


def worst_for_nan(
    result: dict[str, Any], metrics: str | list[str], modes: str | list[str]
) -> dict[str, Any]:
    """``result`` with a NaN search metric replaced by the worst value (``inf`` to minimise,
    ``-inf`` to maximise). A NaN ``val_implausibility`` means that no validation counterfactual
    was valid: a bad setting, not a failed one, and the sampler should learn so."""
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    dirs = [modes] * len(names) if isinstance(modes, str) else list(modes)
    out = dict(result)
    for name, mode in zip(names, dirs):
        v = out.get(name)
        if isinstance(v, float) and math.isnan(v):
            out[name] = math.inf if mode == "min" else -math.inf
    return out


class CtOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that passes over results without the metric (counterfactual metrics come
    every ``train.eval_every`` epochs; the stock class raises ``KeyError``), and tells Optuna a
    NaN metric as the worst value (the stock class marks the trial FAILED, so the sampler never
    learns that the region is bad)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if result and self.metric is not None and self.mode is not None:
            result = worst_for_nan(result, self.metric, self.mode)
        super().on_trial_complete(trial_id, result=result, error=error)
