"""The MLflow callback's child runs: one per setting, made once, its params logged with its first
metrics. A sweep's own new parent run has no children to look up; a callback restored by
``ct-sweep resume`` (unpickled from Tune's snapshot) finds and reuses those an earlier driver
made, and gives params to any that did not get them yet."""

from __future__ import annotations

import pickle
from pathlib import Path

from ct_sweeps.space import parse_space
from ct_sweeps.tracking import PARENT_TAG, TRIAL_TAG, MlflowSweepCallback, _Unit
from ct_sweeps.trainable import TrialSpec


def _store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("s", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    return uri, client, exp, parent


def _callback(uri: str, exp: str, parent: str, new_parent: bool) -> MlflowSweepCallback:
    spec = TrialSpec(base={"data": {"name": "moons"}}, space=parse_space({}, "grid"))
    return MlflowSweepCallback(uri, exp, parent, spec, "s", new_parent=new_parent)


def _children(client, exp: str, parent: str) -> list:
    return client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")


def test_a_new_sweep_makes_each_child_run_once(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)
    unit = _Unit("t1", "trial_t1", {}, None)
    first = cb._child(unit)
    assert cb._child(unit) == first
    assert [r.info.run_id for r in _children(client, exp, parent)] == [first]


def test_a_resumed_sweep_reuses_the_child_runs_an_earlier_driver_made(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    before = _callback(uri, exp, parent, new_parent=True)
    made = before._child(_Unit("t1", "trial_t1", {}, None))
    # the driver dies; `ct-sweep resume` restores the callback from Tune's snapshot
    restored = pickle.loads(pickle.dumps(before))
    restored.children.clear()  # a snapshot older than the child run
    assert restored._child(_Unit("t1", "trial_t1", {}, None)) == made
    kids = _children(client, exp, parent)
    assert [(r.info.run_id, r.data.tags[TRIAL_TAG]) for r in kids] == [(made, "t1")]


def test_tunes_snapshot_of_the_callback_does_not_wait_for_the_logging_thread(tmp_path):
    import threading

    uri, _, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)
    cb.children["t1"] = "run-1"
    busy, release = threading.Event(), threading.Event()

    def long_flush() -> None:  # a work item that holds the logging thread, as a big flush does
        busy.set()
        release.wait(30)

    cb._submit(long_flush)
    assert busy.wait(10)
    got: list[dict] = []
    snap = threading.Thread(target=lambda: got.append(cb.get_state()))
    snap.start()
    snap.join(10)  # Tune's event loop takes the snapshot while the flush is still running
    release.set()
    cb.drain()
    assert got and got[0]["children"] == {"t1": "run-1"}


def test_a_trials_metrics_are_first_flushed_flush_s_after_its_first_result(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)
    cb.flush_s = 3600.0
    unit = _Unit("t1", "trial_t1", {}, None)
    rid = cb._child(unit)
    cb._result("t1", [unit], {"epoch": 1, "loss": 0.5})
    # held for the next flush (one call per setting fewer while the trials start)
    assert client.get_run(rid).data.metrics == {}
    assert cb._buffer["t1"]
    cb.flush_s = 0.0
    cb._result("t1", [unit], {"epoch": 2, "loss": 0.25})
    history = client.get_metric_history(rid, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)]


def test_a_trial_shorter_than_twice_flush_s_flushes_once_by_half_its_epochs(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)  # train.epochs: the default 100
    cb.flush_s = 3600.0
    unit = _Unit("t1", "trial_t1", {}, None)
    rid = cb._child(unit)
    cb._result("t1", [unit], {"epoch": 49, "loss": 0.5})
    assert client.get_run(rid).data.metrics == {}
    cb._result("t1", [unit], {"epoch": 50, "loss": 0.25})  # half: params and epochs logged
    run = client.get_run(rid)
    assert run.data.params["data.name"] == "moons" and run.data.metrics == {"loss": 0.25}
    cb._result("t1", [unit], {"epoch": 51, "loss": 0.125})  # once: then flush_s again
    assert client.get_run(rid).data.metrics == {"loss": 0.25}


def _two_epochs_flushed(cb: MlflowSweepCallback, unit: _Unit, client, rid: str) -> None:
    """Report two epochs with ``flush_s`` 0 (the first flush comes at the second result); the
    run then holds the setting's params and its last loss."""
    cb.flush_s = 0.0
    cb._result(unit.id, [unit], {"epoch": 1, "loss": 0.5})
    cb._result(unit.id, [unit], {"epoch": 2, "loss": 0.25})
    run = client.get_run(rid)
    assert run.data.params["data.name"] == "moons" and run.data.metrics == {"loss": 0.25}


