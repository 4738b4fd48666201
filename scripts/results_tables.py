"""Render the tables of docs/results.md from the summary CSVs in docs/results/.

Each table in docs/results.md sits between two markers naming its CSV and its layout::

    <!-- table main_synthetic:main -->
    | Data | ... |
    <!-- /table -->

``python scripts/results_tables.py`` rewrites every such block from ``docs/results/<csv>.csv``
(``scripts/reproduce.py --publish`` does it after writing a CSV); ``tests/test_results_tables.py``
checks that the committed markdown equals what the committed CSVs render. The paper's numbers
come from ``docs/results/paper_reported.csv`` (its Table 1, appendix tables and figures).

A summary CSV has one row per (dataset, model, metric, setting, population), as written by
``scripts/reproduce.py``: ``dataset`` is the paper's name (LS, Circ, ...), ``model`` the CT
variant compared with the vanilla baseline (full, energy, adversarial), ``population`` which
counterfactuals a metric averages (``0.5``: each model's own with p ≥ 0.5, the paper's filter;
``tau``: own with p ≥ τ_eval; ``paired``: draws valid for both), then the statistics of
``ct_core.comparison.compare`` and its ``cell`` text.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
DOC = ROOT / "docs" / "results.md"
ORDER = ["LS", "Circ", "Moon", "OL", "Adult", "CH", "Cred", "GMSC", "MNIST"]
BLOCK = re.compile(
    r"(<!-- table (?P<csv>[\w-]+):(?P<kind>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S
)


def read(name: str) -> pd.DataFrame:
    """A summary CSV of docs/results as strings (cells are compared as text)."""
    return pd.read_csv(RESULTS / f"{name}.csv", dtype=str, keep_default_na=False)


def _datasets(df: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(df["dataset"]))
    return [d for d in ORDER if d in present] + [d for d in present if d not in ORDER]


def _get(df: pd.DataFrame, dataset: str, metric: str, population: str = "", model: str = "full",
         field: str = "cell") -> str:  # fmt: skip
    sel = df[(df["dataset"] == dataset) & (df["metric"] == metric)]
    if "model" in df:
        sel = sel[(sel["model"] == model) | (sel["model"] == "")]
    if population:
        sel = sel[sel["population"] == population]
    return str(sel[field].iloc[0]) if len(sel) else "n/a"


def _paper(paper: pd.DataFrame, dataset: str, metric: str) -> str:
    sel = paper[(paper["dataset"] == dataset) & (paper["metric"] == metric)]
    return str(sel["value"].iloc[0]) if len(sel) else ""


def verdict(ours: str, paper: str) -> str | None:
    """Do two cells agree in sign and significance? ``None`` where either has no number.

    Significant cells (``*``) agree when their signs agree; cells without ``*`` agree with each
    other whatever their sign (neither finds an effect)."""
    nums = [re.match(r"^\s*([−-]?)(\d+(?:\.\d+)?)", c.replace("≈", "")) for c in (ours, paper)]
    if nums[0] is None or nums[1] is None:
        return None
    stars = ["*" in c for c in (ours, paper)]
    if stars[0] != stars[1]:
        return "no"
    if not stars[0]:
        return "yes"
    neg = [m.group(1) != "" and float(m.group(2)) != 0 for m in nums]
    return "yes" if neg[0] == neg[1] else "no"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [_row(header), "|" + "---|" * len(header)] + [_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def _pair(df: pd.DataFrame, dataset: str, metric: str, population: str) -> str:
    ct = _get(df, dataset, metric, population, field="ct")
    bl = _get(df, dataset, metric, population, field="bl")
    if "n/a" in (ct, bl) or "" in (ct, bl):
        return "n/a"
    return f"{float(ct):.2f} / {float(bl):.2f}"


def render_main(df: pd.DataFrame, paper: pd.DataFrame) -> str:
    """IP, IP* (unconstrained models) and cost (protected-feature models) per dataset."""
    rows = []
    agree = {"IP": [], "Cost": []}
    for d in _datasets(df):
        ip, cost = _get(df, d, "IP", "0.5"), _get(df, d, "Cost", "0.5")
        p_ip, p_cost = _paper(paper, d, "IP"), _paper(paper, d, "Cost")
        for key, ours, theirs in (("IP", ip, p_ip), ("Cost", cost, p_cost)):
            v = verdict(ours, theirs)
            if v is not None:
                agree[key].append(d if v == "yes" else f"~~{d}~~")
        rows.append([
            d, ip, _get(df, d, "IP", "paired"), p_ip,
            _get(df, d, "IP*", "0.5"), _paper(paper, d, "IP*"),
            cost, _get(df, d, "Cost", "paired"), p_cost,
        ])  # fmt: skip
    header = ["Data", "IP ours", "IP ours, both valid", "IP paper", "IP\\* ours", "IP\\* paper",
              "Cost (protected) ours", "Cost ours, both valid", "Cost paper"]  # fmt: skip
    text = _table(header, rows)
    for key, names in agree.items():
        ok = sum(not n.startswith("~~") for n in names)
        text += (
            f"\n{key}: sign and significance as the paper's on {ok} of {len(names)} datasets "
            f"({', '.join(names)}; struck through: not).\n"
        )
    return text


def _suffix(pre: str, text: str, post: str) -> str:
    return "" if text == "n/a" else f"{pre}{text}{post}"


def render_validity(df: pd.DataFrame, paper: pd.DataFrame) -> str:
    """Validity at p ≥ 0.5 and at p ≥ τ_eval, accuracy and IG, ours next to the paper's."""
    rows = []
    for d in _datasets(df):
        rows.append([
            d, _pair(df, d, "Validity", "0.5"), _pair(df, d, "Validity", "tau"),
            _paper(paper, d, "Validity"),
            _pair(df, d, "Validity (cost setting)", "0.5")
            + _suffix(" (pooled ", _pair(df, d, "Validity (pooled)", "0.5"), ")"),
            _paper(paper, d, "Validity (cost setting)"),
            _pair(df, d, "Accuracy", ""), _paper(paper, d, "Accuracy"),
            _get(df, d, "IG"), _paper(paper, d, "IG"),
        ])  # fmt: skip
    header = ["Data", "Validity p ≥ 0.5, CT / BL", "Validity p ≥ τ_eval = 0.95, CT / BL",
              "paper (p ≥ 0.5)", "Validity, protected, p ≥ 0.5", "paper",
              "Test acc. CT / BL", "paper", "IG to the protected feature, CT / BL", "paper"]  # fmt: skip
    return _table(header, rows)


