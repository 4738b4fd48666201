"""Categoricals kept one-hot in the search, before and after, on Adult and Credit
(docs/categorical.md).

    .venv/bin/python scripts/categorical.py --runs 10 --out results/categorical

Runs ``scripts/reproduce.py`` twice on each dataset, with the paper's final configs: *before*
with ``data.keep_onehot=false`` (one-hot columns searched as continuous ones, as the authors'
training does) and *after* with the default (each group one-hot in every search). The CT model's
config carries the choice into ``ct compare``, so each variant is trained and evaluated with it.
Writes ``docs/results/categorical_summary.csv`` (reproduce.py's table per variant) and
``docs/results/categorical_onehot.csv`` (the share of test-time counterfactuals whose every
categorical takes exactly one level) and prints both as Markdown.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"before": ["--set", "data.keep_onehot=false"], "after": []}
SETTINGS = {"": "plausibility", "_mutability": "cost"}


def onehot_share(frame: pd.DataFrame) -> tuple[float, float, int]:
    """Share of counterfactuals (rows of a ``counterfactuals.csv``) whose every categorical
    group (``cf_<column>=<level>`` columns) is one-hot, over all and over valid ones (p >= 0.5),
    and the number of rows."""
    groups: dict[str, list[str]] = {}
    for c in frame.columns:
        if c.startswith("cf_") and "=" in c:
            groups.setdefault(c[3:].split("=", 1)[0], []).append(c)
    ok = pd.Series(True, index=frame.index)
    for cols in groups.values():
        block = frame[cols]
        ok &= block.isin([0.0, 1.0]).all(axis=1) & (block.sum(axis=1) == 1)
    valid = frame["valid_05"].astype(bool)
    return float(ok.mean()), float(ok[valid].mean()) if valid.any() else float("nan"), len(frame)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="adult,credit")
    ap.add_argument("--runs", type=int, default=10, help="protocol runs (paper: 100)")
    ap.add_argument("--out", default="results/categorical")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "results"), help="where the CSVs go")
    ap.add_argument("--skip-train", action="store_true", help="reuse the models in OUT")
    args = ap.parse_args(argv)
    out, docs = Path(args.out).resolve(), Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    summary, shares, seconds = [], [], {}
    for variant, extra in VARIANTS.items():
        dest = out / variant
        cmd = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--datasets",
               args.datasets, "--runs", str(args.runs), "--out", str(dest), *extra]  # fmt: skip
        if args.skip_train:
            cmd.append("--skip-train")
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        seconds[variant] = round(time.perf_counter() - t0)
        with (dest / "summary.csv").open() as f:
            summary += [{"variant": variant, **row} for row in csv.DictReader(f)]
        for ds in args.datasets.split(","):
            for suffix, setting in SETTINGS.items():
                for model in ("ct", "bl"):
                    path = dest / f"{ds}{suffix}" / "compare" / model / "counterfactuals.csv"
                    share, share_valid, n = onehot_share(pd.read_csv(path))
                    shares.append({"variant": variant, "data": ds, "setting": setting,
                                   "model": model.upper(), "onehot": round(share, 4),
                                   "onehot_valid": round(share_valid, 4), "n": n})  # fmt: skip
    pd.DataFrame(summary).to_csv(docs / "categorical_summary.csv", index=False)
    pd.DataFrame(shares).to_csv(docs / "categorical_onehot.csv", index=False)
    print(pd.DataFrame(summary).to_string(index=False))
    print()
    print(pd.DataFrame(shares).to_string(index=False))
    print(f"\nwall time (s): {seconds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
