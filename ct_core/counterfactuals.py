"""One epoch's counterfactual sweep (Algorithm 1 as the authors' code runs it), K settings.

For each setting that trains with CT this epoch, drawn from its own random generator in this
order: ``nce`` factuals without replacement from the training set (with replacement if ``nce``
exceeds it), for each a target uniform over the classes other than the one the model predicts,
and x⁺ uniform (with replacement) from the target class. All settings' searches run as one
(:func:`ct_core.search.search`) against the models as they are at the start of the epoch. Only
converged counterfactuals are *mature* (or also those that exhausted T, ``train.mature``); the
others are replaced by their x⁺ (zero contrastive term). Immutable features are then protected
on x⁺ (the paper's point-mass prior). :meth:`Pairs.chunks` splits each setting's sweep into contiguous, nearly equal
chunks, one per mini-batch (chunk i is not related to the samples of batch i).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ct_core.config import Config
from ct_core.constraints import protect_immutable
from ct_core.data.base import Dataset
from ct_core.generators.base import Generator
from ct_core.search import SearchResult, search
from ct_core.stack import ModelStack

__all__ = ["Pairs", "counterfactual_pairs"]


@dataclass
class Pairs:
    """The sweeps of settings ``rows`` ``(KA,)``, padded to the largest ``nce`` (``valid``):
    mature counterfactuals ``x_cf`` (x⁺ where not mature), target-class samples ``x_pos``
    (immutables protected), nascent counterfactuals ``x_ae`` within the ε-ball, all
    ``(KA, N, D)``; ``target`` y⁺ and the factuals' labels ``y_factual``, ``(KA, N)``."""

    rows: Tensor
    x_cf: Tensor
    x_pos: Tensor
    x_ae: Tensor
    target: Tensor
    y_factual: Tensor
    valid: Tensor
    mature: Tensor
    result: SearchResult
    nces: list[int]

    def mean(self, v: Tensor) -> list[float]:
        """A per-row quantity ``(KA, N)`` averaged over each setting's own rows."""
        vf = self.valid.float()
        return ((v.float() * vf).sum(1) / vf.sum(1)).tolist()

    def chunks(self, K: int, nb: int) -> dict[str, Tensor]:
        """Per mini-batch chunks for all K settings: ``x_cf``, ``x_pos``, ``x_ae``
        ``(K, nb, m, D)``, ``target``, ``y_factual``, ``mask`` ``(K, nb, m)``; chunk j of a
        setting is rows ``[start, start + size)`` of its sweep (``arange(nce).tensor_split(nb)``),
        padded to the largest chunk ``m``; settings without a sweep get masked zeros."""
        KA, dev = len(self.nces), self.x_cf.device
        sizes = torch.tensor(
            [[len(c) for c in torch.arange(n).tensor_split(nb)] for n in self.nces]
        )
        starts = torch.cumsum(sizes, 1) - sizes
        m = int(sizes.max())
        ar = torch.arange(m)
        rows = starts[..., None] + ar  # (KA, nb, m)
        mask = ar < sizes[..., None]
        last = torch.tensor(self.nces)[:, None, None] - 1
        rows = torch.minimum(rows, last).to(dev).flatten(1)  # (KA, nb·m)

        def full(g: Tensor) -> Tensor:  # all K settings' rows
            return g if KA == K else g.new_zeros((K, *g.shape[1:])).index_copy(0, self.rows, g)

        def chunk(t: Tensor) -> Tensor:
            if t.dim() == 3:
                g = t.gather(1, rows[..., None].expand(-1, -1, t.shape[-1]))
                return full(g.view(KA, nb, m, t.shape[-1]))
            return full(t.gather(1, rows).view(KA, nb, m))

        out = {n: chunk(getattr(self, n)) for n in ("x_cf", "x_pos", "x_ae", "target", "y_factual")}
        out["mask"] = full(mask.to(dev))
        return out


@torch.no_grad()
def counterfactual_pairs(
    stack: ModelStack,
    data: Dataset,
    cfgs: Sequence[Config],
    rngs: Sequence[torch.Generator],
    rows: Sequence[int],
    nces: Sequence[int],
    generator: Generator,
    **search_kw: Any,
) -> Pairs:
    """The sweeps of the settings ``rows`` of ``stack`` (``nces[j]`` counterfactuals for
    ``rows[j]``, drawn from ``rngs[rows[j]]``; ``cfgs`` and ``generator`` are the stack's K
    settings'). ``search_kw`` go to :func:`~ct_core.search.search` (``compact``)."""
    X, y = data.X_train, data.y_train
    dev, n, C = X.device, X.shape[0], data.n_classes
    KA, N = len(rows), max(nces)
    idx = torch.zeros(KA, N, dtype=torch.long)
    r = torch.zeros(KA, N, dtype=torch.long)
    u = torch.zeros(KA, N)
    valid = torch.zeros(KA, N, dtype=torch.bool)
    for j, (k, nce) in enumerate(zip(rows, nces)):
        g = rngs[k]
        if nce <= n:
            idx[j, :nce] = torch.randperm(n, generator=g)[:nce]
        else:
            idx[j, :nce] = torch.randint(n, (nce,), generator=g)
        r[j, :nce] = torch.randint(C - 1, (nce,), generator=g)
        u[j, :nce] = torch.rand(nce, generator=g)
        valid[j, :nce] = True
    idx, r, u, valid = idx.to(dev), r.to(dev), u.to(dev), valid.to(dev)
    forward = stack.forward_fn(rows)
    x0, y0 = X[idx], y[idx]
    pred = forward(x0, None).argmax(-1)
    target = r + (r >= pred).long()  # y⁺ uniform over the non-predicted classes
    # x⁺ uniform (with replacement) from the target class of the training data
    counts = torch.bincount(y, minlength=C)
    order = torch.argsort(y, stable=True)
    c = counts[target]
    pick = (torch.cumsum(counts, 0) - counts)[target] + (u * c).long().clamp_max(c - 1).clamp_min(0)
    x_pos = X[order[pick]]
    # a class absent from the training data: keep the pair but make it inert
    x_pos = torch.where((c == 0)[..., None], x0, x_pos)

    sub = [cfgs[k] for k in rows]
    res = search(
        forward,
        x0,
        target,
        generator.select(rows),
        T=[c.generator.T for c in sub],
        tau=[c.generator.tau for c in sub],
        lr=[c.generator.lr for c in sub],
        valid=valid,
        domain=data.domain,
        mutability=data.mutability,
        onehot=data.onehot,
        epsilon=[c.train.epsilon for c in sub],
        epsilon_norm=sub[0].train.epsilon_norm,
        epsilon_strict=[c.train.epsilon_strict for c in sub],
        **search_kw,
    )
    exhausted_ok = torch.tensor(
        [c.train.mature == "converged_or_exhausted" for c in sub], device=dev
    )
    mature = res.converged | (res.exhausted & exhausted_ok[:, None])
    x_cf = torch.where(mature[..., None], res.x_cf, x_pos)
    x_pos = protect_immutable(x_cf, x_pos, data.mutability)
    rows_t = torch.tensor(list(rows), dtype=torch.long, device=dev)
    return Pairs(rows_t, x_cf, x_pos, res.x_ae, target, y0, valid, mature, res, list(nces))
