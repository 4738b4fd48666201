"""Reproduce the paper's tables with ct: one command per table of docs/results.md.

    # Table 1 (IP, IP*, cost with the protected feature), validity and accuracy, synthetic data
    .venv/bin/python scripts/reproduce.py --table main --datasets lin_sep,circles,moons,over \\
        --name main_synthetic --publish
    # the same for the tabular data
    .venv/bin/python scripts/reproduce.py --table main --datasets adult,california,credit,gmsc \\
        --name main_tabular --publish
    # the ablation (CT, energy only, adversarial only, each against vanilla)
    .venv/bin/python scripts/reproduce.py --table ablation --datasets adult,california,credit,gmsc \\
        --name ablation_tabular --publish

``--table main``: for each dataset, CT and its vanilla twin are trained with the paper's final
hyperparameters (``configs/paper/final/<ds>.yaml``: IP, IP*) and again with the protected feature
immutable (``<ds>_mutability.yaml``: cost), through ``ct-sweep`` (one sweep per config, tracked in
MLflow) or ``--trainer local``. ``--table ablation`` trains ``ablation_<ds>.yaml`` (full, energy,
adversarial, vanilla). ``--table study --spec configs/paper/studies/<study>.yaml`` trains CT and
vanilla for each variant of the spec and compares their cost (the experiments behind
docs/results.md's cost section).

Each model is then evaluated once with the paper's protocol (``ct_core.protocol``: the same draws
for every model of a dataset; 100 runs; 250 individuals on synthetic data, 100 on tabular, 25 on
MNIST) and each CT variant compared with vanilla (``ct_core.comparison.compare``: every metric for
each model's own counterfactuals at p ≥ 0.5 and at p ≥ τ_eval, and for the draws where both are
valid). The per-counterfactual frames stay in ``OUT/<key>/frames/`` (``--reuse`` rebuilds the CSV
from them without searching again); the summary goes to ``OUT/<name>.csv``, and with ``--publish``
to ``docs/results/<name>.csv``, after which the tables of docs/results.md that read that CSV are
re-rendered (``scripts/results_tables.py``). Wall times per dataset and in total are printed and
written to ``OUT/meta.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
FINAL = ROOT / "configs" / "paper" / "final"
DATASETS = ["lin_sep", "circles", "moons", "over", "adult", "california", "credit", "gmsc", "mnist"]
PAPER = {"lin_sep": "LS", "circles": "Circ", "moons": "Moon", "over": "OL", "adult": "Adult",
         "california": "CH", "credit": "Cred", "gmsc": "GMSC", "mnist": "MNIST"}  # fmt: skip
INDIVIDUALS = {"adult": 100, "california": 100, "credit": 100, "gmsc": 100, "mnist": 25}
BIN = Path(sys.executable).parent
CT = [str(BIN / "ct")] if (BIN / "ct").exists() else [sys.executable, "-m", "ct_core.cli"]
COLUMNS = ["dataset", "model", "metric", "setting", "population", "ct", "bl", "reduction_pct",
           "sd_pct", "ci_lo", "ci_hi", "significant", "n_runs", "cell"]  # fmt: skip


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
    ``dest/<objective>/model.pt``. Where the sweep also trains an objective without its
    immutable features (the paper's synthetic mutability grid), that model is ``<objective>@none``."""
    best: dict[str, tuple[float, Path]] = {}
    protected: set[str] = set()
    for p in run_dir.rglob("*.pt"):
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:
            continue
        if not isinstance(blob, dict) or "state_dict" not in blob or "config" not in blob:
            continue
        obj = blob["config"]["train"]["objective"]
        if blob["config"].get("data", {}).get("immutable"):
            protected.add(obj)
        else:
            obj = f"{obj}@none"
        mtime = p.stat().st_mtime
        if obj not in best or mtime > best[obj][0]:
            best[obj] = (mtime, p)
    out = {}
    for key, (_, p) in best.items():
        obj = key[: -len("@none")] if key.endswith("@none") and key[:-5] not in protected else key
        d = dest / obj
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, d / "model.pt")
        out[obj] = d
    return out


