"""Every Python file of the repository outside the packages (cluster/, scripts/, bench/, tests/)
uses Ray, MLflow, Optuna and torch through their public modules only, and stays under 500 lines.
ct_core and ct_sweeps have the same checks in tests/test_core_layers.py and
tests/test_sweeps_layers.py; ct_core's private-module check is here, with the rest."""

from __future__ import annotations

from pathlib import Path

from tests.source_imports import private_uses

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_PACKAGES = ("cluster", "scripts", "bench", "tests")


def _files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def test_the_scan_covers_every_folder_of_python_files():
    scanned = {p.relative_to(ROOT).parts[0] for p in _files(*OUTSIDE_PACKAGES, "ct_core")}
    assert scanned == {*OUTSIDE_PACKAGES, "ct_core"}
    assert ROOT / "cluster" / "ctcluster.py" in _files("cluster")


def test_no_file_imports_a_private_module_of_ray_mlflow_optuna_or_torch():
    found = {
        str(p.relative_to(ROOT)): uses
        for p in _files(*OUTSIDE_PACKAGES, "ct_core")
        if (uses := private_uses(p))
    }
    assert not found, found


def test_the_check_does_catch_each_spelling_of_a_private_use(tmp_path):
    source = tmp_path / "uses_privates.py"
    source.write_text(
        "import importlib\n"
        "import ray._private.services as services\n"
        "from ray.autoscaler._private.util import validate_config\n"
        "from mlflow.utils import _internal\n"
        "def f():\n"
        "    import torch\n"
        "    importlib.import_module('optuna._imports')\n"
        "    return torch._C, ray.__version__, torch.nn.Module\n"
    )
    assert private_uses(source) == [
        "mlflow.utils._internal",
        "optuna._imports",
        "ray._private.services",
        "ray.autoscaler._private.util",
        "ray.autoscaler._private.util.validate_config",
        "torch._C",
    ]


def test_no_module_outside_the_packages_is_over_500_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _files(*OUTSIDE_PACKAGES)
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long
