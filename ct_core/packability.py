"""Which settings may share a pack (:class:`ct_core.training.PackTrainer`), without torch.

Any setting can train in a pack, with the settings that share its data, its model, the epoch
loop's shape (:data:`SHARED_FIELDS`) and its generator's search: each generator's registration
(:mod:`ct_core.generators`) says whether it searches in feature space (then it packs with any
feature-space generator) or in a latent space (then only with its own type, sharing the fields it
names). A sweep's driver groups its settings by :func:`pack_key` before any trial starts; keeping
these rules free of torch saves the driver the import (about 1.5-2 s on a 2-core machine).

:func:`make_packs` cuts a sweep's settings into packs for the trials that run at once, from a
cost model of a setting's epoch (:func:`setting_cost`); ``bench/README.md`` has the measurements
behind its choices.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from typing import Any

from ct_core.config import Config, flatten
from ct_core.generators import generator_info

__all__ = ["CAP_CPU", "CAP_GPU", "SHARED_FIELDS", "auto_pack_size", "check_packable"]
__all__ += ["generator_family", "make_packs", "pack_key", "setting_cost"]

# Fields every setting of a pack must share (dotted paths; a trailing "." means a whole section).
SHARED_FIELDS = (
    "data.",
    "model.",
    "train.epochs",
    "train.batch_size",
    "train.lr",
    "train.optimizer",
    "train.device",
    "train.epsilon_norm",
)


def generator_family(cfg: Config) -> str:
    """``feature`` for feature-space generators, ``latent:<type>`` for latent ones (REVISE)."""
    return generator_info(cfg.generator.type).family


def pack_key(cfg: Config) -> tuple[tuple[str, Any], ...]:
    """The values settings of one pack must share; group configs by it to form packs."""
    flat = flatten(cfg.to_dict())
    info = generator_info(cfg.generator.type)
    shared = SHARED_FIELDS + info.shared
    items: list[tuple[str, Any]] = [("generator.family", info.family)]
    for key in sorted(flat):
        if any(key.startswith(f) if f.endswith(".") else key == f for f in shared):
            v = flat[key]
            items.append((key, tuple(v) if isinstance(v, list) else v))
    return tuple(items)


def check_packable(cfgs: Sequence[Config]) -> None:
    """Raise ``ValueError`` naming the field when ``cfgs`` cannot be trained as one pack."""
    if not cfgs:
        raise ValueError("a pack needs at least one configuration")
    ref = dict(pack_key(cfgs[0]))
    for i, c in enumerate(cfgs[1:], start=1):
        for key, v in pack_key(c):
            if ref.get(key) != v:
                if key == "generator.family":
                    raise ValueError(
                        f"settings 0 and {i} cannot share a pack: generator.type "
                        f"{cfgs[0].generator.type!r} vs {c.generator.type!r} (a latent-space "
                        "generator packs only with its own type)"
                    )
                raise ValueError(
                    f"settings 0 and {i} cannot share a pack: {key} differs "
                    f"({ref.get(key)!r} vs {v!r})"
                )


CAP_CPU = 90
"""Largest automatic pack on CPU trials. A pack shares its per-operation work (Python, op
dispatch) over its settings, so a setting-epoch costs less in a wider pack; the gain flattens
out around 90 on the paper's OL grid (``bench/bench_width.py``)."""
CAP_GPU = 512
"""Largest automatic pack on GPU trials (one kernel launch serves the whole pack)."""


def auto_pack_size(n_group: int, slots: int) -> int:
    """Settings per pack on CPU trials: about two packs per trial slot (the slots stay busy to
    the end, an interrupted sweep keeps finished packs), at most :data:`CAP_CPU`."""
    return max(1, min(CAP_CPU, math.ceil(n_group / (2 * max(1, slots)))))


def make_packs(
    cost: Sequence[float], keys: Sequence[Any], pack: int | str, slots: int, gpu: bool = False
) -> list[list[int]]:
    """Settings (indices; their :func:`setting_cost` and :func:`pack_key`) in packs, the most expensive first, as Tune starts each pack on the
    next free slot (longest-processing-time-first list scheduling). Only settings with the same
    :func:`pack_key` share a pack. A fixed ``pack`` K (0 and 1: one) cuts
    a group of n into ``ceil(n / K)`` even packs. ``auto`` on CPU trials simulates several plans
    on the slots and keeps the one that ends soonest, the fewest packs on a near tie (wider packs
    cost less per setting): packs of :func:`auto_pack_size`, or as wide as allowed; or settings
    dealt out to the slots by cost first (one by one, or each group in even shares), then cut
    into two or three packs per slot, which balances grids of very unequal settings (CT and
    vanilla). On GPU trials a pack's epoch costs what its dearest setting's does, so ``auto``
    makes the fewest packs :func:`_gpu_packs` allows."""
    slots = max(1, slots)
    pack_cost = max if gpu else sum
    if pack == "auto" and gpu:
        packs = _gpu_packs(keys, cost, slots)
    elif pack == "auto":
        plans = [_group_packs(keys, cost, lambda n: auto_pack_size(n, slots))]
        plans += [
            _slot_packs(keys, cost, slots, CAP_CPU, per_slot, even)
            for per_slot in (2, 3)
            for even in (False, True)
        ]
        widest = _group_packs(keys, cost, lambda n: CAP_CPU)
        if len(widest) >= 2 * slots:  # as wide as allowed, if that still fills the slots twice
            plans.append(widest)
        ends = [_makespan(pl, cost, slots) for pl in plans]
        # within 2 % of the soonest end, the fewest packs (fewer trial starts, wider packs)
        near = [(len(pl), end, k) for k, (pl, end) in enumerate(zip(plans, ends))]
        packs = plans[min(x for x in near if x[1] <= 1.02 * min(ends))[2]]
    else:
        packs = _group_packs(keys, cost, lambda n: max(1, int(pack)))
    return sorted(packs, key=lambda pk: (-pack_cost(cost[i] for i in pk), pk))


