"""Packs: several settings of a grid/random sweep trained in one Tune trial.

A sweep whose settings are known up front (``grid``/``random`` without ASHA) is expanded before
Ray runs it (:func:`expand_settings`), the settings are grouped by
:func:`ct_core.pack.pack_key` (same data, model shape and epoch loop), and each group is split into
packs of at most K settings (:func:`make_packs`). One Tune trial trains one pack with
:class:`ct_core.pack.PackedTrainer` (bitwise equal to K plain ``Trainer`` runs on the CPU); a
setting that cannot be packed (``can_pack`` false) is a pack of one trained by ``Trainer``.

The trial reports ``{"epoch": e, "settings": {"<k>": [record, ...], ...}, <metric>: best}`` at most
every ``report_s`` seconds (handed to Tune by a thread of its own while it trains on:
:class:`ct_sweeps.reporter.BackgroundReporter`), and at checkpoint epochs and the end: each
setting's records of the epochs since the last report (as ``Trainer`` yields them, with
``failed`` holding the reason in the epoch a setting fails); every setting still becomes its own
row in ``results.csv`` and its own MLflow child run (unit id ``<trial_id>-<k>``). The checkpoint
holds the K state dicts (``states.pt``) and, at the end, one ``model_<k>.pt`` per finished
setting. ``RUN_DIR/packs.json`` lists every pack's settings
(their Tune-style configs), so reports, ``sync-mlflow`` and ``resume`` read them back
(:class:`PackBook`).

With ``pack: auto`` on CPU trials, the packs of the last round (one per slot, same pack
key: :func:`last_round_packs`) are sized only when the first of them can start, from how far
the other slots have got, so that all slots end together (:mod:`ct_sweeps.last_round`);
``packs.json`` is rewritten then, and each such trial's config names its settings
(``members``).
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ct_sweeps.space import Space, trial_config
from ct_sweeps.trainable import CF_METRICS, TrialSpec

__all__ = [
    "PACKS_FILE",
    "PackBook",
    "PackSpec",
    "auto_pack_size",
    "expand_settings",
    "last_round_packs",
    "load_book",
    "make_packs",
    "model_file",
    "pack_trainable",
    "save_packs",
    "setting_traits",
    "unit_id",
]

PACKS_FILE = "packs.json"
STATES_FILE = "states.pt"
CAP_CPU = 90
"""Largest automatic pack on CPU trials. A pack shares its per-operation work (Python, op
dispatch) over its settings: on OL a setting-epoch costs 10-17 % less in a pack of 90 than in
one of 45, and at most a few % less again in one of 180 (``bench/bench_width.py``; bench/README.md,
"Pack width"). Wider packs would rarely leave two per trial slot."""
CAP_GPU = 512
"""Largest automatic pack on GPU trials (one kernel launch serves the whole pack)."""


def unit_id(trial_id: str, k: int) -> str:
    """The id of setting ``k`` of a pack trial: its ``results.csv`` row and MLflow tag."""
    return f"{trial_id}-{k:02d}"


def model_file(k: int) -> str:
    return f"model_{k:02d}.pt"


# ----------------------------------------------------------------------------------------------
# Planning (no Ray)


def _sample(entry: Any, rng: Any) -> Any:
    """One draw of a distribution entry (the same families as :meth:`Entry.to_ray`)."""
    lo, hi = (entry.args[0], entry.args[1]) if entry.kind != "choice" else (None, None)
    match entry.kind:
        case "choice":
            return entry.args[int(rng.integers(len(entry.args)))]
        case "uniform":
            return float(rng.uniform(lo, hi))
        case "loguniform":
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        case "quniform":
            q = entry.args[2]
            v = round(float(rng.uniform(lo, hi)) / q) * q
            return int(round(v)) if entry.integer else float(v)
        case "randint":
            return int(rng.integers(int(lo), int(hi) + 1))
    raise AssertionError(entry.kind)


def expand_settings(space: Space, num_samples: int, seed: int | None) -> list[dict[str, Any]]:
    """Every setting of a grid/random sweep as a Tune-style config (dotted path -> value;
    :meth:`Space.resolve` turns it into overrides): the grid points, each with its sampled
    entries drawn from a generator seeded by ``search.seed``, repeated ``num_samples`` times."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for _ in range(num_samples):
        for point in space.grid_points():
            cfg = dict(point)
            for e in space.sampled_entries:
                cfg[e.key] = _sample(e, rng)
            out.append(cfg)
    return out


