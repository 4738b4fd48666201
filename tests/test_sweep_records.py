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


def test_a_settings_final_metrics_carry_the_last_counterfactual_metrics():
    """carried_final reads the history backwards; it gives what a full forward pass gives."""
    import random

    from ct_sweeps.packing import carried_final
    from ct_sweeps.trainable import CF_METRICS

    def forward(history):  # every key's last number; keys of the last record and CF metrics
        out = {}
        for r in history:
            for k, v in r.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[k] = float(v)
        return {k: v for k, v in out.items() if k in history[-1] or k in CF_METRICS}

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        history = []
        for e in range(1, n + 1):
            r = {"epoch": float(e), "loss": rng.random(), "mature": float("nan")}
            if e % 5 == 0 or rng.random() < 0.1:
                r["val_implausibility"] = rng.random()
            if rng.random() < 0.05:
                r["failed"] = "non-finite loss"
            history.append(r)
        got, want = carried_final(history), forward(history)
        assert list(got) == list(want)
        assert all(got[k] == want[k] or (got[k] != got[k] and want[k] != want[k]) for k in got)
    assert carried_final([]) == {}
