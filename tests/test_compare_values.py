"""`ct compare` on two fixed tiny models gives known values.

Two linear classifiers on moons with hand-set weights (nothing is trained) go through
``ct compare``. Its two per-counterfactual files are checked row by row against the models
(target probability, validity at τ and at 0.5, cost, the immutable feature), and every number of
``comparison.csv``, for each metric, population and threshold it reports, is recomputed here by a
slow path of its own: plain Python loops over the rows of those files, no pandas and nothing of
``ct_core.comparison``.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
import torch
from torch import nn

from ct_core.config import parse_config
from ct_core.models import save_model

# (table label, setting, column, kind): the rows of the paper's Table 1 and its validity lines
METRICS = [
    ("IP", "plausibility", "implausibility", "mean"),
    ("IP*", "plausibility", "mmd", "group"),
    ("Cost", "cost", "cost", "mean"),
    ("Cost (unconstrained)", "plausibility", "cost", "mean"),
    ("Validity", "plausibility", "valid", "share"),
    ("Validity (cost setting)", "cost", "valid", "share"),
]
CONFIG = {
    "data": {"name": "moons", "n_train": 200, "n_val": 50, "n_test": 200, "immutable": [0]},
    "model": {"type": "linear"},
    # three search steps: some counterfactuals stop short of τ, so the populations differ
    "evaluation": {"n_runs": 6, "n_individuals": 10, "lambda_energies": [0.5, 5.0], "T": 3},
}
WEIGHTS = {  # (weight (2, 2), bias (2,)) of each model
    "ct": ([[-1.5, 3.0], [1.5, -3.0]], [0.0, 0.0]),
    "bl": ([[-3.0, 2.0], [3.0, -2.0]], [0.5, -0.5]),
}


def fixed_model(name: str) -> nn.Module:
    w, b = WEIGHTS[name]
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(w))
        model[0].bias.copy_(torch.tensor(b))
    return model.eval()


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    from ct_core.cli import main

    root = tmp_path_factory.mktemp("compare")
    cfg = parse_config(CONFIG)
    for name in WEIGHTS:
        (root / name).mkdir()
        save_model(fixed_model(name), cfg, root / name / "model.pt", n_features=2, n_classes=2)
    argv = ["compare", str(root / "ct"), str(root / "bl"), "--out", str(root / "out")]
    argv += ["--robust-samples", "0", "--ig-rounds", "0", "--no-plots", "--quiet"]
    assert main(argv) == 0
    return root / "out"


def read(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def true(s: str) -> bool:
    return s == "True"


def num(s: str) -> float:
    return float(s) if s not in ("", "nan", "NaN") else math.nan


# ---------------------------------------------------------------------------------------------
# The slow path: Table 1's aggregation written out with loops


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def per_run(rows: list[dict], setting: str, column: str, kind: str, valid: str) -> dict:
    """run -> value: for ``mean``, the mean over the valid counterfactuals of each λ_egy, then
    over λ_egy; for ``group`` (IP*), the group value of each (λ_egy, target) that has valid
    counterfactuals, averaged over targets, then over λ_egy; for ``share``, the share of rows
    with ``column`` true."""
    mine = [r for r in rows if r["setting"] == setting]
    out = {}
    for run in sorted({int(r["run"]) for r in mine}):
        in_run = [r for r in mine if int(r["run"]) == run]
        if kind == "share":
            out[run] = mean([float(true(r[column])) for r in in_run])
            continue
        by_lambda = []
        for lam in sorted({r["lambda_energy"] for r in in_run}):
            ok = [r for r in in_run if r["lambda_energy"] == lam and true(r[valid])]
            if kind == "mean":
                vals = [num(r[column]) for r in ok if not math.isnan(num(r[column]))]
            else:
                vals = []
                for target in sorted({r["target"] for r in ok}):
                    group = [num(r[column]) for r in ok if r["target"] == target]
                    group = [v for v in group if not math.isnan(v)]
                    if group:
                        vals.append(group[0])
            if vals:
                by_lambda.append(mean(vals))
        if by_lambda:
            out[run] = mean(by_lambda)
    return out


def quantile(xs: list[float], q: float) -> float:
    """The linear-interpolation quantile (numpy's default)."""
    s = sorted(xs)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    return s[lo] + (h - lo) * (s[min(lo + 1, len(s) - 1)] - s[lo])


def reduction(ct: dict, bl: dict) -> dict:
    """% reduction of |CT| against |BL| over the runs both have, with the 99 % interval of
    |CT| − |BL| (a difference within float rounding counts as none)."""
    runs = sorted(set(ct) & set(bl))
    a, b = [abs(ct[r]) for r in runs], [abs(bl[r]) for r in runs]
    ratios = [x / y for x, y in zip(a, b) if y != 0 and math.isfinite(x / y)]
    diffs = [
        0.0 if math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) else x - y for x, y in zip(a, b)
    ]
    lo, hi = quantile(diffs, 0.005), quantile(diffs, 0.995)
    return {
        "ct": mean(a),
        "bl": mean(b),
        "reduction_pct": -(mean(ratios) - 1) * 100,
        "sd_pct": 100 * statistics.stdev(ratios) if len(ratios) > 1 else math.nan,
        "ci_lo": lo,
        "ci_hi": hi,
        "significant": lo > 0 or hi < 0,
        "n_runs": len(ratios),
    }


