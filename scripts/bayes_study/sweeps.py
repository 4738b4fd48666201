"""The two sweeps of the study: their files, the fixed overrides each gets from the other so that
both start from the same base, and the `ct-sweep run` commands that run them."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bayes_study import ROOT, SWEEPS

BIN = Path(sys.executable).parent


def alignment_sets(
    grid: dict[str, Any], bayes: dict[str, Any]
) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """Fixed overrides each sweep file lacks but the other sets: ``(to_grid, to_bayes)`` pairs.

    A key the receiving sweep searches, or already overrides itself, is left alone, except that
    the grid's value wins a conflict (the paper's tuning grid is the reference)."""
    g_over, b_over = dict(grid.get("overrides") or {}), dict(bayes.get("overrides") or {})
    g_space, b_space = set(grid.get("space") or {}), set(bayes.get("space") or {})
    to_bayes = [
        (k, v)
        for k, v in g_over.items()
        if k not in b_space and (k not in b_over or b_over[k] != v)
    ]
    to_grid = [
        (k, v)
        for k, v in b_over.items()
        if k not in g_space and k not in g_over and k not in b_space
    ]
    return to_grid, to_bayes


def base_differences(
    a: dict[str, Any], b: dict[str, Any], ignore: set[str]
) -> list[tuple[str, Any, Any]]:
    """``(key, a, b)`` for every dotted key whose values differ, outside ``ignore``."""
    keys = sorted((set(a) | set(b)) - ignore)
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]


def sweep_files(ds: str) -> dict[str, Path]:
    return {
        "grid": ROOT / "configs" / "paper" / f"tune_{ds}.yaml",
        "bayes": ROOT / "configs" / "bayes" / f"{ds}.yaml",
    }


def _yaml_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def sweep_commands(ds: str, out: Path, args: argparse.Namespace) -> dict[str, list[str]]:
    files = sweep_files(ds)
    raw = {k: yaml.safe_load(p.read_text()) for k, p in files.items()}
    to_grid, to_bayes = alignment_sets(raw["grid"], raw["bayes"]) if args.align else ([], [])
    extra = {
        "grid": [f"{k}={_yaml_value(v)}" for k, v in to_grid] + list(args.set_grid),
        "bayes": [f"{k}={_yaml_value(v)}" for k, v in to_bayes] + list(args.set_bayes),
    }
    if args.trials:
        extra["bayes"].append(f"search.num_samples={args.trials}")
    cmds = {}
    for kind in SWEEPS:
        cmd = [str(BIN / "ct-sweep"), "run", str(files[kind].relative_to(ROOT))]
        cmd += ["--storage", str(out / ds / kind)]
        for s in extra[kind] + list(args.set):
            cmd += ["--set", s]
        if args.num_cpus:
            cmd += ["--num-cpus", str(args.num_cpus)]
        cmds[kind] = cmd
    return cmds


def run_sweep(cmd: list[str], log: Path) -> float:
    """Run one ``ct-sweep run`` command, appending its output to ``log``; wall seconds."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}) after {wall:.0f} s; see {log}")
    print(f"  done in {wall:.0f} s", flush=True)
    return wall
