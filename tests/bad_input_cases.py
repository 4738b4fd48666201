"""The table of bad inputs that tests/test_bad_input.py runs (see its docstring).

A case is files written into a fresh directory ``{d}``, an argv and the words its single error
line must contain. Placeholders: ``{d}`` the case's directory, ``{model}`` a small trained model
directory (``ct train`` output) made once for the table. A file whose text starts with ``@copy:``
is a copy of another file (``@copy:PATH`` or ``@copy:PATH:N``, its first N bytes).
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MOONS = str(ROOT / "configs" / "base" / "moons.yaml")
BIN = Path(sys.executable).parent
DISTS = "grid, choice, uniform, loguniform, quniform, randint"

VALID: dict[str, Any] = {
    "name": "bad-input",
    "base": MOONS,
    "overrides": {"data.n_train": 200, "train.epochs": 2, "train.nce": 50},
    "search": {"algorithm": "grid", "metric": "val_acc", "mode": "max"},
    "space": {"seed": [1, 2]},
}
DELETE = object()


def closed_port() -> int:
    """A loopback port nobody listens on (bound and released; nothing answers there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(**changes: Any) -> str:
    """The valid sweep with top-level or ``section__key`` changes (``DELETE`` removes a key)."""
    doc = json.loads(json.dumps(VALID))
    for key, value in changes.items():
        cur, parts = doc, key.split("__")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        if value is DELETE:
            cur.pop(parts[-1], None)
        else:
            cur[parts[-1]] = value
    return yaml.safe_dump(doc, sort_keys=False)


def with_override(key: str, value: Any, **changes: Any) -> str:
    return sweep(overrides={**VALID["overrides"], key: value}, **changes)


def with_space(space: Any, **changes: Any) -> str:
    return sweep(space=space, **changes)


@dataclass
class Case:
    """One malformed input: files written into a fresh dir ``{d}``, the argv, and the words the
    single error line must contain (the field path and the allowed values)."""

    id: str
    files: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=lambda: ["run", "{d}/s.yaml"])
    expect: tuple[str, ...] = ()
    cli: str = "ct-sweep"  # or "ct"
    binary: bool = False  # files hold hex-encoded bytes


def S(id: str, text: str, *expect: str, argv: list[str] | None = None) -> Case:  # noqa: N802
    return Case(id, {"s.yaml": text}, argv or ["run", "{d}/s.yaml"], expect)


PORT = closed_port()


# ----------------------------------------------------------------------------------------------
# More cases, one class of the hardening issue at a time. Helpers keep each to a line or two.


def O(id: str, key: str, value: Any, *expect: str) -> Case:  # noqa: E743, N802
    """A sweep whose ``overrides`` set ``key`` to ``value`` (and whose space leaves it alone)."""
    return S(id, with_override(key, value, space={"train.lambda_adv": [0.1, 0.2]}), *expect)


def DRY(id: str, text: str, *expect: str, files: dict[str, str] | None = None) -> Case:  # noqa: N802
    """``ct-sweep run --dry-run``: the same checks as a real run, nothing started."""
    return Case(id, {"s.yaml": text, **(files or {})}, ["run", "{d}/s.yaml", "--dry-run"], expect)


def T(id: str, *argv: str, expect: tuple[str, ...] = (), files: dict | None = None) -> Case:  # noqa: N802
    """``ct train ARGV`` (``--out {d}/o`` added unless the argv names an ``--out``)."""
    tail = list(argv) if "--out" in argv else [*argv, "--out", "{d}/o"]
    return Case(id, dict(files or {}), ["train", *tail], expect, "ct")


def TS(id: str, setting: str, *expect: str) -> Case:  # noqa: N802
    """``ct train`` of the moons base with one ``--set``."""
    return T(id, MOONS, "--set", setting, expect=expect)


def E(id: str, *argv: str, expect: tuple[str, ...] = (), files: dict | None = None) -> Case:  # noqa: N802
    """``ct evaluate ARGV``."""
    return Case(id, dict(files or {}), ["evaluate", *argv], expect, "ct")


def C(id: str, *argv: str, expect: tuple[str, ...] = (), files: dict | None = None) -> Case:  # noqa: N802
    """``ct compare ARGV``."""
    return Case(id, dict(files or {}), ["compare", *argv], expect, "ct")


def R(id: str, *argv: str, expect: tuple[str, ...] = (), files: dict | None = None) -> Case:  # noqa: N802
    """``ct-sweep resume|report|sync-mlflow ARGV``."""
    return Case(id, dict(files or {}), list(argv), expect)
