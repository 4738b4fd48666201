"""The MLflow UI shows a default (packed) grid sweep as a user compares it (``integration``).

A real ``mlflow server`` on a free loopback port, a packed grid sweep of four CT settings on a
real local Ray logging to it over HTTP, and headless Chromium rendering the UI's pages. Checked
in the rendered page, not in the API: the sweep's runs table has a ``val_implausibility`` column
with a value for every child run, the child runs' names differ and say what they sweep, and the
Model Registry lists the sweep's model with its ``best`` alias. The screenshots stay in
``test-artifacts/mlflow-ui/`` (or ``$CT_TEST_ARTIFACTS/mlflow-ui/``) to be looked at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"generator.type": ["ecco", "generic"], "train.lambda_div": [0.1, 0.5]}
TINY = {
    "data.n_train": 200,
    "data.n_val": 100,
    "data.n_test": 100,
    "train.epochs": 4,
    "train.lr": 0.03,
    "train.nce": 50,
    "train.batch_size": 50,
    "generator.T": 5,
    "train.eval_every": 2,
    "evaluation.n_val_individuals": 40,
}
"""Valid counterfactuals (so a finite ``val_implausibility``) after a few epochs."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: dict | None = None) -> dict:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mlflow server`` on loopback (one worker), stopped by its process group at the end."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server"]
    cmd += ["--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(tmp / "artifacts")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def sweep(ray_runtime, server, tmp_path_factory):
    from ct_sweeps import runner

    tmp = tmp_path_factory.mktemp("ui-sweep")
    doc = {
        "name": "ui-grid",
        "base": str(ROOT / "configs" / "base" / "moons.yaml"),
        "overrides": TINY,
        "search": {"algorithm": "grid", "metric": "val_implausibility", "mode": "min"},
        "space": SPACE,
        "resources": {"cpu": 1},
    }
    doc["search"].update(max_concurrent=2, pack=2, seed=7)
    path = tmp / "ui-grid.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = runner.run(runner.plan(str(path)), storage=str(tmp / "run"), tracking_uri=server)
    assert out.n_finished == 4, out.report.frame
    return out


def _artifacts() -> Path:
    root = Path(os.environ.get("CT_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder = root / "mlflow-ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class _Text(HTMLParser):
    """The visible text of a page, one string per text node."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def _render(url: str, name: str, tmp: Path) -> list[str]:
    """The page at ``url`` after its scripts ran, as text nodes; a screenshot of it is kept."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags += ["--disable-background-networking", "--disable-component-update", "--no-first-run"]
    flags += ["--disable-sync", "--window-size=2200,1100", "--virtual-time-budget=30000"]
    flags += [f"--user-data-dir={tmp / 'chrome'}"]
    shot = _artifacts() / f"{name}.png"
    res = subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.exists()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    (_artifacts() / f"{name}.html").write_text(dom.stdout)
    parser = _Text()
    parser.feed(dom.stdout)
    return parser.parts


def test_the_runs_table_compares_the_childrens_implausibility(sweep, server, tmp_path):
    exp = _get(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-grid")
    exp_id = exp["experiment"]["experiment_id"]
    from ct_sweeps.record.mlflow_tracker import runs_link

    info = json.loads((sweep.run_dir / "run.json").read_text())
    # the link ct-sweep prints: the model-training view, the sweep's saved view of the table
    text = _render(runs_link(server, exp_id, info["view"]), "runs-table", tmp_path)
    assert "Sessions" not in text and "Judges" not in text  # not the GenAI view
    assert f"ct: {sweep.report.metric}" in text  # the saved view, sorted by the metric
    runs = _get(f"{server}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp_id]})["runs"]
    names = {
        r["info"]["run_name"]
        for r in runs
        if any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))
    }
    assert len(names) == 4, names  # e.g. "ecco div=0.5"
    for name in names:
        assert name in text, (name, text[:200])
    assert "val_implausibility" in text
    # a value in the column for every child: the rendered numbers are the logged ones
    shown = {float(t) for t in text if re.fullmatch(r"-?\d+\.\d+", t)}
    logged = sweep.report.frame["val_implausibility"].astype(float)
    assert logged.notna().all(), sweep.report.frame
    for v in logged:
        assert any(abs(v - s) <= 5e-3 * max(1.0, abs(v)) for s in shown), (v, sorted(shown))


def test_the_registry_lists_the_sweeps_best_model(sweep, server, tmp_path):
    text = _render(f"{server}/#/models", "models", tmp_path)
    row = text[text.index("ui-grid") :][:8]  # name, latest version, aliased versions, ...
    assert "@ best" in [t.replace("\xa0", " ") for t in row], row
    model = _get(f"{server}/api/2.0/mlflow/registered-models/get?name=ui-grid")
    aliases = {a["alias"]: a["version"] for a in model["registered_model"].get("aliases", [])}
    best = sweep.report.frame.iloc[0]["trial_id"]  # results.csv: by val_implausibility
    version = _get(
        f"{server}/api/2.0/mlflow/model-versions/get?name=ui-grid&version={aliases['best']}"
    )["model_version"]
    tags = {t["key"]: t["value"] for t in version.get("tags", [])}
    assert tags["ct.trial_id"] == best, (tags, best)
