"""A sweep's new local MLflow store is copied from an empty, migrated one (ct_sweeps.record.store):
the copy is a real store, and MLflow treats it as the file it would have made itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sweep_support import sqlite_scalar

JOURNAL = "PRAGMA journal_mode"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache for the module: its template is made once (MLflow's migrations take seconds)."""
    d = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CT_CACHE_DIR", str(d))
        yield d


def test_a_new_sqlite_store_is_copied_from_the_cached_template_and_works(tmp_path, cache):
    import mlflow
    from mlflow.tracking import MlflowClient

    from ct_sweeps.record.store import new_sqlite_store

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
    from ct_sweeps.record.store import new_sqlite_store

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"already here")
    assert not new_sqlite_store(f"sqlite:///{db}")
    assert db.read_bytes() == b"already here"
    assert not new_sqlite_store(f"sqlite:///{tmp_path / 'missing-dir' / 'mlflow.db'}")
    assert not new_sqlite_store("http://127.0.0.1:5000")


@pytest.mark.parametrize(("wal", "mode"), [(True, "wal"), (False, "delete")])
def test_a_new_store_is_in_wal_mode_when_asked_and_its_file_alone_holds_the_runs_after_a_checkpoint(
    tmp_path, cache, wal, mode
):
    import shutil

    from mlflow.tracking import MlflowClient

    from ct_sweeps.record.store import checkpoint, new_sqlite_store

    db = tmp_path / "mlflow.db"
    assert new_sqlite_store(f"sqlite:///{db}", wal=wal)
    assert sqlite_scalar(db, JOURNAL) == mode
    assert not db.with_name("mlflow.db-wal").exists()  # nothing left open by the set-up

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    rid = client.create_run(exp).info.run_id
    for step in range(50):
        client.log_metric(rid, "m", float(step), step=step)
    client.set_terminated(rid)
    # WAL: the writes are in mlflow.db-wal until a checkpoint folds them into mlflow.db
    assert checkpoint(f"sqlite:///{db}") is wal
    if wal:
        assert db.with_name("mlflow.db-wal").stat().st_size == 0

    alone = tmp_path / "copy" / "mlflow.db"  # the file only, as a user would copy it
    alone.parent.mkdir()
    shutil.copyfile(db, alone)
    copy = MlflowClient(tracking_uri=f"sqlite:///{alone}")
    assert copy.get_run(rid).info.status == "FINISHED"
    assert len(copy.get_metric_history(rid, "m")) == 50


def test_auto_uses_wal_only_on_a_local_file_system(tmp_path, cache, monkeypatch):
    import ct_sweeps.record.store as store

    monkeypatch.setattr(store, "local_filesystem", lambda path: False)
    (tmp_path / "nfs").mkdir()
    assert store.new_sqlite_store(f"sqlite:///{tmp_path / 'nfs' / 'mlflow.db'}", wal="auto")
    assert sqlite_scalar(tmp_path / "nfs" / "mlflow.db", JOURNAL) == "delete"

    monkeypatch.setattr(store, "local_filesystem", lambda path: True)
    (tmp_path / "disk").mkdir()
    assert store.new_sqlite_store(f"sqlite:///{tmp_path / 'disk' / 'mlflow.db'}", wal="auto")
    assert sqlite_scalar(tmp_path / "disk" / "mlflow.db", JOURNAL) == "wal"


MOUNTINFO = r"""22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
30 22 0:27 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw
41 22 0:40 / /shared rw,relatime shared:30 - nfs4 fs:/export rw,vers=4.2
42 41 253:2 / /shared/scratch rw,relatime shared:31 - xfs /dev/vdb1 rw
43 22 0:41 / /mnt/my\040runs rw,relatime shared:32 - lustre 10.0.0.1@tcp:/fs rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/me/runs", "ext4"),
        ("/tmp/ct", "tmpfs"),
        ("/tmpfiles/ct", "ext4"),  # /tmp is not a prefix of /tmpfiles
        ("/shared/runs/sweep", "nfs4"),
        ("/shared/scratch/sweep", "xfs"),  # the deepest mount wins
        ("/mnt/my runs/sweep", "lustre"),  # "\040" in mountinfo is a space
    ],
)
def test_the_file_system_of_a_path_is_its_deepest_mount(path, kind):
    from ct_sweeps.record.store import LOCAL_FS, _mount_type

    assert _mount_type(Path(path), MOUNTINFO) == kind
    assert (kind in LOCAL_FS) == (kind in ("ext4", "tmpfs", "xfs"))