def auto_pack_size(n_group: int, slots: int) -> int:
    """Settings per pack for a group packed on its own on CPU trials: every trial slot gets
    about two packs (so that the slots stay busy to the end and an interrupted sweep keeps
    finished packs), capped at :data:`CAP_CPU`."""
    return max(1, min(CAP_CPU, math.ceil(n_group / (2 * max(1, slots)))))


def make_packs(
    settings: Sequence[Mapping[str, Any]],
    base: Mapping[str, Any],
    space: Space,
    pack: int | str,
    slots: int,
    gpu: bool = False,
    traits: tuple[list[float], list[Any], list[int]] | None = None,
) -> list[list[int]]:
    """Split settings (indices into ``settings``) into packs, in the order Tune should start
    them: the most expensive first (:func:`setting_cost`), as each pack goes to the next free
    trial slot (longest-processing-time-first list scheduling).

    Only settings with the same :func:`~ct_core.pack.pack_key` share a pack; one that cannot be
    packed is a pack of its own. With a fixed ``pack`` K, a group of n settings becomes
    ``ceil(n / K)`` packs of even sizes. With ``auto``, these plans are simulated on ``slots``
    slots and the one that ends soonest is kept (the fewest packs on a near tie):

    * per group, packs of :func:`auto_pack_size` settings (about two per slot), or of the
      most settings allowed if that still makes two packs per slot;
    * settings first dealt out to the slots by cost (each to the least loaded; or each group
      in even shares), then each slot's share cut into two or three packs (at most
      :data:`CAP_CPU`).

    The second balances grids whose settings cost very different amounts: on the paper's
    Adult grid (9 CT settings, 9 vanilla ones, 2 slots) even-sized packs leave one slot idle
    for the last ~27 s, about one CT setting; bench/README.md has the figures. Wider packs cost
    less per setting (the pack shares its per-operation work, see :data:`CAP_CPU`), hence the
    fewest packs on a near tie: the paper's OL grid on two slots becomes one Generic/ECCo pack
    of 90 and one REVISE pack of 45 per slot, not three packs of 45 (bench/README.md, "Pack
    width").

    GPU trials (``gpu``) cost differently: a pack's epoch takes about as long as its most
    expensive setting's, whatever K (bench/README.md), so ``auto`` makes the fewest packs
    :func:`_gpu_packs` allows and orders them by their most expensive setting.

    ``traits``: :func:`setting_traits` of ``settings``, if already at hand.
    """
    cost, keys, _ = traits or setting_traits(settings, base, space)
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
        packs = _group_packs(keys, cost, lambda n: int(pack))
    return sorted(packs, key=lambda pk: (-pack_cost(cost[i] for i in pk), pk))


def setting_traits(
    settings: Sequence[Mapping[str, Any]], base: Mapping[str, Any], space: Space
) -> tuple[list[float], list[Any], list[int]]:
    """Per setting: its :func:`setting_cost`, its :func:`~ct_core.pack.pack_key` (``None``:
    it cannot be packed, a pack of its own) and its epochs."""
    from ct_core.packability import can_pack, pack_key

    cost: list[float] = []
    keys: list[Any] = []
    epochs: list[int] = []
    for s in settings:
        cfg = trial_config(base, space.resolve(s))
        cost.append(setting_cost(cfg))
        keys.append(pack_key(cfg) if can_pack(cfg) else None)
        epochs.append(int(cfg.train.epochs))
    return cost, keys, epochs


def last_round_packs(
    packs: Sequence[Sequence[int]], keys: Sequence[Any], slots: int
) -> tuple[int, ...]:
    """The packs (ids, in start order) whose members are settled only when the first of them
    can start (:mod:`ct_sweeps.last_round`): the last ``slots`` packs, or fewer, as long as they
    share one pack key. Empty with one slot, or when the last two packs differ."""
    tail: list[int] = []
    for i in range(len(packs) - 1, -1, -1):
        key = keys[packs[i][0]] if packs[i] else None
        if len(tail) == slots or key is None or (tail and keys[packs[tail[0]][0]] != key):
            break
        tail.insert(0, i)
    return tuple(tail) if len(tail) >= 2 else ()


