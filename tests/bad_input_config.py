"""Bad training configs, YAML, data files and model files (tests/test_bad_input.py runs them):
seeds, booleans for numbers, sizes beyond the data, cyclic bases, duplicate keys, alias bombs,
CSV problems through ``ct train`` and ``ct-sweep run`` (also ``--dry-run``), broken model and
checkpoint files wherever ct reads one."""

from __future__ import annotations

import io
from typing import Any

import yaml

from tests.bad_input_cases import (
    DRY,
    MOONS,
    TS,
    VALID,
    Case,
    O,
    S,
    T,
    sweep,
    with_override,
    with_space,
)


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

CONFIG_CASES: list[Case] = [
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
]
