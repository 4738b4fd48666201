"""The one batched counterfactual search every generator plugs into (the search of the paper's
Algorithm 1 as the authors' code runs it).

K settings' searches run as one: factuals ``x0`` ``(K, N, D)``, targets ``(K, N)``, and per
setting ``T``, ``τ``, step size η and ε as ``(K,)`` tensors (a single search is K = 1). Per
iteration t = 1..T, for the rows still running: logits at the current point, the convergence test
p(y⁺|x′) ≥ τ (a converged row stops), the search loss ``CE(M(x′), y⁺) + penalty_t(x′)`` (the
generator's, :mod:`ct_core.generators`), one plain gradient step ``Δ = −η·∇`` (NaNs in Δ set to
0), the mutability mask on Δ, the step, and the domain clamp. A latent generator's state is its
code; the point the model sees is the decoded code projected onto the mutability constraints and
clamped to the domain. With ``onehot`` groups, the state of a categorical's one-hot columns is
relaxed (a score per level, unbounded) and the point the model sees has each group set to the
one-hot vector of its largest entry, so that every point scored, every converged counterfactual
and every adversarial example takes exactly one category; gradients pass straight through that
rounding, so a category changes once the steps have moved another level's score above the
current one's (docs/categorical.md). The last point of each path within the ε-ball of its
factual is kept as the *nascent* counterfactual used as an adversarial example
(``get_last_valid_ae``); for feature-space generators t = 0 always qualifies, so the fallback is
the clean factual.

Rows are independent, so every row gets what a search of that row alone gives (tested). Finished
rows are masked, and the working block is compacted (settings without a running row dropped, each
setting's running rows moved to the front) whenever that shrinks it by a quarter; the results do
not depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ct_core.constraints import (
    Domain,
    clamp_domain,
    mask_step,
    project_mutability,
    project_onehot,
)

if TYPE_CHECKING:
    from ct_core.generators.base import Generator
    from ct_core.stack import ModelStack

__all__ = ["Forward", "SearchResult", "as_forward", "search"]

Forward = Callable[[Tensor, Tensor | None], Tensor]
"""``forward(x, ks)``: logits ``(K', N, C)`` of the settings ``ks`` ``(K',)`` (all K for
``None``) on ``x`` ``(K', N, D)``."""

PerSetting = float | Sequence[float] | Tensor


@dataclass
class SearchResult:
    """Per row of the search, ``(K, N, ...)`` (``(N, ...)`` for a 2-D ``x0``): final
    counterfactuals ``x_cf`` (decoded for latent generators); ``converged``, p(y⁺|x′) reached τ
    within T steps (factuals already at τ do not count: the authors' search returns before
    marking them converged); gradient ``steps`` taken; ``x_ae``, the last point within the
    ε-ball of the factual (adversarial example); final target probability ``p_target``;
    ``initially_valid``, the factual already had p(y⁺|x) ≥ τ."""

    x_cf: Tensor
    converged: Tensor
    steps: Tensor
    x_ae: Tensor
    p_target: Tensor
    initially_valid: Tensor

    @property
    def exhausted(self) -> Tensor:
        """Rows that ran all T steps without converging."""
        return ~self.converged & ~self.initially_valid


def _ball(delta: Tensor, norm: str) -> Tensor:
    """Row norms over the last dimension ``(..., D) -> (...)``."""
    if norm == "inf":
        return delta.abs().amax(dim=-1)
    if norm == "1":
        return delta.abs().sum(dim=-1)
    return delta.square().sum(dim=-1).sqrt()


def as_forward(model: ModelStack | nn.Module | Forward) -> Forward:
    """The :data:`Forward` of a model stack (detached parameters), of one module used for every
    setting, or a forward as it is."""
    from ct_core.stack import ModelStack

    if isinstance(model, ModelStack):
        return model.forward_fn()
    if isinstance(model, nn.Module):  # one model for every setting
        return lambda x, ks: model(x.flatten(0, 1)).view(*x.shape[:2], -1)
    return model


def search(
    model: ModelStack | nn.Module | Forward,
    x0: Tensor,
    target: Tensor,
    generator: Generator,
    *,
    T: int | Sequence[int] | Tensor,
    tau: PerSetting,
    lr: PerSetting = 0.1,
    valid: Tensor | None = None,
    domain: Domain | None = None,
    mutability: Tensor | None = None,
    onehot: Tensor | None = None,
    epsilon: PerSetting = 0.3,
    epsilon_norm: str = "inf",
    epsilon_strict: bool | Sequence[bool] | Tensor = False,
    compact: float | None = None,
) -> SearchResult:
    """Search counterfactuals for factuals ``x0`` ``(K, N, D)`` towards ``target`` ``(K, N)``.

    ``model``: a :class:`~ct_core.stack.ModelStack` of K models, one ``nn.Module`` for all K, or a
    :data:`Forward`. ``generator`` holds the K settings' penalty weights. ``T`` maximum steps,
    ``tau`` decision threshold, ``lr`` the step size η of plain gradient descent (0.1 in the
    authors' code), ``epsilon`` / ``epsilon_norm`` / ``epsilon_strict`` the ball nascent
    counterfactuals must stay in to serve as adversarial examples (``≤ ε``, or ``< ε``): each a
    number or one value per setting. ``valid`` ``(K, N)`` marks real rows (settings with fewer
    rows are padded). ``domain`` bounds apply after every step; ``mutability`` codes of
    :mod:`ct_core.constraints` mask steps in feature space and project decoded points of latent
    generators; ``onehot`` (:func:`~ct_core.constraints.onehot_index`) keeps categoricals'
    one-hot groups one-hot (see the module docstring). ``compact``: compact the working block
    when its running rows fit in that share of it (0: never; default 0.75 on the CPU, where it
    saves work, and 0 on a GPU, where masked rows cost little). A 2-D ``x0`` ``(N, D)`` with
    ``target`` ``(N,)`` is a search of one setting and returns ``(N, ...)`` results.
    """
    single = x0.dim() == 2
    if single:
        x0, target = x0[None], target[None]
        valid = None if valid is None else valid[None]
    K, N, _ = x0.shape
    dev = x0.device
    x0, target = x0.detach(), target.to(dev)
    if compact is None:
        compact = 0.75 if dev.type == "cpu" else 0.0
    forward = as_forward(model)

    def per_setting(v: Any, dtype: torch.dtype = torch.float32) -> Tensor:
        t = torch.as_tensor(v, dtype=dtype).reshape(-1).to(dev)
        return t.expand(K) if t.numel() == 1 else t

    T_all = per_setting(T, torch.long)
    t_max = int(T_all.max())
    params = {
        "tau": per_setting(tau),
        "lr": per_setting(lr),
        "eps": per_setting(epsilon),
        "strict": per_setting(epsilon_strict, torch.bool),
        "T": T_all,
    }
    weights = {n: per_setting(v) for n, v in generator.weights.items()}
    latent = generator.latent
    bounds = domain  # what the state is clamped to
    if onehot is not None and domain is not None and not latent:
        # one-hot columns of the state hold scores, not values: their rounded point is 0 or 1
        cols = onehot[onehot >= 0].to(domain[0].device)
        bounds = (
            domain[0].index_fill(0, cols, -torch.inf),
            domain[1].index_fill(0, cols, torch.inf),
        )

    def to_x(s: Tensor, ref: Tensor) -> Tensor:
        """The point the model sees for states ``s`` (factuals ``ref``): decoded and constrained
        (latent), one-hot groups rounded, with gradients passing straight through the rounding."""
        x = s
        if latent:  # latent (K', N', z) -> feature space
            x = generator.decode(s)  # type: ignore[attr-defined]
            x = clamp_domain(project_mutability(x, ref, mutability), domain)
        if onehot is None:
            return x
        return project_onehot(x, onehot).detach() + (x - x.detach())

    def within(d: Tensor, p: dict[str, Tensor]) -> Tensor:
        return torch.where(p["strict"], d < p["eps"], d <= p["eps"])

    # the working block: settings ks (K',) and their rows ns (K', N'); None = everything
    ks: Tensor | None = None
    ns: Tensor | None = None

    def columns() -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The working settings' search parameters and generator weights, ``(K', 1)`` each."""

        def col(v: Tensor) -> Tensor:
            return (v if ks is None else v[ks])[:, None]

        return {n: col(v) for n, v in params.items()}, {n: col(v) for n, v in weights.items()}

    p, gw = columns()
    # the full-size results (rows leave the working block only once they stopped)
    out: dict[str, Tensor] = {
        "converged": torch.zeros(K, N, dtype=torch.bool, device=dev),
        "initially_valid": torch.zeros(K, N, dtype=torch.bool, device=dev),
        "steps": torch.zeros(K, N, dtype=torch.long, device=dev),
        "p_target": torch.zeros(K, N, dtype=x0.dtype, device=dev),
    }
    if not latent:
        out["state"] = x0.clone()
        out["x_ae"] = x0.clone()  # t = 0 lies in the ball by construction
    else:
        with torch.no_grad():
            out["state"] = generator.encode(x0)  # type: ignore[attr-defined]
            out["x_cur"] = to_x(out["state"], x0)
        ok0 = within(_ball(out["x_cur"] - x0, epsilon_norm), p)
        out["x_ae"] = torch.where(ok0[..., None], out["x_cur"], x0)
    out["x0"], out["target"] = x0, target

    w = dict(out)  # working tensors, (K', N', ...)

    active = (valid.clone() if valid is not None else torch.ones(K, N, dtype=torch.bool)).to(dev)

    for t in range(1, t_max + 2):
        x0w, tgt = w["x0"], w["target"]
        s = w["state"].detach().requires_grad_(True)
        with torch.enable_grad():
            x = to_x(s, x0w)
            logits = forward(x, ks)
            with torch.no_grad():
                prob = F.softmax(logits.detach(), -1).gather(-1, tgt[..., None]).squeeze(-1)
                w["p_target"] = torch.where(active, prob, w["p_target"])
                done = active & (prob >= p["tau"])
                if t == 1:  # factuals already at τ return unconverged
                    w["initially_valid"] = done
                else:
                    w["converged"] = w["converged"] | done
                keep = active & ~done & (p["T"] >= t)
                # one host sync per iteration: running rows per setting, or whether any
                if compact > 0:
                    nk = keep.sum(1)
                    k_live, n_max = torch.stack([(nk > 0).sum(), nk.max()]).tolist()
                else:
                    n_max = int(keep.any())
            if n_max == 0:
                break
            ce = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none")
            loss = ce.view(keep.shape) + generator.penalty(x, x0w, logits, tgt, t, gw)
            (grad,) = torch.autograd.grad(loss.sum(), s)
        with torch.no_grad():
            delta = torch.nan_to_num(-p["lr"][..., None] * grad, nan=0.0, posinf=0.0, neginf=0.0)
            s = s.detach()
            k3 = keep[..., None]
            if latent:  # steps in latent space, unconstrained; to_x binds the decoded point
                s_new = s + delta
                x_new = to_x(s_new, x0w)
                w["x_cur"] = torch.where(k3, x_new, w["x_cur"])
            else:
                s_new = clamp_domain(s + mask_step(delta, mutability), bounds)
                x_new = project_onehot(s_new, onehot)
            w["state"] = torch.where(k3, s_new, s)
            w["steps"] = w["steps"] + keep.long()
            ok = within(_ball(x_new - x0w, epsilon_norm), p)
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
                p, gw = columns()

    _scatter(out, w, ks, ns)
    res = SearchResult(
        x_cf=(out["x_cur"] if latent else project_onehot(out["state"], onehot)).detach(),
        converged=out["converged"],
        steps=out["steps"],
        x_ae=out["x_ae"].detach(),
        p_target=out["p_target"],
        initially_valid=out["initially_valid"],
    )
    return SearchResult(*(getattr(res, f.name)[0] for f in fields(res))) if single else res


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