def _gpu_packs(keys: Sequence[Any], cost: Sequence[float], slots: int) -> list[list[int]]:
    """Packs for GPU trials: each group in as few packs as :data:`CAP_GPU` allows, cut further
    (the group with the most settings per pack first) only until every slot has a pack. A pack
    is cut by cost, the most expensive settings together, so that a pack of cheap settings ends
    early and leaves the GPU to the others (its epoch costs what its dearest setting costs)."""
    groups, alone = _by_group(range(len(keys)), keys)
    n = [math.ceil(len(g) / CAP_GPU) for g in groups]
    while sum(n) + len(alone) < slots:
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
    return packs + alone


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


def _by_group(
    members: Sequence[int], keys: Sequence[Any]
) -> tuple[list[list[int]], list[list[int]]]:
    """The packable members grouped by pack key, and the others one by one."""
    groups: dict[Any, list[int]] = {}
    alone: list[list[int]] = []
    for i in members:
        if keys[i] is None:
            alone.append([i])
        else:
            groups.setdefault(keys[i], []).append(i)
    return list(groups.values()), alone


def _group_packs(keys: Sequence[Any], cost: Sequence[float], size: Any) -> list[list[int]]:
    """Each group in ``ceil(n / size(n))`` even packs."""
    groups, alone = _by_group(range(len(keys)), keys)
    packs = [pk for g in groups for pk in _split(g, math.ceil(len(g) / size(len(g))), cost)]
    return packs + alone


def _slot_packs(
    keys: Sequence[Any],
    cost: Sequence[float],
    slots: int,
    cap: int,
    per_slot: int,
    even: bool = False,
) -> list[list[int]]:
    """Settings dealt out to the slots, the dearest first, each to the least loaded slot (with
    ``even``, each group's settings first cut in even shares, one per slot, by :func:`_split`),
    then each slot's share in at least ``per_slot`` packs of at most ``cap``.

    Dealt one by one, the shares balance best; in even shares, a slot's share of a group can
    fill one pack of ``cap`` where one by one it would be a few settings more (OL on two slots:
    88 and 92 Generic/ECCo settings, the 92 in two packs)."""
    if even:
        groups, alone = _by_group(range(len(keys)), keys)
        parts = [pt for g in groups for pt in _split(g, slots, cost)] + alone
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
        groups, mine = _by_group(members, keys)
        for g in groups:
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
    """A run's packs as ``packs.json`` holds them: the expanded settings (by index), each pack's
    members, and the packs of the last round (:func:`last_round_packs`), whose members are settled
    when the first of them can start and then travel in the trial's config (``members``)."""

    settings: tuple[dict[str, Any], ...]
    packs: tuple[tuple[int, ...], ...]
    flex: tuple[int, ...] = ()
    cost: tuple[float, ...] = ()
    """:func:`setting_cost` per setting (for sizing the last round; empty when read back)."""
    epochs: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.packs)

    def members(self, config: Mapping[str, Any]) -> tuple[int, ...]:
        """The settings (indices) a pack trial trains: its config's ``members``, or the plan's."""
        m = config.get("members")
        return tuple(int(i) for i in m) if m is not None else self.packs[int(config["pack"])]

    def configs(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The Tune-style configs of the settings a pack trial trains."""
        return [self.settings[i] for i in self.members(config)]

    def with_members(self, members: Mapping[int, Sequence[int]]) -> PackBook:
        packs = [tuple(sorted(members[j])) if j in members else p for j, p in enumerate(self.packs)]
        return replace(self, packs=tuple(packs))


def save_packs(path: Path, book: PackBook, dealt: Mapping[str, Any] | None = None) -> None:
    """Write ``packs.json`` (atomically): each pack's settings (index in the expansion and
    config), which packs form the last round, and what it was dealt out from."""
    doc: dict[str, Any] = {
        "n_settings": len(book.settings),
        "flex": list(book.flex),
        **({"last_round": dict(dealt)} if dealt else {}),
        "packs": [[{"index": i, "config": dict(book.settings[i])} for i in p] for p in book.packs],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, path)


def load_book(path: Path) -> PackBook:
    """A :class:`PackBook` as :func:`save_packs` wrote it (without costs and epochs)."""
    doc = json.loads(path.read_text())
    settings: dict[int, dict[str, Any]] = {}
    packs = []
    for p in doc["packs"]:
        packs.append(tuple(int(s["index"]) for s in p))
        settings.update({int(s["index"]): s["config"] for s in p})
    ordered = tuple(settings[i] for i in range(len(settings)))
    return PackBook(ordered, tuple(packs), tuple(int(j) for j in doc.get("flex", ())))


# ----------------------------------------------------------------------------------------------
# The trainable


@dataclass(frozen=True)
class PackSpec:
    """What every pack trial shares: the per-setting spec and the packs' settings."""

    trial: TrialSpec
    book: PackBook
    metric: str | None = None
    mode: str = "max"
    report_s: float = 2.0
    """Least seconds between two reports to Tune (each carries the epochs since the last one; a
    report also waits while the previous one is still with the driver); checkpoint epochs and
    the last epoch are always reported."""


