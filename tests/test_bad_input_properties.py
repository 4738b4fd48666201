"""Property: any malformed value of any field of the training-config schema, given to ``ct train``
(``--set`` or a config file) or to ``ct-sweep run`` (``--set`` or the sweep's ``overrides``),
ends with exit code 2 and one ``error:`` line naming the field, no traceback, and no compute: the
output folder (``--out``, ``--storage``) is never made, and ct makes it before any training or
Ray start.

The bad values come from the schema itself (:mod:`ct_core.schema`): for every field, values of a
wrong type, numbers outside its interval, booleans where a number goes, words outside its fixed
set, unknown keys. The default suite tries a bounded number of examples; ``-m slow`` many more.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from ct_core.cli import main as ct_main
from ct_core.data.registry import DATASET_NAMES
from ct_core.schema import Config
from ct_sweeps.cli import main as sweep_main

ROOT = Path(__file__).resolve().parents[1]
MOONS = str(ROOT / "configs" / "base" / "moons.yaml")
FEW, MANY = 40, 400

WORD = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
MAPPING = st.dictionaries(WORD, st.integers(), min_size=1, max_size=2)
NOT_NUMBER = st.one_of(WORD.filter(lambda w: _is_text(w)), MAPPING, st.booleans())


def _is_text(w: str) -> bool:
    """Whether YAML keeps ``w`` a string that pydantic cannot read as a number."""
    try:
        float(w)
        return False
    except ValueError:
        return w.lower() not in ("inf", "-inf", "nan", ".inf", "-.inf", ".nan")


def _leaves(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, f in model.model_fields.items():
        a = f.annotation
        if isinstance(a, type) and issubclass(a, BaseModel):
            out += _leaves(a, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", typing.Annotated[a, *f.metadata] if f.metadata else a))
    return out


LEAVES = _leaves(Config)


def _bounds(annotation: Any) -> tuple[type, Any] | None:
    """``(int or float, (lo, hi, lo_open, hi_open))`` of a constrained number, else ``None``."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return None
    base, *meta = typing.get_args(annotation)
    for m in meta:
        b = getattr(getattr(m, "func", None), "bounds", None)
        if b is not None:
            return base, b
    return None


def _out_of_range(kind: type, bounds: Any) -> st.SearchStrategy:
    lo, hi, lo_open, hi_open = bounds
    gap = st.integers(1, 10**6) if kind is int else st.floats(1e-3, 1e6)
    options = (
        [st.just(float("nan")), st.just(math.inf), st.just(-math.inf)] if kind is float else []
    )
    if lo is not None:
        options.append(gap.map(lambda g: lo - g))
        if lo_open:
            options.append(st.just(lo))
    if hi is not None:
        options.append(gap.map(lambda g: hi + g))
        if hi_open:
            options.append(st.just(hi))
    if kind is int:
        options.append(st.floats(0.1, 0.9).map(lambda f: (lo or 0) + 1 + f))  # not whole
    return st.one_of(*options)


def bad_values(key: str, annotation: Any) -> st.SearchStrategy:
    """Values no field ``key`` of type ``annotation`` accepts (with the moons base around it)."""
    options: list[st.SearchStrategy] = [MAPPING]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else annotation
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    number = _bounds(annotation)
    if number is not None:
        options += [_out_of_range(*number), NOT_NUMBER, st.lists(st.integers(), min_size=1)]
    elif origin is typing.Literal:
        options.append(WORD.filter(lambda w: w not in args))
    elif annotation is bool:
        options += [st.integers(2, 10**6), WORD.filter(lambda w: _is_text(w) and len(w) > 5)]
    elif origin is list:
        (item,) = args
        options.append(st.lists(MAPPING, min_size=1, max_size=2))
        if _bounds(item) is not None:
            options.append(st.lists(_out_of_range(*_bounds(item)), min_size=1, max_size=3))
        if key in ("data.categorical",):
            options.append(st.lists(WORD, min_size=1, max_size=2))  # only for csv data
    elif key == "data.name":
        options.append(WORD.filter(lambda w: w not in DATASET_NAMES))
    elif key == "generator.type":
        options.append(WORD.map(lambda w: f"no_such_{w}"))
    elif key == "model.factory":
        options.append(WORD.filter(lambda w: ":" not in w))
    elif key in ("data.path", "data.target"):
        options.append(WORD)  # only for csv data
    elif key == "data.domain":
        options += [WORD.filter(lambda w: w not in ("inferred", "none")), st.just([1.0, 0.0])]
    return st.one_of(*options)


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, Any]:
    """One field and a value it does not accept; or an unknown key in a section."""
    if draw(st.integers(0, 9)) == 0:
        section = draw(st.sampled_from(["data", "model", "train", "generator", "evaluation"]))
        known = set(Config.model_fields[section].annotation.model_fields)
        name = draw(
            st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True).filter(lambda n: n not in known)
        )
        return f"{section}.{name}", draw(st.integers())
    key, annotation = draw(st.sampled_from(LEAVES))
    return key, draw(bad_values(key, annotation))


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return text[: -len("\n...\n")] if text.endswith("\n...\n") else text.strip()