def train(sweep: Path, dest: Path, args: argparse.Namespace, log: Path) -> None:
    """Train every setting of a sweep config into ``dest`` (replacing what was there)."""
    if dest.exists():
        shutil.rmtree(dest)
    if args.trainer == "local":
        return train_local(sweep, dest, args, log)
    cmd = [str(BIN / "ct-sweep"), "run", str(sweep), "--storage", str(dest)]
    for key, value in (("train.epochs", args.epochs), ("train.device", args.device)):
        if value:
            cmd += ["--set", f"{key}={value}"]
    for item in args.set:
        cmd += ["--set", item]
    if args.address:
        cmd += ["--address", args.address]
    if args.tracking_uri:
        cmd += ["--tracking-uri", args.tracking_uri]
    run(cmd, log)


def train_local(sweep: Path, dest: Path, args: argparse.Namespace, log: Path) -> None:
    """``--trainer local``: ``ct train`` each grid setting of the sweep (no Ray, no MLflow),
    ``--jobs`` at a time (e.g. on one GPU)."""
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
        overrides = {**(doc.get("overrides") or {}), **dict(zip(axes, values)), **extra}
        cfg = load_config(sweep.parent / doc["base"], overrides)
        out = dest / f"setting_{i:03d}"
        out.mkdir(parents=True)
        dump_config(cfg, out / "train.yaml")
        cmds.append([*CT, "train", str(out / "train.yaml"), "--out", str(out), "--quiet"])
    for start in range(0, len(cmds), args.jobs):
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


# ---------------------------------------------------------------------------------- evaluation


