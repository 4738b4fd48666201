"""Order statistics of a search: best-so-far curves, and the best of N settings drawn at random
without replacement from a finished grid (exact, by combinatorics over the sorted values)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _key(v: float) -> float:
    """Sort key: missing (NaN) values rank last."""
    return math.inf if v is None or math.isnan(v) else v


def best_so_far(values: Sequence[float]) -> list[float]:
    """Running minimum in the given order; NaN (no value) never improves it (NaN until a value)."""
    out, cur = [], math.nan
    for v in values:
        if not math.isnan(v) and (math.isnan(cur) or v < cur):
            cur = v
        out.append(cur)
    return out


def incumbent_report(select: Sequence[float], report: Sequence[float]) -> list[float]:
    """For each prefix of the trials, ``report`` of the trial that is best by ``select`` so far
    (the first on ties), NaN while no trial has a ``select`` value."""
    out, best_i = [], -1
    for i, v in enumerate(select):
        if not math.isnan(v) and (best_i < 0 or v < select[best_i]):
            best_i = i
        out.append(report[best_i] if best_i >= 0 else math.nan)
    return out


def argmin_probabilities(n_total: int, n: int) -> list[float]:
    """``p[i]``: probability that the ``i``-th smallest (0-based) of ``n_total`` values is the
    smallest among ``n`` drawn uniformly without replacement: C(N-1-i, n-1) / C(N, n)."""
    if not 1 <= n <= n_total:
        raise ValueError(f"n must be in [1, {n_total}], got {n}")
    total = math.comb(n_total, n)
    return [math.comb(n_total - 1 - i, n - 1) / total for i in range(n_total)]


def expected_best_of_n(
    select: Sequence[float], n: int, report: Sequence[float] | None = None
) -> float:
    """Exact expectation, over ``n`` settings drawn at random without replacement, of ``report``
    (default: ``select`` itself) of the one with the smallest ``select``. NaN ``select`` values
    (settings without a metric) rank last; the result is NaN when such a setting can be chosen
    (all ``n`` draws without a value) or when a chosen ``report`` is NaN."""
    rep = list(select) if report is None else list(report)
    order = sorted(range(len(select)), key=lambda i: (_key(select[i]), i))
    p = argmin_probabilities(len(select), n)
    out = 0.0
    for rank, i in enumerate(order):
        if p[rank] == 0.0:
            continue
        if math.isnan(select[i]) or math.isnan(rep[i]):
            return math.nan
        out += p[rank] * rep[i]
    return out


def best_of_n_quantile(values: Sequence[float], n: int, q: float) -> float:
    """Exact ``q``-quantile of the smallest of ``n`` values drawn at random without replacement
    (the smallest sorted value whose CDF P(min <= v) reaches ``q``); NaN values rank last."""
    vals = sorted(values, key=_key)
    p = argmin_probabilities(len(vals), n)
    acc = 0.0
    for v, pi in zip(vals, p):
        acc += pi
        if acc >= q - 1e-12:
            return v
    return vals[-1]


def trials_to_reach(curve: Sequence[float], target: float) -> int | None:
    """1-based number of trials after which ``curve`` (a best-so-far) is <= ``target``."""
    for i, v in enumerate(curve):
        if not math.isnan(v) and v <= target + 1e-12:
            return i + 1
    return None


def ranks(values: Sequence[float]) -> list[int]:
    """1-based competition ranks (ties share the best rank; NaN last)."""
    keys = [_key(v) for v in values]
    return [1 + sum(k2 < k for k2 in keys) for k in keys]
