"""What the README promises a setting's MLflow run holds (its table under "What a setting's
MLflow run holds"), read from the README itself: the MLflow tests check the store against these
words, not against the code that logs the metrics."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_promise() -> dict[str, str]:
    """metric key -> the README's words for the steps at which it is logged."""
    text = (ROOT / "README.md").read_text()
    start = text.index("**What a setting's MLflow run holds.**")
    table = re.search(r"\| metrics \| steps \|\n\|---\|---\|\n((?:\|.*\|\n)+)", text[start:])
    assert table, "the README lost its table of MLflow metrics"
    out = {}
    for row in table.group(1).splitlines():
        keys, steps = (c.strip() for c in row.strip("|").split(" | "))
        for key in re.findall(r"`([^`]+)`", keys):
            out[key] = steps
    return out


def promised_steps(
    words: str,
    *,
    vanilla: bool,
    records: Mapping[int, Mapping],
    epochs: int,
    log_every: int = 1,
    eval_every: int = 0,
    burnin: float = 0.0,
) -> list[int]:
    """The epochs at which the README's ``words`` say a metric is logged for a setting trained
    ``epochs`` epochs (``records``: its record of each epoch, to tell where a batch was
    skipped)."""
    logged = [e for e in range(1, epochs + 1) if e % log_every == 0 or e == epochs]
    searched = [] if vanilla else [e for e in logged if e > round(burnin * epochs)]
    computed = [] if not eval_every else [e for e in logged if e % eval_every == 0 or e == epochs]
    skipped = [e for e in logged if records[e].get("skipped_batches", 0) > 0]
    rules = {
        "every logged epoch": logged,
        "every logged epoch, except for vanilla settings": [] if vanilla else logged,
        "every logged epoch in which counterfactuals were searched (not vanilla, not during "
        "the burn-in)": searched,
        "every logged epoch in which they were computed (every `train.eval_every` epochs and "
        "the last; never with `eval_every: 0`)": computed,
        "every logged epoch in which a mini-batch had a non-finite loss": skipped,
        "once, at the last epoch": [epochs],
    }
    assert words in rules, f"the README promises something this test does not know: {words!r}"
    return rules[words]


def promised_metrics(records: Mapping[int, Mapping], vanilla: bool, **kw) -> dict[str, list[int]]:
    """metric key -> the steps at which the README promises it for a setting (an epoch's own
    metric is left out at an epoch where it is not a finite number); ``kw`` as for
    :func:`promised_steps`."""
    last = records[max(records)]
    want = {}
    for key, words in readme_promise().items():
        steps = promised_steps(words, vanilla=vanilla, records=records, **kw)
        if key in last:
            steps = [e for e in steps if math.isfinite(records[e].get(key, math.nan))]
        if steps:
            want[key] = steps
    return want
