"""Generic (Wachter-style) generator: target loss plus an L1 cost penalty (reference §3)."""

from __future__ import annotations

from torch import Tensor

from ct_core.generators.base import Generator, l1_distance


class Generic(Generator):
    """Penalty ``λ_cost·‖x′ − x‖₁`` (λ_cost = 0.001 in the reference's training runs)."""

    name = "generic"

    def __init__(self, lambda_cost: float = 0.001):
        self.lambda_cost = float(lambda_cost)

    def penalty(self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int) -> Tensor:
        return self.lambda_cost * l1_distance(x, x0)
