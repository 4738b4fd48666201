"""K counterfactual searches at once: stacked MLPs and the packed form of :func:`search`.

A *pack* holds K settings whose classifiers share one architecture (``linear`` or ``mlp``). Their
parameters are stacked with a leading K dimension, so one ``matmul`` evaluates all K models on a
``(K, N, D)`` batch (:func:`stacked_forward`). :func:`packed_search` is the search loop of
:mod:`ct_core.generators.search` (reference §1.3, §3) run on ``(K, N, D)`` tensors: per-setting
``T``, ``τ``, step size, ε and penalty weights are ``(K,)`` vectors; Generic is ECCo with energy
weight 0; ECCo's schedule φ_t depends on each setting's own ``T``; REVISE searches a shared VAE's
latent space ``(K, N, z)``. Rows that stop are masked, and the working block is compacted (settings
with no running row dropped, each setting's running rows moved to the front) whenever that
shrinks it by a quarter. Rows are independent, so every setting gets what its own plain search
gives (up to float rounding of the batched matmuls; tested in ``tests/test_pack.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ct_core.config import Config
from ct_core.constraints import Domain, clamp_domain, mask_step, project_mutability
from ct_core.generators.ecco import energy_schedule

__all__ = [
    "PackedSearchResult",
    "LatentSpace",
    "PackedSearchSpec",
    "packed_search",
    "stacked_forward",
]

Forward = Callable[[Tensor, Tensor | None], Tensor]
"""``forward(x, ks)``: logits ``(K', N, C)`` of the settings ``ks`` ``(K',)`` (all K for
``None``) on ``x`` ``(K', N, D)``."""


class LatentSpace(Protocol):
    """What a latent-space search needs of its VAE (:class:`ct_core.generators.VAE`)."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def decode(self, z: Tensor) -> Tensor: ...


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
        return self.energy_weights(t)[t]

    def energy_weights(self, t_max: int) -> Tensor:
        """``λ_egy·φ_t`` for t = 0..``t_max`` and every setting: ``(t_max + 1, K)`` (row 0
        unused); computed once per distinct (λ_egy, T, decay) of the pack."""
        cols: dict[tuple[float, int, bool], list[float]] = {}
        for key in zip(self.lambda_energy, self.T, self.decay):
            if key not in cols:
                lam, T, decay = key
                col = [0.0]
                for t in range(1, t_max + 1):
                    phi = energy_schedule(t, T) if decay else 1.0
                    col.append(lam * phi if lam and phi else 0.0)
                cols[key] = col
        w = [cols[key] for key in zip(self.lambda_energy, self.T, self.decay)]
        return torch.tensor(w, dtype=self.tau.dtype, device=self.tau.device).T.contiguous()


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
    vae: LatentSpace | None = None,
    compact: float = 0.75,
) -> PackedSearchResult:
    """Search counterfactuals for factuals ``x0`` ``(K, N, D)`` towards ``target`` ``(K, N)``.

    ``forward(x, ks)`` gives the logits of the settings ``ks`` (see :data:`Forward`); ``valid``
    ``(K, N)`` marks real rows (settings with fewer counterfactuals are padded). Same semantics
    as :func:`ct_core.generators.search` for Generic/ECCo, setting by setting. With ``vae`` (a
    module with ``encode``/``decode``, shared by the pack) the search is REVISE's: the state is a
    latent code ``(K, N, z)`` started at the encoder mean, and the point the models see is the
    decoded code projected onto the mutability constraints and clamped to the domain (``to_x``
    of :func:`~ct_core.generators.search`; reference §3). The working block is compacted when
    its running rows fit in ``compact`` of it (``compact`` 0: never; results do not depend on it;
    on the CPU compaction saves work, on a GPU, where masked rows cost little, it does not pay).
    """
    K, N, _ = x0.shape
    dev = x0.device
    x0 = x0.detach()
    norm = spec.epsilon_norm

    def to_x(z: Tensor, ref: Tensor) -> Tensor:  # latent (K', N', z) -> feature space
        assert vae is not None
        x = vae.decode(z.flatten(0, 1)).view(*z.shape[:2], -1)
        return clamp_domain(project_mutability(x, ref, mutability), domain)

    # the full-size results (rows leave the working block only once they stopped)
    out: dict[str, Tensor] = {
        "converged": torch.zeros(K, N, dtype=torch.bool, device=dev),
        "initially_valid": torch.zeros(K, N, dtype=torch.bool, device=dev),
        "steps": torch.zeros(K, N, dtype=torch.long, device=dev),
        "p_target": torch.zeros(K, N, dtype=x0.dtype, device=dev),
    }
    if vae is None:
        out["state"] = x0.clone()
        out["x_ae"] = x0.clone()  # t = 0 lies in the ball by construction
    else:
        with torch.no_grad():
            out["state"] = vae.encode(x0.flatten(0, 1))[0].view(K, N, -1)
            out["x_cur"] = to_x(out["state"], x0)
        d0 = _ball(out["x_cur"] - x0, norm)
        ok0 = torch.where(
            spec.strict[:, None], d0 < spec.epsilon[:, None], d0 <= spec.epsilon[:, None]
        )
        out["x_ae"] = torch.where(ok0[..., None], out["x_cur"], x0)
    out["x0"], out["target"] = x0, target

    # the working block: settings ks (K',) and their rows ns (K', N'); None = everything
    ks: Tensor | None = None
    ns: Tensor | None = None
    w = dict(out)  # working tensors, (K', N', ...)
    T_all = torch.tensor(spec.T, device=dev)
    energy = any(spec.lambda_energy)  # Generic / REVISE: no energy term at all
    w_energy = spec.energy_weights(max(spec.T) + 1) if energy else None  # (T_max + 2, K)

    def per_setting() -> tuple[Tensor, ...]:
        v = [spec.tau, spec.lr, spec.lambda_cost, spec.energy_reg, spec.epsilon, spec.strict, T_all]
        if ks is not None:
            v = [t[ks] for t in v]
        return tuple(t[:, None] for t in v)

    tau, lr, lam_cost, e_reg, eps, strict, T = per_setting()
    active = valid.clone()

    for t in range(1, max(spec.T) + 2):
        x0w, tgt = w["x0"], w["target"][..., None]
        s = w["state"].detach().requires_grad_(True)
        with torch.enable_grad():
            x = s if vae is None else to_x(s, x0w)
            logits = forward(x, ks)
            with torch.no_grad():
                p = F.softmax(logits.detach(), dim=-1).gather(-1, tgt).squeeze(-1)
                w["p_target"] = torch.where(active, p, w["p_target"])
                done = active & (p >= tau)
                if t == 1:  # factuals already at τ return unconverged (§1.3)
                    w["initially_valid"] = done
                else:
                    w["converged"] = w["converged"] | done
                keep = active & ~done & (T >= t)
                # one host sync per iteration: running rows per setting, or only whether any
                if compact > 0:
                    nk = keep.sum(1)
                    k_live, n_max = torch.stack([(nk > 0).sum(), nk.max()]).tolist()
                else:
                    n_max = int(keep.any())
            if n_max == 0:
                break
            # search loss CE(M(x′), y⁺) + λ_cost·‖x′ − x‖₁ + λ_egy·φ_t·(E + r·E²)  (reference §3)
            ce = F.cross_entropy(logits.flatten(0, 1), w["target"].flatten(), reduction="none")
            loss = ce.view(keep.shape) + lam_cost * (x - x0w).abs().sum(-1)
            if w_energy is not None:
                w_e = w_energy[t]
                w_e = (w_e if ks is None else w_e[ks])[:, None]
                e = -logits.gather(-1, tgt).squeeze(-1)
                loss = loss + torch.where(w_e != 0, w_e * (e + e_reg * e.square()), 0.0)
            (grad,) = torch.autograd.grad(loss.sum(), s)
        with torch.no_grad():
            delta = torch.nan_to_num(-lr[..., None] * grad, nan=0.0, posinf=0.0, neginf=0.0)
            s = s.detach()
            k3 = keep[..., None]
            if vae is None:
                s_new = clamp_domain(s + mask_step(delta, mutability), domain)
                x_new = s_new
            else:  # REVISE steps in latent space, unconstrained; to_x binds the decoded point
                s_new = s + delta
                x_new = to_x(s_new, x0w)
                w["x_cur"] = torch.where(k3, x_new, w["x_cur"])
            w["state"] = torch.where(k3, s_new, s)
            w["steps"] = w["steps"] + keep.long()
            d = _ball(x_new - x0w, norm)
            ok = torch.where(strict, d < eps, d <= eps)
            w["x_ae"] = torch.where(k3 & ok[..., None], x_new, w["x_ae"])
            active = keep

            # compaction: drop settings without running rows, move running rows to the front
            if compact > 0 and k_live * n_max <= compact * active.numel():
                _scatter(out, w, ks, ns)
                kidx = (nk > 0).nonzero().squeeze(1)
                order = torch.argsort((~active[kidx]).to(torch.int8), dim=1, stable=True)
                nidx = order[:, :n_max]  # (K'', N'') rows of the working block
                base_ns = torch.arange(N, device=dev).expand(K, N) if ns is None else ns
                ks = kidx if ks is None else ks[kidx]
                ns = base_ns[kidx[:, None], nidx]
                w = {name: v[kidx[:, None], nidx] for name, v in w.items()}
                active = active[kidx[:, None], nidx]
                tau, lr, lam_cost, e_reg, eps, strict, T = per_setting()

    _scatter(out, w, ks, ns)
    return PackedSearchResult(
        x_cf=(out["state"] if vae is None else out["x_cur"]).detach(),
        converged=out["converged"],
        steps=out["steps"],
        x_ae=out["x_ae"],
        p_target=out["p_target"],
        initially_valid=out["initially_valid"],
    )


def _scatter(
    out: dict[str, Tensor], w: dict[str, Tensor], ks: Tensor | None, ns: Tensor | None
) -> None:
    """Write the working block ``w`` back into the full-size ``out`` (in place where compacted)."""
    for name, v in w.items():
        if name in ("x0", "target"):
            continue
        if ks is None:
            out[name] = v
        else:
            assert ns is not None
            out[name][ks[:, None], ns] = v
