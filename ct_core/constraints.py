"""Actionability and domain constraints.

* :func:`infer_domain` — per-feature bounds ``[min(μ − nσ·sd, min x), max(μ + nσ·sd, max x)]``
  computed on train+validation data (nσ = 2 in the code, 3 in the paper).
* :func:`clamp_domain` — applied to the counterfactual after every search step.
* :func:`mask_step` — mutability on the proposed step Δ: increase-only keeps Δ ≥ 0,
  decrease-only Δ ≤ 0, immutable Δ = 0.
* :func:`project_mutability` — the same constraint as a projection of a point onto the set
  reachable from the factual (used for REVISE, whose steps live in latent space).
* :func:`protect_immutable` — the point-mass prior of the contrastive term: for each
  constrained feature the target-class sample x⁺ takes x′'s value where x′ may not move further.
* :func:`project_onehot` — each one-hot group of a categorical set to the one-hot vector of its
  largest entry, so that a counterfactual takes exactly one category of each (docs/categorical.md).

Mutability is a ``(D,)`` int8 tensor of codes :data:`BOTH`, :data:`INCREASE`,
:data:`DECREASE`, :data:`NONE`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

BOTH, INCREASE, DECREASE, NONE = 0, 1, 2, 3
MUTABILITY_NAMES = {BOTH: "both", INCREASE: "increase", DECREASE: "decrease", NONE: "none"}

__all__ = [
    "BOTH",
    "DECREASE",
    "INCREASE",
    "NONE",
    "Domain",
    "clamp_domain",
    "infer_domain",
    "mask_step",
    "onehot_index",
    "project_mutability",
    "project_onehot",
    "protect_immutable",
    "resolve_features",
    "resolve_mutability",
]

Domain = tuple[Tensor, Tensor]
"""Lower and upper bounds, each ``(D,)``; ``±inf`` where a feature is unbounded."""


def infer_domain(x: Tensor, nsd: float = 2.0) -> Domain:
    """Bounds from data ``x`` ``(n, D)``: ``[min(μ − nsd·σ, min x), max(μ + nsd·σ, max x)]``."""
    mu = x.mean(0)
    sd = x.std(0, unbiased=True) if x.shape[0] > 1 else torch.zeros_like(mu)
    lo = torch.minimum(mu - nsd * sd, x.min(0).values)
    hi = torch.maximum(mu + nsd * sd, x.max(0).values)
    return lo, hi


def clamp_domain(x: Tensor, domain: Domain | None) -> Tensor:
    """Clamp ``x`` ``(N, D)`` feature-wise into ``domain`` (no-op for ``None``)."""
    if domain is None:
        return x
    lo, hi = domain
    return torch.maximum(torch.minimum(x, hi), lo)


def mask_step(delta: Tensor, mutability: Tensor | None) -> Tensor:
    """Constrain a proposed step ``delta`` ``(N, D)`` by per-feature ``mutability`` ``(D,)``."""
    if mutability is None:
        return delta
    m = mutability.to(delta.device)
    zero = torch.zeros((), dtype=delta.dtype, device=delta.device)
    out = torch.where(m == INCREASE, delta.clamp_min(0), delta)
    out = torch.where(m == DECREASE, out.clamp_max(0), out)
    return torch.where(m == NONE, zero, out)


def project_mutability(x: Tensor, x0: Tensor, mutability: Tensor | None) -> Tensor:
    """Project points ``x`` ``(N, D)`` onto what is reachable from factuals ``x0`` ``(N, D)``."""
    if mutability is None:
        return x
    m = mutability.to(x.device)
    out = torch.where(m == INCREASE, torch.maximum(x, x0), x)
    out = torch.where(m == DECREASE, torch.minimum(out, x0), out)
    return torch.where(m == NONE, x0, out)


def onehot_index(
    groups: Sequence[Sequence[int]], device: torch.device | str | None = None
) -> Tensor | None:
    """The one-hot groups as a ``(G, L)`` matrix of column indices padded with ``-1`` (``None``
    without groups)."""
    if not groups:
        return None
    width = max(len(g) for g in groups)
    rows = [list(g) + [-1] * (width - len(g)) for g in groups]
    return torch.tensor(rows, dtype=torch.long, device=device)


def project_onehot(x: Tensor, index: Tensor | None) -> Tensor:
    """``x`` ``(..., D)`` with every one-hot group (``index`` from :func:`onehot_index`) set to 1
    at its largest entry (the first on ties) and 0 elsewhere; other columns unchanged."""
    if index is None:
        return x
    idx = index.to(x.device)
    pad = idx < 0
    vals = x[..., idx.clamp_min(0)].masked_fill(pad, -torch.inf)  # (..., G, L)
    hot = torch.zeros_like(vals).scatter_(-1, vals.argmax(-1, keepdim=True), 1.0)
    out = x.clone()
    out[..., idx[~pad]] = hot[..., ~pad]
    return out


def protect_immutable(x_cf: Tensor, x_pos: Tensor, mutability: Tensor | None) -> Tensor:
    """Return x⁺ with constrained features moved to x′ (the authors' ``protect_immutable!``).

    ``none``: x⁺_d := x′_d; ``increase``: x⁺_d := x′_d where x′_d > x⁺_d; ``decrease``:
    x⁺_d := x′_d where x′_d < x⁺_d. The gradient of the contrastive term with respect to the
    weight of a protected feature then vanishes (Proposition 3.1). Shapes ``(N, D)``; returns a
    new tensor.
    """
    if mutability is None:
        return x_pos
    m = mutability.to(x_pos.device)
    take = (m == NONE) | ((m == INCREASE) & (x_cf > x_pos)) | ((m == DECREASE) & (x_cf < x_pos))
    return torch.where(take, x_cf, x_pos)


def resolve_features(
    refs: Sequence[int | str], feature_names: Sequence[str], field: str = "data.immutable"
) -> list[int]:
    """Map feature references to 0-based column indices of the encoded data.

    A reference is a column index, an exact encoded column name, or the name of an original
    categorical column (covers every one-hot column named ``"<name>=<level>"``).
    """
    from ct_core.config import ConfigError

    out: list[int] = []
    names = list(feature_names)
    index = {n: i for i, n in enumerate(names)}
    for r in refs:
        if isinstance(r, int) and not isinstance(r, bool):
            if not 0 <= r < len(names):
                raise ConfigError(
                    f"{field}: feature index {r} is out of range; the data has {len(names)} "
                    f"features (indices 0..{len(names) - 1})"
                )
            out.append(r)
            continue
        if r in index:
            out.append(index[r])
            continue
        group = [i for i, n in enumerate(names) if n.startswith(f"{r}=")]
        if group:
            out.extend(group)
            continue
        shown = ", ".join(_base_names(names)[:40])
        raise ConfigError(f"{field}: unknown feature {r!r}; known features: {shown}")
    return sorted(set(out))


def _base_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for n in names:
        seen.setdefault(n.split("=", 1)[0], None)
    return list(seen)


def resolve_mutability(
    feature_names: Sequence[str],
    immutable: Sequence[int | str] = (),
    increase_only: Sequence[int | str] = (),
    decrease_only: Sequence[int | str] = (),
    onehot_groups: Sequence[Sequence[int]] = (),
) -> Tensor:
    """The ``(D,)`` mutability code vector for the named constraints (default ``both``).

    A categorical searched one-hot (``onehot_groups``) is immutable as a whole or not at all: an
    order constraint or one level alone would let the search switch categories regardless."""
    from ct_core.config import ConfigError

    m = torch.full((len(feature_names),), BOTH, dtype=torch.int8)
    owner: dict[int, str] = {}
    for refs, code, field in (
        (increase_only, INCREASE, "data.increase_only"),
        (decrease_only, DECREASE, "data.decrease_only"),
        (immutable, NONE, "data.immutable"),
    ):
        idx = resolve_features(refs, feature_names, field)
        for i in idx:  # by name or by index: one constraint per feature
            if owner.setdefault(i, field) != field:
                raise ConfigError(
                    f"{field}: feature {feature_names[i]!r} (index {i}) is also in "
                    f"{owner[i]}; a feature takes one of data.immutable, data.increase_only, "
                    "data.decrease_only"
                )
        if idx:
            m[idx] = code
    for g in onehot_groups:
        codes = set(m[list(g)].tolist())
        name = feature_names[g[0]].split("=", 1)[0]
        if codes & {INCREASE, DECREASE}:
            field = "increase_only" if INCREASE in codes else "decrease_only"
            raise ConfigError(
                f"data.{field}: {name!r} is categorical; a categorical can only be immutable "
                "as a whole (data.immutable)"
            )
        if len(codes) > 1:
            raise ConfigError(
                f"data.immutable: names some levels of the categorical {name!r} only; name "
                f"{name!r} to keep the whole categorical fixed"
            )
    return m
