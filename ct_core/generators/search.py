"""The one batched counterfactual search loop every generator plugs into (reference §1.3, §3).

All N factuals are searched at once as one ``(N, D)`` tensor. Per iteration t = 1..T, for the
samples still running: logits at the current point, convergence test p(y⁺|x′) ≥ τ (a converged
sample stops), the search loss ``CE(M(x′), y⁺) + penalty_t(x′)``, one plain gradient step
``Δ = −η·∇`` (NaNs in Δ set to 0), the mutability mask on Δ, the step, and the domain clamp. The
last state of each path that lies within the ε-ball of its factual is kept as the *nascent*
counterfactual used as an adversarial example (``get_last_valid_ae``); t = 0 always qualifies for
feature-space generators, so the fallback is the clean factual.

Because each sample's loss depends only on its own row, the batched search returns exactly what
a one-sample-at-a-time search returns (tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ct_core.constraints import Domain, clamp_domain, mask_step, project_mutability
from ct_core.generators.base import Generator

__all__ = ["SearchResult", "ball_distance", "search"]


@dataclass
class SearchResult:
    x_cf: Tensor
    """``(N, D)`` final counterfactuals (decoded for latent-space generators)."""
    converged: Tensor
    """``(N,)`` bool: p(y⁺|x′) reached τ within T steps (factuals already at τ do not count, as
    in the reference, where the search returns before marking them converged)."""
    steps: Tensor
    """``(N,)`` int64: gradient steps taken."""
    x_ae: Tensor
    """``(N, D)`` the last state within the ε-ball of the factual (adversarial example)."""
    p_target: Tensor
    """``(N,)`` final probability of the target class."""
    initially_valid: Tensor
    """``(N,)`` bool: the factual already had p(y⁺|x) ≥ τ."""

    @property
    def exhausted(self) -> Tensor:
        """Samples that ran all T steps without converging."""
        return ~self.converged & ~self.initially_valid


def ball_distance(delta: Tensor, norm: str = "inf") -> Tensor:
    """Per-row norm of ``delta`` ``(N, D) -> (N,)`` for ``norm`` in {"inf", "1", "2"}."""
    if norm == "inf":
        return delta.abs().amax(dim=1)
    if norm == "1":
        return delta.abs().sum(dim=1)
    return delta.square().sum(dim=1).sqrt()


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients into the model's parameters (the search only needs ∇ₓ)."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def search(
    model: nn.Module,
    x0: Tensor,
    target: Tensor,
    generator: Generator,
    *,
    T: int,
    tau: float,
    lr: float = 0.1,
    domain: Domain | None = None,
    mutability: Tensor | None = None,
    epsilon: float = 0.3,
    epsilon_norm: str = "inf",
    epsilon_strict: bool = False,
) -> SearchResult:
    """Search counterfactuals for factuals ``x0`` ``(N, D)`` towards classes ``target`` ``(N,)``.

    ``T`` maximum steps, ``tau`` decision threshold, ``lr`` the step size η of plain gradient
    descent (0.1 in the reference), ``domain`` bounds applied after every step, ``mutability``
    codes of :mod:`ct_core.constraints` (masking steps in feature space, projecting decoded points
    for latent generators), ``epsilon`` / ``epsilon_norm`` / ``epsilon_strict`` the ball that
    nascent counterfactuals must stay in to serve as adversarial examples (``≤ ε``, or ``< ε``).
    """
    n = x0.shape[0]
    dev = x0.device
    x0 = x0.detach()
    target = target.to(dev)
    within = (lambda d: d < epsilon) if epsilon_strict else (lambda d: d <= epsilon)

    def to_x(state: Tensor, rows: Tensor | None = None) -> Tensor:
        if not generator.latent:
            return state
        x = generator.decode(state)
        ref = x0 if rows is None else x0[rows]
        return clamp_domain(project_mutability(x, ref, mutability), domain)

    state = generator.init_state(x0).detach()
    x_cur = to_x(state).detach()
    x_ae = x0.clone()
    converged = torch.zeros(n, dtype=torch.bool, device=dev)
    initially_valid = torch.zeros(n, dtype=torch.bool, device=dev)
    steps = torch.zeros(n, dtype=torch.long, device=dev)
    p_target = torch.zeros(n, dtype=x0.dtype, device=dev)
    active = torch.arange(n, device=dev)
    # t = 0 state: within the ball by construction for feature-space generators
    x_ae = torch.where(within(ball_distance(x_cur - x0, epsilon_norm))[:, None], x_cur, x_ae)

    with frozen(model):
        # Iteration t evaluates the state after t - 1 steps: one forward serves both the
        # convergence test of that state and, for samples still running, the next step.
        for t in range(1, T + 2):
            if active.numel() == 0:
                break
            stepping = t <= T
            s = state[active].requires_grad_(stepping)
            with torch.set_grad_enabled(stepping):
                x = to_x(s, active)
                logits = model(x)
            with torch.no_grad():
                p = F.softmax(logits.detach(), dim=1).gather(1, target[active, None]).squeeze(1)
                p_target[active] = p
                done = p >= tau
                # factuals already at τ return at once, unconverged (reference §1.3)
                (initially_valid if t == 1 else converged)[active[done]] = True
            keep = (~done).nonzero().squeeze(1)
            if not stepping or keep.numel() == 0:
                break
            ta, xa0 = target[active], x0[active]
            loss = F.cross_entropy(logits, ta, reduction="none")
            loss = loss + generator.penalty(x, xa0, logits, ta, t)
            # rows are independent, so ∇ of the sum is each sample's own gradient
            (grad,) = torch.autograd.grad(loss.sum(), s)
            with torch.no_grad():
                delta = torch.nan_to_num(-lr * grad[keep], nan=0.0, posinf=0.0, neginf=0.0)
                rows = active[keep]
                if generator.latent:
                    s_new = s.detach()[keep] + delta
                else:
                    s_new = clamp_domain(s.detach()[keep] + mask_step(delta, mutability), domain)
                state[rows] = s_new
                x_new = to_x(s_new, rows)
                x_cur[rows] = x_new
                steps[rows] += 1
                ok = within(ball_distance(x_new - x0[rows], epsilon_norm))
                x_ae[rows] = torch.where(ok[:, None], x_new, x_ae[rows])
                active = rows

    return SearchResult(
        x_cf=x_cur.detach(),
        converged=converged,
        steps=steps,
        x_ae=x_ae.detach(),
        p_target=p_target.detach(),
        initially_valid=initially_valid,
    )
