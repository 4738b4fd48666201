"""What a Python file imports, read from its source, and where it reaches into the private parts
of a dependency. Every import statement counts, also those inside functions, and so does
``importlib.import_module("...")`` with a literal name, so that a violation fails before anything
runs."""

from __future__ import annotations

import ast
from pathlib import Path

# The dependencies whose private modules and attributes the code must not use.
DEPENDENCIES = ("ray", "mlflow", "optuna", "torch", "sqlalchemy", "pydantic")


def imports(path: Path, top_level_only: bool = False) -> list[str]:
    """The modules a file imports (``from a import b`` as ``a`` and ``a.b``, since ``b`` may be a
    module), in source order; ``top_level_only`` skips imports inside functions and classes."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and _called_name(node.func) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                found.append(str(node.args[0].value))
    return found


def is_private(part: str) -> bool:
    """A private name: a leading underscore (dunders such as ``__version__`` are public) or a
    package named ``internal``."""
    dunder = part.startswith("__") and part.endswith("__")
    return (part.startswith("_") and not dunder) or part == "internal"


def private_uses(path: Path) -> list[str]:
    """Private modules of a dependency that ``path`` imports, and attribute chains rooted at a
    dependency's name that pass through a private part (``ray._private.services``)."""
    found = [m for m in imports(path) if _private_dotted(m)]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted and _private_dotted(dotted):
                found.append(dotted)
    return sorted(set(found))


def _private_dotted(name: str) -> bool:
    root, *parts = name.split(".")
    return root in DEPENDENCIES and any(is_private(p) for p in parts)


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for an attribute chain on a plain name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None
