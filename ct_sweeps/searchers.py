"""Search-algorithm adapters (imported only once Ray is needed)."""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

__all__ = ["CtOptunaSearch"]


class CtOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tolerates epochs without the metric.

    Validation-set counterfactual metrics (IP, cost) arrive only every ``train.eval_every``
    epochs; the stock class raises ``KeyError`` on the epochs in between.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)
