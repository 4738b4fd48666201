"""A sweep's new local MLflow store is copied from an empty, migrated one (ct_sweeps.tracking):
the copy is a real store, and MLflow treats it as the file it would have made itself."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("CT_CACHE_DIR", str(d))
    return d


def test_a_new_sqlite_store_is_copied_from_the_cached_template_and_works(tmp_path, cache):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ct_sweeps.tracking import new_sqlite_store

    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    for db in (first, second):
        db.parent.mkdir()
        assert new_sqlite_store(f"sqlite:///{db}")
        assert db.stat().st_size > 0
    assert [p.name for p in (cache / "mlflow").iterdir()] == [f"empty-{mlflow.__version__}.db"]

    client = MlflowClient(tracking_uri=f"sqlite:///{second}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    exp = client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp, tags={"k": "v"})
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param("p", "1")])
    client.log_metric(run.info.run_id, "m", 0.5, step=3)
    client.set_terminated(run.info.run_id)
    got = client.get_run(run.info.run_id)
    assert got.info.status == "FINISHED" and got.data.params == {"p": "1"}
    assert [(m.value, m.step) for m in client.get_metric_history(run.info.run_id, "m")] == [
        (0.5, 3)
    ]
    # the other copy is its own store
    assert MlflowClient(tracking_uri=f"sqlite:///{first}").search_runs([exp]) == []


def test_an_existing_store_or_another_backend_is_left_to_mlflow(tmp_path, cache):
    from ct_sweeps.tracking import new_sqlite_store

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"already here")
    assert not new_sqlite_store(f"sqlite:///{db}")
    assert db.read_bytes() == b"already here"
    assert not new_sqlite_store(f"sqlite:///{tmp_path / 'missing-dir' / 'mlflow.db'}")
    assert not new_sqlite_store("http://127.0.0.1:5000")
    assert not (cache / "mlflow").exists()