def _nested(key: str, value: Any) -> dict[str, Any]:
    head, _, rest = key.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _call(main: Any, argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return rc, err.getvalue()


def _assert_rejected(rc: int, err: str, key: str, out: Path) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (key, rc, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), (key, err)
    assert key.split(".")[-1] in lines[0] or key.split(".")[0] in lines[0], (key, lines[0])
    assert not out.exists(), f"{out} was made: compute could have started"


def _ct_train_set(case: tuple[str, Any]) -> None:
    key, value = case
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out"
        rc, err = _call(
            ct_main, ["train", MOONS, "--set", f"{key}={_flow(value)}", "--out", str(out)]
        )
        _assert_rejected(rc, err, key, out)


def _ct_train_file(case: tuple[str, Any]) -> None:
    key, value = case
    with tempfile.TemporaryDirectory() as d:
        cfg, out = Path(d) / "c.yaml", Path(d) / "out"
        cfg.write_text(yaml.safe_dump({"base": MOONS, **_nested(key, value)}))
        rc, err = _call(ct_main, ["train", str(cfg), "--out", str(out)])
        _assert_rejected(rc, err, key, out)


def _sweep(case: tuple[str, Any], via_set: bool) -> None:
    key, value = case
    with tempfile.TemporaryDirectory() as d:
        s, out = Path(d) / "s.yaml", Path(d) / "run"
        doc = {
            "name": "prop",
            "base": MOONS,
            "overrides": {} if via_set else {key: value},
            # a swept key would hide its override: sweep another one
            "space": {
                "train.lambda_div" if key == "train.lambda_adv" else "train.lambda_adv": [0.1, 0.2]
            },
        }
        s.write_text(yaml.safe_dump(doc))
        argv = ["run", str(s), "--storage", str(out)]
        argv += ["--set", f"{key}={_flow(value)}"] if via_set else []
        os.environ.pop("RAY_ADDRESS", None)
        rc, err = _call(sweep_main, argv)
        _assert_rejected(rc, err, key, out)


CHECKS = {
    "ct-train-set": _ct_train_set,
    "ct-train-file": _ct_train_file,
    "ct-sweep-set": lambda c: _sweep(c, via_set=True),
    "ct-sweep-overrides": lambda c: _sweep(c, via_set=False),
}


def _property(n: int) -> Any:
    @settings(
        max_examples=n,
        deadline=None,
        derandomize=n == FEW,  # the default suite tries the same examples every run
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=malformed())
    def check(how: str, case: tuple[str, Any]) -> None:
        CHECKS[how](case)

    return check


@pytest.mark.parametrize("how", list(CHECKS))
def test_every_malformed_field_is_one_error_line_and_no_compute(how):
    _property(FEW)(how)


@pytest.mark.slow
@pytest.mark.parametrize("how", list(CHECKS))
def test_every_malformed_field_is_one_error_line_and_no_compute_many_examples(how):
    _property(MANY)(how)


def test_the_generator_covers_every_field_of_the_schema():
    assert {k for k, _ in LEAVES} == set(Config().flat())