def evaluate(
    models: dict[str, Path], settings: tuple[str, ...], frames: Path, args: argparse.Namespace,
    individuals: int, ig: bool = False, sets: list[str] | None = None, robust: bool = False,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each model through the protocol once, on the draws of the CT model's config.

    Returns per objective ``{"frame", "accuracy", "ig", "robust"}`` (``robust``: FGSM and PGD
    accuracy at ε = 0.1 on up to 2000 test points); frames are cached as parquet in
    ``frames`` (reused with ``--reuse``). ``sets``: ``KEY=VALUE`` overrides of that config."""
    from ct_core.config import apply_overrides, parse_config
    from ct_core.constraints import NONE
    from ct_core.data import load_dataset
    from ct_core.evaluation import (
        accuracy,
        integrated_gradients_sensitivity,
        predict,
        robust_accuracy_table,
    )
    from ct_core.models import load_model
    from ct_core.protocol import draw_classes, evaluate_model

    loaded = {obj: load_model(d / "model.pt") for obj, d in models.items()}
    ref = loaded.get("full", next(iter(loaded.values())))[1]  # the draws and constraints of CT
    raw = apply_overrides(ref.to_dict(), [f"evaluation.n_runs={args.runs}",
                                          f"evaluation.n_individuals={individuals}",
                                          *(sets or [])])  # fmt: skip
    cfg = parse_config(raw)
    data = load_dataset(cfg.data)
    draws = draw_classes(data.n_classes, cfg.evaluation.n_individuals, cfg.evaluation.seed)
    frames.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {}
    none = {o: _own_config(own, args, individuals) for o, (_, own) in loaded.items() if "@" in o}
    for obj, (model, _) in loaded.items():
        path = frames / f"{obj}.parquet"
        if args.reuse and path.is_file():
            frame = pd.read_parquet(path)
        else:
            c = none.get(obj, cfg)
            d = data if c is cfg else load_dataset(c.data)
            frame = evaluate_model(model, d, c, draws, settings=settings, progress=False)
            frame.to_parquet(path, index=False)
        entry: dict[str, Any] = {"frame": frame}
        entry["accuracy"] = accuracy(data.y_test, predict(model, data.X_test))
        prot = (
            []
            if data.mutability is None
            else (data.mutability == NONE).nonzero().flatten().tolist()
        )
        if ig and prot and "@" not in obj:
            entry["ig"] = integrated_gradients_sensitivity(
                model, data.X_test, data.y_test, prot, n_rounds=args.ig_rounds,
                n_samples=min(2500, data.X_test.shape[0]), n_classes=data.n_classes,
                seed=cfg.evaluation.seed,
            )  # fmt: skip
        if robust:
            n = min(2000, data.X_test.shape[0])
            g = torch.Generator().manual_seed(cfg.evaluation.seed)
            sel = torch.randperm(data.X_test.shape[0], generator=g)[:n]
            rob = robust_accuracy_table(model, data.X_test[sel], data.y_test[sel], [0.1],
                                        seed=cfg.evaluation.seed)  # fmt: skip
            entry["robust"] = dict(zip(rob["attack"], rob["accuracy"]))
        out[obj] = entry
    return out


def _own_config(own: Any, args: argparse.Namespace, individuals: int) -> Any:
    """A model's own config with the protocol's run counts (for models evaluated under their
    own constraints rather than the CT model's)."""
    from ct_core.config import apply_overrides, parse_config

    return parse_config(apply_overrides(own.to_dict(), [f"evaluation.n_runs={args.runs}",
                                                        f"evaluation.n_individuals={individuals}"]))  # fmt: skip


def comparison_rows(dataset: str, model: str, ct: dict, bl: dict, metrics: set[str]) -> list[dict]:
    """Summary rows of one CT variant against vanilla (``metrics`` keeps a subset)."""
    from ct_core.comparison import compare

    table = compare(ct["frame"], bl["frame"])
    table = table[table["metric"].isin(metrics)]
    rows = [{"dataset": dataset, "model": model, **r} for r in table.to_dict(orient="records")]
    return rows


def extra_row(dataset: str, model: str, metric: str, ct: float, bl: float, cell: str) -> dict:
    return {"dataset": dataset, "model": model, "metric": metric, "setting": "",
            "population": "", "ct": ct, "bl": bl, "cell": cell}  # fmt: skip


def _ig_text(ig: dict) -> str:
    return f"{ig['median']:.2f} [{ig['lo']:.2f}, {ig['hi']:.2f}]"


# ---------------------------------------------------------------------------------- tables

MAIN_PLAIN = {"IP", "IP*", "Cost (unconstrained)", "Validity"}
MAIN_COST = {"Cost", "Validity (cost setting)"}


def table_main(ds: str, out: Path, args: argparse.Namespace, log: Path) -> list[dict]:
    rows: list[dict] = []
    name = PAPER[ds]
    for variant, settings, keep in (("", ("plausibility",), MAIN_PLAIN),
                                    ("_mutability", ("cost",), MAIN_COST)):  # fmt: skip
        key = f"{ds}{variant}"
        folder = args.mutability_dir.resolve() if variant else FINAL
        res = _train_and_evaluate(folder / f"{key}.yaml", out / key, settings, args, log, ds,
                                  ig=bool(variant), robust=not variant)  # fmt: skip
        rows += comparison_rows(name, "full", res["full"], res["vanilla"], keep)
        if "full@none" in res and "vanilla@none" in res:
            rows += pooled_rows(name, res)
        if args.publish and ds in ("lin_sep", "circles", "moons", "over"):
            recorded = variant and args.mutability_dir.resolve() != FINAL
            figures(ds, out / key, variant, log, "_recorded" if recorded else "")
        if not variant:
            a, b = res["full"]["accuracy"], res["vanilla"]["accuracy"]
            rows.append(extra_row(name, "full", "Accuracy", a, b, f"{a:.3f} / {b:.3f}"))
            for attack in ("fgsm", "pgd"):
                a, b = res["full"]["robust"][attack], res["vanilla"]["robust"][attack]
                label = f"{attack.upper()} accuracy (eps 0.1)"
                rows.append(extra_row(name, "full", label, a, b, f"{a:.3f} / {b:.3f}"))
        elif "ig" in res["full"] and "ig" in res["vanilla"]:
            ig_ct, ig_bl = res["full"]["ig"], res["vanilla"]["ig"]
            cell = f"{_ig_text(ig_ct)} / {_ig_text(ig_bl)}"
            rows.append(extra_row(name, "full", "IG", ig_ct["median"], ig_bl["median"], cell))
    return rows


def figures(ds: str, dest: Path, variant: str, log: Path, suffix: str = "") -> None:
    """The paper's Figure 1 panels (decision regions, counterfactual paths; BL left, CT right)
    of a 2-D dataset into docs/figures/<ds>_figure1[_protected][_recorded].png, drawn by ``ct compare``
    from one protocol run of the models just evaluated."""
    models, tmp = dest / "models", dest / "figure"
    setting = "cost" if variant else "plausibility"
    run([*CT, "compare", str(models / "full"), str(models / "vanilla"), "--out", str(tmp),
         "--runs", "1", "--setting", setting, "--ig-rounds", "0", "--robust-samples", "0",
         "--quiet", "--overwrite"], log)  # fmt: skip
    name = "figure1_protected.png" if variant else "figure1.png"
    target = f"{ds}_{name[:-4]}{suffix}.png"
    shutil.copy2(tmp / name, ROOT / "docs" / "figures" / target)


def pooled_rows(name: str, res: dict) -> list[dict]:
    """The paper's cost column on synthetic data: its mutability grid trains every model with
    x1 immutable *and* without constraint, and its aggregation pools the counterfactuals of both
    (per run and λ_egy) before the CT/BL ratio. ``res`` holds both models' frames; each model
    was evaluated with its own constraint (none for ``@none``)."""
    from ct_core.comparison import compare

    def pooled(obj: str) -> pd.DataFrame:
        return pd.concat([res[obj]["frame"], res[f"{obj}@none"]["frame"]], ignore_index=True)

    table = compare(pooled("full"), pooled("vanilla"), populations=("0.5",))
    table = table[table["metric"].isin(MAIN_COST)]
    table["metric"] = table["metric"].map(
        {"Cost": "Cost (pooled as the paper)", "Validity (cost setting)": "Validity (pooled)"}
    )
    return [{"dataset": name, "model": "full", **r} for r in table.to_dict(orient="records")]


def table_ablation(ds: str, out: Path, args: argparse.Namespace, log: Path) -> list[dict]:
    key = f"ablation_{ds}"
    res = _train_and_evaluate(FINAL / f"{key}.yaml", out / key, ("plausibility",), args, log, ds)
    rows: list[dict] = []
    for obj in ("full", "energy", "adversarial"):
        rows += comparison_rows(PAPER[ds], obj, res[obj], res["vanilla"], MAIN_PLAIN)
    return rows


def table_study(variant: dict, out: Path, args: argparse.Namespace, log: Path) -> list[dict]:
    """One variant of a study (``--spec``): CT and vanilla trained from ``base`` with the
    ``train`` overrides, evaluated in the variant's ``setting`` (``cost``, the default, or
    ``plausibility``) with the ``evaluate`` overrides applied to the CT model's config (e.g. a
    constraint the models were not trained with)."""
    import yaml

    slug = "".join(c if c.isalnum() else "_" for c in variant["name"]).strip("_").lower()[:60]
    base = (args.spec.parent / variant["base"]).resolve()
    sweep = {
        "name": f"study-{slug}"[:60],
        "base": str(base),
        "overrides": variant.get("train", {}),
        "search": {"algorithm": "grid", "metric": "val_acc", "mode": "max", "max_concurrent": 2},
        "space": {"train.objective": ["full", "vanilla"]},
        "checkpoint_every": 10,
    }
    dest = out / slug
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    ds = yaml.safe_load(base.read_text())["data"]["name"]
    sets = [f"{k}={json.dumps(v)}" for k, v in (variant.get("evaluate") or {}).items()]
    setting = variant.get("setting", "cost")
    res = _train_and_evaluate(dest / "sweep.yaml", dest, (setting,), args, log, ds, sets=sets)
    keep = MAIN_COST if setting == "cost" else MAIN_PLAIN
    return comparison_rows(variant["name"], "full", res["full"], res["vanilla"], keep)


def _train_and_evaluate(sweep: Path, dest: Path, settings: tuple[str, ...],
                        args: argparse.Namespace, log: Path, ds: str, ig: bool = False,
                        sets: list[str] | None = None, robust: bool = False) -> dict:  # fmt: skip
    trained = (dest / "sweep" / "results.csv").is_file()
    if not (args.skip_train or (args.keep_trained and trained)):
        train(sweep, dest / "sweep", args, log)
    models = export_models(dest / "sweep", dest / "models")
    if "vanilla" not in models or len(models) < 2:  # fmt: skip
        sys.exit(f"{sweep.name}: could not find the trained models under {dest / 'sweep'}")
    ind = args.individuals or INDIVIDUALS.get(ds, 250)
    return evaluate(models, settings, dest / "frames", args, ind, ig=ig, sets=sets, robust=robust)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--table", choices=["main", "ablation", "study"], default="main")
    ap.add_argument("--datasets", default="all", help="comma-separated, or 'all'")
    ap.add_argument(
        "--spec", type=Path, help="--table study: a study spec (configs/paper/studies/)"
    )
    ap.add_argument("--mutability-dir", type=Path, default=FINAL,
                    help="--table main: folder of the <ds>_mutability.yaml configs (default: "
                    "configs/paper/final; configs/paper/recorded: the authors' recorded grid)")  # fmt: skip
    ap.add_argument("--name", help="summary CSV name (default: <table>)")
    ap.add_argument("--out", help="output directory (default: results/<name>)")
    ap.add_argument("--publish", action="store_true",
                    help="copy the CSV to docs/results/ and re-render docs/results.md's tables")  # fmt: skip
    ap.add_argument("--runs", type=int, default=100, help="protocol runs (paper: 100)")
    ap.add_argument("--individuals", type=int, help="individuals per run (default: the paper's)")
    ap.add_argument("--epochs", type=int, help="training epochs (default: the configs' 100)")
    ap.add_argument("--address", help="Ray cluster address for ct-sweep (default: embedded)")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default: local store per sweep)")
    ap.add_argument("--skip-train", action="store_true", help="reuse models already in OUT")
    ap.add_argument("--reuse", action="store_true", help="reuse the frames in OUT (no search)")
    ap.add_argument("--keep-trained", action="store_true",
                    help="train only the sweeps that have no results in OUT yet")  # fmt: skip
    ap.add_argument("--ig-rounds", type=int, default=100,
                    help="bootstrap rounds of the integrated-gradients sensitivity (paper: 100)")  # fmt: skip
    ap.add_argument("--trainer", choices=["sweep", "local"], default="sweep",
                    help="sweep: ct-sweep, tracked in MLflow (default); local: `ct train` each "
                    "setting (no Ray or MLflow)")  # fmt: skip
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train.device")
    ap.add_argument("--jobs", type=int, default=1, help="--trainer local: settings at once")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training-config field of every model (repeatable), e.g. "
                    "data.keep_onehot=false; `ct compare` reads it from the CT model's config")  # fmt: skip
    args = ap.parse_args(argv)

    name = args.name or args.table
    out = Path(args.out or ROOT / "results" / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "reproduce.log"
    if args.table == "study":
        import yaml

        if args.spec is None:
            ap.error("--table study needs --spec")
        args.spec = args.spec.resolve()
        items = yaml.safe_load(args.spec.read_text())["variants"]
    else:
        items = DATASETS if args.datasets == "all" else args.datasets.split(",")
        unknown = [n for n in items if n not in DATASETS]
        if unknown:
            ap.error(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    meta: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv,
                            "torch": torch.__version__, "seconds": {}}  # fmt: skip
    step = {"main": table_main, "ablation": table_ablation, "study": table_study}[args.table]
    rows: list[dict] = []
    t_all = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        rows += step(item, out, args, log)  # type: ignore[operator]
        label = item["name"] if isinstance(item, dict) else str(item)
        meta["seconds"][label] = round(time.perf_counter() - t0, 1)
        print(f"{label}: {meta['seconds'][label]} s", flush=True)
    meta["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    summary = pd.DataFrame(rows).reindex(columns=COLUMNS)
    summary.to_csv(out / f"{name}.csv", index=False, float_format="%.6g")
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    if args.publish:
        dest = ROOT / "docs" / "results" / f"{name}.csv"
        shutil.copy2(out / f"{name}.csv", dest)
        sys.path.insert(0, str(ROOT / "scripts"))
        import results_tables

        results_tables.main()
    print(summary[["dataset", "model", "metric", "population", "cell"]].to_string(index=False))
    print(f"total {meta['seconds']['total']} s; wrote {out / f'{name}.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
