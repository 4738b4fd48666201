"""The table of bad inputs that tests/test_bad_input.py runs (see its docstring).

A case is files written into a fresh directory ``{d}``, an argv and the words its single error
line must contain. Placeholders: ``{d}`` the case's directory, ``{model}`` a small trained model
directory (``ct train`` output) made once for the table. A file whose text starts with ``@copy:``
is a copy of another file (``@copy:PATH`` or ``@copy:PATH:N``, its first N bytes).
"""

from __future__ import annotations

import io
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
_DELETE = object()


def closed_port() -> int:
    """A loopback port nobody listens on (bound and released; nothing answers there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(**changes: Any) -> str:
    """The valid sweep with top-level or ``section__key`` changes (``_DELETE`` removes a key)."""
    doc = json.loads(json.dumps(VALID))
    for key, value in changes.items():
        cur, parts = doc, key.split("__")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        if value is _DELETE:
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
    bug: str = ""  # a known bug elsewhere: the case is xfail(strict=True) until it is fixed


def S(id: str, text: str, *expect: str, argv: list[str] | None = None) -> Case:  # noqa: N802
    return Case(id, {"s.yaml": text}, argv or ["run", "{d}/s.yaml"], expect)


BUG_KEYS = "ct_sweeps/schema.py `_format`: an unknown sweep key says 'serach: unknown key' without the allowed keys (ct_core.config lists them); fix: append '; allowed keys: ...' from the model's fields as ct_core.config._allowed_keys does"
BUG_UTF8 = "ct_core/config.py `read_yaml` catches OSError only: a file that is not UTF-8 raises UnicodeDecodeError with a traceback; fix: `except (OSError, UnicodeDecodeError) as e: raise ConfigError(f'cannot read {what} file {p}: not UTF-8 text ({e.reason})')`"
PORT = closed_port()
CASE_TIMEOUT_S = 20

CASES: list[Case] = [
    # --- the sweep's own keys
    S("algorithm-unknown", sweep(search__algorithm="bayes"), "search.algorithm", "optuna-tpe"),
    S("metric-unknown", sweep(search__metric="accuracy"), "search.metric", "val_acc"),
    S("mode-unknown", sweep(search__mode="up"), "search.mode", "min, max"),
    S("num-samples-zero", sweep(search__num_samples=0), "search.num_samples", "1"),
    S("num-samples-type", sweep(search__num_samples="many"), "search.num_samples", "integer"),
    S("scheduler-unknown", sweep(search__scheduler="hyperband"), "search.scheduler", "asha"),
    S("max-concurrent-zero", sweep(search__max_concurrent=0), "search.max_concurrent", "1"),
    S(
        "modes-per-metric",
        sweep(search__metric=["val_acc", "val_cost"], search__mode=["max", "min", "max"]),
        "search.mode",
        "one mode per metric",
    ),
    S(
        "asha-multi-objective",
        sweep(search__metric=["val_acc", "val_cost"], search__scheduler="asha"),
        "search.scheduler",
        "single search.metric",
    ),
    S("search-not-mapping", sweep(search="grid"), "search", "dictionary"),
    S("cpu-zero", sweep(resources__cpu=0), "resources.cpu", "greater than 0"),
    S("gpu-negative", sweep(resources__gpu=-1), "resources.gpu", "greater than or equal to 0"),
    S("checkpoint-every-negative", sweep(checkpoint_every=-1), "checkpoint_every", "0"),
    S("max-failures-type", sweep(max_failures="twice"), "max_failures", "integer"),
    S("tracking-enabled-type", sweep(tracking__enabled="perhaps"), "tracking.enabled", "bool"),
    S(
        "sqlite-wal-value",
        sweep(tracking__sqlite_wal="maybe"),
        "tracking.sqlite_wal",
        "true, false or auto",
    ),
    Case(
        "unknown-top-key",
        {"s.yaml": sweep(serach={"algorithm": "grid"})},
        expect=("serach", "allowed keys"),
    ),
    Case(
        "unknown-search-key",
        {"s.yaml": sweep(search__algo="grid")},
        expect=("search.algo", "allowed keys"),
    ),
    S("name-invalid", sweep(name="my sweep!"), "name", "letters, digits"),
    S("name-missing", sweep(name=_DELETE), "name", "required"),
    S("base-missing-key", sweep(base=_DELETE), "base", "required"),
    S("base-file-missing", sweep(base="nowhere/base.yaml"), "base", "not found"),
    S("eval-every-needed", sweep(search__metric="val_implausibility"), "train.eval_every", "> 0"),
    # --- the training config, through overrides (out of range, wrong types, unknown names)
    S("tau-above-1", with_override("generator.tau", 1.5), "generator.tau", "(0, 1)"),
    S("tau-zero", with_override("generator.tau", 0.0), "generator.tau", "(0, 1)"),
    S("T-zero", with_override("generator.T", 0), "generator.T", "[1, inf)"),
    S("T-type", with_override("generator.T", "ten"), "generator.T", "integer"),
    S("lambda-reg-negative", with_override("train.lambda_reg", -1), "train.lambda_reg", "0"),
    S(
        "lambda-div-nan",
        with_override("train.lambda_div", float("nan")),
        "train.lambda_div",
        "finite",
    ),
    S("cuda-without-gpu", with_override("train.device", "cuda"), "train.device", "resources.gpu"),
    S("epsilon-zero", with_override("train.epsilon", 0), "train.epsilon", "(0, inf)"),
    S("epsilon-type", with_override("train.epsilon", [0.1]), "train.epsilon", "number"),
    S("lr-type", with_override("train.lr", "fast"), "train.lr", "number"),
    S("epochs-zero", with_override("train.epochs", 0), "train.epochs", "[1, inf)"),
    S(
        "objective-unknown",
        with_override("train.objective", "contrastive"),
        "train.objective",
        "vanilla",
    ),
    S("dataset-unknown", with_override("data.name", "mnst"), "data.name", "moons"),
    S("generator-unknown", with_override("generator.type", "wachter"), "generator.type", "revise"),
    S("override-unknown-key", with_override("train.epohcs", 5), "train.epohcs", "allowed keys"),
    S("override-unknown-section", with_override("trian.epochs", 5), "trian", "allowed keys"),
    S("immutable-unknown", with_override("data.immutable", ["age"]), "data.immutable", "x1, x2"),
    S("immutable-index", with_override("data.immutable", [7]), "data.immutable", "0..1"),
    S("csv-without-path", with_override("data.name", "csv"), "data.path", "csv"),
    # --- the search space
    S("grid-empty", with_space({"generator.T": []}), "space.generator.T", "non-empty list"),
    S(
        "grid-value-out-of-range",
        with_space({"generator.tau": [0.5, 1.5]}),
        "generator.tau",
        "(0, 1)",
    ),
    S("grid-type", with_space({"generator.T": ["ten"]}), "generator.T", "integer"),
    S(
        "grid-unknown-generator",
        with_space({"generator.type": ["ecco", "wachter"]}),
        "generator.type",
        "revise",
    ),
    S("grid-unknown-dataset", with_space({"data.name": ["moons", "nope"]}), "data.name", "circles"),
    S("space-unknown-key", with_space({"genrator.tau": [0.5]}), "genrator.tau", "generator.tau"),
    S(
        "uniform-low-gt-high",
        with_space({"generator.tau": {"uniform": [0.9, 0.5]}}),
        "space.generator.tau",
        "low must be < high",
    ),
    S(
        "uniform-bound-out-of-range",
        with_space({"generator.tau": {"uniform": [0.5, 1.5]}}),
        "generator.tau",
        "(0, 1)",
    ),
    S(
        "uniform-one-bound",
        with_space({"generator.tau": {"uniform": [0.5]}}),
        "space.generator.tau",
        "[low, high]",
    ),
    S(
        "loguniform-zero",
        with_space({"train.lr": {"loguniform": [0, 0.1]}}),
        "space.train.lr",
        "> 0",
    ),
    S(
        "loguniform-negative",
        with_space({"train.lr": {"loguniform": [-1, 0.1]}}),
        "space.train.lr",
        "> 0",
    ),
    S(
        "distribution-unknown",
        with_space({"train.lr": {"gaussian": [0, 1]}}),
        "space.train.lr",
        DISTS,
    ),
    S(
        "randint-T-zero",
        with_space({"generator.T": {"randint": [0, 10]}}),
        "generator.T",
        "[1, inf)",
    ),
    S(
        "randint-floats",
        with_space({"generator.T": {"randint": [1.5, 10]}}),
        "space.generator.T",
        "integers",
    ),
    S(
        "quniform-step-zero",
        with_space({"train.lr": {"quniform": [0.1, 0.5, 0]}}),
        "space.train.lr",
        "step must be > 0",
    ),
    S(
        "uniform-inf",
        with_space({"train.lr": {"uniform": [0.1, float("inf")]}}),
        "space.train.lr",
        "finite",
    ),
    S(
        "when-unknown-key",
        with_space(
            {
                "generator.tau": [0.5],
                "generator.lambda_energy": {
                    "loguniform": [0.1, 10],
                    "when": {"generator.typ": "ecco"},
                },
            }
        ),
        "space.generator.lambda_energy",
        "when",
    ),
    S("space-fixed-value", with_space({"generator.tau": 0.5}), "space.generator.tau", DISTS),
    S("space-not-mapping", with_space(["generator.tau"]), "space", "dictionary"),
    S(
        "optuna-empty-space",
        with_space({}, search__algorithm="optuna-tpe"),
        "space",
        "at least one entry",
    ),
    # --- unreadable and missing files
    S("yaml-syntax", "name: x\nsearch: {algorithm: grid\n", "not valid YAML", "line"),
    S("yaml-tabs", "name: x\n\tsearch: grid\n", "not valid YAML", "line"),
    S("yaml-empty", "", "s.yaml", "empty"),
    S("yaml-list", "- name: x\n", "s.yaml", "mapping"),
    S("yaml-scalar", "just a string\n", "s.yaml", "mapping"),
    Case(
        "yaml-binary",
        {"s.yaml": b"\xff\xfe\x00garbage\x81".hex()},
        expect=("s.yaml", "UTF-8"),
        binary=True,
    ),
    Case("sweep-missing", {}, ["run", "{d}/missing.yaml"], ("missing.yaml", "not found")),
    Case("sweep-is-dir", {"sub/x": ""}, ["run", "{d}/sub"], ("sub", "not a file")),
    Case(
        "base-invalid-yaml",
        {"s.yaml": sweep(base="b.yaml"), "b.yaml": "train: [epochs\n"},
        expect=("base", "not valid YAML"),
    ),
    Case(
        "base-not-mapping",
        {"s.yaml": sweep(base="b.yaml"), "b.yaml": "- 1\n"},
        expect=("base", "mapping"),
    ),
    # --- command-line values
    S(
        "set-no-equals",
        sweep(),
        "--set",
        "dotted.path=value",
        argv=["run", "{d}/s.yaml", "--set", "train.epochs"],
    ),
    S(
        "set-bad-value",
        sweep(),
        "train.epochs",
        "integer",
        argv=["run", "{d}/s.yaml", "--set", "train.epochs=abc"],
    ),
    S(
        "set-bad-algorithm",
        sweep(),
        "search.algorithm",
        "grid",
        argv=["run", "{d}/s.yaml", "--set", "search.algorithm=bayes"],
    ),
    S(
        "set-space-bad",
        sweep(),
        "space.generator.tau",
        "(0, 1)",
        argv=["run", "{d}/s.yaml", "--set", "space.generator.tau=[2.0]"],
    ),
    S(
        "address-closed-port",
        sweep(),
        "--address",
        f"127.0.0.1:{PORT}",
        argv=["run", "{d}/s.yaml", "--address", f"127.0.0.1:{PORT}"],
    ),
    S(
        "address-ray-client-closed",
        sweep(),
        "--address",
        "ray://",
        argv=["run", "{d}/s.yaml", "--address", f"ray://127.0.0.1:{PORT}"],
    ),
    S(
        "address-dashboard-closed",
        sweep(),
        "--address",
        "http://",
        argv=["run", "{d}/s.yaml", "--address", f"http://127.0.0.1:{PORT}"],
    ),
    S(
        "address-malformed",
        sweep(),
        "--address",
        "HOST:PORT",
        argv=["run", "{d}/s.yaml", "--address", "not an address"],
    ),
    Case("resume-not-a-run", {"x/y": ""}, ["resume", "{d}/x"], ("x", "not a sweep run directory")),
    Case("report-missing-dir", {}, ["report", "{d}/nope"], ("nope", "not a sweep run directory")),
    Case(
        "sync-missing-dir", {}, ["sync-mlflow", "{d}/nope"], ("nope", "not a sweep run directory")
    ),
    Case(
        "storage-already-used",
        {"s.yaml": sweep(), "run/sweep.yaml": "name: x\n"},
        ["run", "{d}/s.yaml", "--storage", "{d}/run"],
        ("--storage", "ct-sweep resume"),
    ),
    # --- ct train
    Case(
        "train-missing",
        {},
        ["train", "{d}/nope.yaml", "--out", "{d}/o"],
        ("nope.yaml", "not found"),
        "ct",
    ),
    Case(
        "train-tau",
        {},
        ["train", MOONS, "--set", "generator.tau=2", "--out", "{d}/o"],
        ("generator.tau", "(0, 1)"),
        "ct",
    ),
    Case(
        "train-T-negative",
        {},
        ["train", MOONS, "--set", "generator.T=-3", "--out", "{d}/o"],
        ("generator.T", "[1, inf)"),
        "ct",
    ),
    Case(
        "train-unknown-key",
        {"c.yaml": "train: {epochz: 3}\n"},
        ["train", "{d}/c.yaml", "--out", "{d}/o"],
        ("train.epochz", "allowed keys"),
        "ct",
    ),
    Case(
        "train-yaml-syntax",
        {"c.yaml": "train: {epochs: 3\n"},
        ["train", "{d}/c.yaml", "--out", "{d}/o"],
        ("c.yaml", "not valid YAML"),
        "ct",
    ),
    Case(
        "train-dataset-unknown",
        {},
        ["train", MOONS, "--set", "data.name=imagenet", "--out", "{d}/o"],
        ("data.name", "moons"),
        "ct",
    ),
    Case(
        "train-immutable-unknown",
        {},
        [
            "train",
            MOONS,
            "--set",
            "data.immutable=[age]",
            "--set",
            "data.n_train=50",
            "--out",
            "{d}/o",
        ],
        ("data.immutable", "x1, x2"),
        "ct",
    ),
    Case(
        "train-yaml-binary",
        {"c.yaml": b"\x80\x81 train".hex()},
        ["train", "{d}/c.yaml", "--out", "{d}/o"],
        ("c.yaml", "UTF-8"),
        "ct",
        binary=True,
    ),
    Case(
        "train-resume-nothing",
        {},
        ["train", MOONS, "--resume", "--out", "{d}/o"],
        ("--resume", "checkpoint.pt"),
        "ct",
    ),
]


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


def _torch_file(obj: Any) -> str:
    """Hex of ``torch.save(obj)``: a well-formed torch file that is not a ct model."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue().hex()


