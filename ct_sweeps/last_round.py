"""The last round of packs, sized when a trial slot frees up.

Packs are planned up front from estimated costs (:mod:`ct_sweeps.packing`), and Tune starts them
in that order on the next free slot. What the earlier packs took beyond or below their estimate
(a busy core, a search that stopped early) carries over to the end, where one slot idles while
another finishes: on the paper's OL grid (270 settings × 100 epochs, two slots) the two slots
ended 0.2 to 7 s apart (bench/README.md, ninth pass).

:class:`PackSearcher` hands Tune the packs in plan order. The packs of the last round
(:attr:`PackBook.flex`: one per slot, one pack key) are held back until a slot is free. Their
settings are then dealt out again from how far the busy slots have got
(:func:`remaining_seconds`), so that every slot ends at about the same time (:func:`level`,
:func:`deal`). ``packs.json`` is rewritten with the new members before the first of them starts,
and each of these trials names its settings in its config (``members``), so the trainable, the
MLflow runs, the report and ``resume`` all see the same packs.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from ct_sweeps.packing import CAP_CPU, PACKS_FILE, PackBook, save_packs

__all__ = ["PackSearcher", "deal", "level", "remaining_seconds"]

log = logging.getLogger(__name__)


def level(waits: Sequence[float], total: float) -> list[float]:
    """Cost per pack so that every pack ends together: pack ``k`` can start after ``waits[k]``
    (in cost units) and then takes its share, so the shares are ``max(0, L - waits[k])`` with
    the level ``L`` at which they add up to ``total`` (water filling)."""
    order = sorted(waits)
    lvl = order[0] + total
    for n in range(1, len(order) + 1):
        lvl = (sum(order[:n]) + total) / n
        if n == len(order) or lvl <= order[n]:
            break
    return [max(0.0, lvl - w) for w in waits]


def deal(
    pool: Sequence[int], cost: Sequence[float], shares: Sequence[float], cap: int = CAP_CPU
) -> list[list[int]]:
    """The settings ``pool`` (indices into ``cost``) dealt out into ``len(shares)`` packs of at
    most ``cap`` settings, close to the target cost of each: the dearest setting first, each to
    the pack furthest below its target that has room. Every pack gets at least one setting."""
    n = len(shares)
    packs: list[list[int]] = [[] for _ in range(n)]
    load = [0.0] * n
    cap = max(cap, math.ceil(len(pool) / n))
    for i in sorted(pool, key=lambda i: (-cost[i], i)):
        room = [k for k in range(n) if len(packs[k]) < cap]
        k = max(room, key=lambda k: (shares[k] - load[k], -k))
        packs[k].append(i)
        load[k] += cost[i]
    for k in range(n):  # an empty pack takes the cheapest setting of the largest one
        if not packs[k]:
            big = max(range(n), key=lambda j: len(packs[j]))
            packs[k].append(min(packs[big], key=lambda i: (cost[i], i)))
            packs[big].remove(packs[k][0])
    return [sorted(p) for p in packs]


def remaining_seconds(
    points: Sequence[Mapping[str, float]], epochs: int, now: float
) -> float | None:
    """How long a pack trial still trains, from its reports (``points``, oldest first, as
    :meth:`PackSearcher.on_trial_result` keeps them): its recent seconds per epoch (over the
    last tenth of its epochs, at least 10, where reports reach that far back; else since its
    start), times the epochs left, less the time since the last report came in. A pack's pace
    drifts as its models train, so the recent pace predicts its end better than the average
    (on the paper's OL grid, by about a second). ``None`` before any report with an epoch."""
    if not points or points[-1]["epoch"] <= 0:
        return None
    last = points[-1]
    window = max(10.0, epochs / 10)
    back = [p for p in points if p["epoch"] <= last["epoch"] - window]
    if back:
        ref = back[-1]
        per_epoch = (last["reported"] - ref["reported"]) / (last["epoch"] - ref["epoch"])
    else:
        per_epoch = (last["reported"] - last["started"]) / last["epoch"]
    left = per_epoch * max(0.0, epochs - last["epoch"]) - (now - last["arrived"])
    return max(0.0, left)


class PackSearcher(Searcher):
    """Tune's source of pack trials: ``{"pack": j}`` in plan order, and for the last round
    ``{"pack": j, "members": [...]}`` once a slot is free (see the module docstring).

    ``slots`` is the number of trials the plan counted on running at once; ``run_path`` the run
    directory, whose ``packs.json`` is rewritten when the last round is dealt out. Where there
    is nothing to go on (no report yet), the planned packs are kept."""

    def __init__(
        self,
        book: PackBook,
        slots: int,
        run_path: str | Path,
        metric: str | None = None,
        mode: str | None = None,
    ):
        super().__init__(metric=metric, mode=mode)
        self.book = book
        self.slots = max(1, slots)
        self.run_path = str(run_path)
        self.next = 0
        """The next pack to hand out."""
        self.live: dict[str, int] = {}
        """Trials handed out and not complete: trial id -> pack."""
        self.members: dict[int, list[int]] = {}
        """The last round's packs once dealt out: pack -> settings."""
        self.progress: dict[str, list[dict[str, float]]] = {}
        """Each running trial's reports: epoch, its wall clocks, and when it came in."""
        self.done: list[tuple[float, float]] = []
        """(seconds, cost) of each pack trial that ended without an error."""

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    # -- Tune's calls
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.next >= len(self.book):
            return Searcher.FINISHED
        j = self.next
        if j in self.book.flex and j not in self.members:
            if len(self.live) >= self.slots:
                return None  # asked again at Tune's next step; a slot frees up first
            self._deal()
        self.next += 1
        self.live[trial_id] = j
        config: dict[str, Any] = {"pack": j}
        if j in self.members:
            config["members"] = list(self.members[j])
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if "epoch" not in result or "reported" not in result:
            return
        point = {
            "epoch": float(result["epoch"]),
            "reported": float(result["reported"]),
            "started": float(result.get("started", result["reported"])),
            "arrived": time.monotonic(),
        }
        self.progress.setdefault(trial_id, []).append(point)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        j = self.live.pop(trial_id, None)
        points = self.progress.pop(trial_id, [])
        last = points[-1] if points else None
        if j is not None and not error and last is not None:
            cost = sum(self._cost(i) for i in self.book.packs[j])
            if cost > 0:
                self.done.append((last["reported"] - last["started"], cost))

    # -- dealing out the last round
    def _cost(self, i: int) -> float:
        return self.book.cost[i] if self.book.cost else 1.0

    def _epochs(self, j: int) -> int:
        return self.book.epochs[self.book.packs[j][0]] if self.book.epochs else 0

    def _deal(self) -> None:
        """Settle the last round's members (all of its packs at once)."""
        flex = [j for j in self.book.flex if j not in self.members]
        now = time.monotonic()
        # seconds per unit of cost: the packs that ended, and the running ones' projections
        spent, costs = 0.0, 0.0
        for s, c in self.done:
            spent, costs = spent + s, costs + c
        waits: list[float | None] = []
        for tid, j in self.live.items():
            points = self.progress.get(tid, [])
            left = remaining_seconds(points, self._epochs(j), now) if self.book.epochs else None
            waits.append(left)
            if left is not None:
                spent += points[-1]["reported"] - points[-1]["started"] + left
                costs += sum(self._cost(i) for i in self.book.packs[j])
        if costs <= 0 or any(w is None for w in waits) or not self.book.cost:
            self.members.update({j: list(self.book.packs[j]) for j in flex})  # as planned
            self._record({"kept": "the planned packs: a busy slot had not reported yet"})
            return
        per_cost = spent / costs
        ahead = sorted([0.0] * (self.slots - len(self.live)) + [float(w) for w in waits])
        ahead = ahead[: len(flex)]
        pool = [i for j in flex for i in self.book.packs[j]]
        total = sum(self._cost(i) for i in pool)
        shares = level([w / per_cost for w in ahead], total)
        for j, members in zip(flex, deal(pool, self.book.cost, shares)):
            self.members[j] = members
        self.book = self.book.with_members(self.members)
        self._record(
            {
                "waits_s": [round(w, 2) for w in ahead],
                "s_per_cost": round(per_cost, 4),
                "sizes": [len(self.members[j]) for j in flex],
            }
        )

    def _record(self, how: dict[str, Any]) -> None:
        """Rewrite ``packs.json`` with the last round, and what it was dealt out from."""
        save_packs(Path(self.run_path) / PACKS_FILE, self.book, how)
        log.info("last round of packs: %s", how)

    # -- Tune's experiment snapshots (``ct-sweep resume``): JSON, not pickle
    def save(self, checkpoint_path: str) -> None:
        state = {
            "next": self.next,
            "live": self.live,
            "members": {str(j): m for j, m in self.members.items()},
            "done": self.done,
        }
        Path(checkpoint_path).write_text(json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        # the run directory may have moved since: packs.json is beside Tune's folder, which
        # holds this file
        run_path = Path(checkpoint_path).resolve().parent.parent
        if (run_path / PACKS_FILE).exists():
            self.run_path = str(run_path)
        state = json.loads(Path(checkpoint_path).read_text())
        self.next = int(state["next"])
        self.live = {str(t): int(j) for t, j in state["live"].items()}
        self.members = {int(j): [int(i) for i in m] for j, m in state["members"].items()}
        self.done = [(float(s), float(c)) for s, c in state.get("done", [])]
        self.book = self.book.with_members(self.members)
