"""``ct``: train one configuration, evaluate trained models, compare CT with its vanilla twin.

``ct train CONFIG.yaml [--set k=v ...] --out DIR`` writes ``config.yaml``, ``model.pt``,
``history.csv``, ``metrics.json`` (and ``checkpoint.pt`` every ``train.checkpoint_every`` epochs;
``--resume`` continues from it). Bad input exits with code 2 and one message per problem.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ct_core.config import ConfigError, dump_config, load_config

__all__ = ["main"]


def _finite(v: float) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def write_history(history: list[dict[str, float]], path: Path) -> None:
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in history:
            w.writerow({k: (int(v) if k == "epoch" else v) for k, v in r.items()})


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ct_core.data import load_dataset
    from ct_core.models import save_model
    from ct_core.training import Trainer, load_checkpoint, save_checkpoint

    cfg = load_config(args.config, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    checkpoint = None
    if args.resume:
        if not ckpt_path.exists():
            raise ConfigError(f"--resume: no checkpoint.pt in {out}")
        checkpoint = load_checkpoint(ckpt_path)
        if checkpoint["config"] != cfg.to_dict():
            raise ConfigError(
                f"--resume: the config differs from the one {ckpt_path} was trained with"
            )
    data = load_dataset(cfg.data)
    dump_config(cfg, out / "config.yaml")
    trainer = Trainer(cfg, data=data, checkpoint=checkpoint)
    t0 = time.perf_counter()
    k = cfg.train.checkpoint_every
    bar = tqdm(
        total=cfg.train.epochs,
        initial=trainer.epoch,
        desc=f"ct train {cfg.data.name}/{cfg.train.objective}",
        unit="epoch",
        disable=args.quiet,
        file=sys.stderr,
    )
    with bar:
        for rec in trainer.run():
            bar.update(1)
            bar.set_postfix(
                loss=f"{rec['loss']:.3f}", val_acc=f"{rec['val_acc']:.3f}", mature=rec["mature"]
            )
            write_history(trainer.history, out / "history.csv")
            if k and trainer.epoch % k == 0:
                save_checkpoint(trainer.state_dict(), ckpt_path)
    save_checkpoint(trainer.state_dict(), ckpt_path)
    save_model(
        trainer.model.cpu(),
        cfg,
        out / "model.pt",
        n_features=data.n_features,
        n_classes=data.n_classes,
        feature_names=list(data.feature_names),
    )
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(data.X_test.cpu())
    from sklearn.metrics import f1_score

    pred = logits.argmax(1).numpy()
    yt = data.y_test.cpu().numpy()
    last = trainer.history[-1] if trainer.history else {}
    metrics = {
        "test_acc": float((pred == yt).mean()),
        "test_f1": float(f1_score(yt, pred, average="macro")),
        "epochs": trainer.epoch,
        "seconds": time.perf_counter() - t0,
        "seconds_per_epoch": (
            sum(r["seconds"] for r in trainer.history) / max(len(trainer.history), 1)
        ),
        **{f"final_{k2}": _finite(v) for k2, v in last.items() if k2 != "epoch"},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if not args.quiet:
        print(
            f"trained {cfg.data.name} ({cfg.train.objective}) for {trainer.epoch} epochs in "
            f"{metrics['seconds']:.1f}s: test accuracy {metrics['test_acc']:.3f}; wrote {out}/"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ct", description="Counterfactual Training")
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
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
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