def csv(rows: int = 40, cells: str = "{i},{j},{y}", header: str = "a,b,y") -> str:
    """A small CSV: ``rows`` rows, ``{i}`` the row, ``{j}`` a second feature, ``{y}`` 0/1."""
    lines = [header] + [cells.format(i=i, j=(i * 7) % 11, y=i % 2) for i in range(rows)]
    return "\n".join(lines) + "\n"


def csv_base(path: str = "t.csv", target: str = "y", **data: Any) -> str:
    """A training config on the CSV ``path`` (relative to the config file)."""
    return yaml.safe_dump({"data": {"name": "csv", "path": path, "target": target, **data}})


RANDOM = bytes((i * 73 + 19) % 256 for i in range(512)).hex()
FOREIGN = _torch_file({"weights": [1.0, 2.0]})
FOREIGN_SD = _torch_file({"state_dict": {}, "config": {"train": {"epochs": 3}}, "meta": {}})
TRUNC_MODEL = "@copy:{model}/model.pt:300"
TRUNC_CKPT = "@copy:{model}/checkpoint.pt:400"
BAD_MODEL_FILES = {
    "empty": ("", False),
    "truncated": (TRUNC_MODEL, False),
    "random": (RANDOM, True),
    "foreign": (FOREIGN, True),
    "foreign-shaped": (FOREIGN_SD, True),
    "text": ("this is not a model\n", False),
}
LONG = "n" * 300
CSV_BAD = {
    "csv-missing-file": ({}, "data.path", "not found"),
    "csv-one-class": ({"t.csv": csv(cells="{i},{j},1")}, "data.target", "at least 2 classes"),
    "csv-no-target": ({"t.csv": csv(header="a,b,label")}, "data.target", "columns: a, b, label"),
    "csv-inf": ({"t.csv": csv(cells="{i},inf,{y}")}, "column 'b'", "infinite"),
    "csv-1e308": ({"t.csv": csv(cells="{i},1e308,{y}")}, "column 'b'", "huge"),
    "csv-nan": ({"t.csv": csv(cells="{i},,{y}")}, "column 'b'", "missing"),
    "csv-float-target": (
        {"t.csv": csv(rows=200, cells="{i},{j},{i}.5")},
        "data.target",
        "regression target",
    ),
    "csv-binary": ({"t.csv": "@copy:{model}/model.pt"}, "data.path", "cannot read"),
    "csv-empty": ({"t.csv": ""}, "data.path", "cannot read"),
    "csv-too-few-rows": ({"t.csv": csv(rows=3)}, "data.n_train", "at most 3"),
}


