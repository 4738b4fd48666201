"""ct_core is the method only: it imports no Ray, MLflow, Optuna or ct_sweeps (anywhere, also
inside functions: plug-ins such as MLflow model sources reach it through entry points), and each
of its modules stays under 500 lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.source_imports import imports

PKG = Path(__file__).resolve().parents[1] / "ct_core"
FORBIDDEN = ("ray", "mlflow", "optuna", "ct_sweeps")
MODULES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_ct_core_imports_no_ray_mlflow_optuna_or_ct_sweeps(path):
    bad = [m for m in imports(path) if m.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path.relative_to(PKG)} imports {bad}"


def test_no_module_of_ct_core_is_over_500_lines():
    long = {
        str(p.relative_to(PKG)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long


ROOT = PKG.parent
CITATIONS = ("ct-reference", "design.md", "ecosystem-notes", "reference §", "../shared/docs")


def test_nothing_in_the_repository_cites_the_design_notes_outside_it():
    """What the code relies on from the team's design notes lives in docs/ (the repository is
    self-contained); the paper and the authors' public code may be cited by name."""
    here = Path(__file__).resolve()
    files = [ROOT / "README.md"] + [
        p
        for d in ("ct_core", "ct_sweeps", "cluster", "configs", "docs", "scripts", "tests", "bench")
        for p in (ROOT / d).rglob("*")
        if p.suffix in {".py", ".md", ".yaml", ".yml", ".sh", ".toml"} and p.resolve() != here
    ]
    hits = [
        f"{p.relative_to(ROOT)}: {c}"
        for p in files
        if p.is_file()
        for c in CITATIONS
        if c in p.read_text(errors="ignore")
    ]
    assert not hits, hits
