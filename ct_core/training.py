"""The CT epoch loop (the paper's Algorithm 1 as the authors' code runs it), for K settings at once.

Per epoch e, for every setting:

1. If CT is on (objective ≠ vanilla and e > round(burnin·epochs)), one sweep of ``nce``
   counterfactuals is generated against the model as it is at the start of the epoch, and split
   into one chunk per mini-batch (:mod:`ct_core.counterfactuals`).
2. Each mini-batch minimises Eq. 1 (:mod:`ct_core.objective`) on the batch and its chunk of
   pairs. Mini-batches are not shuffled unless asked (``train.shuffle``).
3. A batch whose loss is non-finite is skipped and counted; an epoch in which every batch was
   skipped ends the setting (its record says why, ``failed``).

:class:`PackTrainer` trains K settings that share data, model architecture and the epoch loop's
shape (:func:`ct_core.packability.check_packable`) as one computation: the K models are one
:class:`~ct_core.stack.ModelStack`, an epoch's K sweeps one search, each mini-batch one
forward/backward and one masked step of :class:`~ct_core.optim.StackedOptimizer`. Each setting
owns a ``torch.Generator`` seeded with its ``seed`` that everything of that setting is drawn
from, in the same order whatever the pack, so a pack of K reproduces K runs of one within float
rounding. :class:`Trainer` is the view of a pack of one. All state is in
:meth:`PackTrainer.state_dicts` (one checkpoint per setting, the same format for a pack of one):
``PackTrainer(cfgs, checkpoints=t.state_dicts())`` continues exactly where ``t`` stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ct_core.config import Config, ConfigError, parse_config
from ct_core.counterfactuals import Pairs, counterfactual_pairs
from ct_core.data.base import Dataset
from ct_core.files import short_error
from ct_core.generators import make_generator
from ct_core.generators.base import Generator
from ct_core.models import build_model, check_model
from ct_core.objective import Weights, ct_loss
from ct_core.optim import StackedOptimizer
from ct_core.packability import check_packable
from ct_core.stack import ModelStack

__all__ = [
    "CHECKPOINT_VERSION",
    "RECORD_KEYS",
    "NonFiniteLossError",
    "PackTrainer",
    "Trainer",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
]

CHECKPOINT_VERSION = 1

RECORD_KEYS = (
    "epoch", "loss", "class_loss", "div", "reg", "adv", "train_acc", "val_acc", "val_loss",
    "mature", "ce_steps", "skipped_batches", "time_search", "time_train", "time_eval", "seconds",
)  # fmt: skip
"""Keys of every per-epoch record (``train.eval_every`` adds ``ct_core.evaluation``'s
validation counterfactual metrics; a setting's last record has ``failed`` if it failed)."""

TERMS = ("loss", "class_loss", "div", "reg", "adv")


class NonFiniteLossError(RuntimeError):
    """Raised by :class:`Trainer` when every mini-batch of an epoch had a non-finite loss."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' was requested but no CUDA device is available")
    return torch.device(name)


class PackTrainer:
    """Counterfactual training of K settings at once (see the module docstring).

    ``data`` defaults to ``load_dataset(cfgs[0].data)`` (a dataset given gets the configs'
    mutability constraints where it has none); ``checkpoints`` are K
    :meth:`state_dicts` (all at the same epoch) to resume from; ``models`` K modules to train
    (default: built from each ``cfg.model`` and ``seed``), updated in place by :meth:`models`.
    Iterate :meth:`run` to train: one list of K records per epoch, ``None`` for a setting that
    failed before. Records' ``time_*``/``seconds`` are the pack's wall time divided by the number
    of live settings.
    """

    def __init__(
        self,
        cfgs: Sequence[Config],
        data: Dataset | None = None,
        checkpoints: Sequence[dict[str, Any]] | None = None,
        device: str | torch.device | None = None,
        models: Sequence[nn.Module] | None = None,
    ):
        check_packable(cfgs)
        self.cfgs = list(cfgs)
        c0 = self.cfgs[0]
        self.K = K = len(self.cfgs)
        if c0.train.threads:
            torch.set_num_threads(max(c.train.threads for c in self.cfgs))
        self.device = torch.device(device) if device else resolve_device(c0.train.device)
        if data is None:
            from ct_core.data import load_dataset

            data = load_dataset(c0.data)
        else:  # a dataset built by hand gets the config's constraints
            from ct_core.data.preprocess import with_constraints

            data = with_constraints(data, c0.data)
        self.data = d = data.to(self.device) if data.X_train.device != self.device else data
        self.rngs = [torch.Generator().manual_seed(c.seed) for c in self.cfgs]
        if models is None:
            built = [
                build_model(c.model, d.n_features, d.n_classes, generator=g, seed=c.seed)
                for c, g in zip(self.cfgs, self.rngs)
            ]
            self._modules: list[nn.Module | None] = [None] * K
        else:
            if len(models) != K:
                raise ValueError(f"expected {K} models, got {len(models)}")
            for m in models:
                check_model(m, d.n_features, d.n_classes)
            built, self._modules = list(models), list(models)
        self.stack = ModelStack(built, self.device)
        self.optimizer = StackedOptimizer(
            self.stack.flat, c0.train.optimizer, c0.train.lr, self.stack.sizes
        )
        self.weights = Weights.from_configs([c.train for c in self.cfgs], self.device)
        self._generator: Generator | None = None
        self._cpu = self.device.type == "cpu"
        # the labels of the unshuffled batches, as the class loss reads them
        bs = c0.train.batch_size
        self._labels = [yb.expand(K, -1).contiguous() for yb in d.y_train.split(bs)]
        self.epoch = 0
        self.histories: list[list[dict[str, Any]]] = [[] for _ in range(K)]
        self.failed: list[str | None] = [None] * K
        if checkpoints is not None:
            self.load_state_dicts(checkpoints)

    # ------------------------------------------------------------------ models and state

    @property
    def generator(self) -> Generator:
        """The K settings' search generator (REVISE fits or loads its VAE on first use)."""
        if self._generator is None:
            self._generator = make_generator(
                [c.generator for c in self.cfgs],
                self.data,
                data_key=self.cfgs[0].data.model_dump(mode="json"),
                device=self.device,
            )
        return self._generator

    def models(self) -> list[nn.Module]:
        """The K trained models as ordinary modules in evaluation mode (the modules given to
        the trainer, with the trained weights written into them)."""
        self._modules = [self.stack.module(k, into=m) for k, m in enumerate(self._modules)]
        return list(self._modules)  # type: ignore[arg-type]

    def state_dicts(self) -> list[dict[str, Any]]:
        """K checkpoints: weights (the module's ``state_dict()``), optimiser state
        (``torch.optim`` form without ``param_groups``), random state, history, config; a failed
        setting's also has ``failed``."""
        out = []
        for k, c in enumerate(self.cfgs):
            sd: dict[str, Any] = {
                "version": CHECKPOINT_VERSION,
                "epoch": self.epoch,
                "model": self.stack.state_dict(k),
                "optimizer": self.optimizer.state_dict(k, self.stack.shapes),
                "rng": self.rngs[k].get_state(),
                "history": [dict(r) for r in self.histories[k]],
                "config": c.to_dict(),
            }
            if self.failed[k] is not None:
                sd["failed"] = self.failed[k]
            out.append(sd)
        return out

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        if len(states) != self.K:
            raise ValueError(f"expected {self.K} checkpoints, got {len(states)}")
        epochs = {int(s["epoch"]) for s in states}
        if len(epochs) != 1:
            raise ValueError(f"checkpoints of one pack must share the epoch, got {sorted(epochs)}")
        for k, s in enumerate(states):
            if s.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"unsupported checkpoint version {s.get('version')!r}")
            self.stack.load_state_dict(k, s["model"])
            self.optimizer.load_state_dict(k, s["optimizer"])
            self.rngs[k].set_state(s["rng"])
            self.histories[k] = [dict(r) for r in s["history"]]
            self.failed[k] = s.get("failed")
        self.optimizer.sync_uniform()
        self.epoch = epochs.pop()

    # ------------------------------------------------------------------ loop

    def run(self) -> Iterator[list[dict[str, Any] | None]]:
        """Train the remaining epochs, yielding K records (``None`` for failed settings)."""
        epochs = self.cfgs[0].train.epochs
        while self.epoch < epochs and any(f is None for f in self.failed):
            records = self._train_epoch(self.epoch + 1)
            self.epoch += 1
            for k, r in enumerate(records):
                if r is not None:
                    self.histories[k].append(r)
            yield records

    def fit(self) -> list[nn.Module]:
        """Train to the end and return the K models."""
        for _ in self.run():
            pass
        return self.models()

    def counterfactuals(self, rows: Sequence[int], nces: Sequence[int]) -> Pairs:
        """One sweep of ``nces[j]`` counterfactuals for each setting ``rows[j]`` against the
        models as they are (drawing from those settings' generators)."""
        self.stack.train(False)
        return counterfactual_pairs(
            self.stack, self.data, self.cfgs, self.rngs, rows, nces, self.generator
        )

    def _ct_active(self, k: int, epoch: int) -> bool:
        t = self.cfgs[k].train
        return t.objective != "vanilla" and epoch > round(t.burnin * t.epochs)

    def _batches(self, alive: list[bool]) -> tuple[list[Tensor], Tensor | None]:
        """The mini-batches' row indices, and the settings' row orders ``(K, n)`` where some
        setting shuffles (each draws its permutation first in its epoch, alone or packed)."""
        n, dev = self.data.X_train.shape[0], self.device
        batches = list(torch.arange(n, device=dev).split(self.cfgs[0].train.batch_size))
        if not any(c.train.shuffle for c in self.cfgs):
            return batches, None
        orders = [
            torch.randperm(n, generator=g) if c.train.shuffle and ok else torch.arange(n)
            for c, g, ok in zip(self.cfgs, self.rngs, alive)
        ]
        return batches, torch.stack(orders).to(dev)

    def _train_epoch(self, epoch: int) -> list[dict[str, Any] | None]:
        t0 = time.perf_counter()
        d, K, dev = self.data, self.K, self.device
        X, y = d.X_train, d.y_train
        alive = [f is None for f in self.failed]
        alive_t = torch.tensor(alive, device=dev)
        batches, orders = self._batches(alive)
        nb = len(batches)
        A = [k for k in range(K) if alive[k] and self._ct_active(k, epoch)]
        pairs = self.counterfactuals(A, [max(self.cfgs[k].train.nce, nb) for k in A]) if A else None
        ces = pairs.chunks(K, nb) if pairs is not None else None
        t_search = time.perf_counter() - t0

        w = self.weights
        use_adv = pairs is not None and bool((w.adv[pairs.rows] > 0).any())
        self.stack.train(True)
        logs: list[Tensor] = []  # per batch (5, K): loss, class, div, reg, adv
        oks: list[Tensor] = []
        for i, idx in enumerate(batches):
            rows = idx if orders is None else orders[:, idx]
            xb = X[rows]  # (B, D) shared, or (K, B, D)
            yb = self._labels[i] if orders is None else y[rows]  # (K, B)
            with torch.enable_grad():
                if ces is None:
                    loss, terms = ct_loss(self.stack(xb), yb, w)
                else:  # one forward over the batch and its chunk of pairs, all K at once
                    parts = [xb.expand(K, -1, -1), ces["x_cf"][:, i], ces["x_pos"][:, i]]
                    if use_adv:
                        parts.append(ces["x_ae"][:, i])
                    logits = self.stack(torch.cat(parts, dim=1))
                    loss, terms = ct_loss(
                        logits,
                        yb,
                        w,
                        ces["target"][:, i],
                        ces["y_factual"][:, i],
                        ces["mask"][:, i],
                    )
                ok = torch.isfinite(loss) & alive_t
                # on the CPU a look at the mask is free: take the unmasked path when all is well
                all_ok = self._cpu and bool(ok.all())
                objective = loss.sum() if all_ok else torch.where(ok, loss, 0.0).sum()
                (grad,) = torch.autograd.grad(objective, self.stack.flat)
            self.optimizer.step(grad, None if all_ok else ok)
            logs.append(torch.stack([loss, *(terms[t] for t in TERMS[1:])]).detach())
            oks.append(ok)
        ok_all = torch.stack(oks)  # (nb, K)
        sums = torch.where(ok_all[:, None, :], torch.stack(logs).double(), 0.0).sum(0)
        skipped = (~ok_all & alive_t).sum(0).tolist()
        if self.optimizer.uniform_step is None:
            self.optimizer.sync_uniform()
        t_train = time.perf_counter() - t0 - t_search

        self.stack.train(False)
        acc = self._accuracy()
        sums_l = dict(zip(TERMS, sums.tolist()))
        mature = dict(zip(A, pairs.mean(pairs.mature))) if pairs is not None else {}
        steps = dict(zip(A, pairs.mean(pairs.result.steps))) if pairs is not None else {}
        records: list[dict[str, Any] | None] = []
        due: list[int] = []  # settings whose validation metrics are due this epoch
        t_eval0 = time.perf_counter()
        for k in range(K):
            if not alive[k]:
                records.append(None)
                continue
            done = nb - skipped[k]
            rec: dict[str, Any] = {"epoch": float(epoch)}
            rec.update({key: v[k] / done if done else math.nan for key, v in sums_l.items()})
            rec.update({key: v[k] for key, v in acc.items()})
            rec["mature"] = mature.get(k, math.nan)
            rec["ce_steps"] = steps.get(k, math.nan)
            rec["skipped_batches"] = float(skipped[k])
            if done == 0:
                self.failed[k] = rec["failed"] = (
                    f"epoch {epoch}: the loss was non-finite (NaN/Inf) in all {nb} mini-batches; "
                    "the run cannot continue (try a smaller train.lr or a larger train.lambda_reg)"
                )
            else:
                every = self.cfgs[k].train.eval_every
                if every and (epoch % every == 0 or epoch == self.cfgs[k].train.epochs):
                    due.append(k)
            records.append(rec)
        if due:
            from ct_core.evaluation import pack_validation_metrics

            # the same validation points and targets at every epoch and for every setting (its
            # own generator, seeded with evaluation.seed): a selection metric comparable across
            # a sweep, and a model that does not depend on eval_every
            cfgs = [self.cfgs[k] for k in due]
            rngs = [torch.Generator().manual_seed(c.evaluation.seed) for c in cfgs]
            metrics = pack_validation_metrics(self.stack.forward_fn(due), d, cfgs, rngs)
            for k, m in zip(due, metrics):
                records[k].update(m)  # type: ignore[union-attr]
        t_eval = time.perf_counter() - t_eval0
        total, n_alive = time.perf_counter() - t0, max(sum(alive), 1)
        for rec in records:
            if rec is not None:
                rec["time_search"] = t_search / n_alive
                rec["time_train"] = t_train / n_alive
                rec["time_eval"] = t_eval / n_alive
                rec["seconds"] = total / n_alive
        return records

    @torch.no_grad()
    def _accuracy(self) -> dict[str, list[float]]:
        d, K = self.data, self.K
        out: dict[str, list[float]] = {}
        for split in ("train", "val"):
            X, y = d.split(split)
            if X.shape[0] == 0:
                out[f"{split}_acc"] = [math.nan] * K
                continue
            logits = self.stack(X)
            out[f"{split}_acc"] = (logits.argmax(-1) == y).float().mean(1).tolist()
            if split == "val":
                ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(K), reduction="none")
                out["val_loss"] = ce.view(K, -1).mean(1).tolist()
        return out