def _csv_cases() -> list[Case]:
    """Each CSV problem through ``ct train``, ``ct-sweep run --dry-run`` and ``ct-sweep run``:
    the sweep makes the checks ``ct train`` makes, before Ray starts."""
    out = []
    for name, (files, *expect) in CSV_BAD.items():
        sized = name == "csv-too-few-rows"
        base = csv_base(n_train=2, n_test=1) if sized else csv_base()
        out.append(
            T(f"train-{name}", "{d}/b.yaml", expect=tuple(expect), files={**files, "b.yaml": base})
        )
        sw = sweep(base="b.yaml", overrides={})
        out.append(DRY(f"dry-{name}", sw, *expect, files={**files, "b.yaml": base}))
        out.append(
            Case(f"run-{name}", {**files, "b.yaml": base, "s.yaml": sw}, expect=tuple(expect))
        )
    return out


def _model_file_cases() -> list[Case]:
    """Broken ``model.pt`` / ``checkpoint.pt`` files wherever ct reads one."""
    out = []
    for name, (text, binary) in BAD_MODEL_FILES.items():
        out.append(
            Case(
                f"evaluate-model-{name}",
                {"m/model.pt": text},
                ["evaluate", "{d}/m", "--out", "{d}/o"],
                ("model.pt", "not a readable ct model file"),
                "ct",
                binary,
            )
        )
        out.append(
            Case(
                f"compare-model-{name}",
                {"m/model.pt": text},
                ["compare", "{model}", "{d}/m", "--out", "{d}/o"],
                ("model.pt", "not a readable ct model file"),
                "ct",
                binary,
            )
        )
        out.append(
            Case(
                f"resume-checkpoint-{name}",
                {"o/checkpoint.pt": TRUNC_CKPT if name == "truncated" else text},
                ["train", MOONS, "--resume", "--out", "{d}/o"],
                ("checkpoint.pt", "not a readable ct checkpoint"),
                "ct",
                binary,
            )
        )
        out.append(
            Case(
                f"init-model-{name}",
                {"m/model.pt": text},
                ["train", MOONS, "--init", "{d}/m/model.pt", "--out", "{d}/o"],
                ("init", "weights do not fit" if name == "foreign-shaped" else "model file"),
                "ct",
                binary,
            )
        )
    return out


