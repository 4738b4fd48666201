"""What a counterfactual generator plugs into the shared search loop (:mod:`.search`).

A generator defines the search objective's penalties (reference §3: the common objective is
``yloss(M(x′), y⁺) + Σ_k λ_k·pen_k(x′)``) and, for latent-space generators, how a search state
maps to a point in feature space. Everything else — the gradient steps, the constraints, the
per-sample convergence and the adversarial-example bookkeeping — is shared.
"""

from __future__ import annotations

from torch import Tensor


class Generator:
    """Feature-space generator base: the search state *is* the counterfactual."""

    name = "base"
    latent = False
    """True when the search runs in a latent space (mutability then binds on the decoded point)."""

    def init_state(self, x0: Tensor) -> Tensor:
        """Initial search state for factuals ``x0`` ``(N, D)`` (identity initialisation)."""
        return x0.clone()

    def decode(self, state: Tensor) -> Tensor:
        """Feature-space point ``(N, D)`` of a search state."""
        return state

    def penalty(self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int) -> Tensor:
        """Per-sample penalty ``(N,)`` at search iteration ``t`` (1-based)."""
        raise NotImplementedError


def l1_distance(x: Tensor, x0: Tensor) -> Tensor:
    """``‖x − x0‖₁`` per row: ``(N, D), (N, D) -> (N,)`` (CE.jl ``distance_l1``, not MAD-weighted)."""
    return (x - x0).abs().sum(dim=1)