class Trainer:
    """Counterfactual training of one configuration: the view of a :class:`PackTrainer` of one.

    ``data`` defaults to ``ct_core.data.load_dataset(cfg.data)``; ``checkpoint`` is a dict from
    :meth:`state_dict` to resume from; ``model`` a module to train (default: built from
    ``cfg.model``). Iterate :meth:`run` to train; it yields one record per epoch (see
    docs/architecture.md) and raises :class:`NonFiniteLossError` for an epoch whose every batch
    was non-finite. :attr:`model` is the trained model.
    """

    def __init__(
        self,
        cfg: Config,
        data: Dataset | None = None,
        checkpoint: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        model: nn.Module | None = None,
    ):
        self.cfg = cfg
        self.pack = PackTrainer(
            [cfg],
            data,
            None if checkpoint is None else [checkpoint],
            device,
            None if model is None else [model],
        )
        self.data, self.device, self.rng = self.pack.data, self.pack.device, self.pack.rngs[0]

    @property
    def epoch(self) -> int:
        return self.pack.epoch

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.pack.histories[0]

    @property
    def model(self) -> nn.Module:
        """The model with the weights as trained so far (the same module object every time)."""
        return self.pack.models()[0]

    @property
    def generator(self) -> Generator:
        return self.pack.generator

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimiser, random state, history, config."""
        return self.pack.state_dicts()[0]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pack.load_state_dicts([state])

    def run(self) -> Iterator[dict[str, Any]]:
        """Train the remaining epochs, yielding one metrics record after each."""
        for (rec,) in self.pack.run():
            if rec is not None and "failed" in rec:
                raise NonFiniteLossError(rec["failed"])
            if rec is not None:
                yield rec

    def fit(self) -> nn.Module:
        """Train to the end and return the model."""
        for _ in self.run():
            pass
        return self.model

    def counterfactuals(self, nce: int) -> Pairs:
        """One sweep of ``nce`` counterfactuals against the current model (``(1, nce, ...)``)."""
        return self.pack.counterfactuals([0], [nce])


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a :meth:`Trainer.state_dict` atomically."""
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(p)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
        # fails loudly on a checkpoint from an incompatible schema
        parse_config(state["config"])
        for key in ("epoch", "model"):
            state[key]  # noqa: B018 - a checkpoint without them is not one of ours
    except ConfigError as e:
        raise ConfigError([f"{p}: {m}" for m in e.messages]) from None
    except Exception as e:  # truncated, empty, foreign or not a checkpoint at all
        raise ConfigError(f"{p}: not a readable ct checkpoint ({short_error(e)})") from None
    return state
