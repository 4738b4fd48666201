"""The config schema: defaults from the authors' code, overrides, and errors that name fields."""

import pytest

from ct_core.config import (
    ConfigError,
    apply_overrides,
    load_config,
    parse_config,
    parse_override,
)


def test_defaults_follow_the_reference_code():
    cfg = parse_config({})
    assert (cfg.train.lambda_class, cfg.train.lambda_div) == (1.0, 0.5)
    assert (cfg.train.lambda_reg, cfg.train.lambda_adv) == (0.1, 0.25)
    assert cfg.generator.lr == 0.1  # the code's effective step, not the configured 0.25
    assert (cfg.generator.T, cfg.generator.tau) == (30, 0.75)
    assert cfg.train.epsilon == 0.3 and cfg.train.epsilon_norm == "inf"
    assert cfg.train.mature == "converged"
    assert cfg.evaluation.length_scale == 5.0
    assert cfg.data.domain_nsd == 2.0


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"generator": {"tau": 1.5}}, "generator.tau: must be in (0, 1), got 1.5"),
        ({"generator": {"tau": 0}}, "generator.tau: must be in (0, 1), got 0"),
        ({"generator": {"T": 0}}, "generator.T: must be in [1, inf), got 0"),
        ({"train": {"lambda_div": -0.1}}, "train.lambda_div: must be in [0, inf), got -0.1"),
        ({"train": {"epsilon": 0}}, "train.epsilon: must be in (0, inf), got 0"),
        ({"train": {"burnin": 1.0}}, "train.burnin: must be in [0, 1), got 1.0"),
        ({"train": {"objective": "ful"}}, "train.objective: must be 'full', 'vanilla'"),
        ({"generator": {"type": "dice"}}, "generator.type must be one of ecco, generic, revise"),
        ({"data": {"name": "iris"}}, "data.name must be one of lin_sep, over"),
        ({"generator": {"taux": 1}}, "generator.taux: unknown key; allowed keys: type, T, tau"),
        ({"trian": {}}, "trian: unknown key"),
        ({"data": {"name": "csv"}}, "data.path is required when data.name is 'csv'"),
        ({"data": {"immutable": [-1]}}, "data.immutable indices must be >= 0"),
        ({"data": {"immutable": ["age"], "increase_only": ["age"]}}, "appears in both"),
        ({"train": {"epochs": "ten"}}, "train.epochs: must be a valid integer"),
    ],
)
def test_invalid_values_name_the_field_and_what_is_allowed(raw, message):
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    assert any(message in m for m in e.value.messages), e.value.messages


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as e:
        parse_config({"generator": {"tau": 2, "T": -1}, "train": {"lr": 0}})
    assert len(e.value.messages) == 3


def test_overrides_are_dotted_paths_with_yaml_values():
    assert parse_override("generator.tau=0.9") == ("generator.tau", 0.9)
    assert parse_override("data.immutable=[age, 3]") == ("data.immutable", ["age", 3])
    raw = apply_overrides({"generator": {"tau": 0.5}}, ["generator.tau=0.9", "train.nce=10"])
    cfg = parse_config(raw)
    assert cfg.generator.tau == 0.9 and cfg.train.nce == 10
    with pytest.raises(ConfigError, match="dotted.path=value"):
        parse_override("generator.tau")


def test_yaml_files_extend_a_base_and_report_bad_files(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("data: {name: circles}\ngenerator: {tau: 0.5}\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ngenerator: {T: 12}\n")
    cfg = load_config(child, ["train.epochs=3"])
    assert (cfg.data.name, cfg.generator.tau, cfg.generator.T, cfg.train.epochs) == (
        "circles",
        0.5,
        12,
        3,
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_base_config_is_valid():
    from pathlib import Path

    files = sorted((Path(__file__).parents[1] / "configs" / "base").glob("*.yaml"))
    assert len(files) == 10
    for f in files:
        cfg = load_config(f)
        assert cfg.data.name == f.stem