def paired(ct: list[dict], bl: list[dict], setting: str) -> tuple[list[dict], list[dict]]:
    """The rows of draws (run, λ_egy, individual) whose counterfactual reaches p ≥ 0.5 for both
    models."""

    def keys(rows: list[dict]) -> set:
        return {
            (r["run"], r["lambda_energy"], r["individual"])
            for r in rows
            if r["setting"] == setting and true(r["valid_05"])
        }

    both = keys(ct) & keys(bl)

    def keep(rows: list[dict]) -> list[dict]:
        return [r for r in rows if (r["run"], r["lambda_energy"], r["individual"]) in both]

    return keep(ct), keep(bl)


def expected_table(ct: list[dict], bl: list[dict]) -> dict[tuple[str, str], dict]:
    """(metric, population) -> the values ``ct compare`` must report."""
    out = {}
    for label, setting, column, kind in METRICS:
        tau = {num(r["tau"]) for r in ct if r["setting"] == setting}
        assert len(tau) == 1
        for pop in ("0.5", "tau", "paired"):
            if pop == "tau" and tau == {0.5}:
                continue  # the same counterfactuals as "0.5"
            if kind == "share":
                if pop == "paired":
                    continue
                col = "valid_05" if pop == "0.5" else "valid"
                c, b = (per_run(f, setting, col, "share", "") for f in (ct, bl))
                out[label, pop] = {"ct": mean(list(c.values())), "bl": mean(list(b.values()))}
                continue
            if pop == "paired":
                if kind == "group":
                    continue  # IP* is a statistic of each model's own counterfactuals
                fc, fb = paired(ct, bl, setting)
                c, b = (per_run(f, setting, column, kind, "valid_05") for f in (fc, fb))
            else:
                valid = "valid_05" if pop == "0.5" else "valid"
                col = "mmd_05" if (column == "mmd" and pop == "0.5") else column
                c, b = (per_run(f, setting, col, kind, valid) for f in (ct, bl))
            out[label, pop] = reduction(c, b)
    return out


# ---------------------------------------------------------------------------------------------


def test_each_counterfactual_row_says_what_its_model_says(compared):
    from ct_core.data import load_dataset

    data = load_dataset(parse_config(CONFIG).data)
    for name in WEIGHTS:
        model = fixed_model(name)
        rows = read(compared / name / "counterfactuals.csv")
        settings = {r["setting"] for r in rows}
        assert settings == {"plausibility", "cost"}
        # settings x runs x individuals x λ_egy (every factual class is predicted somewhere)
        assert len(rows) == 2 * 6 * 10 * 2
        x = torch.tensor([[num(r["x_x1"]), num(r["x_x2"])] for r in rows])
        cf = torch.tensor([[num(r["cf_x1"]), num(r["cf_x2"])] for r in rows])
        with torch.no_grad():
            p = torch.softmax(model(cf), -1)
            pred = model(x).argmax(-1)
        for i, r in enumerate(rows):
            target, tau = int(r["target"]), num(r["tau"])
            assert tau == (0.95 if r["setting"] == "plausibility" else 0.5)
            assert int(r["factual"]) == int(pred[i]) != target
            assert torch.allclose(x[i], data.X_test[int(r["index"])], atol=1e-6)  # 8 digits
            p_target = float(p[i, target])
            assert p_target == pytest.approx(num(r["p_target"]), abs=1e-6)
            assert true(r["valid"]) == (p_target >= tau), r
            assert true(r["valid_05"]) == (p_target >= 0.5), r
            l1 = float((cf[i] - x[i]).abs().sum())
            assert num(r["cost"]) == pytest.approx(l1, rel=1e-6, abs=1e-6)
            if r["setting"] == "cost":  # x1 is immutable there
                assert cf[i, 0] == x[i, 0]
        # the thresholds split the counterfactuals: the populations are not all the same
        plaus = [r for r in rows if r["setting"] == "plausibility"]
        assert 0 < sum(true(r["valid"]) for r in plaus) < sum(true(r["valid_05"]) for r in plaus)


def test_every_number_of_the_comparison_is_the_slow_paths(compared):
    ct = read(compared / "ct" / "counterfactuals.csv")
    bl = read(compared / "bl" / "counterfactuals.csv")
    want = expected_table(ct, bl)
    got = {(r["metric"], r["population"]): r for r in read(compared / "comparison.csv")}
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        for field, v in w.items():
            if field == "significant":
                assert g[field] == str(v), (key, field, g[field], v)
            elif field == "n_runs":
                assert int(g[field]) == v, (key, field)
            elif math.isnan(v):
                assert math.isnan(num(g[field])), (key, field, g[field])
            else:
                # the files hold 8 significant digits, the table was computed before writing them
                assert num(g[field]) == pytest.approx(v, rel=1e-5, abs=1e-6), (key, field)
    # the populations do give different answers on these models
    assert got["IP", "0.5"]["ct"] != got["IP", "tau"]["ct"] != got["IP", "paired"]["ct"]
    assert any(w.get("significant") for w in want.values())
