"""The paper's counterfactual comparison protocol (the paper's Table 1; docs/results.md).

1. :func:`draw_classes` draws ``n_individuals`` factual classes uniformly and for each a target
   uniformly among the other classes — once, reused by every run and every model.
2. :func:`evaluate_model`: for each of ``n_runs`` runs and each individual, a random evaluation
   point *predicted* as the factual class (per model; the random numbers are shared), one
   counterfactual per λ_egy from the test-time generator (ECCo, λ_cost = 0, T = 50), scored per
   counterfactual. Two settings: ``plausibility`` (τ_eval = 0.95, unconstrained unless
   ``evaluation.constrained``) and ``cost`` (τ = 0.5 with the data's mutability constraints, the
   cost column of Table 1).
3. :func:`compare` (:mod:`ct_core.comparison`, re-exported here): the Table-1 cells from two
   models' frames, for each population of counterfactuals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor, nn

from ct_core.comparison import (
    POPULATIONS,
    compare,
    format_markdown,
    paired_frames,
    per_run,
    reduction_stats,
    summarize,
)
from ct_core.evaluation import (
    cost,
    implausibility,
    mmd_unbiased,
    predict,
    redundancy,
    sample_rows,
    validity,
)

if TYPE_CHECKING:
    from ct_core.config import Config
    from ct_core.data.base import Dataset

__all__ = [
    "POPULATIONS",
    "SETTINGS",
    "Draws",
    "compare",
    "draw_classes",
    "evaluate_model",
    "format_markdown",
    "paired_frames",
    "per_run",
    "reduction_stats",
    "summarize",
]

SETTINGS = ("plausibility", "cost")


@dataclass
class Draws:
    """Factual and target classes of the individuals, ``(n_individuals,)`` int64 each."""

    factual: Tensor
    target: Tensor
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"factual": self.factual.tolist(), "target": self.target.tolist(), "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Draws:
        return cls(torch.tensor(d["factual"]), torch.tensor(d["target"]), int(d["seed"]))


def draw_classes(n_classes: int, n_individuals: int, seed: int) -> Draws:
    """Factual classes uniform over ``n_classes``, targets uniform over the other classes."""
    if n_classes < 2:
        from ct_core.config import ConfigError

        raise ConfigError(f"the protocol needs at least 2 classes, the data has {n_classes}")
    g = torch.Generator().manual_seed(seed)
    factual = torch.randint(n_classes, (n_individuals,), generator=g)
    target = (factual + torch.randint(1, n_classes, (n_individuals,), generator=g)) % n_classes
    return Draws(factual, target, seed)


def _run_generator(seed: int, run: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + run * 7919 + salt) % (2**63 - 1))


def _pick_points(pred: Tensor, factual: Tensor, u: Tensor) -> Tensor:
    """For each individual, an index of an evaluation point predicted as its factual class.

    ``pred`` ``(M,)`` predictions on the evaluation split, ``factual`` ``(n,)``, ``u`` ``(n,)``
    uniform numbers in [0, 1) (shared between models). ``-1`` where no point has that prediction.
    """
    order = torch.argsort(pred, stable=True)
    K = int(max(int(pred.max()) if pred.numel() else 0, int(factual.max())) + 1)
    counts = torch.bincount(pred, minlength=K)
    starts = torch.cumsum(counts, 0) - counts
    c = counts[factual]
    pos = starts[factual] + torch.minimum((u * c).long(), (c - 1).clamp_min(0))
    idx = order[pos.clamp(0, max(pred.numel() - 1, 0))]
    return torch.where(c > 0, idx, torch.full_like(idx, -1))


def _generator_for(cfg: Config, lam: float) -> Any:
    from ct_core.generators import ECCo

    return ECCo(
        lambda_cost=cfg.evaluation.lambda_cost,
        lambda_energy=lam,
        T=cfg.evaluation.T,
        energy_reg=cfg.generator.energy_reg,
        decay=cfg.generator.energy_decay,
    )


def _chunks(n_runs: int, n_individuals: int, n_features: int) -> list[range]:
    per = max(
        1,
        min(
            n_runs, 50_000 // max(n_individuals, 1), 5_000_000 // max(n_individuals * n_features, 1)
        ),
    )
    return [range(s, min(s + per, n_runs)) for s in range(0, n_runs, per)]


def evaluate_model(
    model: nn.Module,
    data: Dataset,
    cfg: Config,
    draws: Draws,
    *,
    settings: Sequence[str] = SETTINGS,
    n_runs: int | None = None,
    progress: bool | None = None,
    desc: str = "runs",
) -> pd.DataFrame:
    """Counterfactuals of ``model`` under the protocol: one row per counterfactual.

    Columns: ``setting, run, lambda_energy, individual, index`` (row of the evaluation split),
    ``factual, target, tau, constrained, valid`` (p ≥ τ of the setting), ``valid_05`` (p ≥ 0.5,
    the authors' filter), ``converged, p_target, steps, cost, implausibility, redundancy,
    mmd`` (IP* of the run × λ × target group over its valid counterfactuals, repeated on each of
    its rows; NaN elsewhere and in the cost setting), ``mmd_05`` (the same over the group's
    p ≥ 0.5 counterfactuals), then ``x_<feature>`` and ``cf_<feature>``.
    All individuals × runs of a chunk go through one batched search per λ_egy.
    """
    from tqdm.auto import tqdm

    from ct_core.generators import search

    ev = cfg.evaluation
    n_runs = ev.n_runs if n_runs is None else n_runs
    X, y = (t.cpu() for t in data.split(ev.split))
    dev = next(model.parameters()).device
    domain = None if data.domain is None else (data.domain[0].to(dev), data.domain[1].to(dev))
    model.eval()
    pred = predict(model, X)
    feats = list(data.feature_names) or [str(i) for i in range(X.shape[1])]
    n_ind = draws.factual.shape[0]
    by_class = {k: X[y == k] for k in range(data.n_classes)}
    frames: list[pd.DataFrame] = []
    show = _isatty() if progress is None else progress
    bar = tqdm(total=n_runs * len(settings), desc=desc, disable=not show, leave=False)
    for setting in settings:
        if setting not in SETTINGS:
            from ct_core.config import ConfigError

            raise ConfigError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
        tau = ev.tau if setting == "plausibility" else ev.tau_cost
        constrained = bool(ev.constrained) if setting == "plausibility" else True
        mut = data.mutability if constrained else None
        for chunk in _chunks(n_runs, n_ind, X.shape[1]):
            runs = list(chunk)
            # per-run random numbers, identical for every model evaluated on these draws
            u = torch.stack(
                [torch.rand(n_ind, generator=_run_generator(draws.seed, r)) for r in runs]
            )
            idx = torch.stack([_pick_points(pred, draws.factual, u[i]) for i in range(len(runs))])
            ok = idx >= 0
            run_col = torch.tensor(runs)[:, None].expand(-1, n_ind)[ok]
            ind_col = torch.arange(n_ind)[None, :].expand(len(runs), -1)[ok]
            idx_f = idx[ok]
            x0 = X[idx_f]
            tgt = draws.target[ind_col]
            fac = draws.factual[ind_col]
            for lam in ev.lambda_energies:
                res = search(
                    model,
                    x0.to(dev),
                    tgt.to(dev),
                    _generator_for(cfg, lam),
                    T=ev.T,
                    tau=tau,
                    lr=cfg.generator.lr,
                    domain=domain,
                    mutability=mut,
                    onehot=data.onehot,
                )
                x_cf = res.x_cf.detach().cpu()
                p = res.p_target.detach().cpu()
                valid = validity(p, tau)
                valid05 = validity(p, 0.5)
                ip = torch.full((x0.shape[0],), math.nan)
                mmd = torch.full((x0.shape[0],), math.nan)
                mmd05 = torch.full((x0.shape[0],), math.nan)
                for r in runs:
                    g = _run_generator(draws.seed, r, salt=1)
                    g_mmd = _run_generator(draws.seed, r, salt=2 + int(1000 * lam))
                    g_ref = _run_generator(draws.seed, r, salt=1_000_001)
                    g_mmd05 = _run_generator(draws.seed, r, salt=2_000_003 + int(1000 * lam))
                    in_run = run_col == r
                    for k in range(data.n_classes):
                        rows = in_run & (tgt == k)
                        # same target samples for every model and λ of this run (drawn per class)
                        samples = sample_rows(by_class[k], ev.n_target_samples, g, replace=True)
                        ref = sample_rows(by_class[k], ev.mmd_samples, g_ref, replace=False)
                        if not rows.any():
                            continue
                        ip[rows] = implausibility(x_cf[rows], samples)
                        if setting != "plausibility":
                            continue
                        for col, ok, gen in ((mmd, valid, g_mmd), (mmd05, valid05, g_mmd05)):
                            vrows = rows & ok
                            if int(vrows.sum()) >= 2:
                                col[rows] = mmd_unbiased(
                                    x_cf[vrows], ref, ev.length_scale, ev.mmd_samples, gen
                                )
                df = pd.DataFrame(
                    {
                        "setting": setting,
                        "run": run_col.numpy(),
                        "lambda_energy": float(lam),
                        "individual": ind_col.numpy(),
                        "index": idx_f.numpy(),
                        "factual": fac.numpy(),
                        "target": tgt.numpy(),
                        "tau": tau,
                        "constrained": constrained,
                        "valid": valid.numpy(),
                        "valid_05": valid05.numpy(),
                        "converged": res.converged.cpu().numpy(),
                        "p_target": p.numpy(),
                        "steps": res.steps.cpu().numpy(),
                        "cost": cost(x0, x_cf).numpy(),
                        "implausibility": ip.numpy(),
                        "redundancy": redundancy(x0, x_cf).numpy(),
                        "mmd": mmd.numpy(),
                        "mmd_05": mmd05.numpy(),
                    }
                )
                fx = pd.DataFrame(x0.numpy(), columns=[f"x_{f}" for f in feats])
                fc = pd.DataFrame(x_cf.numpy(), columns=[f"cf_{f}" for f in feats])
                frames.append(pd.concat([df, fx, fc], axis=1))
            bar.update(len(runs))
    bar.close()
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _isatty() -> bool:
    import sys

    return sys.stderr.isatty()