class _Solo:
    """A setting that cannot be packed, trained by ``Trainer`` behind the pack interface."""

    def __init__(self, cfg: Any, data: Any, states: Sequence[dict[str, Any]] | None):
        from ct_sweeps.trainable import load_trainer_class

        self.cfg = cfg
        state = states[0] if states else None
        self.failed: list[str | None] = [state.get("failed") if state else None]
        self.trainer = load_trainer_class("ct_core.training:Trainer")(cfg, data, checkpoint=state)

    def run(self) -> Any:
        from ct_core.training import NonFiniteLossError

        if self.failed[0] is not None:
            return
        try:
            for rec in self.trainer.run():
                yield [rec]
        except NonFiniteLossError as e:
            self.failed[0] = str(e)
            yield [{"epoch": float(self.trainer.epoch + 1), "failed": str(e)}]

    @property
    def histories(self) -> list[list[dict[str, Any]]]:
        return [self.trainer.history]

    def state_dicts(self) -> list[dict[str, Any]]:
        sd = self.trainer.state_dict()
        if self.failed[0] is not None:
            sd["failed"] = self.failed[0]
        return [sd]

    def models(self) -> list[Any]:
        return [self.trainer.model]


def _clean(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A record Tune can store: floats, and the failure reason as text."""
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if isinstance(v, str):
            out[k] = v
        elif isinstance(v, bool | int | float):
            out[k] = float(v)
    return out


def _best(values: Sequence[float], mode: str) -> float:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan
    return min(vals) if mode == "min" else max(vals)


def pack_trainable(config: dict[str, Any], spec: PackSpec) -> None:
    """Train one pack, reporting its settings' epoch records to Tune (function API)."""
    started = time.time()
    import logging

    from ct_sweeps.reporter import BackgroundReporter
    from ct_sweeps.trainable import (
        _dataset,
        _trial_storage_dir,
        imports_ahead_done,
        restore_state,
        trial_configs,
    )

    imports_ahead_done()
    import torch
    from ray import tune

    from ct_core.models import save_model
    from ct_core.pack import PackedTrainer
    from ct_core.packability import can_pack

    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfgs = trial_configs(spec.trial, spec.book.configs(config))
    data = _dataset(cfgs[0])

    states = restore_state(tune.get_checkpoint(), STATES_FILE, _trial_storage_dir())

    if len(cfgs) == 1 and not can_pack(cfgs[0]):
        trainer: Any = _Solo(cfgs[0], data, states)
    else:
        trainer = PackedTrainer(cfgs, data=data, checkpoints=states)
    epochs, every = cfgs[0].train.epochs, spec.trial.checkpoint_every
    # the last value of the search metric per setting (CF metrics come every eval_every epochs)
    last: dict[int, float] = {}
    for k, h in enumerate(getattr(trainer, "histories", None) or []):
        for r in h:
            if spec.metric in r:
                last[k] = float(r[spec.metric])

    def alive() -> int:
        return sum(f is None for f in trainer.failed)

    # tune.report waits for the driver to take each result; the reporter's thread does the
    # waiting while the pack trains on (ct_sweeps/reporter.py)
    reporter = BackgroundReporter(tune.report)

    def report(epoch: int, pending: dict[str, list[dict[str, Any]]], save: bool) -> None:
        # one report carries every epoch since the last one: a Tune round trip per epoch
        # costs more than a pack's epoch on a busy machine
        result: dict[str, Any] = {"epoch": float(epoch), "settings": pending}
        result["settings_alive"] = float(alive())
        # wall clocks of the trial's start and of this report, and the seconds the training
        # loop has waited for reports so far (bench/bench_sweep.py's timeline)
        result.update(started=started, reported=time.time(), report_wait=reporter.waited)
        if spec.metric:
            live = [v for k, v in last.items() if trainer.failed[k] is None]
            result[spec.metric] = _best(live, spec.mode)
        if not save or pending:
            reporter.submit(result)
        if not save:
            return
        # The checkpoint goes in a report of its own, without the settings' records: Tune keeps
        # every checkpoint's result and the trial's last one in its experiment state, which it
        # writes every few seconds (with the records: 0.3-0.8 MB per OL pack, 0.6-1 s to write
        # at the sweep's end).
        result = {k: v for k, v in result.items() if k != "settings"}
        result["reported"] = time.time()
        final = epoch >= epochs or alive() == 0

        def write(d: str) -> None:
            torch.save(trainer.state_dicts(), os.path.join(d, STATES_FILE))
            if final:
                for k, (cfg, model) in enumerate(zip(cfgs, trainer.models())):
                    if trainer.failed[k] is None:
                        save_model(
                            model.cpu(),
                            cfg,
                            os.path.join(d, model_file(k)),
                            n_features=int(data.n_features),
                            n_classes=int(data.n_classes),
                        )

        reporter.submit_checkpoint(result, write)

    try:
        histories = getattr(trainer, "histories", None) or []
        if states is not None and any(histories):
            # The checkpoint's report may never have reached the driver (a node that died between
            # persisting the checkpoint and the driver taking the result): report its epochs again
            # (those since the checkpoint before it); results and MLflow keep one record per epoch.
            # A pack restored at its last epoch ends here, with its final checkpoint.
            top = max(int(float(h[-1]["epoch"])) for h in histories if h)
            since = top - every if every else 0
            again = {
                str(k): [_clean(r) for r in h if int(float(r["epoch"])) > since]
                for k, h in enumerate(histories)
            }
            done = top >= epochs or alive() == 0
            report(top, {k: v for k, v in again.items() if v}, save=done)
        pending: dict[str, list[dict[str, Any]]] = {}
        reported = time.monotonic()
        for records in trainer.run():
            reporter.raise_if_failed()
            if reporter.stopped:  # Tune ended the trial (an interrupted sweep)
                break
            epoch = int(max(float(r["epoch"]) for r in records if r is not None))
            for k, r in enumerate(records):
                if r is None:
                    continue
                pending.setdefault(str(k), []).append(_clean(r))
                if spec.metric in r and "failed" not in r:
                    last[k] = float(r[spec.metric])
            final = epoch >= epochs or alive() == 0
            save = final or bool(every and epoch % every == 0)
            # a plain report also waits while the last one is still with the driver: the next
            # one carries these epochs too
            if not save and (time.monotonic() - reported < spec.report_s or reporter.busy):
                continue
            report(epoch, pending, save)
            pending, reported = {}, time.monotonic()
    except BaseException:
        reporter.abandon()  # the trial failed: nothing still queued is reported after it
        raise
    reporter.close()


def setting_history(
    lines: Sequence[Mapping[str, Any]], k: int, size: int = 1
) -> list[dict[str, Any]]:
    """Setting ``k``'s records from a pack trial's results (``result.json`` lines), with the
    pack's wall clock shared out: ``time_total_s`` is the pack's divided by its ``size``."""
    out = []
    for line in lines:
        recs = (line.get("settings") or {}).get(str(k))
        if not recs:
            continue
        for rec in recs if isinstance(recs, list) else [recs]:
            r = dict(rec)
            if "time_total_s" in line:
                r["time_total_s"] = float(line["time_total_s"]) / max(size, 1)
            out.append(r)
    return out


def carried_final(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The final metrics of a setting: the last record, with CF metrics carried from the last
    epoch that computed them (each key's last numeric value; keys in the order they first
    appear). Reads the history from the end, which usually stops within ``eval_every`` records
    (270 settings × 100 epochs: 0.19 s → 0.01 s at the end of a sweep)."""
    if not history:
        return {}
    wanted = set(history[-1]) | set(CF_METRICS)
    found: dict[str, float] = {}
    for r in reversed(history):
        for key, v in r.items():
            if key in wanted and key not in found and _numeric(v):
                found[key] = float(v)
        if len(found) == len(wanted):
            break
    out: dict[str, float] = {}
    for r in history:  # the order in which the keys first had a number
        for key, v in r.items():
            if key in found and key not in out and _numeric(v):
                out[key] = found[key]
        if len(out) == len(found):
            break
    return out


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
