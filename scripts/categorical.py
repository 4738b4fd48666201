"""Categoricals kept one-hot in the search, before and after, on Adult and Credit
(docs/categorical.md; the table "Categoricals in the search" of docs/results.md).

    .venv/bin/python scripts/categorical.py --runs 20 --publish

Runs ``scripts/reproduce.py --table main`` twice on each dataset, with the paper's final configs
(``configs/paper/final/<ds>.yaml`` for IP and IP*, ``<ds>_mutability.yaml`` for the cost with
the protected feature): *before* with ``--set data.keep_onehot=false`` (one-hot columns searched
as continuous ones and clamped to the domain, as the authors' training does) and *after* with
the default (each categorical's group one-hot in every search). Both models of a variant are
trained with its choice, and the protocol evaluates them with the CT model's config, so the
choice holds in training and in evaluation alike.

Writes ``OUT/categorical.csv``: reproduce.py's summary rows of both variants (column
``variant``) and, per model and setting, the share of the protocol's counterfactuals whose every
categorical takes exactly one level (metric ``One-hot``; population ``all``, or ``0.5`` for the
valid ones). ``--publish`` copies it to ``docs/results/categorical.csv`` and re-renders the
tables of docs/results.md (``scripts/results_tables.py``). Each variant's models, frames and log
stay in ``OUT/<variant>/`` (``--reuse`` passes on to reproduce.py: no search again).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"before": ["--set", "data.keep_onehot=false"], "after": []}
SETTINGS = {"": "plausibility", "_mutability": "cost"}
PAPER = {"adult": "Adult", "credit": "Cred"}


def onehot_share(frame: pd.DataFrame) -> tuple[float, float, int]:
    """Share of counterfactuals (rows of a protocol frame) whose every categorical group
    (``cf_<column>=<level>`` columns) is one-hot, over all and over the valid ones (p ≥ 0.5),
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


def onehot_rows(variant: str, ds: str, dest: Path) -> list[dict]:
    rows = []
    for suffix, setting in SETTINGS.items():
        shares = {}
        for model in ("full", "vanilla"):
            frame = pd.read_parquet(dest / f"{ds}{suffix}" / "frames" / f"{model}.parquet")
            shares[model] = onehot_share(frame)
        for i, population in enumerate(("all", "0.5")):
            ct, bl = shares["full"][i], shares["vanilla"][i]
            rows.append({"variant": variant, "dataset": PAPER[ds], "model": "full",
                         "metric": "One-hot", "setting": setting, "population": population,
                         "ct": round(ct, 4), "bl": round(bl, 4), "n_runs": "",
                         "cell": f"{ct:.2f} / {bl:.2f}"})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="adult,credit")
    ap.add_argument("--runs", type=int, default=100, help="protocol runs (paper: 100)")
    ap.add_argument("--out", default=str(ROOT / "results" / "categorical"))
    ap.add_argument("--publish", action="store_true",
                    help="copy the CSV to docs/results/ and re-render docs/results.md's tables")  # fmt: skip
    ap.add_argument("--reuse", action="store_true", help="reuse models and frames in OUT")
    args = ap.parse_args(argv)
    unknown = set(args.datasets.split(",")) - set(PAPER)
    if unknown:
        ap.error(f"unknown dataset(s) {sorted(unknown)}; choose from {', '.join(PAPER)}")
    out = Path(args.out).resolve()
    rows: list[dict] = []
    seconds: dict[str, float] = {}
    for variant, extra in VARIANTS.items():
        dest = out / variant
        name = f"categorical_{variant}"
        cmd = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--table", "main",
               "--datasets", args.datasets, "--runs", str(args.runs), "--ig-rounds", "0",
               "--name", name, "--out", str(dest), *extra]  # fmt: skip
        if args.reuse:
            cmd += ["--skip-train", "--reuse"]
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        seconds[variant] = round(time.perf_counter() - t0, 1)
        summary = pd.read_csv(dest / f"{name}.csv", dtype=str, keep_default_na=False)
        rows += [{"variant": variant, **r} for r in summary.to_dict(orient="records")]
        for ds in args.datasets.split(","):
            rows += onehot_rows(variant, ds, dest)
    table = pd.DataFrame(rows)
    table.to_csv(out / "categorical.csv", index=False)
    (out / "meta.json").write_text(json.dumps({"argv": sys.argv, "seconds": seconds}, indent=2))
    if args.publish:
        shutil.copy2(out / "categorical.csv", ROOT / "docs" / "results" / "categorical.csv")
        sys.path.insert(0, str(ROOT / "scripts"))
        import results_tables

        results_tables.main()
    shown = table[table["population"].isin(["0.5", "all", ""])]
    print(shown[["variant", "dataset", "metric", "setting", "population", "cell"]].to_string())
    print(f"\nwall time (s): {seconds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
