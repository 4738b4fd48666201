"""REVISE: the search runs in the latent space of a VAE (reference §3).

The state is a latent code z, initialised at the encoder mean of the factual; the counterfactual
is the decoded point. Unlike the reference code (which ignores mutability in latent space), ct
projects the decoded point onto what the mutability constraints allow, so REVISE respects them.
"""

from __future__ import annotations

from torch import Tensor

from ct_core.generators.base import Generator, l1_distance
from ct_core.generators.vae import VAE


class REVISE(Generator):
    """Penalty ``λ_cost·‖dec(z) − x‖₁`` on the decoded state."""

    name = "revise"
    latent = True

    def __init__(self, vae: VAE, lambda_cost: float = 0.001):
        self.vae = vae
        self.lambda_cost = float(lambda_cost)

    def init_state(self, x0: Tensor) -> Tensor:
        mu, _ = self.vae.encode(x0)
        return mu.detach()

    def decode(self, state: Tensor) -> Tensor:
        return self.vae.decode(state)

    def penalty(self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int) -> Tensor:
        return self.lambda_cost * l1_distance(x, x0)
