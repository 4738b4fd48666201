"""Packs: the settings of a grid/random sweep, planned into Tune trials before Ray starts.

The settings are drawn up front (:meth:`Space.settings`) and written with their packs to
``RUN_DIR/packs.json`` (:class:`PackBook`), which ``report``, ``resume`` and ``sync-mlflow`` read
back. Settings with the same :func:`ct_core.packability.pack_key` may share a pack, which trains
them as one vectorised computation; each still has its own row in ``results.csv`` and its own
MLflow run (:func:`unit_id`). :func:`make_packs` sizes the packs from a cost model of a
setting's epoch (:func:`setting_cost`) and the trials that run at once (``bench/README.md`` has
the measurements behind its choices). Optuna sweeps suggest their settings as they go: no packs.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ct_sweeps.plan.space import Space, trial_config

__all__ = ["CAP_CPU", "PACKS_FILE", "PackBook", "auto_pack_size", "load_book", "make_packs"]
__all__ += ["save_packs", "setting_cost", "setting_traits", "settings_of", "unit_id"]

PACKS_FILE = "packs.json"
CAP_CPU = 90
"""Largest automatic pack on CPU trials. A pack shares its per-operation work (Python, op
dispatch) over its settings, so a setting-epoch costs less in a wider pack; the gain flattens
out around 90 on the paper's OL grid (``bench/bench_width.py``)."""
CAP_GPU = 512
"""Largest automatic pack on GPU trials (one kernel launch serves the whole pack)."""


def unit_id(trial_id: str, k: int, size: int) -> str:
    """The id of setting ``k`` of a trial that trains ``size`` settings: its ``results.csv`` row
    and the ``ct.trial_id`` tag of its MLflow run (the trial's own id for a pack of one)."""
    return trial_id if size == 1 else f"{trial_id}-{k:02d}"


def auto_pack_size(n_group: int, slots: int) -> int:
    """Settings per pack on CPU trials: about two packs per trial slot (the slots stay busy to
    the end, an interrupted sweep keeps finished packs), at most :data:`CAP_CPU`."""
    return max(1, min(CAP_CPU, math.ceil(n_group / (2 * max(1, slots)))))


def make_packs(
    settings: Sequence[Mapping[str, Any]],
    base: Mapping[str, Any],
    space: Space,
    pack: int | str,
    slots: int,
    gpu: bool = False,
    traits: tuple[list[float], list[Any]] | None = None,
) -> list[list[int]]:
    """Settings (indices) in packs, the most expensive first, as Tune starts each pack on the
    next free slot (longest-processing-time-first list scheduling). Only settings with the same
    :func:`~ct_core.packability.pack_key` share a pack. A fixed ``pack`` K (0 and 1: one) cuts
    a group of n into ``ceil(n / K)`` even packs. ``auto`` on CPU trials simulates several plans
    on the slots and keeps the one that ends soonest, the fewest packs on a near tie (wider packs
    cost less per setting): packs of :func:`auto_pack_size`, or as wide as allowed; or settings
    dealt out to the slots by cost first (one by one, or each group in even shares), then cut
    into two or three packs per slot, which balances grids of very unequal settings (CT and
    vanilla). On GPU trials a pack's epoch costs what its dearest setting's does, so ``auto``
    makes the fewest packs :func:`_gpu_packs` allows. ``traits``: :func:`setting_traits`."""
    cost, keys = traits or setting_traits(settings, base, space)
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


def setting_traits(
    settings: Sequence[Mapping[str, Any]], base: Mapping[str, Any], space: Space
) -> tuple[list[float], list[Any]]:
    """Per setting: its :func:`setting_cost` and its :func:`~ct_core.packability.pack_key`."""
    from ct_core.packability import pack_key

    cost: list[float] = []
    keys: list[Any] = []
    for s in settings:
        cfg = trial_config(base, space.resolve(s))
        cost.append(setting_cost(cfg))
        keys.append(pack_key(cfg))
    return cost, keys


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


@dataclass(frozen=True)
class PackBook:
    """A run's packs as ``packs.json`` holds them: the settings (Tune-style configs, by index)
    and each pack's members; a pack trial's config is ``{"pack": j}``."""

    settings: tuple[dict[str, Any], ...]
    packs: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.packs)

    def configs(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The settings a pack trial trains."""
        return [self.settings[i] for i in self.packs[int(config["pack"])]]


def settings_of(config: Mapping[str, Any], book: PackBook | None) -> list[dict[str, Any]]:
    """The settings a Tune trial trains: its pack's (grid/random), or its own config (Optuna)."""
    return book.configs(config) if book is not None else [dict(config)]


def save_packs(path: Path, book: PackBook) -> None:
    """Write ``packs.json`` (atomically): each pack's settings, by index and config."""
    doc = {
        "n_settings": len(book.settings),
        "packs": [[{"index": i, "config": dict(book.settings[i])} for i in p] for p in book.packs],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, path)


def load_book(path: Path) -> PackBook:
    """The :class:`PackBook` that :func:`save_packs` wrote."""
    doc = json.loads(path.read_text())
    settings: dict[int, dict[str, Any]] = {}
    packs = []
    for p in doc["packs"]:
        packs.append(tuple(int(s["index"]) for s in p))
        settings.update({int(s["index"]): s["config"] for s in p})
    return PackBook(tuple(settings[i] for i in range(len(settings))), tuple(packs))
