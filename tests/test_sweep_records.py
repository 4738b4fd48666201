"""What a sweep's results say about a trial: one record per epoch, none lost.

Ray Tune can write an epoch twice (a trial restored from a checkpoint reports that epoch again,
then retrains the epochs after it) or not at all (results a trial reported just before its node
died). ``TrialRecord.history()`` gives every epoch once: the last reported, else the record the
trainer kept in its newest checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ct_sweeps.report import TrialRecord, one_per_epoch


def test_one_record_per_epoch_the_last_reported():
    # restored from the checkpoint of epoch 2: it reports epoch 2 again, then retrains 3
    reported = [{"epoch": 1, "v": 1}, {"epoch": 2, "v": 2}, {"epoch": 3, "v": 3}]
    reported += [{"epoch": 2, "v": 2}, {"epoch": 3, "v": 30}, {"epoch": 4, "v": 4}]
    assert one_per_epoch(reported) == [
        {"epoch": 1, "v": 1},
        {"epoch": 2, "v": 2},
        {"epoch": 3, "v": 30},
        {"epoch": 4, "v": 4},
    ]
    assert one_per_epoch(reported[:3]) == reported[:3]


def _trial(tmp_path: Path, reported: list[int], saved: list[int]) -> TrialRecord:
    d = tmp_path / "trial_0"
    d.mkdir()
    lines = [json.dumps({"epoch": float(e), "loss": float(e)}) for e in reported]
    (d / "result.json").write_text("\n".join(lines) + "\n")
    (d / "checkpoint_000001").mkdir()
    history = [{"epoch": float(e), "loss": float(e), "val_implausibility": 0.5} for e in saved]
    torch.save({"epoch": saved[-1], "history": history}, d / "checkpoint_000001" / "state.pt")
    return TrialRecord("t0", "t0", "TERMINATED", {}, d)


def test_epochs_missing_from_results_are_recovered_from_the_checkpoint(tmp_path):
    rec = _trial(tmp_path, reported=[1, 2, 4, 5], saved=[1, 2, 3, 4])
    h = rec.history()
    assert [int(r["epoch"]) for r in h] == [1, 2, 3, 4, 5]
    assert rec.recovered == 1
    assert h[2]["val_implausibility"] == 0.5 and h[2]["eval_epoch"] == 3.0  # logged as fresh
    assert rec.final()["epochs"] == 5


def test_a_complete_history_does_not_open_the_checkpoint(tmp_path):
    rec = _trial(tmp_path, reported=[1, 2, 3], saved=[1, 2, 3])
    (rec.path / "checkpoint_000001" / "state.pt").write_bytes(b"not a checkpoint")
    assert [int(r["epoch"]) for r in rec.history()] == [1, 2, 3] and rec.recovered == 0
