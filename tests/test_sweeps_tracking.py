"""The tracking of a sweep: which events a sweep's results make (:class:`Stream`), and what the
MLflow tracker does with them in a real sqlite store, live, on resume and when backfilling."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from ct_sweeps.plan import new_run_dir, plan_from
from ct_sweeps.plan.schema import parse_sweep
from ct_sweeps.record.events import (
    Metrics,
    Model,
    SettingEnded,
    SettingStarted,
    SweepEnded,
    SweepStarted,
)
from ct_sweeps.record.live import TrackingCallback
from ct_sweeps.record.mlflow_tracker import PARENT_TAG, TRIAL_TAG, MlflowTracker
from ct_sweeps.record.stream import Session, Stream


class Recorder:
    """A tracker that keeps the events it is handed."""

    failures = 0

    def __init__(self) -> None:
        self.events: list = []

    def handle(self, event) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def _plan(tmp_path: Path, n: int = 2, **tracking):
    raw = {
        "name": "s",
        "base": {"data": {"name": "moons"}, "train": {"epochs": 4}},
        "search": {"metric": "val_acc", "mode": "max"},
        "space": {"train.lambda_reg": [0.1 * (i + 1) for i in range(n)]},
        "tracking": tracking,
    }
    sweep = parse_sweep(raw)
    p = plan_from(sweep, dict(sweep.base))
    return p, new_run_dir(p, str(tmp_path / "run"))


def _epoch(e: int, **extra) -> dict:
    return {"epoch": float(e), "loss": 1.0 / e, "val_acc": 0.5 + e / 100, "seconds": 0.5, **extra}


def test_a_settings_epochs_become_metrics_once_with_the_clocks_totalled_at_its_end(tmp_path):
    p, run = _plan(tmp_path, log_every=2)
    rec = Recorder()
    s = Stream(rec, p, run, None)
    s.start("a", {"train.lambda_reg": 0.1})
    for e in (1, 2, 3, 2, 3):  # a restored trial reports epochs 2 and 3 again
        s.record("a", _epoch(e, skipped_batches=0, div=0.0))
    s.end("a", "FINISHED")
    started = rec.of(SettingStarted)[0]
    assert started.params["train.lambda_reg"] == 0.1 and started.swept == {"train.lambda_reg": 0.1}
    steps = [(m.step, sorted(m.values)) for m in rec.of(Metrics)]
    # every 2nd epoch and the last; no per-epoch clocks, no zero skipped batches
    assert steps[:2] == [(2, ["div", "loss", "val_acc"]), (3, ["div", "loss", "val_acc"])]
    assert steps[2] == (3, ["skipped_batches_total", "train_seconds"])
    assert rec.of(Metrics)[2].values["train_seconds"] == 1.5
    assert rec.of(SettingEnded)[0].status == "FINISHED"
    s.end("a", "FINISHED")  # ended once
    assert len(rec.of(SettingEnded)) == 1


def test_a_vanilla_setting_logs_no_ct_terms():
    from ct_sweeps.record.stream import metrics_of

    r = {"epoch": 1.0, "loss": 0.5, "div": 0.0, "reg": 0.0, "adv": 0.0, "val_mmd": float("nan")}
    assert metrics_of(r, vanilla=True) == {"loss": 0.5}
    assert metrics_of(r, vanilla=False) == {"loss": 0.5, "div": 0.0, "reg": 0.0, "adv": 0.0}


def test_only_the_best_settings_get_a_model_and_only_once_their_ranking_is_known(tmp_path):
    import pandas as pd

    from ct_sweeps.record.report import Report

    p, run = _plan(tmp_path, n=3, log_model=2)
    rec = Recorder()
    s = Stream(rec, p, run, None)
    for uid, acc in (("a", 0.7), ("b", 0.9), ("c", 0.8)):
        s.start(uid, {})
        s.record(uid, {"epoch": 4.0, "val_acc": acc})
        s.end(uid, "FINISHED", model=tmp_path / f"{uid}.pt")
    assert not rec.of(Model) and all(e.model_file for e in rec.of(SettingEnded))
    ranked = pd.DataFrame({"trial_id": ["b", "c", "a"], "status": ["TERMINATED"] * 3})
    ranked["val_acc"] = [0.9, 0.8, 0.7]  # results.csv, sorted by the search metric
    s.finish("FINISHED", Report(ranked, run.path / "results.csv", None, None, [], "val_acc", "max"))
    assert [m.setting_id for m in rec.of(Model)] == ["b", "c"]
    ended = rec.of(SweepEnded)[0]
    assert ended.metrics == {"best_val_acc": 0.9}
    assert (ended.best, ended.register) == ("b", "s")  # registered under the sweep's name


def test_a_failed_setting_ends_failed_with_its_own_reason_and_no_model(tmp_path):
    p, run = _plan(tmp_path)
    rec = Recorder()
    s = Stream(rec, p, run, None)
    s.trial_result("t", "trial_t", {"train.lambda_reg": 0.1}, {})
    s.trial_result(
        "t", "trial_t", {}, {"settings": {"0": [_epoch(1), {"epoch": 2.0, "failed": "NaN"}]}}
    )
    s.trial_ended("t", "trial_t", {}, "", tmp_path)
    ended = rec.of(SettingEnded)[0]
    assert (ended.status, ended.reason, ended.model_file) == ("FAILED", "NaN", None)


# -- the MLflow tracker, in a real local store


def _replay(p, run, records_by_uid: dict[str, list[dict]], uri: str, end: bool = True):
    tracker = MlflowTracker(uri, run, flush_s=3600.0)
    s = Stream(tracker, p, run, None)
    s.sweep_started()
    for uid, history in records_by_uid.items():
        s.start(uid, {"train.lambda_reg": 0.1})
        for r in history:
            s.record(uid, r)
        if end:
            s.end(uid, "FINISHED")
    s.finish("FINISHED" if end else "KILLED")
    return tracker


def _children(client, tracker) -> dict:
    runs = client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{tracker.parent.info.run_id}'",
    )
    return {r.data.tags[TRIAL_TAG]: r for r in runs}


def test_a_sweep_makes_one_parent_and_one_child_per_setting_with_params_and_metrics(tmp_path):
    from mlflow.tracking import MlflowClient

    p, run = _plan(tmp_path)
    uri = f"sqlite:///{run.path / 'mlflow.db'}"
    tracker = _replay(p, run, {"a": [_epoch(1), _epoch(2)], "b": [_epoch(1)]}, uri)
    assert tracker.failures == 0
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(tracker.parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.name"] == "s"
    assert run.info["parent_run_id"] == parent.info.run_id  # run.json names it
    kids = _children(client, tracker)
    assert sorted(kids) == ["a", "b"] and {k.info.status for k in kids.values()} == {"FINISHED"}
    assert kids["a"].data.params["train.lambda_reg"] == "0.1"
    assert [m.step for m in client.get_metric_history(kids["a"].info.run_id, "loss")] == [1, 2]


def test_a_resumed_sweep_adopts_its_runs_and_logs_only_what_they_lack(tmp_path):
    from mlflow.tracking import MlflowClient

    p, run = _plan(tmp_path)
    uri = f"sqlite:///{run.path / 'mlflow.db'}"
    # the first driver logged epochs 1-2 of "a" and died before "a" ended
    first = _replay(p, run, {"a": [_epoch(1), _epoch(2)]}, uri, end=False)
    client = MlflowClient(tracking_uri=uri)
    made = _children(client, first)["a"].info.run_id
    # the resumed sweep replays epochs 1-4 and ends it
    again = _replay(p, run, {"a": [_epoch(e) for e in (1, 2, 3, 4)]}, uri)
    assert again.parent.info.run_id == first.parent.info.run_id
    kids = _children(client, again)
    assert [k.info.run_id for k in kids.values()] == [made]
    assert [m.step for m in client.get_metric_history(made, "loss")] == [1, 2, 3, 4]
    assert kids["a"].info.status == "FINISHED"
    assert again.counts["created"] == 0


class LostAnswers(MlflowTracker):
    """A tracker whose store takes the first ``n`` batches of metrics but whose answers are
    lost (a timeout after the server committed): each such call counts as failed."""

    def __init__(self, *args, n: int = 1, **kw):
        super().__init__(*args, **kw)
        self.lost = n

    def log_batch(self, run_id, metrics=(), params=None) -> bool:
        ok = super().log_batch(run_id, metrics=metrics, params=params)
        if ok and metrics and self.lost:
            self.lost -= 1
            self._down_until = 0.0  # the store is up again at once
            return False
        return ok


def _steps_by_metric(client, run_id: str) -> dict[str, list[int]]:
    keys = client.get_run(run_id).data.metrics
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


def test_no_step_reaches_a_run_twice_after_a_kill_a_resume_or_a_lost_answer(tmp_path):
    """Driver 1 sends each epoch at once (one answer lost) and is killed after epoch 15 of "a"
    and 12 of "b"; driver 2 replays what the run directory holds (a's results lag: epochs 1-10;
    b's: 1-14), the restored trials report their checkpoints' epochs again (a's from epoch 10,
    b's from 14), train on to epoch 20 and end. Every metric holds each step once."""
    from mlflow.tracking import MlflowClient

    p, run = _plan(tmp_path)
    uri = f"sqlite:///{run.path / 'mlflow.db'}"
    cf = {"val_implausibility": 1.5, "val_cost": 2.0}

    def epoch(e: int) -> dict:
        return _epoch(e, **(cf if e % 5 == 0 else {}))

    first = LostAnswers(uri, run, flush_s=0.0)
    s = Stream(first, p, run, None)
    s.sweep_started()
    for uid, last in (("a", 15), ("b", 12)):
        s.start(uid, {"train.lambda_reg": 0.1})
        for e in range(1, last + 1):
            s.record(uid, epoch(e))
    assert first.lost == 0  # the store took a batch whose answer was lost

    second = MlflowTracker(uri, run, flush_s=0.0)
    s = Stream(second, p, run, None)
    s.sweep_started()
    for uid, known, restored in (("a", 10, 10), ("b", 14, 14)):
        s.start(uid, {"train.lambda_reg": 0.1})
        for e in range(1, known + 1):  # the replay
            s.record(uid, epoch(e))
        for e in range(restored - 1, 21):  # the checkpoint's epochs again, then the rest
            s.record(uid, epoch(e))
        s.end(uid, "FINISHED")
    s.finish("FINISHED")
    client = MlflowClient(tracking_uri=uri)
    for uid, child in _children(client, second).items():
        steps = _steps_by_metric(client, child.info.run_id)
        assert steps["loss"] == steps["val_acc"] == list(range(1, 21)), (uid, steps)
        assert steps["val_implausibility"] == [5, 10, 15, 20], (uid, steps)
        assert steps["train_seconds"] == [20], (uid, steps)


def test_a_run_whose_driver_died_before_its_first_flush_gets_its_params(tmp_path):
    from mlflow.tracking import MlflowClient

    p, run = _plan(tmp_path)
    uri = f"sqlite:///{run.path / 'mlflow.db'}"
    first = MlflowTracker(uri, run, flush_s=3600.0)
    s = Stream(first, p, run, None)
    s.sweep_started()
    s.start("a", {"train.lambda_reg": 0.1})  # a run with tags only: nothing flushed
    client = MlflowClient(tracking_uri=uri)
    rid = _children(client, first)["a"].info.run_id
    assert client.get_run(rid).data.params == {}
    _replay(p, run, {"a": [_epoch(1)]}, uri)
    assert client.get_run(rid).data.params["train.lambda_reg"] == "0.1"


def test_one_log_batch_respects_mlflows_limits_per_call(tmp_path):
    from mlflow.tracking import MlflowClient

    p, run = _plan(tmp_path)
    uri = f"sqlite:///{run.path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, run)
    tracker.handle(SweepStarted("s", run.path, {}))
    rid = tracker.parent.info.run_id
    metrics = [("m", float(i), i) for i in range(950)]
    params = {f"p{i}": i for i in range(130)}  # more than MLflow's 100 per call
    assert tracker.log_batch(rid, metrics=metrics, params=params)
    client = MlflowClient(tracking_uri=uri)
    assert len(client.get_run(rid).data.params) == 130
    assert len(client.get_metric_history(rid, "m")) == 950


def test_an_unreachable_store_is_counted_never_raised_and_left_alone_for_a_while(
    tmp_path, monkeypatch
):
    import socket

    from ct_sweeps.run.cluster import DEFAULTS

    for k, v in DEFAULTS.items():  # a sweep's few, short HTTP retries
        monkeypatch.setenv(k, v)
    p, run = _plan(tmp_path)
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tracker = _replay(p, run, {"a": [_epoch(1)]}, f"http://127.0.0.1:{port}")
    assert tracker.failures == 1 and tracker.parent is None  # one try, then skipped
    assert "parent_run_id" not in run.info


def test_tunes_callback_hands_trials_to_the_session_and_pickles_to_the_run_id_alone(tmp_path):
    from types import SimpleNamespace

    p, run = _plan(tmp_path)
    rec = Recorder()
    session = Session("run-1", Stream(rec, p, run, None))
    try:
        cb = pickle.loads(pickle.dumps(TrackingCallback("run-1")))  # as Tune restores it
        assert cb.__dict__ == {"run_id": "run-1"}
        trial = SimpleNamespace(trial_id="t", config={"train.lambda_reg": 0.1}, path=str(tmp_path))
        cb.on_trial_start(0, [], trial)
        cb.on_trial_result(0, [], trial, {"settings": {"0": [_epoch(1)]}})
        cb.on_trial_complete(0, [], trial)
        session.wait()
    finally:
        session.close()
    kinds = [type(e).__name__ for e in rec.events]
    assert kinds == ["SettingStarted", "Metrics", "Metrics", "SettingEnded"]
    TrackingCallback("closed").on_trial_start(0, [], trial)  # no session: nothing to do


@pytest.mark.parametrize("status", ["FINISHED", "KILLED"])
def test_the_parent_run_ends_with_the_sweeps_status(tmp_path, status):
    from mlflow.tracking import MlflowClient

    p, run = _plan(tmp_path)
    uri = f"sqlite:///{run.path / 'mlflow.db'}"
    tracker = _replay(p, run, {"a": [_epoch(1)]}, uri, end=status == "FINISHED")
    parent = MlflowClient(tracking_uri=uri).get_run(tracker.parent.info.run_id)
    assert parent.info.status == status