DUP = "name: a\nname: b\nbase: " + MOONS + "\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefghijklm", "bcdefghijklmn")
)
RESULTS = {"o/model.pt": "old", "o/config.yaml": "seed: 1\n"}
RUN_JSON = {"experiment": "tune", "n_trials": 2}
SWEEP_YAML = yaml.safe_dump({**VALID, "base": {"data": {"name": "moons"}}})

MORE: list[Case] = [
    # --- seeds out of range, everywhere a seed is read
    *(
        O(f"seed-{k}-{v}", k, v, k, "[0, 4294967295]")
        for k, v in (
            ("seed", 99999999999999999999999),
            ("seed", -1),
            ("data.seed", -1),
            ("data.split_seed", -5),
            ("evaluation.seed", 2**32),
            ("data.seed", 2**40),
        )
    ),
    *(
        TS(f"train-{k}-{v}", f"{k}={v}", k, "[0, 4294967295]")
        for k, v in (
            ("seed", 99999999999999999999999),
            ("data.seed", -1),
            ("data.split_seed", -5),
            ("evaluation.seed", -3),
        )
    ),
    S("space-seed-negative", with_space({"seed": [1, -2]}), "space.seed", "[0, 4294967295]"),
    S("search-seed-negative", sweep(search__seed=-1), "search.seed", "greater than or equal to 0"),
    S("search-seed-huge", sweep(search__seed=2**40), "search.seed", "less than or equal to"),
    # --- booleans are not numbers
    *(
        O(f"bool-{k}", k, True, k, "not a boolean")
        for k in (
            "train.epochs",
            "train.lr",
            "generator.T",
            "generator.tau",
            "data.n_train",
            "train.lambda_div",
            "evaluation.n_runs",
            "seed",
        )
    ),
    TS("train-epochs-true", "train.epochs=true", "train.epochs", "not a boolean"),
    TS("train-nce-yes", "train.nce=yes", "train.nce", "not a boolean"),
    S("space-epochs-bool", with_space({"train.epochs": [True, 3]}), "train.epochs", "boolean"),
    # --- sizes bounded by the data
    O("n-val-huge", "data.n_val", 100000000, "data.n_train/n_val/n_test", "at most 100000"),
    O("n-train-huge", "data.n_train", 200000, "data.n_train/n_val/n_test", "at most 100000"),
    O("n-test-huge", "data.n_test", 100001, "data.n_train/n_val/n_test", "at most 100000"),
    TS("train-n-val-huge", "data.n_val=100000000", "data.n_train/n_val/n_test", "100000"),
    S("space-n-train-huge", with_space({"data.n_train": [100, 500000]}), "data.n_train", "100000"),
    # --- other fields of the training config
    S(
        "immutable-and-increase",
        sweep(overrides={"data.immutable": ["x1"], "data.increase_only": [0]}),
        "data.immutable",
        "also in data.increase_only",
    ),
    TS(
        "train-immutable-and-decrease",
        "data={name: moons, immutable: [x2], decrease_only: [1]}",
        "data.immutable",
        "data.decrease_only",
    ),
    O("domain-reversed", "data.domain", [1.0, 0.0], "data.domain", "lower < upper"),
    O("domain-nsd-zero", "data.domain_nsd", 0, "data.domain_nsd", "(0, inf)"),
    O("domain-word", "data.domain", "everything", "data.domain", "inferred"),
    O("rng-unknown", "data.rng", "python", "data.rng", "julia"),
    O("hidden-zero", "model.hidden", [0], "model.hidden", "[1, inf)"),
    O("hidden-text", "model.hidden", "wide", "model.hidden", "list"),
    O("activation-unknown", "model.activation", "softmax", "model.activation", "relu"),
    O("model-type-unknown", "model.type", "transformer", "model.type", "mlp"),
    O("lenet-on-moons", "model.type", "lenet", "model.type", "mnist"),
    O(
        "factory-malformed",
        "model.factory",
        "not a path",
        "model.factory",
        "package.module:function",
    ),
    O("optimizer-unknown", "train.optimizer", "rmsprop", "train.optimizer", "adam"),
    O("burnin-one", "train.burnin", 1.0, "train.burnin", "[0, 1)"),
    O("epsilon-norm-unknown", "train.epsilon_norm", "3", "train.epsilon_norm", "inf"),
    O("mature-unknown", "train.mature", "ripe", "train.mature", "converged"),
    O("threads-negative", "train.threads", -1, "train.threads", "[0, inf)"),
    O("device-unknown", "train.device", "tpu", "train.device", "cpu"),
    O("batch-size-zero", "train.batch_size", 0, "train.batch_size", "[1, inf)"),
    O(
        "lambda-energy-negative",
        "generator.lambda_energy",
        -1,
        "generator.lambda_energy",
        "[0, inf)",
    ),
    O("generator-lr-zero", "generator.lr", 0, "generator.lr", "(0, inf)"),
    O("eval-tau-one", "evaluation.tau", 1.0, "evaluation.tau", "(0, 1)"),
    O("eval-split-unknown", "evaluation.split", "all", "evaluation.split", "test"),
    O(
        "eval-lambdas-negative",
        "evaluation.lambda_energies",
        [-1.0],
        "evaluation.lambda_energies",
        "[0, inf)",
    ),
    O("standardize-text", "data.standardize", "maybe", "data.standardize", "bool"),
    O("shuffle-text", "train.shuffle", "sometimes", "train.shuffle", "bool"),
    S("section-is-value", sweep(overrides={"train": 5}), "overrides: train", "dictionary"),
    O("path-without-csv", "data.path", "x.csv", "data.path", "csv"),
    S("overrides-label", with_override("generator.tau", 3.0), "overrides: generator.tau", "(0, 1)"),
    S("overrides-not-mapping", sweep(overrides=["train.epochs=3"]), "overrides", "dictionary"),
    # --- the sweep's own fields
    S("name-300-chars", sweep(name=LONG), "name", "at most 100 characters"),
    S("name-slash", sweep(name="a/b"), "name", "letters, digits"),
    S("name-empty", sweep(name=""), "name", "letters, digits"),
    S(
        "tracking-uri-bogus",
        sweep(tracking__uri="bogus-scheme://x y"),
        "tracking.uri",
        "without spaces",
    ),
    S("tracking-uri-scheme", sweep(tracking__uri="gopher://host/x"), "tracking.uri", "sqlite"),
    S("tracking-uri-no-host", sweep(tracking__uri="http://"), "tracking.uri", "host"),
    S("log-model-text", sweep(tracking__log_model="some"), "tracking.log_model", "auto"),
    S(
        "log-every-zero",
        sweep(tracking__log_every=0),
        "tracking.log_every",
        "greater than or equal to 1",
    ),
    S("pack-text", sweep(search__pack="lots"), "search.pack", "auto"),
    S("pack-negative", sweep(search__pack=-1), "search.pack", "auto"),
    S(
        "asha-grace-zero",
        sweep(search__scheduler="asha", search__asha={"grace_period": 0}),
        "search.asha.grace_period",
        "1",
    ),
    S(
        "asha-factor-one",
        sweep(search__scheduler="asha", search__asha={"reduction_factor": 1}),
        "search.asha.reduction_factor",
        "1",
    ),
    S("startup-zero", sweep(search__n_startup_trials=0), "search.n_startup_trials", "1"),
    S("max-failures-below", sweep(max_failures=-2), "max_failures", "-1"),
    S("init-missing", sweep(init="nowhere/model.pt"), "init", "no such model file"),
    S(
        "space-choice-empty",
        with_space({"generator.T": {"choice": []}}),
        "space.generator.T",
        "non-empty",
    ),
    S(
        "randint-reversed",
        with_space({"generator.T": {"randint": [10, 2]}}),
        "space.generator.T",
        "low",
    ),
    # --- YAML read strictly
    S("yaml-duplicate-key", DUP, "duplicate key 'name'", "line 2"),
    S(
        "yaml-duplicate-nested",
        "name: x\nbase: b\nsearch:\n  mode: max\n  mode: min\n",
        "duplicate key 'mode'",
    ),
    S("yaml-alias-bomb", BOMB, "more than 100 aliases"),
    Case(
        "base-duplicate-key",
        {"s.yaml": sweep(base="b.yaml"), "b.yaml": "train:\n  epochs: 2\n  epochs: 3\n"},
        expect=("base", "duplicate key 'epochs'"),
    ),
    T(
        "train-duplicate-key",
        "{d}/c.yaml",
        expect=("c.yaml", "duplicate key 'train'"),
        files={"c.yaml": "train: {epochs: 2}\ntrain: {epochs: 3}\n"},
    ),
    T("train-alias-bomb", "{d}/c.yaml", expect=("c.yaml", "aliases"), files={"c.yaml": BOMB}),
    S(
        "set-duplicate-key",
        sweep(),
        "--set",
        "duplicate key",
        argv=["run", "{d}/s.yaml", "--set", "space.generator.T={a: 1, a: 2}"],
    ),
    # --- cyclic bases
    Case(
        "base-cycle",
        {"s.yaml": sweep(base="a.yaml"), "a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"},
        expect=("base", "extends itself"),
    ),
    Case(
        "base-self",
        {"s.yaml": sweep(base="a.yaml"), "a.yaml": "base: a.yaml\n"},
        expect=("base", "extends itself"),
    ),
    Case("base-is-sweep", {"s.yaml": sweep(base="s.yaml")}, expect=("base", "s.yaml")),
    T(
        "train-base-cycle",
        "{d}/a.yaml",
        expect=("base", "extends itself"),
        files={"a.yaml": "base: b.yaml\n", "b.yaml": "base: c.yaml\n", "c.yaml": "base: a.yaml\n"},
    ),
    T(
        "train-base-self",
        "{d}/a.yaml",
        expect=("base", "extends itself"),
        files={"a.yaml": "base: ./a.yaml\n"},
    ),
    T(
        "train-base-not-text",
        "{d}/a.yaml",
        expect=("base", "path"),
        files={"a.yaml": "base: [1, 2]\n"},
    ),
    # --- where results go
    Case(
        "storage-is-file",
        {"s.yaml": sweep(), "f": "x"},
        ["run", "{d}/s.yaml", "--storage", "{d}/f"],
        ("--storage", "not a directory"),
    ),
    Case(
        "storage-under-proc",
        {"s.yaml": sweep()},
        ["run", "{d}/s.yaml", "--storage", "/proc/ct-run"],
        ("--storage", "not writable"),
    ),
    Case(
        "storage-under-file",
        {"s.yaml": sweep(), "f": "x"},
        ["run", "{d}/s.yaml", "--storage", "{d}/f/run"],
        ("--storage", "not a directory"),
    ),
    Case(
        "storage-long-name",
        {"s.yaml": sweep()},
        ["run", "{d}/s.yaml", "--storage", "{d}/" + LONG],
        ("--storage", "at most 255"),
    ),
    Case(
        "storage-dry-run",
        {"s.yaml": sweep(), "f": "x"},
        ["run", "{d}/s.yaml", "--dry-run", "--storage", "{d}/f"],
        ("--storage", "not a directory"),
    ),
    Case(
        "storage-in-file",
        {"s.yaml": sweep(storage="f"), "f": "x"},
        ["run", "{d}/s.yaml"],
        ("storage", "f"),
    ),
    Case(
        "name-flag-long",
        {"s.yaml": sweep()},
        ["run", "{d}/s.yaml", "--name", LONG],
        ("name", "at most 100"),
    ),
    Case(
        "tracking-flag-bogus",
        {"s.yaml": sweep()},
        ["run", "{d}/s.yaml", "--tracking-uri", "bogus-scheme://x y"],
        ("--tracking-uri", "without spaces"),
    ),
    Case(
        "tracking-flag-scheme",
        {"s.yaml": sweep()},
        ["run", "{d}/s.yaml", "--tracking-uri", "ftp://h/x"],
        ("--tracking-uri", "sqlite"),
    ),
    Case(
        "num-cpus-negative",
        {"s.yaml": sweep()},
        ["run", "{d}/s.yaml", "--num-cpus", "-1"],
        ("--num-cpus", ">= 1"),
    ),
    Case(
        "num-cpus-zero",
        {"s.yaml": sweep()},
        ["run", "{d}/s.yaml", "--num-cpus", "0"],
        ("--num-cpus", ">= 1"),
    ),
    Case(
        "num-cpus-text",
        {"s.yaml": sweep()},
        ["run", "{d}/s.yaml", "--num-cpus", "all"],
        ("--num-cpus", "integer"),
    ),
    Case(
        "run-unknown-flag",
        {"s.yaml": sweep()},
        ["run", "{d}/s.yaml", "--fast"],
        ("unrecognized arguments", "--fast"),
    ),
    Case("run-no-file", {}, ["run"], ("required", "sweep")),
    Case("command-unknown", {}, ["go"], ("invalid choice", "run")),
    T(
        "out-is-file",
        MOONS,
        "--out",
        "{d}/f",
        expect=("--out", "not a directory"),
        files={"f": "x"},
    ),
    T("out-under-proc", MOONS, "--out", "/proc/ct-out", expect=("--out", "not writable")),
    T(
        "out-under-file",
        MOONS,
        "--out",
        "{d}/f/o",
        expect=("--out", "not a directory"),
        files={"f": "x"},
    ),
    T("out-long-name", MOONS, "--out", "{d}/" + LONG, expect=("--out", "at most 255")),
    T("out-has-results", MOONS, expect=("--out", "--overwrite"), files=RESULTS),
    T(
        "out-has-config-only",
        MOONS,
        expect=("--out", "config.yaml"),
        files={"o/config.yaml": "x: 1\n"},
    ),
    T("train-epochs-text", MOONS, "--set", "train.epochs=many", expect=("train.epochs", "integer")),
    T("train-set-no-key", MOONS, "--set", "=3", expect=("--set", "dotted.path=value")),
    T("train-no-out", MOONS, "--out", expect=("--out", "expected one argument")),
    T("train-config-dir", "{d}/cfgdir", expect=("cfgdir", "not a file"), files={"cfgdir/x": ""}),
    T("train-config-list", "{d}/c.yaml", expect=("c.yaml", "mapping"), files={"c.yaml": "- 1\n"}),
    T(
        "train-resume-other-config",
        MOONS,
        "--set",
        "train.epochs=7",
        "--resume",
        expect=("--resume", "config differs"),
        files={"o/checkpoint.pt": "@copy:{model}/checkpoint.pt"},
    ),
    T("train-init-missing", MOONS, "--init", "{d}/nope.pt", expect=("init", "no such model file")),
    T(
        "train-init-other-data",
        "{d}/c.yaml",
        "--init",
        "{model}",
        expect=("init", "features"),
        files={"c.yaml": yaml.safe_dump({"data": {"name": "gaussm"}})},
    ),
    # --- ct evaluate
    E("evaluate-missing-dir", "{d}/nope", "--out", "{d}/o", expect=("MODEL_DIR", "not found")),
    E(
        "evaluate-no-model",
        "{d}/m",
        "--out",
        "{d}/o",
        expect=("MODEL_DIR", "no model.pt"),
        files={"m/x": ""},
    ),
    E(
        "evaluate-model-is-dir",
        "{d}/m",
        "--out",
        "{d}/o",
        expect=("MODEL_DIR", "no model.pt"),
        files={"m/model.pt/x": ""},
    ),
    E(
        "evaluate-out-is-file",
        "{model}",
        "--out",
        "{d}/f",
        expect=("--out", "not a directory"),
        files={"f": "x"},
    ),
    E(
        "evaluate-out-has-results",
        "{model}",
        "--out",
        "{d}/o",
        expect=("--out", "--overwrite"),
        files={"o/summary.json": "{}"},
    ),
    E(
        "evaluate-out-under-proc",
        "{model}",
        "--out",
        "/proc/ct-eval",
        expect=("--out", "not writable"),
    ),
    E("evaluate-runs-zero", "{model}", "--out", "{d}/o", "--runs", "0", expect=("--runs", ">= 1")),
    E(
        "evaluate-individuals-negative",
        "{model}",
        "--out",
        "{d}/o",
        "--individuals",
        "-5",
        expect=("--individuals", ">= 1"),
    ),
    E(
        "evaluate-robust-negative",
        "{model}",
        "--out",
        "{d}/o",
        "--robust-samples",
        "-1",
        expect=("--robust-samples", ">= 0"),
    ),
    E(
        "evaluate-ig-negative",
        "{model}",
        "--out",
        "{d}/o",
        "--ig-rounds",
        "-2",
        expect=("--ig-rounds", ">= 0"),
    ),
    E(
        "evaluate-ig-text",
        "{model}",
        "--out",
        "{d}/o",
        "--ig-rounds",
        "some",
        expect=("--ig-rounds", "integer"),
    ),
    E(
        "evaluate-setting-unknown",
        "{model}",
        "--out",
        "{d}/o",
        "--setting",
        "all",
        expect=("--setting", "plausibility"),
    ),
    E(
        "evaluate-set-tau",
        "{model}",
        "--out",
        "{d}/o",
        "--set",
        "evaluation.tau=2",
        expect=("evaluation.tau", "(0, 1)"),
    ),
    E(
        "evaluate-set-split",
        "{model}",
        "--out",
        "{d}/o",
        "--set",
        "evaluation.split=all",
        expect=("evaluation.split", "test"),
    ),
    E(
        "evaluate-set-unknown",
        "{model}",
        "--out",
        "{d}/o",
        "--set",
        "evaluation.runs=3",
        expect=("evaluation.runs", "allowed keys"),
    ),
    E(
        "evaluate-set-seed",
        "{model}",
        "--out",
        "{d}/o",
        "--set",
        "evaluation.seed=-1",
        expect=("evaluation.seed", "[0, 4294967295]"),
    ),
    E(
        "evaluate-set-bool",
        "{model}",
        "--out",
        "{d}/o",
        "--set",
        "evaluation.n_runs=true",
        expect=("evaluation.n_runs", "boolean"),
    ),
    E("evaluate-no-out", "{model}", expect=("--out", "required")),
    # --- ct compare
    C(
        "compare-missing-ct",
        "{d}/nope",
        "{model}",
        "--out",
        "{d}/o",
        expect=("CT_DIR", "not found"),
    ),
    C(
        "compare-missing-bl",
        "{model}",
        "{d}/nope",
        "--out",
        "{d}/o",
        expect=("BASELINE_DIR", "not found"),
    ),
    C(
        "compare-out-is-file",
        "{model}",
        "{model}",
        "--out",
        "{d}/f",
        expect=("--out", "not a directory"),
        files={"f": "x"},
    ),
    C(
        "compare-out-has-results",
        "{model}",
        "{model}",
        "--out",
        "{d}/o",
        expect=("--out", "--overwrite"),
        files={"o/comparison.csv": "x"},
    ),
    C(
        "compare-runs-zero",
        "{model}",
        "{model}",
        "--out",
        "{d}/o",
        "--runs",
        "0",
        expect=("--runs", ">= 1"),
    ),
    C(
        "compare-set-tau",
        "{model}",
        "{model}",
        "--out",
        "{d}/o",
        "--set",
        "evaluation.tau=0",
        expect=("evaluation.tau", "(0, 1)"),
    ),
    C(
        "compare-summary-corrupt",
        "{d}/a",
        "{d}/b",
        "--out",
        "{d}/o",
        expect=("summary.json", "not a readable"),
        files={
            "a/counterfactuals.csv": "setting,run,valid\n",
            "a/summary.json": "{oops",
            "b/counterfactuals.csv": "setting,run,valid\n",
            "b/summary.json": "{}",
        },
    ),
    C(
        "compare-csv-foreign",
        "{d}/a",
        "{d}/b",
        "--out",
        "{d}/o",
        expect=("not from `ct evaluate`",),
        files={
            "a/counterfactuals.csv": "x\n1\n",
            "a/summary.json": "{}",
            "b/counterfactuals.csv": "x\n1\n",
            "b/summary.json": "{}",
        },
    ),
    # --- resume, report, sync-mlflow on damaged or foreign run directories
    *(
        R(
            f"{cmd}-run-json-{kind}",
            cmd,
            "{d}/r",
            expect=("run.json", "damaged"),
            files={"r/run.json": text, "r/sweep.yaml": SWEEP_YAML},
        )
        for cmd in ("resume", "report", "sync-mlflow")
        for kind, text in (
            ("empty", ""),
            ("garbage", "{not json"),
            ("list", "[1, 2]"),
            ("truncated", json.dumps(RUN_JSON)[:15]),
        )
    ),
    *(
        R(
            f"{cmd}-sweep-yaml-damaged",
            cmd,
            "{d}/r",
            expect=("sweep.yaml", "damaged"),
            files={"r/run.json": json.dumps(RUN_JSON), "r/sweep.yaml": "name: [x\n"},
        )
        for cmd in ("resume", "report", "sync-mlflow")
    ),
    *(
        R(
            f"{cmd}-sweep-yaml-invalid",
            cmd,
            "{d}/r",
            expect=("sweep.yaml", "search.algorithm"),
            files={
                "r/run.json": json.dumps(RUN_JSON),
                "r/sweep.yaml": yaml.safe_dump({**VALID, "base": {}, "search": {"algorithm": "x"}}),
            },
        )
        for cmd in ("resume", "report", "sync-mlflow")
    ),
    *(
        R(f"{cmd}-is-file", cmd, "{d}/f", expect=("not a sweep run directory",), files={"f": "x"})
        for cmd in ("resume", "report", "sync-mlflow")
    ),
    R(
        "resume-num-cpus-negative",
        "resume",
        "{d}/r",
        "--num-cpus",
        "-1",
        expect=("--num-cpus", ">= 1"),
    ),
    R(
        "resume-address-malformed",
        "resume",
        "{d}/r",
        "--address",
        "not an address",
        expect=("--address", "HOST:PORT"),
        files={"r/run.json": json.dumps(RUN_JSON), "r/sweep.yaml": SWEEP_YAML},
    ),
    R("report-mode-unknown", "report", "{d}/r", "--mode", "up", expect=("--mode", "min")),
    R("report-top-zero", "report", "{d}/r", "--top", "0", expect=("--top", ">= 1")),
    R(
        "sync-tracking-bogus",
        "sync-mlflow",
        "{d}/r",
        "--tracking-uri",
        "bogus-scheme://x y",
        expect=("--tracking-uri", "without spaces"),
        files={"r/run.json": json.dumps(RUN_JSON), "r/sweep.yaml": SWEEP_YAML},
    ),
    *_csv_cases(),
    *_model_file_cases(),
]
CASES += MORE
