"""Evaluation metrics: counterfactual quality and predictive performance. All functions are
batched over rows; shapes are in the docstrings.

* :func:`validity`, :func:`cost`, :func:`implausibility` (IP, Eq. 4), :func:`mmd_unbiased`
  (IP*, Eq. 5), :func:`redundancy` — per counterfactual.
* :func:`predict`, :func:`accuracy`, :func:`macro_f1`; robustness (:func:`fgsm`, :func:`pgd`,
  :func:`robust_accuracy`) and :func:`integrated_gradients_sensitivity` live in
  :mod:`ct_core.robustness` and are re-exported here.
* :func:`pack_validation_metrics` — a small, fast counterfactual pass used during training, for
  the K models of a pack at once; :func:`validation_metrics` — the same for one model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from ct_core.models import device_of
from ct_core.robustness import (
    fgsm,
    integrated_gradients_sensitivity,
    pgd,
    robust_accuracy,
    robust_accuracy_table,
)

if TYPE_CHECKING:
    from ct_core.config import Config
    from ct_core.data.base import Dataset
    from ct_core.search import Forward
    from ct_core.stack import ModelStack

__all__ = [
    "accuracy",
    "cost",
    "fgsm",
    "implausibility",
    "implausibility_by_target",
    "integrated_gradients_sensitivity",
    "macro_f1",
    "mmd_unbiased",
    "pack_validation_metrics",
    "pgd",
    "predict",
    "predict_proba",
    "redundancy",
    "robust_accuracy",
    "robust_accuracy_table",
    "sample_rows",
    "validation_metrics",
    "validity",
]


# ----------------------------------------------------------------------------------------------
# Counterfactual quality


def validity(p_target: Tensor, threshold: float = 0.5) -> Tensor:
    """``p(y⁺|x′) ≥ threshold`` per counterfactual: ``(N,) -> (N,) bool``.

    The authors' code filters on 0.5 (``validity``) and reports ``validity_strict`` at τ_eval.
    """
    return p_target >= threshold


def cost(x: Tensor, x_cf: Tensor) -> Tensor:
    """Cost = ``‖x′ − x‖₁`` per row: ``(N, D), (N, D) -> (N,)`` (CE.jl ``distance``)."""
    return (x_cf - x).abs().sum(dim=1)


def redundancy(x: Tensor, x_cf: Tensor, tol: float = 1e-5) -> Tensor:
    """Share of features left unchanged (``|x′_d − x_d| < tol``): ``(N, D), (N, D) -> (N,)``."""
    return ((x_cf - x).abs() < tol).float().mean(dim=1)


def sample_rows(
    X: Tensor, n: int, generator: torch.Generator | None = None, replace: bool = True
) -> Tensor:
    """``n`` rows of ``X`` ``(M, D)``; without replacement at most ``M`` rows (all if ``M ≤ n``)."""
    m = X.shape[0]
    if m == 0:
        return X[:0]
    if replace:
        idx = torch.randint(m, (n,), generator=generator)
    elif m <= n:
        return X
    else:
        idx = torch.randperm(m, generator=generator)[:n]
    return X[idx.to(X.device)]


def implausibility(x_cf: Tensor, x_target_samples: Tensor) -> Tensor:
    """IP (Eq. 4): mean L1 distance from each counterfactual to the target-class samples.

    ``x_cf`` ``(N, D)``, ``x_target_samples`` ``(S, D)`` (the authors' code draws up to 1000 target-class
    rows of the evaluation data with replacement, see :func:`implausibility_by_target`) -> ``(N,)``.
    """
    if x_cf.shape[0] == 0:
        return x_cf.new_zeros(0)
    if x_target_samples.shape[0] == 0:
        return torch.full((x_cf.shape[0],), math.nan, dtype=x_cf.dtype, device=x_cf.device)
    return torch.cdist(x_cf, x_target_samples.to(x_cf), p=1.0).mean(dim=1)


def implausibility_by_target(
    x_cf: Tensor,
    target: Tensor,
    X: Tensor,
    y: Tensor,
    n_samples: int = 1000,
    generator: torch.Generator | None = None,
) -> Tensor:
    """IP for counterfactuals with mixed targets: ``(N, D), (N,)`` -> ``(N,)``.

    For each target class k, ``n_samples`` rows of ``X[y == k]`` are drawn with replacement (one
    draw per class, shared by every counterfactual aimed at k).
    """
    out = torch.full((x_cf.shape[0],), math.nan, dtype=x_cf.dtype, device=x_cf.device)
    for k in torch.unique(target).tolist():
        rows = target == k
        samples = sample_rows(X[y == k], n_samples, generator, replace=True)
        out[rows] = implausibility(x_cf[rows], samples)
    return out


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    return torch.cdist(a, b, p=2.0).square()


def mmd_unbiased(
    X: Tensor,
    Y: Tensor,
    length_scale: float = 5.0,
    max_samples: int | None = 100,
    generator: torch.Generator | None = None,
    clamp: bool = True,
) -> float:
    """IP* (Eq. 5): the unbiased MMD² estimate between samples ``X`` ``(m, D)`` and ``Y`` ``(n, D)``.

    Gaussian kernel ``k(x, y) = exp(−‖x − y‖² / (2ℓ²))`` (KernelFunctions'
    ``with_lengthscale(GaussianKernel(), ℓ)``); within-sample means exclude the diagonal. Each
    sample is first subsampled without replacement to at most ``max_samples`` rows (the
    authors' ``ndiv = 100``). Negative estimates are clamped to 0 as the authors' code does before
    aggregation (``clamp=False`` keeps the unbiased value). NaN if either sample has < 2 rows.
    """
    if max_samples is not None:
        X = sample_rows(X, max_samples, generator, replace=False)
        Y = sample_rows(Y, max_samples, generator, replace=False)
    m, n = X.shape[0], Y.shape[0]
    if m < 2 or n < 2:
        return math.nan
    X = X.double()
    Y = Y.double().to(X.device)
    g = 2.0 * float(length_scale) ** 2
    kxx = torch.exp(-_sq_dists(X, X) / g)
    kyy = torch.exp(-_sq_dists(Y, Y) / g)
    kxy = torch.exp(-_sq_dists(X, Y) / g)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    val = float(sxx + syy - 2.0 * kxy.mean())
    return max(val, 0.0) if clamp else val


# ----------------------------------------------------------------------------------------------
# Predictive performance


@torch.no_grad()
def predict_proba(model: nn.Module, X: Tensor, batch_size: int = 4096) -> Tensor:
    """Softmax probabilities ``(N, K)`` of ``model`` on ``X`` ``(N, D)``, in eval mode, batched."""
    was = model.training
    model.eval()
    dev = device_of(model)
    out = [
        torch.softmax(model(X[i : i + batch_size].to(dev)), dim=1).cpu()
        for i in range(0, X.shape[0], batch_size)
    ]
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, 0)


def predict(model: nn.Module, X: Tensor, batch_size: int = 4096) -> Tensor:
    """Predicted classes ``(N,)`` int64."""
    return predict_proba(model, X, batch_size).argmax(dim=1)


def accuracy(y_true: Tensor, y_pred: Tensor) -> float:
    """Share of ``y_pred == y_true`` (both ``(N,)``)."""
    if y_true.numel() == 0:
        return math.nan
    return float((y_true.cpu() == y_pred.cpu()).float().mean())


def macro_f1(y_true: Tensor, y_pred: Tensor, n_classes: int | None = None) -> float:
    """Macro-averaged F1 over classes (StatisticalMeasures ``multiclass_f1score`` default)."""
    from sklearn.metrics import f1_score

    labels = list(range(n_classes)) if n_classes is not None else None
    return float(
        f1_score(
            y_true.cpu().numpy(),
            y_pred.cpu().numpy(),
            labels=labels,
            average="macro",
            zero_division=0,
        )
    )


# ----------------------------------------------------------------------------------------------
# Validation-time counterfactual metrics (used by training every ``train.eval_every`` epochs)


def validation_metrics(
    model: nn.Module,
    data: Dataset,
    cfg: Config,
    seed: int | None = None,
    rng: torch.Generator | None = None,
) -> dict[str, float]:
    """Counterfactual quality of one model on ``cfg.evaluation.n_val_individuals`` validation
    points: :func:`pack_validation_metrics` of a pack of one. Randomness comes from ``rng`` if
    given, else from ``seed`` (default ``evaluation.seed``: the same validation points and target
    draws every call, which is what training uses, so that the metric compares settings and
    epochs on the same points)."""
    gen = rng if rng is not None else torch.Generator()
    if rng is None:
        gen.manual_seed(cfg.evaluation.seed if seed is None else seed)
    was = model.training
    model.eval()
    try:
        return pack_validation_metrics(model, data, [cfg], [gen])[0]
    finally:
        model.train(was)


def pack_validation_metrics(
    model: ModelStack | nn.Module | Forward,
    data: Dataset,
    cfgs: Sequence[Config],
    rngs: Sequence[torch.Generator] | None = None,
    *,
    compact: float | None = None,
) -> list[dict[str, float]]:
    """Validation-set counterfactual quality of K models (one per config ``cfgs[k]``) at once.

    ``model``: a :class:`~ct_core.stack.ModelStack` of K models in evaluation mode, one
    ``nn.Module`` for every config, or a :data:`~ct_core.search.Forward` (on ``data``'s device).
    Each setting draws its validation points and, for each, a target uniform among the classes
    other than the predicted one from its own ``rngs[k]`` (default: a generator seeded with
    ``cfgs[k].evaluation.seed``). The test-time generator (ECCo, λ_cost = ``evaluation.lambda_cost``,
    λ_egy = the middle of ``evaluation.lambda_energies``, T and τ from ``evaluation``, step size
    and energy settings from ``generator``) searches once, all settings together (one search per
    value of ``evaluation.constrained`` present). Returns per setting ``val_validity`` (share
    reaching τ) and, over valid counterfactuals only, ``val_cost``, ``val_implausibility`` (IP)
    and ``val_mmd`` (IP*, per target class then averaged), with IP / IP* samples drawn from
    ``rngs[k]``; NaN where nothing is valid. ``compact``: as in :func:`~ct_core.search.search`.
    """
    from ct_core.generators import ECCo
    from ct_core.search import as_forward, search
    from ct_core.stack import ModelStack

    K, (X, y), forward = len(cfgs), _validation_split(data), as_forward(model)
    dev = model.device if isinstance(model, ModelStack) else data.X_train.device
    dev = device_of(model) if isinstance(model, nn.Module) else dev
    gens = list(rngs or [torch.Generator().manual_seed(c.evaluation.seed) for c in cfgs])
    if len(gens) != K:
        raise ValueError(f"expected {K} random generators, got {len(gens)}")
    C = data.n_classes
    ns = [min(c.evaluation.n_val_individuals, X.shape[0]) for c in cfgs]
    N = max(ns, default=0)
    idx = torch.zeros(K, N, dtype=torch.long)
    shift = torch.ones(K, N, dtype=torch.long)
    valid = torch.zeros(K, N, dtype=torch.bool)
    for k, (g, n) in enumerate(zip(gens, ns)):
        idx[k, :n] = torch.randperm(X.shape[0], generator=g)[:n]
        # a uniform draw among the C-1 other classes: shift by 1..C-1
        shift[k, :n] = torch.randint(1, C, (n,), generator=g)
        valid[k, :n] = True
    x0 = X[idx]  # (K, N, D)
    x_cf = x0.clone()
    p_target = torch.zeros(K, N, dtype=x0.dtype)
    target = shift
    if N > 0:
        x0d = x0.to(dev)
        with torch.no_grad():
            logits = forward(x0d, None)
            pred = torch.softmax(logits, dim=-1).argmax(-1).cpu()
        target = (pred + shift) % C
        domain = None if data.domain is None else (data.domain[0].to(dev), data.domain[1].to(dev))
        for constrained in (False, True):  # one search per mutability setting present
            rows = [k for k, c in enumerate(cfgs) if c.evaluation.constrained == constrained]
            if not rows:
                continue
            sub = [cfgs[k] for k in rows]
            fwd = forward
            if len(rows) < K:
                r_dev = torch.tensor(rows, dtype=torch.long, device=dev)

                def fwd(x: Tensor, ks: Tensor | None, r: Tensor = r_dev) -> Tensor:
                    return forward(x, r if ks is None else r[ks])

            gen = ECCo(
                lambda_cost=[c.evaluation.lambda_cost for c in sub],
                lambda_energy=[_validation_lambda_energy(c) for c in sub],
                T=[c.evaluation.T for c in sub],
                energy_reg=[c.generator.energy_reg for c in sub],
                decay=[c.generator.energy_decay for c in sub],
            )
            res = search(
                fwd,
                x0d[rows],
                target[rows].to(dev),
                gen,
                T=[c.evaluation.T for c in sub],
                tau=[c.evaluation.tau for c in sub],
                lr=[c.generator.lr for c in sub],
                valid=valid[rows].to(dev),
                domain=domain,
                mutability=data.mutability if constrained else None,
                onehot=data.onehot,
                compact=compact,
            )
            x_cf[rows] = res.x_cf.detach().cpu()
            p_target[rows] = res.p_target.detach().cpu()
    return [
        _validation_summary(
            x0[k, :n], x_cf[k, :n], target[k, :n], p_target[k, :n], X, y, cfgs[k], gens[k]
        )
        for k, n in enumerate(ns)
    ]


def _validation_split(data: Dataset) -> tuple[Tensor, Tensor]:
    """The validation rows ``(M, D), (M,)`` on the CPU (the test rows if there are none)."""
    X, y = data.split("val") if data.X_val.shape[0] > 0 else data.split("test")
    return X.cpu(), y.cpu()


def _validation_lambda_energy(cfg: Config) -> float:
    """The test-time ECCo's λ_egy: the middle of ``evaluation.lambda_energies`` (1 if empty)."""
    lams = sorted(cfg.evaluation.lambda_energies) or [1.0]
    return lams[len(lams) // 2]


def _validation_summary(
    x0: Tensor,
    x_cf: Tensor,
    target: Tensor,
    p_target: Tensor,
    X: Tensor,
    y: Tensor,
    cfg: Config,
    gen: torch.Generator,
) -> dict[str, float]:
    """The validation metrics of one setting from its search: factuals ``x0`` ``(n, D)``,
    counterfactuals ``x_cf`` ``(n, D)``, targets ``(n,)``, final ``p_target`` ``(n,)`` (all on the
    CPU) and the validation rows ``X`` ``(M, D)``, ``y`` ``(M,)``; IP / IP* samples from ``gen``."""
    ev = cfg.evaluation
    n = x0.shape[0]
    valid = validity(p_target, ev.tau)
    out = {
        "val_validity": float(valid.float().mean()) if n else math.nan,
        "val_cost": math.nan,
        "val_implausibility": math.nan,
        "val_mmd": math.nan,
    }
    if valid.any():
        xv, x0v, tv = x_cf[valid], x0[valid], target[valid]
        out["val_cost"] = float(cost(x0v, xv).mean())
        out["val_implausibility"] = float(
            implausibility_by_target(xv, tv, X, y, ev.n_target_samples, gen).mean()
        )
        mmds = [
            mmd_unbiased(xv[tv == k], X[y == k], ev.length_scale, ev.mmd_samples, gen)
            for k in torch.unique(tv).tolist()
        ]
        mmds = [m for m in mmds if not math.isnan(m)]
        out["val_mmd"] = float(np.mean(mmds)) if mmds else math.nan
    return out
