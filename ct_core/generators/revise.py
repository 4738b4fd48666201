"""REVISE: the search runs in the latent space of a VAE.

The state is a latent code z, initialised at the encoder mean of the factual; the counterfactual
is the decoded point. Unlike the authors' code (which ignores mutability in latent space), ct
projects the decoded point onto what the mutability constraints allow, so REVISE respects them.
The settings of one search share the VAE (one per data set and ``generator.vae_*``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ct_core.generators.base import LatentGenerator, Weights, l1_distance

if TYPE_CHECKING:
    from ct_core.config import GeneratorConfig
    from ct_core.data.base import Dataset


class REVISE(LatentGenerator):
    """Penalty ``λ_cost·‖dec(z) − x‖₁`` on the decoded state."""

    def __init__(self, vae: nn.Module, lambda_cost: float | Sequence[float] | Tensor = 0.001):
        super().__init__(lambda_cost=lambda_cost)
        self.vae = vae

    @classmethod
    def from_configs(
        cls,
        cfgs: Sequence[GeneratorConfig],
        data: Dataset | None = None,
        *,
        data_key: dict | None = None,
        device: torch.device | str = "cpu",
    ) -> REVISE:
        """The VAE is fitted on ``data.X_train`` once per (``data_key``, sizes) and cached."""
        from ct_core.generators.vae import cached_vae

        if data is None:
            raise ValueError("generator.type 'revise' needs the dataset to fit its VAE")
        c = cfgs[0]
        key = data_key if data_key is not None else {"name": data.name}
        with torch.enable_grad():  # a first use trains the VAE (callers may be in no_grad)
            vae = cached_vae(key, data.X_train.cpu(), c.vae_latent, c.vae_hidden, c.vae_epochs)
        return cls(vae.to(device), [c.lambda_cost for c in cfgs])

    def encode(self, x: Tensor) -> Tensor:
        return self.vae.encode(x.flatten(0, 1))[0].view(*x.shape[:2], -1)

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z.flatten(0, 1)).view(*z.shape[:2], -1)

    def penalty(
        self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int, w: Weights
    ) -> Tensor:
        return w["lambda_cost"] * l1_distance(x, x0)
