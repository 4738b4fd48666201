"""docs/python-api.md's worked example runs as written: its code blocks, in order, in a fresh
folder (the MLflow part against a sqlite store there)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def example_code() -> str:
    text = DOC.read_text()
    section = text.split("\n## Worked example\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


@pytest.mark.integration
def test_the_worked_example_runs_and_does_what_it_says(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    before = os.environ.get("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ns: dict = {}
    try:
        exec(compile(example_code(), str(DOC), "exec"), ns)
    finally:
        # the example's set_tracking_uri also sets the variable; None unsets both, as before
        mlflow.set_tracking_uri(before)
    assert os.environ.get("MLFLOW_TRACKING_URI") == before  # nothing leaks to other tests
    ct, vanilla, table, cfs, tuned = (ns[k] for k in ("ct", "vanilla", "table", "cfs", "tuned"))
    assert ct.config.data.name == "frame" and ct.config.train.objective == "full"
    assert vanilla.config.train.objective == "vanilla"
    assert {"IP", "IP*", "Cost"} <= set(table["metric"])
    applicants, loans = ns["applicants"], ns["loans"]
    assert len(cfs) == 5 and list(cfs.index) == list(applicants.index)
    assert (loans.loc[cfs.index, "approved"] == "no").all() and (cfs["target"] == "yes").all()
    assert (cfs["age"] == applicants["age"]).all()  # immutable
    assert cfs["housing"].isin(["rent", "own", "family"]).all()  # one level, decoded
    assert cfs["employment"].isin(["salaried", "self-employed", "none"]).all()
    assert cfs["valid"].equals(cfs["p_target"] >= ct.config.generator.tau)
    assert (Path("runs/loans-ct") / "encoder.json").is_file()
    assert tuned.metrics["init"] == "models:/loans@production"
    assert tuned.history["mature"].isna().sum() == round(0.2 * tuned.config.train.epochs)
