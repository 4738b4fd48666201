"""What hardening promises beyond one error line per bad input: YAML read strictly, results never
silently overwritten and written whole, private state directories, processes of a killed sweep
driver ended at the next start, and a full disk told apart from other failures."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ct_core.cli import main as ct
from ct_core.config import ConfigError, load_config, load_raw, safe_load
from ct_core.files import atomic_save, atomic_write_text, private_dir
from ct_core.models import load_model
from ct_sweeps.cli import disk_full
from ct_sweeps.run.cluster import DRIVER_VAR, reap_orphans
from ct_sweeps.run.state import backup_state, restore_state

ROOT = Path(__file__).resolve().parents[1]
MOONS = str(ROOT / "configs" / "base" / "moons.yaml")
TINY = ["train.epochs=1", "data.n_train=60", "data.n_val=10", "data.n_test=40", "train.nce=10"]
TINY += ["generator.T=3", "model.hidden=[4]"]
sys.path.insert(0, str(ROOT / "cluster"))
import clusterstate  # noqa: E402


def _sets(*extra: str) -> list[str]:
    return [a for s in (*TINY, *extra) for a in ("--set", s)]


# ----------------------------------------------------------------------------------------------
# YAML


def test_duplicate_keys_are_an_error_that_names_the_key_and_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 3\n  lr: 0.01\n  epochs: 5\n")
    with pytest.raises(ConfigError, match=r"line 4.*duplicate key 'epochs'"):
        load_config(cfg)


def test_a_few_aliases_are_fine_and_an_alias_bomb_is_refused_at_once():
    assert safe_load("a: &x [1, 2]\nb: *x\nc: *x\n") == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}

    def bomb(levels: int) -> str:
        return "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n"
            for i in range(levels)
        )

    with pytest.raises(yaml.YAMLError, match="expand to more than"):
        safe_load(bomb(8))  # 80 aliases, 10**9 values
    with pytest.raises(yaml.YAMLError, match="more than 100 aliases"):
        safe_load(bomb(12))


def test_a_base_chain_that_comes_back_names_the_loop(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain: {epochs: 2}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_raw(tmp_path / "a.yaml")
    (msg,) = e.value.messages
    assert "extends itself" in msg
    assert re.search(r"\(\S*a\.yaml -> \S*b\.yaml -> \S*a\.yaml\)", msg), msg


# ----------------------------------------------------------------------------------------------
# Results: atomic, and never overwritten unless asked


def test_a_write_that_fails_half_way_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    atomic_write_text(target, "previous")

    def half(f):
        f.write(b"new, but only half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_save(target, half)
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_ct_train_keeps_existing_results_unless_told_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert ct(["train", MOONS, *_sets("seed=1"), "--out", str(out), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"config.yaml", "model.pt", "history.csv", "metrics.json"} <= set(before)

    assert ct(["train", MOONS, *_sets("seed=2"), "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched

    assert ct(["train", MOONS, *_sets("seed=2"), "--out", str(out), "--quiet", "--overwrite"]) == 0
    _, cfg = load_model(out)
    assert cfg.seed == 2
    assert load_config(out / "config.yaml") == cfg  # the config beside the model is its own
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_rejected_overwrite_leaves_the_old_config_matching_the_old_model(tmp_path):
    out = tmp_path / "run"
    assert ct(["train", MOONS, *_sets("seed=1"), "--out", str(out), "--quiet"]) == 0
    # bad input found only after the config was read (a data size the data cannot hold)
    bad = _sets("seed=3", "data.n_val=1000000")
    assert ct(["train", MOONS, *bad, "--out", str(out), "--quiet", "--overwrite"]) == 2
    _, cfg = load_model(out)
    assert load_config(out / "config.yaml") == cfg and cfg.seed == 1


def test_ct_evaluate_keeps_an_existing_evaluation_unless_told_to_overwrite(tmp_path, capsys):
    model, out = tmp_path / "m", tmp_path / "eval"
    assert ct(["train", MOONS, *_sets(), "--out", str(model), "--quiet"]) == 0
    fast = ["--runs", "1", "--individuals", "4", "--robust-samples", "0", "--ig-rounds", "0"]
    fast += ["--no-plots", "--quiet", "--setting", "plausibility"]
    assert ct(["evaluate", str(model), "--out", str(out), *fast]) == 0
    summary = (out / "summary.json").read_text()
    assert ct(["evaluate", str(model), "--out", str(out), *fast, "--set", "evaluation.T=5"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == summary
    args = [*fast, "--set", "evaluation.T=5", "--overwrite"]
    assert ct(["evaluate", str(model), "--out", str(out), *args]) == 0
    assert json.loads((out / "summary.json").read_text())["evaluation"]["T"] == 5


# ----------------------------------------------------------------------------------------------
# Private state directories


def test_a_private_dir_is_made_0700_and_an_existing_one_of_ours_is_tightened(tmp_path):
    made = private_dir(tmp_path / "new")
    assert oct(made.stat().st_mode & 0o777) == "0o700"
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert oct(private_dir(loose).stat().st_mode & 0o777) == "0o700"


def test_a_planted_symlink_is_refused_and_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    victim.chmod(0o755)
    (tmp_path / "state").symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link"):
        private_dir(tmp_path / "state")
    assert oct(victim.stat().st_mode & 0o777) == "0o755"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a usable directory"):
        private_dir(tmp_path / "file")


@pytest.mark.skipif(os.getuid() != 0, reason="making a folder of another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path):
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 54321, 54321)
    with pytest.raises(ConfigError, match="owned by user id 54321"):
        private_dir(other)


def test_the_clusters_tmp_fallback_refuses_a_planted_symlink(tmp_path):
    state = tmp_path / ("s" * 50) / "state"  # a long path: Ray's temp dir falls back to /tmp
    root = clusterstate.ray_temp_dir(state)
    assert str(root).startswith("/tmp/ctray-")
    target = tmp_path / "attacker"
    target.mkdir()
    root.symlink_to(target)
    try:
        with pytest.raises(clusterstate.ClusterError, match="symbolic link"):
            clusterstate.node_temp_dir(state, "head")
        assert list(target.iterdir()) == []
    finally:
        root.unlink()
    node = clusterstate.node_temp_dir(state, "head")
    try:
        assert oct(root.stat().st_mode & 0o777) == "0o700" and node.parent == root
    finally:
        node.rmdir()
        root.rmdir()


# ----------------------------------------------------------------------------------------------
# A killed driver's processes; a full disk


def _sleeper(mark: str) -> subprocess.Popen:
    env = {**os.environ, DRIVER_VAR: mark}
    return subprocess.Popen(["sleep", "120"], env=env)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc (Linux)")
def test_processes_of_a_dead_driver_are_ended_and_those_of_a_live_one_kept():
    gone = subprocess.Popen(["true"])
    gone.wait()
    own_start = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
    orphan = _sleeper(f"{gone.pid}:1")
    kept = _sleeper(f"{os.getpid()}:{own_start}")
    try:
        ended = reap_orphans(grace_s=5)
        assert orphan.pid in ended and kept.pid not in ended
        assert orphan.wait(timeout=10) is not None
        assert kept.poll() is None
    finally:
        for p in (orphan, kept):
            p.kill()
            p.wait()


def test_a_full_disk_is_recognised_through_wrapping_errors():
    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as e:
            raise RuntimeError("Tune could not save the experiment state") from e
    except RuntimeError as outer:
        assert disk_full(outer)
    assert disk_full(RuntimeError("ray.exceptions: OSError: [Errno 28] No space left on device"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(ValueError("nan loss"))


@pytest.mark.integration
@pytest.mark.parametrize("token", ["wrong", "missing"])
def test_a_cluster_that_refuses_the_token_is_one_error_line_and_no_running_parent(
    token, ray_runtime, tmp_path
):
    """``--address`` to a token-enabled Ray with a wrong or no token: one ``error:`` line
    (exit 2) that points at the token, no traceback (Ray's core may log its retries), and the
    sweep's MLflow parent run is not left RUNNING."""
    from mlflow import MlflowClient

    wrong = tmp_path / "token"
    if token == "wrong":
        wrong.write_text("0" * 64)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "auth",
                "base": MOONS,
                "overrides": dict(s.split("=") for s in TINY if "[" not in s),
                "space": {"seed": [1, 2]},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(wrong))
    run = tmp_path / "run"
    argv = [str(Path(sys.executable).parent / "ct-sweep"), "run", str(sweep), "--storage", str(run)]
    res = subprocess.run(
        [*argv, "--address", ray_runtime], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "token" in errors[0], res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    info = json.loads((run / "run.json").read_text())
    parent = MlflowClient(info["tracking_uri"]).get_run(info["parent_run_id"])
    assert parent.info.status == "FAILED"


def test_a_tune_state_cut_short_by_a_full_disk_is_put_back_from_its_last_good_copy(tmp_path):
    state = tmp_path / "experiment_state-2026-01-01_00-00-00.json"
    searcher = tmp_path / "basic-variant-state-2026-01-01_00-00-00.json"
    good = json.dumps({"trial_data": [["trial_1", "{}"]], "runner_data": {}})
    state.write_text(good)
    searcher.write_bytes(b"searcher state")
    backup_state(tmp_path)
    # Tune rewrites both files in place; the disk filled up while it did
    state.write_text(good[:25])
    searcher.write_bytes(b"")
    backup_state(tmp_path)  # damaged files never replace the good copies
    assert sorted(restore_state(tmp_path)) == sorted([state, searcher])
    assert json.loads(state.read_text()) == json.loads(good)
    assert searcher.read_bytes() == b"searcher state"
    assert restore_state(tmp_path) == []  # a whole state is left as it is
