"""The last round of packs is sized when a slot frees up (ct_sweeps/last_round.py), so that the
slots end together: what the shares are, how settings are dealt out, how far a running pack
has to go, and what the searcher hands Tune. No Ray runs here (the sweep itself is in
test_sweeps_pack.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray.tune.search import Searcher

from ct_sweeps.last_round import PackSearcher, deal, level, remaining_seconds
from ct_sweeps.packing import PACKS_FILE, PackBook, last_round_packs, load_book, save_packs


def test_shares_make_every_pack_end_at_the_same_level():
    shares = level([0.0, 10.0], 90.0)
    assert shares == pytest.approx([50.0, 40.0])  # 0 + 50 == 10 + 40
    assert sum(level([3.0, 0.0, 1.0], 12.0)) == pytest.approx(12.0)
    ends = [w + x for w, x in zip([3.0, 0.0, 1.0], level([3.0, 0.0, 1.0], 12.0))]
    assert max(ends) - min(ends) == pytest.approx(0.0)


def test_a_slot_busy_past_the_level_gets_nothing_of_its_own():
    assert level([0.0, 100.0], 50.0) == pytest.approx([50.0, 0.0])


def test_settings_are_dealt_once_each_close_to_the_targets_and_no_pack_is_empty():
    cost = [1.0] * 45 + [3.0] * 45  # vanilla and CT settings
    pool = list(range(90))
    packs = deal(pool, cost, [120.0, 60.0])
    assert sorted(i for p in packs for i in p) == pool
    loads = [sum(cost[i] for i in p) for p in packs]
    assert loads == pytest.approx([120.0, 60.0], abs=3.0)  # within the dearest setting
    assert all(packs) and len(deal(pool, cost, [180.0, 0.0])[1]) == 1
    assert max(len(p) for p in deal(pool, cost, [180.0, 0.0], cap=60)) == 60


def test_a_running_pack_has_its_recent_seconds_per_epoch_times_the_epochs_left_to_go():
    def point(epoch: float, reported: float, arrived: float = 0.0) -> dict[str, float]:
        return {"epoch": epoch, "reported": reported, "started": 100.0, "arrived": arrived}

    # 1 s per epoch over the first 20 epochs, then 2 s per epoch: the recent pace counts
    points = [point(e, 100.0 + e) for e in range(2, 21, 2)]
    points += [point(e, 120.0 + 2 * (e - 20)) for e in range(22, 41, 2)]
    points[-1]["arrived"] = 50.0
    assert remaining_seconds(points, 100, now=50.0) == pytest.approx(120.0)  # 60 epochs x 2 s
    assert remaining_seconds(points, 100, now=53.0) == pytest.approx(117.0)  # 3 s since then
    assert remaining_seconds(points, 40, now=60.0) == 0.0
    # reports that do not reach 10 epochs back: the pace since the trial's start
    assert remaining_seconds([point(5, 110.0, 7.0)], 10, now=7.0) == pytest.approx(10.0)
    assert remaining_seconds([], 100, now=0.0) is None


def book(tmp_path: Path) -> PackBook:
    """Four packs on two slots: two of 4 settings, then a last round of two packs of 3."""
    settings = tuple({"x": i} for i in range(14))
    packs = ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10), (11, 12, 13))
    b = PackBook(settings, packs, flex=(2, 3), cost=(1.0,) * 14, epochs=(10,) * 14)
    save_packs(tmp_path / PACKS_FILE, b)
    return b


def report(s: PackSearcher, trial: str, epoch: int, at: float) -> None:
    s.on_trial_result(trial, {"epoch": epoch, "reported": at, "started": 0.0})


def test_the_last_round_waits_for_a_free_slot_and_gives_it_the_larger_share(tmp_path):
    s = PackSearcher(book(tmp_path), slots=2, run_path=tmp_path)
    assert s.suggest("a") == {"pack": 0}
    assert s.suggest("b") == {"pack": 1}
    assert s.suggest("c") is None  # both slots busy: not yet
    report(s, "a", 1, 1.0)
    report(s, "b", 1, 1.0)
    report(s, "a", 10, 10.0)  # a: 1 s per epoch, done
    report(s, "b", 5, 10.0)  # b: 2.25 s per epoch, 5 epochs (11 s) to go
    s.on_trial_complete("a", {})
    first, second = s.suggest("c"), s.suggest("d")
    assert (first["pack"], second["pack"]) == (2, 3)
    # the free slot takes more than half of the last round's 6 settings
    assert len(first["members"]) > 3 > len(second["members"]) >= 1
    assert sorted(first["members"] + second["members"]) == list(range(8, 14))
    assert s.suggest("e") == Searcher.FINISHED
    # packs.json says the same, and what the round was dealt out from
    on_disk = load_book(tmp_path / PACKS_FILE)
    assert on_disk.packs[2:] == (tuple(first["members"]), tuple(second["members"]))
    assert on_disk.configs(first) == [{"x": i} for i in first["members"]]
    last = json.loads((tmp_path / PACKS_FILE).read_text())["last_round"]
    assert last["sizes"] == [len(first["members"]), len(second["members"])]


def test_without_reports_the_planned_last_round_is_kept(tmp_path):
    s = PackSearcher(book(tmp_path), slots=2, run_path=tmp_path)
    s.suggest("a"), s.suggest("b")
    s.on_trial_complete("a", {}, error=True)  # failed at once: nothing to go on
    assert s.suggest("c") == {"pack": 2, "members": [8, 9, 10]}
    assert s.suggest("d") == {"pack": 3, "members": [11, 12, 13]}


def test_a_restored_searcher_goes_on_where_the_snapshot_left_it(tmp_path):
    s = PackSearcher(book(tmp_path), slots=2, run_path=tmp_path)
    s.suggest("a"), s.suggest("b")
    report(s, "a", 10, 10.0), report(s, "b", 2, 10.0)
    s.on_trial_complete("a", {})
    dealt = s.suggest("c")
    s.save(str(tmp_path / "searcher.json"))

    again = PackSearcher(book(tmp_path), slots=2, run_path=tmp_path)
    again.restore(str(tmp_path / "searcher.json"))
    assert again.live == {"b": 1, "c": 2}
    rest = again.suggest("d")
    assert rest["pack"] == 3 and sorted(dealt["members"] + rest["members"]) == list(range(8, 14))


def test_the_last_round_is_the_last_packs_that_share_a_pack_key():
    keys = ["ge"] * 4 + ["revise"] * 4
    packs = [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert last_round_packs(packs, keys, slots=2) == (2, 3)
    assert last_round_packs(packs, keys, slots=3) == (2, 3)  # the pack before has another key
    assert last_round_packs(packs, keys, slots=1) == ()
    assert last_round_packs([[0, 1], [4, 5]], keys, slots=2) == ()  # keys differ
    assert last_round_packs(packs, [None] * 8, slots=2) == ()  # cannot be packed