def test_a_child_runs_params_come_with_its_first_metrics(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)
    unit = _Unit("t1", "trial_t1", {}, None)
    rid = cb._child(unit)
    assert client.get_run(rid).data.params == {}  # not a call of their own
    _two_epochs_flushed(cb, unit, client, rid)


def test_a_trial_that_ends_before_any_metrics_still_logs_its_params(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)
    unit = _Unit("t1", "trial_t1", {}, None)
    rid = cb._child(unit)
    cb._finish("t1", [unit], "crashed before its first epoch", {})
    run = client.get_run(rid)
    assert run.data.params["data.name"] == "moons"
    assert run.info.status == "FAILED" and run.data.tags["ct.error"].startswith("crashed")


def test_a_resumed_sweep_logs_the_params_an_earlier_driver_did_not_get_to(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    before = _callback(uri, exp, parent, new_parent=True)
    made = before._child(_Unit("t1", "trial_t1", {}, None))  # the driver dies before a flush
    assert client.get_run(made).data.params == {}
    found = pickle.loads(pickle.dumps(before))  # the run found among the parent's children
    found.children.clear()
    unit = _Unit("t1", "trial_t1", {}, None)
    assert found._child(unit) == made
    found._flush("t1", [unit])
    assert client.get_run(made).data.params["data.name"] == "moons"


def test_a_resumed_sweep_logs_the_params_of_a_child_run_its_snapshot_named(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    before = _callback(uri, exp, parent, new_parent=True)
    unit = _Unit("t1", "trial_t1", {}, None)
    made = before._child(unit)
    snapshot = before.get_state()
    restored = pickle.loads(pickle.dumps(before))
    restored.set_state(snapshot)  # Tune restores the callback's state: the run is known
    _two_epochs_flushed(restored, unit, client, made)


def test_one_log_batch_respects_mlflows_limits_per_call(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)
    rid = client.create_run(exp).info.run_id
    metrics = [("m", float(i), i) for i in range(950)]
    params = {f"p{i}": i for i in range(130)}  # more than MLflow's 100 per call
    assert cb.tracker.log_batch(rid, metrics=metrics, params=params, tags={"t": "1"})
    run = client.get_run(rid)
    assert len(run.data.params) == 130 and run.data.tags["t"] == "1"
    assert len(client.get_metric_history(rid, "m")) == 950


# -- the best settings' MLflow models (tracking.log_model: N below the number of settings)


class _Trial:
    def __init__(self, tid: str, status: str):
        self.trial_id, self.status, self.config = tid, status, {}
        self.path, self.run_metadata = None, None

    def __str__(self) -> str:
        return f"trial_{self.trial_id}"


def _best_callback(tmp_path, n_settings: int, models: int):
    import torch

    from ct_core.config import parse_config
    from ct_core.models import build_model, save_model

    uri, client, exp, parent = _store(tmp_path)
    spec = TrialSpec(base={"data": {"name": "moons"}}, space=parse_space({}, "grid"))
    cb = MlflowSweepCallback(
        uri,
        exp,
        parent,
        spec,
        "s",
        new_parent=True,
        models=models,
        n_settings=n_settings,
        metric="val_acc",
        mode="max",
    )
    cfg = parse_config({"data": {"name": "moons"}})
    for k in range(n_settings):
        u = _Unit(f"t{k}", f"trial_t{k}", {}, None)
        cb._child(u)
        torch.manual_seed(k)
        path = tmp_path / f"model_{k}.pt"
        save_model(build_model(cfg.model, 2, 2), cfg, path, n_features=2, n_classes=2)
        cb.model_paths[u.id] = str(path)
    return cb, client


def test_the_best_models_so_far_are_saved_in_the_tail_and_only_the_final_best_are_logged(
    tmp_path, monkeypatch
):
    import ct_sweeps.tracking as tracking

    cb, client = _best_callback(tmp_path, n_settings=4, models=2)
    saved: list[str] = []
    real = tracking.prepare_model
    monkeypatch.setattr(
        tracking,
        "prepare_model",
        lambda path, folder: saved.append(path.name) or real(path, folder),
    )
    # three settings have finished when the last trial is the only one left to run
    cb.finals.update({"t0": 0.9, "t1": 0.5, "t2": 0.8})
    cb._prepare_best()
    assert sorted(saved) == ["model_0.pt", "model_2.pt"]
    prep = Path(cb._prep_dir)
    # the last setting finishes best: only its model is saved after the last trial
    cb.finals["t3"] = 0.95
    cb._log_best_models()
    assert sorted(saved) == ["model_0.pt", "model_2.pt", "model_3.pt"]
    assert not prep.exists() and cb._prepared == {}

    import mlflow.pytorch
    import torch

    for k in range(4):
        rid = cb.children[f"t{k}"]
        tags = client.get_run(rid).data.tags
        arts = {a.path for a in client.list_artifacts(rid)}
        assert ("model" in arts, tags.get("ct.model")) == (
            (True, "mlflow") if k in (0, 3) else (False, None)
        ), k
    # the model saved in the tail is the setting's own
    local = client.download_artifacts(cb.children["t0"], "model", str(tmp_path / "dl"))
    from ct_core.models import load_model

    expected, _ = load_model(tmp_path / "model_0.pt")
    x = torch.randn(5, 2)
    assert torch.equal(mlflow.pytorch.load_model(local)(x), expected(x))


def test_the_tail_starts_when_no_trial_waits_for_a_slot(tmp_path):
    cb, _ = _best_callback(tmp_path, n_settings=3, models=1)
    submitted: list[str] = []
    cb._submit = lambda fn, *args: submitted.append(getattr(fn, "__name__", str(fn)))
    # a trial waits for the slot that just finished
    trials = [_Trial("a", "TERMINATED"), _Trial("b", "RUNNING"), _Trial("c", "PENDING")]
    cb.on_trial_complete(0, trials, trials[0])
    assert "_prepare_best" not in submitted
    # a trial still to be made (Tune makes them as slots free up, Optuna as it suggests them)
    cb.on_trial_complete(0, trials[:2], trials[0])
    assert "_prepare_best" not in submitted
    # every trial made, none waiting: the tail
    trials[2].status = "RUNNING"
    cb.on_trial_complete(0, trials, trials[0])
    assert submitted.count("_prepare_best") == 1


def test_in_the_tail_the_running_trials_flush_at_each_result(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)
    cb.flush_s = 3600.0  # no trial reaches flush_s
    trials = [_Trial("a", "RUNNING"), _Trial("b", "RUNNING")]
    for t in trials:
        cb.on_trial_start(0, trials, t)
        cb.on_trial_result(0, trials, t, {"epoch": 1, "loss": 0.5})
    cb.drain()
    rid = cb.children["b"]
    assert client.get_run(rid).data.metrics == {}  # held for a flush, as before the tail

    # "a" ends and no trial waits for its slot: "b"'s next result logs its params and epochs
    trials[0].status = "TERMINATED"
    cb.on_trial_complete(0, trials, trials[0])
    cb.on_trial_result(0, trials, trials[1], {"epoch": 2, "loss": 0.25})
    cb.drain()
    run = client.get_run(rid)
    assert run.data.params["data.name"] == "moons" and run.info.status == "RUNNING"
    history = client.get_metric_history(rid, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)]
    cb.on_trial_result(0, trials, trials[1], {"epoch": 3, "loss": 0.125})  # and the next
    cb.drain()
    assert client.get_run(rid).data.metrics == {"loss": 0.125}


def test_the_last_epochs_result_is_left_to_the_trials_end_to_log(tmp_path):
    uri, client, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)  # train.epochs: the default 100
    cb.flush_s, cb._in_tail = 0.0, True  # any other result would be flushed at once
    trials = [_Trial("a", "RUNNING")]
    cb.on_trial_start(0, trials, trials[0])
    cb.on_trial_result(0, trials, trials[0], {"epoch": 100, "loss": 0.5})
    cb.drain()
    rid = cb.children["a"]
    assert client.get_run(rid).data.metrics == {}
    trials[0].status = "TERMINATED"
    cb.on_trial_complete(0, trials, trials[0])  # one call per setting logs it, and the end
    cb.drain()
    run = client.get_run(rid)
    assert run.data.metrics == {"loss": 0.5} and run.info.status == "FINISHED"


def test_a_pack_trial_logs_the_settings_its_config_names(tmp_path):
    from ct_sweeps.packing import PackBook

    uri, _, exp, parent = _store(tmp_path)
    cb = _callback(uri, exp, parent, new_parent=True)
    settings = tuple({"train.lambda_reg": v} for v in (0.1, 0.2, 0.3, 0.4))
    cb.packs = PackBook(settings, ((0, 1), (2, 3)), flex=(0, 1))
    planned, dealt = _Trial("a", "RUNNING"), _Trial("b", "RUNNING")
    planned.config, dealt.config = {"pack": 1}, {"pack": 0, "members": [0, 1, 3]}
    assert [u.config for u in cb._units(planned)] == [settings[2], settings[3]]
    assert [u.config for u in cb._units(dealt)] == [settings[0], settings[1], settings[3]]
    assert [u.id for u in cb._units(dealt)] == ["b-00", "b-01", "b-02"]
    # a callback pickled by an earlier driver holds the packs as lists of configs
    cb.packs = [list(settings[:2]), list(settings[2:])]
    assert [u.config for u in cb._units(planned)] == [settings[2], settings[3]]
