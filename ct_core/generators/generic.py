"""Generic (Wachter-style) generator: target loss plus an L1 cost penalty."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ct_core.generators.base import Generator, Weights, l1_distance


class Generic(Generator):
    """Penalty ``λ_cost·‖x′ − x‖₁`` (λ_cost = 0.001 in the authors' training runs)."""

    def __init__(self, lambda_cost: float | Sequence[float] | Tensor = 0.001):
        super().__init__(lambda_cost=lambda_cost)

    def penalty(
        self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int, w: Weights
    ) -> Tensor:
        return w["lambda_cost"] * l1_distance(x, x0)
