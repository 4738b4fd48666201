"""ct_sweeps is three parts with imports in one direction, plan -> run -> record, on the public
APIs of its dependencies only. Read from the source (every import statement, also those inside
functions), so that a violation fails here before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.source_imports import imports, private_uses

PKG = Path(__file__).resolve().parents[1] / "ct_sweeps"
PARTS = ("plan", "run", "record")
ALLOWED = {"plan": {"plan"}, "run": {"plan", "run"}, "record": {"plan", "run", "record"}}
FORBIDDEN_IN_PLAN = ("ray", "mlflow", "optuna", "torch")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _part(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[1] in PARTS else None


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _part(m)))
def test_each_part_imports_only_itself_and_the_parts_before_it(module):
    part = _part(module)
    ours = [m for m in imports(MODULES[module]) if m.startswith("ct_sweeps")]
    wrong = [m for m in ours if m in MODULES and (_part(m) or "top") not in ALLOWED[part]]
    assert not wrong, f"{module} ({part}) imports {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _part(m) == "plan"))
def test_the_plan_imports_no_ray_mlflow_optuna_or_torch(module):
    deps = [m for m in imports(MODULES[module]) if m.split(".")[0] in FORBIDDEN_IN_PLAN]
    assert not deps, f"{module} imports {deps}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_private_module_of_a_dependency(module):
    private = private_uses(MODULES[module])
    assert not private, f"{module} uses {private}"


def test_the_module_level_imports_of_ct_sweeps_have_no_cycle():
    graph = {
        m: {i for i in imports(p, top_level_only=True) if i in MODULES and i != m}
        for m, p in MODULES.items()
    }
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, f"import cycle: {' -> '.join([*path, m])}"
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


def test_no_module_of_ct_sweeps_is_over_500_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_planning_and_checking_a_sweep_on_built_in_data_imports_no_torch():
    """Planning and the input checks run before Ray starts: torch (about a second of CPU) is
    imported later, where the tracking first needs it, not on the way to the first trial."""
    import subprocess
    import sys

    code = (
        "import sys; from ct_sweeps.plan import check_inputs, plan; "
        "check_inputs(plan('configs/paper/gen_params_over.yaml')); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PKG.parent, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
