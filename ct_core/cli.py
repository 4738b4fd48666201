"""``ct``: train one configuration, evaluate trained models, compare CT with its vanilla twin,
explain chosen rows.

``ct train CONFIG.yaml [--set k=v ...] [--init SOURCE] --out DIR`` trains through
:func:`ct_core.api.train` (from the weights of SOURCE with ``--init``, :mod:`ct_core.sources`) and
writes what :meth:`~ct_core.api.TrainResult.save` writes: ``config.yaml``, ``model.pt``,
``history.csv``, ``metrics.json``, ``checkpoint.pt`` (also every ``train.checkpoint_every``
epochs; ``--resume`` continues from it) and, but for images, ``encoder.json``. ``ct explain
MODEL_DIR --rows ROWS.csv --out CFS.csv`` writes a counterfactual per row
(:func:`ct_core.explain`). Bad input exits with code 2 and one message per problem, before any
training.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ct_core.config import ConfigError, load_config
from ct_core.files import (
    atomic_save,
    atomic_write_text,
    check_out_dir,
    check_out_file,
    make_out_dir,
)

__all__ = ["RESULT_FILES", "Parser", "count_type", "main"]

RESULT_FILES = (
    "config.yaml",
    "model.pt",
    "history.csv",
    "metrics.json",
    "checkpoint.pt",
    "encoder.json",
)
"""What ``ct train`` writes into ``--out``; a folder holding any of them is reused only with
``--overwrite`` or ``--resume``."""


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ct_core.api import history_frame, train
    from ct_core.data import load_dataset
    from ct_core.training import NonFiniteLossError, load_checkpoint, save_checkpoint

    cfg = load_config(args.config, args.set)
    out = Path(args.out)
    check_out_dir(out, overwrite=args.overwrite, resume=args.resume, results=RESULT_FILES)
    ckpt_path = out / "checkpoint.pt"
    checkpoint = None
    if args.resume:
        if not ckpt_path.is_file():
            raise ConfigError(f"--resume: no checkpoint.pt in {out}")
        checkpoint = load_checkpoint(ckpt_path)
        if checkpoint["config"] != cfg.to_dict():
            raise ConfigError(
                f"--resume: the config differs from the one {ckpt_path} was trained with"
            )
    data = load_dataset(cfg.data)
    if cfg.model.factory:  # a bad factory is an error before anything is written
        from ct_core.models import check_factory

        check_factory(cfg, data)
    model = None
    if args.init and not checkpoint:  # a bad source too
        from ct_core.sources import initial_model

        model = initial_model(args.init, cfg, data)
    make_out_dir(out)
    if args.overwrite and not args.resume:
        # the old results go before training starts: a run that fails leaves no mixture of
        # the old model and the new history behind
        for name in RESULT_FILES:
            (out / name).unlink(missing_ok=True)
    k = cfg.train.checkpoint_every
    bar = tqdm(
        total=cfg.train.epochs,
        initial=checkpoint["epoch"] if checkpoint else 0,
        desc=f"ct train {cfg.data.name}/{cfg.train.objective}",
        unit="epoch",
        disable=args.quiet,
        file=sys.stderr,
    )

    def progress(rec: dict, trainer: Any) -> None:
        bar.update(1)
        bar.set_postfix(
            loss=f"{rec['loss']:.3f}", val_acc=f"{rec['val_acc']:.3f}", mature=rec["mature"]
        )
        frame = history_frame(trainer.history)
        atomic_write_text(out / "history.csv", frame.to_csv(index=False))
        if k and trainer.epoch % k == 0:
            save_checkpoint(trainer.state_dict(), ckpt_path)

    try:
        with bar:
            result = train(cfg, model, [progress], data=data, checkpoint=checkpoint)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.init:
        result.metrics["init"] = args.init
    result.save(out)
    if not args.quiet:
        m = result.metrics
        print(
            f"trained {cfg.data.name} ({cfg.train.objective}) for {m['epochs']} epochs in "
            f"{m['seconds']:.1f}s: test accuracy {m['test_acc']:.3f}; wrote {out}/"
        )
    return 0


def _version() -> str:
    from importlib.metadata import version

    return f"ct {version('ct')} (torch {version('torch')})"


def cmd_explain(args: argparse.Namespace) -> int:
    from ct_core.explanation import explain

    out = check_out_file(args.out, overwrite=args.overwrite)  # before the search
    frame = explain(args.model_dir, args.rows, args.target, args.set)
    make_out_dir(out.parent)
    atomic_save(out, lambda f: frame.to_csv(f, index=False, float_format="%.6g"))
    print(
        f"{len(frame)} counterfactuals, {int(frame['valid'].sum())} valid "
        f"(p(target) >= generator.tau); wrote {args.out}"
    )
    return 0


def count_type(least: int) -> Any:
    """An ``argparse`` type: an integer >= ``least`` (otherwise one ``error:`` line, exit 2)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {least}, got {text!r}"
            ) from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {n}")
        return n

    return parse


class Parser(argparse.ArgumentParser):
    """``argparse`` that reports a bad command line as one ``error: ...`` line (exit 2), as
    every other bad input is reported, instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ct", description="Counterfactual Training")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one configuration")
    t.add_argument("config", help="training config YAML (e.g. configs/base/moons.yaml)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field by dotted path, e.g. generator.tau=0.9 (repeatable)",
    )
    t.add_argument("--out", required=True, help="output directory")
    t.add_argument(
        "--init",
        metavar="SOURCE",
        help="start from the weights of a ct model.pt or run directory, runs:/<run_id>/<path> or "
        "models:/<name>@<alias> (MLflow, as MLFLOW_TRACKING_URI names it)",
    )
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results an existing OUT holds (they are removed when training starts)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    x = sub.add_parser("explain", help="counterfactuals for chosen rows of a trained model")
    x.add_argument("model_dir", help="output directory of `ct train` (or a model.pt)")
    x.add_argument("--rows", required=True, help="CSV or parquet file in the data's columns")
    x.add_argument(
        "--target",
        help="the class to explain towards (default: per row, the most probable class other "
        "than the predicted one)",
    )
    x.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the model's config, e.g. generator.type=generic (repeatable)",
    )
    x.add_argument("--out", required=True, help="CSV file to write")
    x.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    x.set_defaults(func=cmd_explain)
    try:
        from ct_core.cli_eval import add_eval_commands
    except ImportError:  # pragma: no cover - during development only
        pass
    else:
        add_eval_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        for m in e.messages:
            print(f"error: {m}", file=sys.stderr)
        return 2

    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
