"""docs/results.md's tables are what the committed summary CSVs in docs/results/ render.

Reads files only: the CSVs are written by ``scripts/reproduce.py`` / ``scripts/confidence_study.py``
(``--publish``), which also re-render the markdown; this checks that nobody edited one without
the other.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location(
        "results_tables", ROOT / "scripts" / "results_tables.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules["results_tables"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_table_in_results_md_matches_its_csv(tables):
    text = (ROOT / "docs" / "results.md").read_text()
    blocks = list(tables.BLOCK.finditer(text))
    assert len(blocks) >= 5, "docs/results.md lost its generated tables"
    for m in blocks:
        assert (ROOT / "docs" / "results" / f"{m['csv']}.csv").is_file(), m["csv"]
    assert tables.update(text) == text, "run `python scripts/results_tables.py` after a CSV changes"


def test_every_summary_csv_is_shown_in_results_md(tables):
    text = (ROOT / "docs" / "results.md").read_text()
    used = {m["csv"] for m in tables.BLOCK.finditer(text)}
    csvs = {p.stem for p in (ROOT / "docs" / "results").glob("*.csv")} - {"paper_reported"}
    assert csvs <= used, f"CSVs without a table: {sorted(csvs - used)}"


def test_verdict_compares_sign_and_significance(tables):
    v = tables.verdict
    assert v("26.26±0.67*", "39.24±0.67*") == "yes"
    assert v("−14.13±1.60*", "5.16±1.0*") == "no"
    assert v("-14.13±1.60*", "5.16±1.0*") == "no"
    assert v("1.08±1.53", "5.47±2.04*") == "no"
    assert v("−1.93±1.12", "4.93±1.20") == "yes"  # neither finds an effect
    assert v("n/a", "5.16±1.0*") is None


def test_render_main_counts_agreement(tables):
    ours = pd.DataFrame(
        [
            {
                "dataset": "LS",
                "model": "full",
                "metric": m,
                "population": pop,
                "cell": c,
                "ct": "1",
                "bl": "2",
            }  # fmt: skip
            for m, pop, c in [
                ("IP", "0.5", "20.00±1.00*"),
                ("IP", "paired", "19.00±1.00*"),
                ("IP*", "0.5", "50.00±2.00*"),
                ("Cost", "0.5", "−3.00±1.00*"),
                ("Cost", "paired", "1.00±1.00"),
            ]
        ]
    )
    paper = pd.DataFrame(
        [
            {"dataset": "LS", "metric": "IP", "value": "26.26±0.67*"},
            {"dataset": "LS", "metric": "Cost", "value": "16.41±0.57*"},
        ]
    )
    text = tables.render_main(ours, paper)
    assert "| LS | 20.00±1.00* | 19.00±1.00* | 26.26±0.67* | 50.00±2.00* |" in text
    assert "| −3.00±1.00* | 1.00±1.00 | 16.41±0.57* |" in text
    assert "IP: sign and significance as the paper's on 1 of 1 datasets (LS;" in text
    assert "Cost: sign and significance as the paper's on 0 of 1 datasets (~~LS~~;" in text
