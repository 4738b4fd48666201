"""Session setup shared by every test: data location, a throw-away cache, one torch thread."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("CT_DATA_DIR", str((REPO / ".." / "shared" / "data").resolve()))
_CACHE = tempfile.mkdtemp(prefix="ct-test-cache-")
os.environ["CT_CACHE_DIR"] = _CACHE  # never write into the user's ~/.cache/ct from tests
os.environ.pop("CT_DATA_URL", None)  # no mirror downloads unless a test asks for one
torch.set_num_threads(1)
# Every Ray these tests start uses token authentication with this session's token (Ray reads the
# variables when it is imported, so they are set before anything imports it), and none writes
# the machine's ~/.ray/auth_token. Subprocesses inherit them.
_TOKEN = Path(_CACHE) / "ray_auth_token"
_TOKEN.write_text(secrets.token_hex(32))
_TOKEN.chmod(0o600)
os.environ.pop("RAY_AUTH_TOKEN", None)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(_TOKEN))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)


@contextlib.contextmanager
def _ray_environ():
    """Ray's variables for a test, the environment put back as it was afterwards (starting Ray
    sets more of them)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def ray_environ():
    """For a test that starts and stops a Ray of its own."""
    with _ray_environ():
        yield


@pytest.fixture(scope="module")
def ray_runtime():
    """A throw-away local Ray per test module, on loopback, with the session's token; yields its
    GCS address."""
    from ct_sweeps.run.cluster import set_defaults

    with _ray_environ():
        set_defaults()
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()
