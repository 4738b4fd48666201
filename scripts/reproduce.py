"""Reproduce the paper's main results with ct: one command for all datasets or a few.

For each dataset it trains CT and its vanilla twin with the paper's final hyperparameters through
``ct-sweep`` (tracked in MLflow), once unconstrained (``configs/paper/final/<ds>.yaml``: the IP and
IP* columns) and once with the protected feature immutable
(``configs/paper/final/<ds>_mutability.yaml``: the cost column), then runs ``ct compare`` on each
pair and writes the paper-style table to ``OUT/summary.md`` / ``OUT/summary.csv``.

    .venv/bin/python scripts/reproduce.py                          # all nine datasets, 100 runs
    .venv/bin/python scripts/reproduce.py --datasets moons,over --runs 20
    .venv/bin/python scripts/reproduce.py --address auto           # on a running Ray cluster

``--epochs`` / ``--runs`` / ``--individuals`` scale the protocol down; the defaults are the paper's
(100 epochs, 100 runs, 250 individuals for synthetic data, 100 tabular, 25 MNIST).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FINAL = ROOT / "configs" / "paper" / "final"
DATASETS = ["lin_sep", "circles", "moons", "over", "adult", "california", "credit", "gmsc", "mnist"]
PAPER = {"lin_sep": "LS", "circles": "Circ", "moons": "Moon", "over": "OL", "adult": "Adult",
         "california": "CH", "credit": "Cred", "gmsc": "GMSC", "mnist": "MNIST"}  # fmt: skip
INDIVIDUALS = {"adult": 100, "california": 100, "credit": 100, "gmsc": 100, "mnist": 25}
BIN = Path(sys.executable).parent
# the `ct` console script, or the module where the project is on the path but not installed
CT = [str(BIN / "ct")] if (BIN / "ct").exists() else [sys.executable, "-m", "ct_core.cli"]


def run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), flush=True)
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}); see {log}")


def export_models(run_dir: Path, dest: Path) -> dict[str, Path]:
    """Copy the final model of each objective found under a sweep's run directory to
    ``dest/<objective>/model.pt`` (the layout ``ct compare`` reads)."""
    best: dict[str, tuple[float, Path]] = {}
    for p in run_dir.rglob("*.pt"):
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:
            continue
        if not isinstance(blob, dict) or "state_dict" not in blob or "config" not in blob:
            continue
        obj = blob["config"]["train"]["objective"]
        mtime = p.stat().st_mtime
        if obj not in best or mtime > best[obj][0]:
            best[obj] = (mtime, p)
    out = {}
    for obj, (_, p) in best.items():
        d = dest / obj
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, d / "model.pt")
        out[obj] = d
    return out


def read_comparison(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {(r["metric"], r["setting"]): r for r in csv.DictReader(f)}  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default="all", help="comma-separated, or 'all'")
    ap.add_argument("--out", default="results/paper", help="output directory")
    ap.add_argument("--runs", type=int, default=100, help="protocol runs (paper: 100)")
    ap.add_argument("--individuals", type=int, help="individuals per run (default: the paper's)")
    ap.add_argument("--epochs", type=int, help="training epochs (default: the configs' 100)")
    ap.add_argument("--address", help="Ray cluster address for ct-sweep (default: embedded)")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default: local store per sweep)")
    ap.add_argument("--skip-train", action="store_true", help="reuse models already in OUT")
    ap.add_argument(
        "--trainer",
        choices=["sweep", "local"],
        default="sweep",
        help="sweep: train through ct-sweep, tracked in MLflow (default); local: `ct train` "
        "each setting in turn (no Ray or MLflow needed)",
    )
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train.device for training")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training-config field of every model (repeatable), e.g. "
        "data.keep_onehot=false; `ct compare` reads it from the CT model's config",
    )
    ap.add_argument("--jobs", type=int, default=1, help="--trainer local: settings trained at once")
    ap.add_argument(
        "--filter",
        choices=["0.5", "tau"],
        default="0.5",
        help="valid counterfactuals: p >= 0.5 as the reference's aggregation (default) or p >= tau_eval",
    )
    ap.add_argument(
        "--ablation",
        action="store_true",
        help="instead: train full / energy (CD) / adversarial (AR) / vanilla and compare each "
        "with vanilla (IP, IP*): OUT/ablation.md",
    )
    args = ap.parse_args(argv)

    names = DATASETS if args.datasets == "all" else args.datasets.split(",")
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        ap.error(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "reproduce.log"
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv, "timings": {},
            "torch": torch.__version__}  # fmt: skip
    if args.ablation:
        return ablation(names, out, args, log, meta)
    rows = []
    for ds in names:
        t0 = time.perf_counter()
        dirs = {}
        for variant in ("", "_mutability"):
            key = f"{ds}{variant}"
            sweep_dir = out / key / "sweep"
            if not args.skip_train:
                train_sweep(FINAL / f"{key}.yaml", sweep_dir, args, log)
            models = export_models(sweep_dir, out / key / "models")
            if not {"full", "vanilla"} <= set(models):
                sys.exit(f"{key}: could not find both trained models under {sweep_dir}")
            cmp_dir = out / key / "compare"
            ind = args.individuals or INDIVIDUALS.get(ds, 250)
            cmd = [*CT, "compare", str(models["full"]), str(models["vanilla"]),
                   "--out", str(cmp_dir), "--runs", str(args.runs), "--individuals", str(ind),
                   "--setting", "plausibility" if not variant else "cost", "--quiet",
                   "--filter", args.filter]  # fmt: skip
            if variant:
                cmd += ["--ig-rounds", "100"]
            else:
                cmd += ["--ig-rounds", "0"]
            run(cmd, log)
            dirs[variant or "plain"] = cmp_dir
        meta["timings"][ds] = round(time.perf_counter() - t0, 1)
        plain = read_comparison(dirs["plain"] / "comparison.csv")
        cost = read_comparison(dirs["_mutability"] / "comparison.csv")
        s_ct = json.loads((dirs["plain"] / "ct" / "summary.json").read_text())
        s_bl = json.loads((dirs["plain"] / "bl" / "summary.json").read_text())
        m_ct = json.loads((dirs["_mutability"] / "ct" / "summary.json").read_text())
        m_bl = json.loads((dirs["_mutability"] / "bl" / "summary.json").read_text())

        def cell(table, metric, setting):
            r = table.get((metric, setting))
            return r["cell"] if r else ""

        def val(table, setting):
            r = table.get(("Validity", setting)) or table.get(("Validity (cost setting)", setting))
            return f"{float(r['ct']):.2f} / {float(r['bl']):.2f}" if r else ""

        rows.append({
            "data": PAPER[ds],
            "IP (-%)": cell(plain, "IP", "plausibility"),
            "IP* (-%)": cell(plain, "IP*", "plausibility"),
            "Cost (-%), protected": cell(cost, "Cost", "cost") or "no valid CEs",
            "Validity CT / BL": val(plain, "plausibility"),
            "Acc. CT / BL": f"{s_ct['test_accuracy']:.3f} / {s_bl['test_accuracy']:.3f}",
            "IG CT / BL": _ig(m_ct) + " / " + _ig(m_bl),
            "seconds": meta["timings"][ds],
        })  # fmt: skip
        _write(out, rows, meta)
    print((out / "summary.md").read_text())
    return 0


def train_sweep(sweep: Path, dest: Path, args: argparse.Namespace, log: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    if args.trainer == "local":
        return train_local(sweep, dest, args, log)
    cmd = [str(BIN / "ct-sweep"), "run", str(sweep), "--storage", str(dest)]
    if args.epochs:
        cmd += ["--set", f"train.epochs={args.epochs}"]
    if args.device:
        cmd += ["--set", f"train.device={args.device}"]
    for item in args.set:
        cmd += ["--set", item]
    if args.address:
        cmd += ["--address", args.address]
    if args.tracking_uri:
        cmd += ["--tracking-uri", args.tracking_uri]
    run(cmd, log)


def train_local(sweep: Path, dest: Path, args: argparse.Namespace, log: Path) -> None:
    """``--trainer local``: train the sweep's settings one by one with ``ct train`` (no Ray,
    no MLflow), e.g. on a GPU machine without the sweep stack. Only grid axes are expanded."""
    import itertools

    import yaml

    from ct_core.config import dump_config, load_config, parse_override

    doc = yaml.safe_load(sweep.read_text())
    axes = {k: v for k, v in (doc.get("space") or {}).items() if isinstance(v, list)}
    extra = {"train.epochs": args.epochs} if args.epochs else {}
    if args.device:
        extra["train.device"] = args.device
    extra.update(parse_override(item) for item in args.set)
    cmds = []
    for i, values in enumerate(itertools.product(*axes.values())):
        setting = dict(zip(axes, values))
        overrides = {**(doc.get("overrides") or {}), **setting, **extra}
        cfg = load_config(sweep.parent / doc["base"], overrides)
        out = dest / f"setting_{i:03d}"
        out.mkdir(parents=True)
        dump_config(cfg, out / "train.yaml")
        cmds.append([*CT, "train", str(out / "train.yaml"), "--out", str(out), "--quiet"])
    for start in range(0, len(cmds), args.jobs):  # --jobs at a time (e.g. on one GPU)
        batch = cmds[start : start + args.jobs]
        with log.open("a") as f:
            f.write("".join("$ " + " ".join(c) + "\n" for c in batch))
            f.flush()
            procs = [
                subprocess.Popen(c, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT) for c in batch
            ]
            codes = [p.wait() for p in procs]
        if any(codes):
            sys.exit(f"ct train failed ({codes}); see {log}")


def ablation(names: list[str], out: Path, args: argparse.Namespace, log: Path, meta: dict) -> int:
    """Paper Figure "ablation": % reduction of IP and IP* of each objective against vanilla."""
    rows = []
    for ds in names:
        t0 = time.perf_counter()
        key = f"ablation_{ds}"
        if not args.skip_train:
            train_sweep(FINAL / f"{key}.yaml", out / key / "sweep", args, log)
        models = export_models(out / key / "sweep", out / key / "models")
        ind = args.individuals or INDIVIDUALS.get(ds, 250)
        row = {"data": PAPER[ds]}
        for obj, label in (("full", "CT"), ("energy", "CD"), ("adversarial", "AR")):
            cmp_dir = out / key / f"compare_{obj}"
            run([*CT, "compare", str(models[obj]), str(models["vanilla"]),
                 "--out", str(cmp_dir), "--runs", str(args.runs), "--individuals", str(ind),
                 "--setting", "plausibility", "--quiet", "--ig-rounds", "0", "--filter", args.filter,
                 "--robust-samples", "0", "--no-plots"], log)  # fmt: skip
            table = read_comparison(cmp_dir / "comparison.csv")
            for metric in ("IP", "IP*"):
                r = table.get((metric, "plausibility"))
                row[f"{metric} {label}"] = r["cell"] if r else "n/a"
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        _write(out, rows, meta, name="ablation")
    print((out / "ablation.md").read_text())
    return 0


def _ig(summary: dict) -> str:
    ig = summary.get("ig_sensitivity") or {}
    if not ig or ig.get("median") is None:
        return "n/a"
    return f"{ig['median']:.2f} [{ig['lo']:.2f}, {ig['hi']:.2f}]"


def _write(out: Path, rows: list[dict], meta: dict, name: str = "summary") -> None:
    keys = list(rows[0])
    with (out / f"{name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    sys.exit(main())