def render_recorded(df: pd.DataFrame, paper: pd.DataFrame) -> str:
    """The cost column from the authors' recorded mutability grid (λ_reg = λ_adv = 0, every
    model also trained without the constraint): constrained only, and pooled as their
    aggregation pools it."""
    rows = [
        [d, _get(df, d, "Cost", "0.5"), _get(df, d, "Cost", "paired"),
         _get(df, d, "Cost (pooled as the paper)", "0.5"),
         _pair(df, d, "Validity (cost setting)", "0.5"), _pair(df, d, "Validity (pooled)", "0.5"),
         _paper(paper, d, "Cost"), _paper(paper, d, "Validity (cost setting)")]
        for d in _datasets(df)
    ]  # fmt: skip
    header = ["Data", "Cost, x1 protected", "both valid", "pooled with the unconstrained models",
              "Validity CT / BL", "pooled", "Cost paper", "Validity paper"]  # fmt: skip
    return _table(header, rows)


def render_robust(df: pd.DataFrame, paper: pd.DataFrame) -> str:
    """Clean and adversarial accuracy (FGSM, PGD at ε = 0.1), CT / vanilla."""
    rows = [
        [d, _pair(df, d, "Accuracy", ""), _pair(df, d, "FGSM accuracy (eps 0.1)", ""),
         _pair(df, d, "PGD accuracy (eps 0.1)", "")]
        for d in _datasets(df)
    ]  # fmt: skip
    return _table(["Data", "clean, CT / BL", "FGSM, CT / BL", "PGD, CT / BL"], rows)


def render_ablation(df: pd.DataFrame, paper: pd.DataFrame) -> str:
    """% reduction of IP and IP* of each CT variant against vanilla, ours and the paper's."""
    labels = (("full", "CT"), ("energy", "CD"), ("adversarial", "AR"))
    rows = []
    for d in _datasets(df):
        ours = [_get(df, d, m, "0.5", model=o) for m in ("IP", "IP*") for o, _ in labels]
        theirs = [_paper(paper, d, f"{m} {lab}") for m in ("IP", "IP*") for _, lab in labels]
        rows.append([f"{d}, ours", *ours])
        rows.append([f"{d}, paper", *theirs])
    header = ["Data", "IP CT", "IP CD", "IP AR", "IP\\* CT", "IP\\* CD", "IP\\* AR"]
    return _table(header, rows)


