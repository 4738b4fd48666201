"""K counterfactual searches at once: stacked MLPs and the packed form of :func:`search`.

A *pack* holds K settings whose classifiers share one architecture (``linear`` or ``mlp``). Their
parameters are stacked with a leading K dimension, so one ``matmul`` evaluates all K models on a
``(K, N, D)`` batch (:func:`stacked_forward`). :func:`packed_search` is the search loop of
:mod:`ct_core.generators.search` (reference §1.3, §3) run on ``(K, N, D)`` tensors with per-row
masks instead of compaction: per-setting ``T``, ``τ``, step size, ε and penalty weights are
``(K,)`` vectors; Generic is ECCo with energy weight 0; ECCo's schedule φ_t depends on each
setting's own ``T``. Rows are independent, so every setting gets what its own plain search gives
(up to float rounding of the batched matmuls; tested in ``tests/test_pack.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ct_core.config import Config
from ct_core.constraints import Domain, clamp_domain, mask_step
from ct_core.generators.ecco import energy_schedule

__all__ = [
    "PackedSearchResult",
    "PackedSearchSpec",
    "packed_search",
    "stacked_forward",
]

Forward = Callable[[Tensor], Tensor]


def stacked_forward(params: Sequence[Tensor], x: Tensor, act: nn.Module) -> Tensor:
    """K stacked MLPs on ``x`` ``(K, N, D)`` or a shared ``(N, D)`` -> logits ``(K, N, C)``.

    ``params`` is ``[W₁ (K, h₁, D), b₁ (K, h₁), …, W_L (K, C, h), b_L (K, C)]``, the order of
    ``nn.Sequential(Linear, act, …, Linear).parameters()`` with a leading K dimension.
    """
    n_layers = len(params) // 2
    h = x
    for i in range(n_layers):
        w, b = params[2 * i], params[2 * i + 1]
        h = torch.matmul(h, w.transpose(1, 2)) + b[:, None, :]
        if i < n_layers - 1:
            h = act(h)
    return h


@dataclass
class PackedSearchSpec:
    """Per-setting search parameters as ``(K,)`` vectors (plus the Python-side schedule data)."""

    T: list[int]
    tau: Tensor
    lr: Tensor
    lambda_cost: Tensor
    lambda_energy: list[float]
    """0 for Generic, whose penalty is ECCo's without the energy term."""
    energy_reg: Tensor
    decay: list[bool]
    epsilon: Tensor
    strict: Tensor
    epsilon_norm: str = "inf"

    @classmethod
    def from_configs(cls, cfgs: Sequence[Config], device: torch.device) -> PackedSearchSpec:
        def vec(vals: Sequence[float], dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.tensor(list(vals), dtype=dtype, device=device)

        gens = [c.generator for c in cfgs]
        return cls(
            T=[g.T for g in gens],
            tau=vec([g.tau for g in gens]),
            lr=vec([g.lr for g in gens]),
            lambda_cost=vec([g.lambda_cost for g in gens]),
            lambda_energy=[g.lambda_energy if g.type == "ecco" else 0.0 for g in gens],
            energy_reg=vec([g.energy_reg for g in gens]),
            decay=[g.energy_decay for g in gens],
            epsilon=vec([c.train.epsilon for c in cfgs]),
            strict=vec([c.train.epsilon_strict for c in cfgs], torch.bool),
            epsilon_norm=cfgs[0].train.epsilon_norm,
        )

    def select(self, rows: Sequence[int]) -> PackedSearchSpec:
        """The spec of the settings ``rows`` (in that order)."""
        idx = torch.tensor(list(rows), dtype=torch.long, device=self.tau.device)
        return PackedSearchSpec(
            T=[self.T[k] for k in rows],
            tau=self.tau[idx],
            lr=self.lr[idx],
            lambda_cost=self.lambda_cost[idx],
            lambda_energy=[self.lambda_energy[k] for k in rows],
            energy_reg=self.energy_reg[idx],
            decay=[self.decay[k] for k in rows],
            epsilon=self.epsilon[idx],
            strict=self.strict[idx],
            epsilon_norm=self.epsilon_norm,
        )

    def energy_weight(self, t: int) -> Tensor:
        """``λ_egy·φ_t`` per setting ``(K,)`` at iteration ``t`` (ECCo, reference §3)."""
        w = []
        for lam, T, decay in zip(self.lambda_energy, self.T, self.decay):
            phi = energy_schedule(t, T) if decay else 1.0
            w.append(lam * phi if lam and phi else 0.0)
        return torch.tensor(w, dtype=self.tau.dtype, device=self.tau.device)


@dataclass
class PackedSearchResult:
    """:class:`~ct_core.generators.SearchResult` with a leading K dimension."""

    x_cf: Tensor  # (K, N, D)
    converged: Tensor  # (K, N) bool
    steps: Tensor  # (K, N) int64
    x_ae: Tensor  # (K, N, D)
    p_target: Tensor  # (K, N)
    initially_valid: Tensor  # (K, N) bool

    @property
    def exhausted(self) -> Tensor:
        return ~self.converged & ~self.initially_valid


def _ball(delta: Tensor, norm: str) -> Tensor:
    """Row norms over the last dimension ``(K, N, D) -> (K, N)``."""
    if norm == "inf":
        return delta.abs().amax(dim=-1)
    if norm == "1":
        return delta.abs().sum(dim=-1)
    return delta.square().sum(dim=-1).sqrt()


def packed_search(
    forward: Forward,
    x0: Tensor,
    target: Tensor,
    valid: Tensor,
    spec: PackedSearchSpec,
    *,
    domain: Domain | None = None,
    mutability: Tensor | None = None,
) -> PackedSearchResult:
    """Search counterfactuals for factuals ``x0`` ``(K, N, D)`` towards ``target`` ``(K, N)``.

    ``forward`` maps ``(K, N, D)`` to the K models' logits ``(K, N, C)``; ``valid`` ``(K, N)``
    marks real rows (settings with fewer counterfactuals are padded). Same semantics as
    :func:`ct_core.generators.search` for Generic/ECCo, setting by setting.
    """
    K, N, _ = x0.shape
    dev = x0.device
    x0 = x0.detach()
    col = (K, 1)
    tau, lr = spec.tau.view(col), spec.lr.view(K, 1, 1)
    lam_cost, e_reg = spec.lambda_cost.view(col), spec.energy_reg.view(col)
    eps, strict = spec.epsilon.view(col), spec.strict.view(col)
    T = torch.tensor(spec.T, device=dev)

    def within(d: Tensor) -> Tensor:
        return torch.where(strict, d < eps, d <= eps)

    state = x0.clone()
    x_ae = x0.clone()
    converged = torch.zeros(K, N, dtype=torch.bool, device=dev)
    initially_valid = torch.zeros_like(converged)
    steps = torch.zeros(K, N, dtype=torch.long, device=dev)
    p_target = torch.zeros(K, N, dtype=x0.dtype, device=dev)
    active = valid.clone()
    tgt = target[..., None]

    for t in range(1, max(spec.T) + 2):
        if not bool(active.any()):
            break
        stepping = (T >= t).view(col)
        s = state.requires_grad_(True)
        with torch.enable_grad():
            logits = forward(s)
            with torch.no_grad():
                p = F.softmax(logits.detach(), dim=-1).gather(-1, tgt).squeeze(-1)
                p_target = torch.where(active, p, p_target)
                done = active & (p >= tau)
                if t == 1:
                    initially_valid = done  # factuals already at τ return unconverged (§1.3)
                else:
                    converged = converged | done
                keep = active & ~done & stepping
            if not bool(keep.any()):
                break
            # search loss CE(M(x′), y⁺) + λ_cost·‖x′ − x‖₁ + λ_egy·φ_t·(E + r·E²)  (reference §3)
            ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
            loss = ce.view(K, N) + lam_cost * (s - x0).abs().sum(-1)
            w_e = spec.energy_weight(t).view(col)
            e = -logits.gather(-1, tgt).squeeze(-1)
            loss = loss + torch.where(w_e != 0, w_e * (e + e_reg * e.square()), 0.0)
            (grad,) = torch.autograd.grad(loss.sum(), s)
        with torch.no_grad():
            delta = torch.nan_to_num(-lr * grad, nan=0.0, posinf=0.0, neginf=0.0)
            s_new = clamp_domain(s.detach() + mask_step(delta, mutability), domain)
            k3 = keep[..., None]
            state = torch.where(k3, s_new, s.detach())
            steps = steps + keep.long()
            ok = within(_ball(s_new - x0, spec.epsilon_norm))
            x_ae = torch.where(k3 & ok[..., None], s_new, x_ae)
            active = keep

    return PackedSearchResult(
        x_cf=state.detach(),
        converged=converged,
        steps=steps,
        x_ae=x_ae,
        p_target=p_target,
        initially_valid=initially_valid,
    )
