"""Counterfactuals for chosen rows (``ct_core.explain``, ``ct explain``): in the original columns
and units, immutable columns unchanged, one category per categorical, with each row's outcome;
one batched search gives each row what a search of that row alone gives."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ct_core
from ct_core.cli import main
from ct_core.config import ConfigError
from ct_core.explanation import OUTCOME_COLUMNS
from tests.test_user_data import loans

ROOT = Path(__file__).resolve().parents[1]
CFG = {
    "train": {"epochs": 15, "nce": 200, "batch_size": 50},
    "data": {"immutable": ["age", "job"]},
    "generator": {"T": 100, "tau": 0.6},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    ct_core.train(CFG, data=loans(600), target="approved").save(out)
    return out


@pytest.fixture(scope="module")
def rows():
    return loans(40, seed=1).drop(columns="approved").set_index(pd.RangeIndex(100, 140))


def test_counterfactuals_come_in_the_rows_columns_and_units(run, rows):
    cf = ct_core.explain(run, rows)
    assert list(cf.columns) == [*rows.columns, *OUTCOME_COLUMNS]
    assert cf.index.equals(rows.index)
    assert (cf["age"] == rows["age"]).all() and (cf["job"] == rows["job"]).all()  # immutable
    assert set(cf["housing"]) <= {"family", "own", "rent"}
    assert cf["income"].between(-50, 150).all()  # income's own units, not z-scores
    assert (cf["target"] != cf["predicted"]).all()  # binary: the other class
    assert cf["valid"].mean() > 0.5
    assert (cf.loc[cf["valid"], "p_target"] >= 0.6).all()
    assert (cf.loc[~cf["valid"], "steps"] == 100).all()
    moved = cf["changed"].str.split(";")
    for i in cf.index:  # a column not listed as changed keeps the row's own value exactly
        for col in set(rows.columns) - set(moved[i]):
            assert cf.at[i, col] == rows.at[i, col], (i, col)


def test_one_search_for_all_rows_gives_each_row_its_own_counterfactual(run, rows):
    together = ct_core.explain(run, rows)
    alone = pd.concat([ct_core.explain(run, rows.iloc[[i]]) for i in (0, 7, 19)])
    expect = together.iloc[[0, 7, 19]]
    pd.testing.assert_frame_equal(alone.drop(columns="income"), expect.drop(columns="income"))
    assert np.allclose(alone["income"], expect["income"], atol=1e-4)


def test_target_and_generator_can_be_chosen(run, rows):
    cf = ct_core.explain(run, rows, target="yes", overrides=["generator.type=generic"])
    assert (cf["target"] == "yes").all()
    with pytest.raises(ConfigError, match="--target must be one of no, yes, got 'maybe'"):
        ct_core.explain(run, rows, target="maybe")


def test_rows_that_do_not_fit_the_model_are_clear_errors(run, rows):
    with pytest.raises(ConfigError, match=r"--rows: missing column\(s\) 'income'"):
        ct_core.explain(run, rows.drop(columns="income"))
    with pytest.raises(ConfigError, match=r"'housing' has values outside its levels .*'castle'"):
        ct_core.explain(run, rows.assign(housing="castle"))
    with pytest.raises(ConfigError, match=r"--rows: column 'income' has 1 missing"):
        ct_core.explain(run, rows.assign(income=rows.income.where(rows.index != 105)))


def test_ct_explain_writes_the_counterfactuals(run, rows, tmp_path, capsys):
    path = tmp_path / "rows.csv"
    rows.head(5).to_csv(path, index=False)
    out = tmp_path / "cfs.csv"
    args = ["explain", str(run), "--rows", str(path), "--target", "yes", "--out", str(out)]
    assert main([*args, "--set", "generator.T=50"]) == 0
    cf = pd.read_csv(out)
    assert (
        len(cf) == 5
        and (cf["target"] == "yes").all()
        and "5 counterfactuals" in (capsys.readouterr().out)
    )
    assert main(["explain", str(tmp_path), "--rows", str(path), "--out", str(tmp_path / "x")]) == 2
    assert "error: MODEL_DIR: no model.pt" in capsys.readouterr().err


def test_ct_explain_replaces_an_existing_file_only_when_told(run, rows, tmp_path, capsys):
    path = tmp_path / "rows.csv"
    rows.head(3).to_csv(path, index=False)
    out = tmp_path / "cfs.csv"
    out.write_text("mine\n")
    args = ["explain", str(run), "--rows", str(path), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "exists; pass --overwrite" in err
    assert out.read_text() == "mine\n"  # refused before anything was computed or written
    assert main(["explain", str(run), "--rows", str(path), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert len(pd.read_csv(out)) == 3
    assert not [f for f in tmp_path.iterdir() if f.name not in ("rows.csv", "cfs.csv")]


def test_a_paper_dataset_is_explained_in_its_original_columns(tmp_path):
    """Credit: the categoricals SEX, EDUCATION, MARRIAGE decode to their codes, AGE is kept."""
    cfg = ct_core.load_config(
        ROOT / "configs" / "base" / "credit.yaml",
        ["train.epochs=1", "train.nce=100", "data.n_train=500", "data.immutable=[AGE]"],
    )
    result = ct_core.train(cfg)
    raw = pd.read_csv(Path(os.environ["CT_DATA_DIR"]) / "credit_default/taija/credit_default.csv")
    rows = raw.drop(columns="target").tail(8)
    cf = ct_core.explain(result, rows)
    assert list(cf.columns[: rows.shape[1]]) == list(rows.columns)
    assert (cf["AGE"] == rows["AGE"]).all()
    assert set(cf["SEX"]) <= set(raw["SEX"]) and set(cf["EDUCATION"]) <= set(raw["EDUCATION"])