def render_study(df: pd.DataFrame, paper: pd.DataFrame) -> str:
    """One row per variant of an experiment (``dataset`` names the variant): the cost setting's
    cost and validity, or the plausibility setting's IP, IP* and validity."""
    rows, plaus = [], "IP" in set(df["metric"])
    for d in list(dict.fromkeys(df["dataset"])):
        if plaus:
            rows.append([
                d, _get(df, d, "IP", "0.5"), _get(df, d, "IP", "paired"), _get(df, d, "IP*", "0.5"),
                _pair(df, d, "Validity", "0.5"), _pair(df, d, "Validity", "tau"),
            ])  # fmt: skip
        else:
            rows.append([
                d, _get(df, d, "Cost", "0.5"), _get(df, d, "Cost", "paired"),
                _pair(df, d, "Cost", "0.5"), _pair(df, d, "Validity (cost setting)", "0.5"),
            ])  # fmt: skip
    if plaus:
        header = ["Variant", "IP reduction", "IP, both valid", "IP\\* reduction",
                  "Validity p ≥ 0.5, CT / BL", "Validity p ≥ 0.95, CT / BL"]  # fmt: skip
    else:
        header = ["Variant", "Cost reduction, own valid", "Cost reduction, both valid",
                  "Cost CT / BL (own valid)", "Validity CT / BL"]  # fmt: skip
    return _table(header, rows)


def render_confidence(df: pd.DataFrame, paper: pd.DataFrame) -> str:
    """One row per trained model of ``scripts/confidence_study.py``."""
    rows = []
    for _, r in df.iterrows():
        ct = r["objective"] == "full"
        rows.append([
            "CT" if ct else "vanilla", r["tau"] if ct else "", r["lambda_reg"] if ct else "",
            r["lambda_adv"] if ct else "", f"{float(r['validity_05']):.2f}",
            f"{float(r['validity_95']):.2f}", f"{float(r['p_target_mean']):.2f}",
            f"{float(r['steps_mean']):.1f}", f"{float(r['exhausted']):.2f}",
            f"{float(r['validity_95_T200']):.2f}",
            f"{float(r['share_test_p95']):.2f}", f"{float(r['median_logit_gap']):.2f}",
            f"{float(r['accuracy']):.3f}",
        ])  # fmt: skip
    header = ["Model", "τ (train)", "λ_reg", "λ_adv", "Validity p ≥ 0.5", "Validity p ≥ 0.95",
              "Mean p(y⁺) of the CEs", "Mean steps", "Stopped by T = 50 below 0.95",
              "Validity p ≥ 0.95, T = 200", "Test points with p ≥ 0.95", "Median logit gap (test)",
              "Test acc."]  # fmt: skip
    return _table(header, rows)


def render_categorical(df: pd.DataFrame, paper: pd.DataFrame) -> str:
    """``scripts/categorical.py``: each dataset searched with one-hot columns as continuous ones
    (``before``) and with each categorical kept one-hot (``after``): the Table-1 cells, validity,
    accuracy and the share of counterfactuals that take exactly one level of every categorical."""
    labels = {"before": "continuous (keep_onehot off)", "after": "one-hot (keep_onehot on)"}

    def onehot(sel: pd.DataFrame, d: str, setting: str) -> str:
        hit = sel[(sel["dataset"] == d) & (sel["metric"] == "One-hot")
                  & (sel["setting"] == setting) & (sel["population"] == "all")]  # fmt: skip
        return str(hit["cell"].iloc[0]) if len(hit) else "n/a"

    rows = []
    for d in _datasets(df):
        for variant, label in labels.items():
            sel = df[df["variant"] == variant]
            rows.append([
                d, label, _get(sel, d, "IP", "0.5"), _get(sel, d, "IP*", "0.5"),
                _get(sel, d, "Cost", "0.5"), _pair(sel, d, "Validity", "0.5"),
                _pair(sel, d, "Validity (cost setting)", "0.5"), _pair(sel, d, "Accuracy", ""),
                onehot(sel, d, "plausibility"), onehot(sel, d, "cost"),
            ])  # fmt: skip
    header = ["Data", "Categoricals in the search", "IP", "IP\\*", "Cost (protected)",
              "Validity CT / BL", "Validity, protected, CT / BL", "Test acc. CT / BL",
              "One level each, CT / BL", "One level each, protected, CT / BL"]  # fmt: skip
    return _table(header, rows)


RENDER: dict[str, Callable[[pd.DataFrame, pd.DataFrame], str]] = {
    "categorical": render_categorical,
    "confidence": render_confidence,
    "main": render_main,
    "validity": render_validity,
    "ablation": render_ablation,
    "robust": render_robust,
    "recorded": render_recorded,
    "study": render_study,
}


def update(text: str) -> str:
    """``text`` (docs/results.md) with every table block re-rendered from its CSV."""
    paper = read("paper_reported")

    def sub(m: re.Match[str]) -> str:
        body = RENDER[m["kind"]](read(m["csv"]), paper)
        return m.group(1) + body + m.group(5)

    return BLOCK.sub(sub, text)


def main() -> int:
    DOC.write_text(update(DOC.read_text()))
    print(f"rewrote the tables of {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
