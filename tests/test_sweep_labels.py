"""How a setting is shown in MLflow: its run's name says what differs between the settings of a
sweep, and it logs only the parameters that apply to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ct_core.config import load_config
from ct_sweeps.record.labels import Names, applicable, setting_name

MOONS = Path(__file__).resolve().parents[1] / "configs" / "base" / "moons.yaml"


def test_a_name_lists_the_swept_values_in_the_sweeps_order_with_short_keys():
    order = ["generator.type", "generator.T", "generator.tau", "train.lambda_div"]
    swept = {
        "train.lambda_div": 0.5,
        "generator.tau": 0.9,
        "generator.T": 25,
        "generator.type": "ecco",
    }
    assert setting_name(swept, order, "s") == "ecco T=25 tau=0.9 div=0.5"
    assert setting_name({"train.objective": "vanilla"}, order, "s") == "vanilla"
    assert setting_name({"train.lr": 1 / 3}, [], "s") == "lr=0.3333"
    # a key without an alias by its last part, or whole where that part is ambiguous
    assert setting_name({"data.seed": 1}, [], "s") == "seed=1"
    assert setting_name({"data.seed": 1, "evaluation.seed": 2}, [], "s") == (
        "data.seed=1 evaluation.seed=2"
    )
    assert setting_name({}, order, "the-sweep") == "the-sweep"  # nothing swept


def test_repeated_names_are_numbered():
    names = Names()
    assert [names("ecco"), names("generic"), names("ecco"), names("ecco")] == [
        "ecco",
        "generic",
        "ecco #2",
        "ecco #3",
    ]


@pytest.mark.parametrize(
    ("overrides", "present", "absent"),
    [
        (
            {"train.objective": "vanilla"},
            ["train.lr", "model.type"],
            ["generator.type", "generator.T", "train.lambda_div", "train.nce"],
        ),
        (
            {"generator.type": "ecco"},
            ["generator.T", "generator.lambda_energy", "train.lambda_div"],
            ["generator.vae_latent"],
        ),
        (
            {"generator.type": "generic"},
            ["generator.T", "generator.lambda_cost"],
            ["generator.lambda_energy", "generator.vae_latent"],
        ),
        ({"generator.type": "revise"}, ["generator.vae_latent"], ["generator.lambda_energy"]),
    ],
)
def test_only_the_parameters_a_setting_uses_are_logged(overrides, present, absent):
    params = applicable(load_config(MOONS, overrides))
    assert all(k in params for k in present), sorted(params)
    assert not [k for k in absent if k in params]