def _gpu_packs(keys: Sequence[Any], cost: Sequence[float], slots: int) -> list[list[int]]:
    """Packs for GPU trials: each group in as few packs as :data:`CAP_GPU` allows, cut further
    (the group with the most settings per pack first) only until every slot has a pack. A pack
    is cut by cost, the most expensive settings together, so that a pack of cheap settings ends
    early and leaves the GPU to the others (its epoch costs what its dearest setting costs)."""
    groups = _by_group(range(len(keys)), keys)
    n = [math.ceil(len(g) / CAP_GPU) for g in groups]
    while sum(n) < slots:
        can = [j for j in range(len(groups)) if n[j] < len(groups[j])]
        if not can:
            break
        j = max(can, key=lambda j: (len(groups[j]) / n[j], -j))
        n[j] += 1
    packs: list[list[int]] = []
    for g, k in zip(groups, n):
        order = sorted(g, key=lambda i: (-cost[i], i))
        ends = list(itertools.accumulate(_even_sizes(len(g), k)))
        packs += [sorted(order[a:b]) for a, b in zip([0, *ends], ends)]
    return packs


def _even_sizes(n: int, k: int) -> list[int]:
    """``n`` items in ``k`` parts as even as possible, the larger first (18 in 4: 5, 5, 4, 4)."""
    return [n // k + (j < n % k) for j in range(k)]


def _split(members: Sequence[int], n: int, cost: Sequence[float]) -> list[list[int]]:
    """``members`` in ``n`` packs of even sizes (:func:`_even_sizes`), filled greedily by cost:
    the most expensive first, each into the cheapest pack that has room."""
    n = max(1, min(n, len(members)))
    cap = _even_sizes(len(members), n)
    bins: list[list[int]] = [[] for _ in range(n)]
    load = [0.0] * n
    for i in sorted(members, key=lambda i: (-cost[i], i)):
        j = min((j for j in range(n) if len(bins[j]) < cap[j]), key=lambda j: (load[j], j))
        bins[j].append(i)
        load[j] += cost[i]
    return [sorted(b) for b in bins]


def _by_group(members: Sequence[int], keys: Sequence[Any]) -> list[list[int]]:
    """The members grouped by pack key."""
    groups: dict[Any, list[int]] = {}
    for i in members:
        groups.setdefault(keys[i], []).append(i)
    return list(groups.values())


def _group_packs(keys: Sequence[Any], cost: Sequence[float], size: Any) -> list[list[int]]:
    """Each group in ``ceil(n / size(n))`` even packs."""
    groups = _by_group(range(len(keys)), keys)
    return [pk for g in groups for pk in _split(g, math.ceil(len(g) / size(len(g))), cost)]


def _slot_packs(
    keys: Sequence[Any], cost: Sequence[float], slots: int, cap: int, per_slot: int, even: bool
) -> list[list[int]]:
    """Settings dealt out to the slots, the dearest first, each to the least loaded slot (with
    ``even``, each group first cut in even shares, so that a slot's share can fill one pack of
    ``cap``), then each slot's share in at least ``per_slot`` packs of at most ``cap``."""
    if even:
        groups = _by_group(range(len(keys)), keys)
        parts = [pt for g in groups for pt in _split(g, slots, cost)]
    else:
        parts = [[i] for i in range(len(keys))]
    share: list[list[int]] = [[] for _ in range(slots)]
    load = [0.0] * slots
    for part in sorted(parts, key=lambda pt: (-sum(cost[i] for i in pt), pt)):
        j = min(range(slots), key=lambda j: (load[j], j))
        share[j] += part
        load[j] += sum(cost[i] for i in part)
    packs: list[list[int]] = []
    for members in share:
        mine: list[list[int]] = []
        for g in _by_group(members, keys):
            mine += _split(g, math.ceil(len(g) / cap), cost)
        while len(mine) < per_slot and any(len(pk) > 1 for pk in mine):
            big = max((pk for pk in mine if len(pk) > 1), key=lambda pk: sum(cost[i] for i in pk))
            mine.remove(big)
            mine += _split(big, 2, cost)
        packs += mine
    return packs


def _makespan(packs: Sequence[Sequence[int]], cost: Sequence[float], slots: int) -> float:
    """When the last slot finishes if the packs, the most expensive first, each start on the
    next free slot (what Tune does with them)."""
    free = [0.0] * slots
    for c in sorted((sum(cost[i] for i in pk) for pk in packs), reverse=True):
        heapq.heapreplace(free, free[0] + c)
    return max(free)


def setting_cost(cfg: Any) -> float:
    """Relative cost of a setting's epoch for balancing packs: training, plus the
    counterfactual search of CT settings (about T gradient steps over ``nce`` points)."""
    if cfg.train.objective == "vanilla":
        return 1.0
    return 1.0 + cfg.generator.T * cfg.train.nce / (10.0 * 1000.0) * (1.0 - cfg.train.burnin)
