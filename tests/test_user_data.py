"""The user's own table: a pandas DataFrame or a CSV file, through one path. Categorical columns
are declared or inferred, one-hot encoded with an encoder saved beside the model; constraints
take column names; a table CT cannot train on gets one error naming each bad column."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

import ct_core
from ct_core.config import ConfigError, load_config
from ct_core.constraints import BOTH, NONE
from ct_core.data import load_dataset, load_frame
from ct_core.data.encoder import Encoder

FAST = {"train": {"epochs": 2, "nce": 50, "batch_size": 50}, "generator": {"T": 5}}


def loans(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "income": rng.normal(50, 15, n).round(1),
            "age": rng.integers(18, 70, n),
            "housing": rng.choice(["rent", "own", "family"], n),  # text: inferred
            "job": pd.Categorical(rng.choice(["a", "b", "c"], n)),  # category dtype: inferred
            "region": rng.integers(1, 4, n),  # integer codes: categorical only if declared
            "insured": rng.random(n) < 0.5,  # bool: a 0/1 number
        }
    )
    score = (df.income - 50) / 15 + (df.housing == "own") - (df.job == "c")
    df["approved"] = np.where(score + rng.normal(0, 0.5, n) > 0, "yes", "no")
    return df


def frame_cfg(**data):
    return load_config({"data": {"name": "frame", "target": "approved", **data}})


def test_a_frame_is_encoded_with_inferred_and_declared_categoricals():
    ds = load_frame(loans(), frame_cfg(categorical=["region"]))
    assert ds.feature_names == [
        "income", "age", "housing=family", "housing=own", "housing=rent",
        "job=a", "job=b", "job=c", "region=1", "region=2", "region=3", "insured",
    ]  # fmt: skip
    assert ds.categorical_groups == [[2, 3, 4], [5, 6, 7], [8, 9, 10]]
    assert ds.class_names == ["no", "yes"] and ds.n_classes == 2
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (180, 60, 60)
    assert torch.allclose(ds.X_train[:, [0, 1, 11]].mean(0), torch.zeros(3), atol=1e-5)
    undeclared = load_frame(loans(), frame_cfg())
    assert "region" in undeclared.feature_names  # integer codes stay one numeric column


def test_the_encoder_maps_the_original_columns_there_and_back():
    df = loans()
    ds = load_frame(df, frame_cfg(categorical=["region"]))
    enc = Encoder.from_dict(json.loads(json.dumps(ds.encoder.to_dict())))  # plain data
    x = enc.encode(df)
    back = enc.decode(x)
    features = df.drop(columns="approved")
    assert list(back.columns) == list(features.columns)
    assert np.allclose(back["income"].astype(float), features["income"])
    for col in ("housing", "job", "region"):
        assert back[col].tolist() == features[col].tolist()
    assert enc.target == "approved" and enc.classes == ["no", "yes"]


def test_a_csv_file_and_the_same_frame_give_the_same_dataset(tmp_path):
    df = loans()
    df.to_csv(tmp_path / "loans.csv", index=False)
    from_file = load_dataset(
        {"name": "csv", "path": str(tmp_path / "loans.csv"), "target": "approved"}
    )
    from_frame = load_frame(df.astype({"job": str}), frame_cfg())
    assert from_file.feature_names == from_frame.feature_names
    for part in ("train", "val", "test"):
        assert torch.equal(from_file.split(part)[0], from_frame.split(part)[0])
        assert torch.equal(from_file.split(part)[1], from_frame.split(part)[1])


def test_constraints_name_columns_and_a_categorical_covers_its_group():
    ds = load_frame(loans(), frame_cfg(immutable=["age", "housing"], increase_only=["income"]))
    m = dict(zip(ds.feature_names, ds.mutability.tolist()))
    assert m["age"] == NONE and m["housing=own"] == m["housing=rent"] == NONE
    assert m["income"] == 1 and m["job=a"] == BOTH


def test_train_takes_a_frame_and_saves_its_encoder_beside_the_model(tmp_path):
    cfg = {**FAST, "data": {"immutable": ["age"]}}
    result = ct_core.train(cfg, data=loans(), target="approved")
    assert result.config.data.name == "frame" and result.config.data.target == "approved"
    out = result.save(tmp_path / "run")
    saved = json.loads((out / "encoder.json").read_text())
    assert [c["name"] for c in saved["columns"]][:3] == ["income", "age", "housing"]
    assert saved["columns"][2]["levels"] == ["family", "own", "rent"]
    assert saved["columns"][0]["std"] > 1  # income in its own units: the scale is kept
    with pytest.raises(ConfigError, match="data.target: name the DataFrame's label column"):
        ct_core.train(FAST, data=loans())
    with pytest.raises(ConfigError, match="target= names the label column of a DataFrame"):
        ct_core.train(FAST, target="approved")


def test_a_hand_built_dataset_gets_the_configs_immutable_features():
    ds = load_frame(loans(), frame_cfg())
    ds.mutability = None  # as a Dataset built by hand has it
    trainer = ct_core.Trainer(load_config({**FAST, "data": {"immutable": ["age"]}}), data=ds)
    assert trainer.data.mutability[1] == NONE


def _error(df: pd.DataFrame, **data) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_frame(df, frame_cfg(**data))
    return e.value.messages


@pytest.mark.parametrize(
    "change, expect",
    [
        (lambda d: d.drop(columns="approved"), r"data.target: column 'approved' is not in"),
        (lambda d: d.assign(approved="yes"), r"data.target: .*at least 2 classes, found 1"),
        (lambda d: d.assign(approved=np.linspace(0, 1, len(d))), r"300 distinct float values"),
        (lambda d: d.assign(income=d.income.where(d.index != 7)), r"'income' has 1 missing .*7"),
        (lambda d: d.assign(income=d.income.replace(d.income[3], np.inf)), r"'income' .*infinite"),
        (lambda d: d.assign(housing=d.housing.where(d.index > 5)), r"'housing' has 6 missing"),
        (lambda d: d.assign(when=pd.Timestamp("2024-01-01")), r"'when' is datetime64.*numbers"),
        (lambda d: d.assign(name=[f"p{i}" for i in range(len(d))]), r"'name' is text with 300"),
        (lambda d: d[["approved"]], r"no feature columns"),
    ],
    ids=[
        "no-target",
        "one-class",
        "float-target",
        "nan",
        "inf",
        "nan-text",
        "datetime",
        "id-column",
        "no-features",
    ],  # fmt: skip
)
def test_a_bad_frame_is_one_clear_error_naming_the_column(change, expect):
    messages = _error(change(loans()))
    assert any(re.search(expect, m) for m in messages), messages


def test_every_problem_of_a_frame_is_reported_at_once():
    df = loans().assign(income=np.nan, when=pd.Timestamp("2024-01-01"))
    messages = _error(df)
    assert len(messages) == 2 and "'income'" in messages[0] and "'when'" in messages[1]
    assert _error(loans(), categorical=["town"]) == [
        "data.categorical: unknown column(s) 'town'; columns: income, age, housing, job, "
        "region, insured, approved"
    ]
