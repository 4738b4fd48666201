"""What a sweep's results say about a trial: one record per epoch, none lost.

Ray Tune can write an epoch twice (a trial restored from a checkpoint reports that epoch again,
then retrains the epochs after it) or not at all (results a trial reported just before its node
died). ``TrialRecord.history()`` gives every epoch once: the last reported, else the record the
trainer kept in its newest checkpoint."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from ct_sweeps.run.results import TrialRecord, one_per_epoch


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
    """A pack trial of one setting that reported ``reported`` epochs, with a checkpoint of the
    trainer state after ``saved``."""
    d = tmp_path / "trial_0"
    d.mkdir()
    lines = [
        json.dumps({"epoch": float(e), "settings": {"0": [{"epoch": float(e), "loss": float(e)}]}})
        for e in reported
    ]
    (d / "result.json").write_text("\n".join(lines) + "\n")
    (d / "checkpoint_000001").mkdir()
    history = [{"epoch": float(e), "loss": float(e), "val_implausibility": 0.5} for e in saved]
    states = [{"epoch": saved[-1], "history": history}]
    torch.save(states, d / "checkpoint_000001" / "states.pt")
    return TrialRecord("t0", "t0", "TERMINATED", {}, d, epochs=5)


def test_epochs_missing_from_results_are_recovered_from_the_checkpoint(tmp_path):
    rec = _trial(tmp_path, reported=[1, 2, 4, 5], saved=[1, 2, 3, 4])
    h = rec.history()
    assert [int(r["epoch"]) for r in h] == [1, 2, 3, 4, 5]
    assert rec.recovered == 1
    assert h[2]["val_implausibility"] == 0.5
    assert rec.final()["epochs"] == 5


def test_the_last_epochs_of_a_trial_whose_results_lag_come_from_its_final_checkpoint(tmp_path):
    rec = _trial(tmp_path, reported=[1, 2], saved=[1, 2, 3, 4, 5])
    assert [int(r["epoch"]) for r in rec.history()] == [1, 2, 3, 4, 5] and rec.recovered == 3


def test_a_complete_history_does_not_open_the_checkpoint(tmp_path):
    rec = _trial(tmp_path, reported=[1, 2, 3, 4, 5], saved=[1, 2, 3])
    (rec.path / "checkpoint_000001" / "states.pt").write_bytes(b"not a checkpoint")
    assert [int(r["epoch"]) for r in rec.history()] == [1, 2, 3, 4, 5] and rec.recovered == 0


def test_a_settings_final_metrics_carry_the_last_counterfactual_metrics():
    from ct_sweeps.plan import CF_METRICS

    def forward(history):  # every key's last number; keys of the last record and CF metrics
        out = {}
        for r in history:
            for k, v in r.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[k] = float(v)
        return {k: v for k, v in out.items() if k in history[-1] or k in CF_METRICS}

    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 30)
        history = []
        for e in range(1, n + 1):
            r = {"epoch": float(e), "loss": rng.random(), "seconds": 0.5}
            if e % 5 == 0 or rng.random() < 0.1:
                r["val_implausibility"] = rng.random()
            history.append(r)
        rec = TrialRecord("t", "t", "TERMINATED", {}, None, epochs=n)
        rec._history = history
        got = rec.final()
        assert got.pop("epochs") == n and got.pop("train_seconds") == 0.5 * n
        assert got == forward(history)
    assert TrialRecord("t", "t", "TERMINATED", {}, None)._lines() == []
