"""Does Bayesian search (Optuna TPE over T, tau, lambda_div, lambda_adv, lambda_reg) find CT
settings at least as good as the paper's tuning grid, in fewer trials?

For each dataset this runs (or, with ``--skip-run``, re-reads) two sweeps through ``ct-sweep run
... --storage DIR``:

* the paper's grid ``configs/paper/tune_<ds>.yaml`` (tau x lambda_reg x {full, vanilla} = 18)
  into ``OUT/<ds>/grid``;
* the Bayesian sweep ``configs/bayes/<ds>.yaml`` (TPE, first ``n_startup_trials`` random) into
  ``OUT/<ds>/bayes``;

then reads both runs' ``results.csv`` and writes ``OUT/<ds>/comparison.md``, ``comparison.csv``
(the best-so-far curves), ``trials.csv`` (every setting of both sweeps) and ``comparison.png``.

Fairness. Both sweeps get the same base config: by default each sweep also receives the other's
fixed ``overrides`` that it neither sets nor searches (the grid's wins on a conflict; e.g. the
grid's ``train.nce: 1000`` reaches the Bayesian sweep, whose base has 5000 for tabular data), and
``--set`` applies to both. After the runs the resolved base configs are compared key by key
outside the searched keys and any difference is printed in the report.

The metric both searches optimise is ``val_implausibility`` of the last epoch, which training
computes on ``evaluation.n_val_individuals`` (100) validation points drawn from the *trainer's*
random stream, i.e. not on the same points for every setting. So the script also re-scores every
finished setting's final model on fixed points (``--rescore``, default on): all validation points
(the same for every model; test-time ECCo, tau 0.95, T 50 as in training) and up to 1000 test
points, with test accuracy. The selected setting of each search is reported on both.

Trial order: for TPE the order in which the trials were created (Tune's experiment state), i.e.
the order TPE proposed them. For the grid any order is arbitrary, so "best after N grid trials" is
the exact expectation (and 10/90 % quantiles) of the best of N settings drawn at random without
replacement from the finished grid, by combinatorics over the sorted values.

    .venv/bin/python scripts/bayes_vs_grid.py --datasets moons --trials 60
    .venv/bin/python scripts/bayes_vs_grid.py --datasets adult --trials 40 --set train.epochs=50
    .venv/bin/python scripts/bayes_vs_grid.py --datasets moons,adult --skip-run   # re-read only

``--set KEY=VALUE`` goes to both sweeps (training-config paths such as ``train.epochs``);
``--set-grid`` / ``--set-bayes`` to one only (``search.*`` fields belong there: the grid's
``search.num_samples`` repeats the whole grid). ``--trials N`` is ``--set-bayes
search.num_samples=N``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bayes_study import METRIC, ROOT, SWEEPS  # noqa: E402
from bayes_study.report import compare, fmt  # noqa: E402
from bayes_study.sweeps import run_sweep, sweep_commands, sweep_files  # noqa: E402


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for p in ("torch", "ray", "optuna", "numpy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "?"
    try:
        out["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        out["git"] = "?"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--datasets", default="moons,adult", help="comma-separated (default: %(default)s)"
    )
    ap.add_argument(
        "--out", default="results/bayes", help="output directory (default: %(default)s)"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="both sweeps")
    ap.add_argument("--set-grid", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--set-bayes", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--trials", type=int, help="TPE trials (search.num_samples of the TPE sweep)")
    ap.add_argument("--num-cpus", type=int, help="CPUs of ct-sweep's embedded Ray")
    ap.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="do not copy each sweep's fixed overrides into the other",
    )
    ap.add_argument("--skip-run", action="store_true", help="re-read existing runs under OUT")
    ap.add_argument(
        "--no-rescore",
        dest="rescore",
        action="store_false",
        help="skip the fixed-point re-scoring of every setting's final model",
    )
    ap.add_argument(
        "--only", choices=SWEEPS, help="run only this sweep (the other must exist under OUT)"
    )
    ap.add_argument(
        "--min-validity",
        type=float,
        default=0.5,
        help="also select among settings with val_validity >= this (default: %(default)s)",
    )
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    names = [s for s in args.datasets.split(",") if s]
    missing = [n for n in names if not all(p.is_file() for p in sweep_files(n).values())]
    if missing:
        ap.error(f"no tune_<ds>.yaml / bayes/<ds>.yaml for {missing}")
    for ds in names:
        d = out / ds
        d.mkdir(parents=True, exist_ok=True)
        meta_path = d / "meta.json"
        meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        meta.setdefault("commands", {})
        meta.setdefault("wall_s", {})
        if not args.skip_run:
            cmds = sweep_commands(ds, out, args)
            for kind in SWEEPS:
                if args.only and kind != args.only:
                    continue
                if (d / kind).exists():
                    sys.exit(f"{d / kind} exists; remove it or use --skip-run")
                meta["wall_s"][kind] = round(run_sweep(cmds[kind], d / "sweeps.log"), 1)
                meta["commands"][kind] = cmds[kind]
                meta["finished_" + kind] = time.strftime("%Y-%m-%d %H:%M:%S")
                meta["versions"] = versions()
                meta_path.write_text(json.dumps(meta, indent=2))
        t0 = time.perf_counter()
        res = compare(ds, out, meta, args.rescore, args.min_validity)
        print(f"{ds}: comparison in {time.perf_counter() - t0:.0f} s -> {d / 'comparison.md'}")
        print(
            f"  grid best {fmt(res['grid_best'][METRIC] if res['grid_best'] else math.nan)}, "
            f"TPE best {fmt(res['bayes_best'][METRIC] if res['bayes_best'] else math.nan)}, "
            f"TPE trials to match: {res['to_match']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
