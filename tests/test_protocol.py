"""The paper's comparison protocol: draws, per-counterfactual frames, Table 1."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ct_core.config import ConfigError, parse_config
from ct_core.constraints import BOTH, NONE
from ct_core.evaluation import validation_metrics
from ct_core.protocol import (
    compare,
    draw_classes,
    evaluate_model,
    format_markdown,
    paired_frames,
    per_run,
    reduction_stats,
)
from tests.helpers import gaussian_dataset

torch.set_num_threads(1)


def frame(
    values: dict[int, list[float]], column: str = "implausibility", valid=None
) -> pd.DataFrame:
    """A hand-made per-counterfactual frame: ``values[run]`` lists one value per λ_egy."""
    rows = []
    for run, vals in values.items():
        for lam, v in zip([0.1, 1.0, 10.0], vals):
            for target in (0, 1):
                rows.append(
                    {
                        "setting": "plausibility",
                        "run": run,
                        "lambda_energy": lam,
                        "individual": target,
                        "target": target,
                        "tau": 0.95,
                        "valid": True,
                        "valid_05": True,
                        column: v,
                    }
                )
    f = pd.DataFrame(rows)
    if valid is not None:
        f["valid"] = valid
    return f


def test_draws_are_seeded_and_targets_differ_from_factuals():
    a, b = draw_classes(3, 500, 7), draw_classes(3, 500, 7)
    assert torch.equal(a.factual, b.factual) and torch.equal(a.target, b.target)
    assert (a.factual != a.target).all()
    assert set(a.factual.tolist()) == {0, 1, 2} and set(a.target.tolist()) == {0, 1, 2}
    with pytest.raises(ConfigError, match="at least 2 classes"):
        draw_classes(1, 5, 0)


def test_per_run_averages_valid_counterfactuals_per_lambda_then_over_lambda():
    f = frame({0: [1.0, 2.0, 3.0], 1: [2.0, 2.0, 2.0]})
    # an invalid counterfactual with a huge value must not count
    f.loc[len(f)] = {
        "setting": "plausibility",
        "run": 0,
        "lambda_energy": 0.1,
        "target": 0,
        "valid": False,
        "implausibility": 1000.0,
    }
    assert per_run(f, "implausibility").to_dict() == {0: 2.0, 1: 2.0}


def test_reduction_and_interval_have_the_known_answer():
    ct = pd.Series([1.0, 2.0, 3.0, 4.0])
    bl = pd.Series([2.0, 4.0, 6.0, 8.0])  # CT halves every run
    s = reduction_stats(ct, bl)
    assert s["reduction_pct"] == pytest.approx(50.0)
    assert s["sd_pct"] == pytest.approx(0.0)
    d = np.array([-1.0, -2.0, -3.0, -4.0])
    assert s["ci_lo"] == pytest.approx(np.quantile(d, 0.005))
    assert s["ci_hi"] == pytest.approx(np.quantile(d, 0.995))
    assert s["significant"] and s["ct"] == 2.5 and s["bl"] == 5.0


def test_mixed_differences_are_not_significant_and_sd_is_over_runs():
    ct = pd.Series([1.0, 3.0])
    bl = pd.Series([2.0, 2.0])  # r = 0.5, 1.5 -> mean 1 -> 0 % ± 100·0.7071
    s = reduction_stats(ct, bl)
    assert s["reduction_pct"] == pytest.approx(0.0)
    assert s["sd_pct"] == pytest.approx(100 * math.sqrt(0.5))
    assert not s["significant"]


def test_compare_builds_table_one_cells_for_each_population():
    ct = frame({r: [1.0, 1.0, 1.0] for r in range(5)})
    bl = frame({r: [4.0, 4.0, 4.0] for r in range(5)})
    table = compare(ct, bl).set_index(["metric", "population"])
    for pop in ("0.5", "tau", "paired"):
        assert table.loc[("IP", pop), "cell"] == "75.00±0.00*"
    assert table.loc[("Validity", "0.5"), "ct"] == 1.0
    assert ("Validity", "paired") not in table.index
    md = format_markdown(compare(ct, bl), "demo")
    assert "75.00±0.00*" in md and md.startswith("### demo") and "both valid" in md


def test_populations_differ_when_validity_differs():
    """CT reaches p ≥ 0.5 but not τ on half the draws, where its values are high; BL always."""
    ct = frame({r: [1.0, 1.0, 1.0] for r in range(4)})
    bl = frame({r: [2.0, 2.0, 2.0] for r in range(4)})
    hard = ct["individual"] == 1
    ct.loc[hard, "implausibility"] = 3.0
    ct.loc[hard, "valid"] = False  # p ≥ 0.5, p < τ
    bl.loc[bl["individual"] == 0, "valid_05"] = False  # BL misses its other draw entirely
    bl.loc[bl["individual"] == 0, "valid"] = False
    t = compare(ct, bl).set_index(["metric", "population"])
    assert t.loc[("IP", "tau"), "ct"] == 1.0  # CT's τ-valid draws only
    assert t.loc[("IP", "0.5"), "ct"] == 2.0  # both CT draws
    assert t.loc[("IP", "paired"), "ct"] == 3.0  # only the draw valid for both
    assert t.loc[("IP", "paired"), "bl"] == 2.0
    assert t.loc[("Validity", "tau"), "ct"] == 0.5 and t.loc[("Validity", "0.5"), "ct"] == 1.0
    assert t.loc[("Validity", "0.5"), "bl"] == 0.5


def test_paired_frames_keep_only_draws_valid_for_both():
    ct = frame({0: [1.0, 1.0, 1.0]})
    bl = frame({0: [1.0, 1.0, 1.0]})
    ct.loc[(ct["lambda_energy"] == 0.1) & (ct["individual"] == 0), "valid_05"] = False
    a, b = paired_frames(ct, bl, "plausibility")
    assert len(a) == len(b) == 5
    assert a[["lambda_energy", "individual"]].equals(b[["lambda_energy", "individual"]])


def test_mmd_is_aggregated_once_per_group():
    ct = frame({0: [0.1, 0.1, 0.1], 1: [0.1, 0.1, 0.1]}, column="mmd")
    # repeating rows of a group must not change its weight
    ct = pd.concat([ct, ct[ct["target"] == 0]], ignore_index=True)
    ct.loc[ct["target"] == 1, "mmd"] = 0.3
    assert per_run(ct, "mmd", kind="group").to_dict() == pytest.approx({0: 0.2, 1: 0.2})


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    data = gaussian_dataset(600, 2, shift=3.0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.X_train), data.y_train).backward()
        opt.step()
    return model.eval(), data


def test_evaluate_model_frame_has_one_row_per_counterfactual(trained):
    model, data = trained
    data.mutability = torch.tensor([NONE, BOTH], dtype=torch.int8)
    cfg = parse_config(
        {"evaluation": {"n_runs": 3, "n_individuals": 8, "lambda_energies": [0.1, 1.0]}}
    )
    draws = draw_classes(2, 8, 1)
    f = evaluate_model(model, data, cfg, draws, progress=False)
    assert len(f) == 2 * 3 * 8 * 2  # settings x runs x individuals x λ
    for col in (
        "run",
        "lambda_energy",
        "index",
        "factual",
        "target",
        "valid",
        "steps",
        "cost",
        "implausibility",
        "mmd",
        "mmd_05",
        "x_x1",
        "cf_x2",
    ):
        assert col in f
    pred = model(data.X_test[torch.tensor(f["index"].to_numpy())]).argmax(1).numpy()
    assert (pred == f["factual"].to_numpy()).all()  # factuals are predicted as the factual class
    c = f[f["setting"] == "cost"]
    assert (c["x_x1"] == c["cf_x1"]).all()  # the immutable feature never moves at test time
    assert c["tau"].eq(0.5).all() and f[f["setting"] == "plausibility"]["tau"].eq(0.95).all()
    assert f["valid"].mean() > 0.5
    # same draws, same model -> same frame
    g = evaluate_model(model, data, cfg, draws, progress=False)
    pd.testing.assert_frame_equal(f, g)
    data.mutability = None


def test_validation_metrics_keys_and_ranges(trained):
    model, data = trained
    cfg = parse_config({"evaluation": {"n_val_individuals": 30}})
    m = validation_metrics(model, data, cfg)
    assert set(m) == {"val_validity", "val_cost", "val_implausibility", "val_mmd"}
    assert 0 < m["val_validity"] <= 1
    assert m["val_cost"] > 0 and m["val_implausibility"] > 0 and m["val_mmd"] >= 0
    json.dumps(m)
    assert validation_metrics(model, data, cfg) == m  # seeded: the same points every call
    other = validation_metrics(model, data, cfg, rng=torch.Generator().manual_seed(5))
    assert set(other) == set(m)


# ---------------------------------------------------------------------------------------------
# End to end: `ct train` CT and its vanilla twin, then `ct evaluate` and `ct compare`.


@pytest.fixture(scope="module")
def twin_dirs(tmp_path_factory):
    from ct_core.cli import main

    root = tmp_path_factory.mktemp("e2e")
    cfg = root / "moons.yaml"
    cfg.write_text(
        "data: {name: moons, n_train: 300, n_val: 60, n_test: 200, immutable: [0]}\n"
        "model: {type: mlp, hidden: [16]}\n"
        "train: {epochs: 6, nce: 100, batch_size: 30, lr: 0.01}\n"
        "generator: {type: ecco, T: 20, tau: 0.75}\n"
    )
    for name, objective in (("ct", "full"), ("bl", "vanilla")):
        rc = main(
            [
                "train",
                str(cfg),
                "--set",
                f"train.objective={objective}",
                "--out",
                str(root / name),
                "--quiet",
            ]
        )
        assert rc == 0
    return root


FAST = [
    "--runs",
    "4",
    "--individuals",
    "12",
    "--set",
    "evaluation.lambda_energies=[0.5,5]",
    "--robust-samples",
    "100",
    "--ig-rounds",
    "3",
    "--quiet",
]


def test_ct_evaluate_writes_counterfactuals_and_summary(twin_dirs):
    from ct_core.cli import main

    out = twin_dirs / "eval-ct"
    assert main(["evaluate", str(twin_dirs / "ct"), "--out", str(out), *FAST]) == 0
    f = pd.read_csv(out / "counterfactuals.csv")
    assert len(f) == 2 * 4 * 12 * 2
    assert {"run", "index", "factual", "target", "valid", "steps", "cost", "x_x1", "cf_x2"} <= set(
        f
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["evaluation"]["n_runs"] == 4 and 0 <= s["test_accuracy"] <= 1
    assert set(s["settings"]) == {"plausibility", "cost"}
    assert {"median", "lo", "hi"} <= set(s["ig_sensitivity"])
    assert (out / "robust_accuracy.csv").is_file() and (out / "decision_boundary.png").is_file()
    assert (out / "history.png").is_file()


def test_ct_compare_prints_and_writes_table_one(twin_dirs, capsys):
    from ct_core.cli import main

    out = twin_dirs / "cmp"
    assert (
        main(["compare", str(twin_dirs / "ct"), str(twin_dirs / "bl"), "--out", str(out), *FAST])
        == 0
    )
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "comparison.csv")
    assert {"IP", "IP*", "Cost", "Validity"} <= set(table["metric"])
    assert set(table["population"]) == {"0.5", "tau", "paired"}
    assert (out / "comparison.md").read_text() in printed
    assert (out / "figure1.png").is_file() and (out / "figure1_protected.png").is_file()
    # each model's summary names its own objective (both are evaluated with CT's config)
    objectives = [
        json.loads((out / m / "summary.json").read_text())["objective"] for m in ("ct", "bl")
    ]
    assert objectives == ["full", "vanilla"]
    # reusing the two `ct evaluate`-style outputs gives the same table
    again = twin_dirs / "cmp2"
    assert main(["compare", str(out / "ct"), str(out / "bl"), "--out", str(again), "--quiet"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(again / "comparison.csv"), table, rtol=1e-4)


def test_ct_compare_names_a_missing_model(twin_dirs, capsys):
    from ct_core.cli import main

    assert main(["compare", str(twin_dirs / "ct"), str(twin_dirs / "nope"), "--quiet"]) == 2
    assert "BASELINE_DIR" in capsys.readouterr().err
