"""The CT epoch loop (paper Algorithm 1 as the authors' code runs it; reference §1.1–1.3).

Per epoch e:

1. If CT is on (objective ≠ vanilla and e > round(burnin·epochs)), one sweep of ``nce``
   counterfactuals is generated against the model *as it is at the start of the epoch*: factuals
   drawn without replacement from the training set, each target drawn uniformly among the classes
   other than the one predicted, x⁺ drawn uniformly from the target class, one batched search.
   Only converged counterfactuals are *mature*; the others are replaced by their x⁺ (zero
   contrastive term, reference §1.3). Immutable features are then protected on x⁺ (§2.2).
2. The sweep is split into contiguous, nearly equal chunks, one per mini-batch (chunk i is not
   related to the samples of batch i). Mini-batches are not shuffled unless asked.
3. Each batch minimises Eq. 1 (:mod:`ct_core.objective`); a batch whose loss is non-finite is
   skipped and counted, and an epoch in which every batch was skipped stops the run.

:class:`Trainer` owns all state, including the one random generator everything is drawn from, so
``Trainer(cfg, checkpoint=t.state_dict())`` continues exactly where ``t`` stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ct_core.config import Config, parse_config
from ct_core.constraints import protect_immutable
from ct_core.data.base import Dataset
from ct_core.generators import Generator, SearchResult, make_generator, search
from ct_core.models import build_model
from ct_core.objective import Weights, total_loss

__all__ = [
    "RECORD_KEYS",
    "CounterfactualBatch",
    "NonFiniteLossError",
    "Trainer",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "train",
]

CHECKPOINT_VERSION = 1

RECORD_KEYS = (
    "epoch", "loss", "class_loss", "div", "reg", "adv", "train_acc", "val_acc", "val_loss",
    "mature", "ce_steps", "skipped_batches", "time_search", "time_train", "time_eval", "seconds",
)  # fmt: skip
"""Keys of every per-epoch record (``train.eval_every`` adds ``ct_core.evaluation``'s
validation counterfactual metrics)."""


class NonFiniteLossError(RuntimeError):
    """Raised when every mini-batch of an epoch had a non-finite loss."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from ct_core.config import ConfigError

        raise ConfigError("train.device: 'cuda' was requested but no CUDA device is available")
    return torch.device(name)


@dataclass
class CounterfactualBatch:
    """One epoch's counterfactual sweep, ready to be chunked over mini-batches (all ``(nce, ·)``)."""

    x_cf: Tensor  # mature counterfactuals x′ (x⁺ where not mature)
    x_pos: Tensor  # target-class samples x⁺, immutables protected
    target: Tensor  # y⁺
    x_ae: Tensor  # nascent counterfactuals within the ε-ball
    y_factual: Tensor  # ground-truth labels of the factuals
    result: SearchResult
    mature: Tensor


class Trainer:
    """Counterfactual training of one configuration.

    ``data`` defaults to ``ct_core.data.load_dataset(cfg.data)``; ``checkpoint`` is a dict from
    :meth:`state_dict` to resume from. Iterate :meth:`run` to train; it yields one record of
    metrics per epoch (see docs/architecture.md) and leaves the trained model in ``.model``.
    """

    def __init__(
        self,
        cfg: Config,
        data: Dataset | None = None,
        checkpoint: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
    ):
        self.cfg = cfg
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = torch.device(device) if device else resolve_device(cfg.train.device)
        if data is None:
            from ct_core.data import load_dataset

            data = load_dataset(cfg.data)
        self.data = data.to(self.device) if data.X_train.device != self.device else data
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.model = build_model(
            cfg.model, self.data.n_features, self.data.n_classes, generator=self.rng
        ).to(self.device)
        self.optimizer = _optimizer(cfg, self.model)
        self.weights = Weights.from_config(cfg.train)
        self.needs_counterfactuals = cfg.train.objective != "vanilla"
        self._generator: Generator | None = None
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        # per-class index lists of the training set, for drawing x⁺
        y = self.data.y_train.cpu()
        order = torch.argsort(y, stable=True)
        counts = torch.bincount(y, minlength=self.data.n_classes)
        self._class_sorted = order
        self._class_counts = counts
        self._class_offsets = torch.cumsum(counts, 0) - counts
        if checkpoint is not None:
            self.load_state_dict(checkpoint)

    # ------------------------------------------------------------------ state

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = make_generator(
                self.cfg.generator,
                self.data,
                data_key=self.cfg.data.model_dump(mode="json"),
                device=self.device,
            )
        return self._generator

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimiser, random state, history, config."""
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": self.epoch,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "rng": self.rng.get_state(),
            "history": [dict(r) for r in self.history],
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {state.get('version')!r}")
        self.model.load_state_dict(state["model"])
        opt = dict(state["optimizer"])
        # a pack's checkpoint (ct_core.pack) leaves out the param groups: they follow from cfg
        opt.setdefault("param_groups", self.optimizer.state_dict()["param_groups"])
        self.optimizer.load_state_dict(opt)
        self.rng.set_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.history = [dict(r) for r in state["history"]]

    # ------------------------------------------------------------------ loop

    def run(self) -> Iterator[dict[str, float]]:
        """Train the remaining epochs, yielding one metrics record after each."""
        while self.epoch < self.cfg.train.epochs:
            record = self._train_epoch(self.epoch + 1)
            self.epoch += 1
            self.history.append(record)
            yield record

    def fit(self) -> nn.Module:
        """Train to the end and return the model."""
        for _ in self.run():
            pass
        return self.model

    def _ct_active(self, epoch: int) -> bool:
        burnin_epochs = round(self.cfg.train.burnin * self.cfg.train.epochs)
        return self.needs_counterfactuals and epoch > burnin_epochs

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        t0 = time.perf_counter()
        cfg, d = self.cfg, self.data
        X, y = d.X_train, d.y_train
        n = X.shape[0]
        if cfg.train.shuffle:
            order = torch.randperm(n, generator=self.rng).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        batches = order.split(cfg.train.batch_size)
        nb = len(batches)

        ces: CounterfactualBatch | None = None
        chunks: tuple[Tensor, ...] = ()
        if self._ct_active(epoch):
            self.model.eval()
            ces = self.counterfactuals(max(cfg.train.nce, nb))
            chunks = torch.arange(ces.x_cf.shape[0], device=self.device).tensor_split(nb)
        t_search = time.perf_counter() - t0

        self.model.train()
        sums = {"loss": 0.0, "class_loss": 0.0, "div": 0.0, "reg": 0.0, "adv": 0.0}
        skipped = 0
        for i, idx in enumerate(batches):
            kw: dict[str, Tensor] = {}
            if ces is not None:
                c = chunks[i]
                kw = dict(
                    x_cf=ces.x_cf[c],
                    x_pos=ces.x_pos[c],
                    target=ces.target[c],
                    x_ae=ces.x_ae[c],
                    y_factual=ces.y_factual[c],
                )
            loss, terms = total_loss(self.model, X[idx], y[idx], self.weights, **kw)
            if not torch.isfinite(loss):
                skipped += 1
                continue
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            sums["loss"] += float(loss.detach())
            for k, v in terms.items():
                sums[k] += float(v)
        if skipped == nb:
            raise NonFiniteLossError(
                f"epoch {epoch}: the loss was non-finite (NaN/Inf) in all {nb} mini-batches; "
                "the run cannot continue (try a smaller train.lr or a larger train.lambda_reg)"
            )
        t_train = time.perf_counter() - t0 - t_search

        done = nb - skipped
        rec: dict[str, float] = {"epoch": float(epoch)}
        rec.update({k: v / done for k, v in sums.items()})
        rec.update(self._accuracy())
        rec["mature"] = float(ces.mature.float().mean()) if ces is not None else math.nan
        rec["ce_steps"] = float(ces.result.steps.float().mean()) if ces is not None else math.nan
        rec["skipped_batches"] = float(skipped)
        t_eval0 = time.perf_counter()
        k = cfg.train.eval_every
        if k and (epoch % k == 0 or epoch == cfg.train.epochs):
            from ct_core.evaluation import validation_metrics

            self.model.eval()
            # the same validation points and targets at every epoch and for every setting (its
            # own generator, seeded with evaluation.seed): a selection metric comparable across
            # a sweep, and a model that does not depend on eval_every
            rec.update(validation_metrics(self.model, d, cfg))
        rec["time_search"] = t_search
        rec["time_train"] = t_train
        rec["time_eval"] = time.perf_counter() - t_eval0
        rec["seconds"] = time.perf_counter() - t0
        return rec

    @torch.no_grad()
    def _accuracy(self) -> dict[str, float]:
        self.model.eval()
        d = self.data
        out = {}
        for split in ("train", "val"):
            X, y = d.split(split)
            if X.shape[0] == 0:
                out[f"{split}_acc"] = math.nan
                continue
            logits = self.model(X)
            out[f"{split}_acc"] = float((logits.argmax(1) == y).float().mean())
            if split == "val":
                out["val_loss"] = float(F.cross_entropy(logits, y))
        return out

    # ------------------------------------------------------------------ counterfactuals

    def counterfactuals(self, nce: int) -> CounterfactualBatch:
        """One sweep of ``nce`` counterfactuals against the current model (reference §1.2)."""
        cfg, d, g = self.cfg, self.data, self.rng
        X, y = d.X_train, d.y_train
        n, k = X.shape[0], d.n_classes
        if nce <= n:
            idx = torch.randperm(n, generator=g)[:nce]
        else:
            idx = torch.randint(n, (nce,), generator=g)
        idx = idx.to(self.device)
        x0, y0 = X[idx], y[idx]
        with torch.no_grad():
            pred = self.model(x0).argmax(1).cpu()
        # y⁺ uniform over the classes other than the predicted one
        r = torch.randint(k - 1, (nce,), generator=g)
        target = r + (r >= pred).long()
        # x⁺ uniform (with replacement) from the target class of the training data
        counts = self._class_counts[target]
        u = torch.rand(nce, generator=g)
        pick = self._class_offsets[target] + (u * counts).long().clamp_max(counts - 1).clamp_min(0)
        pos_idx = self._class_sorted[pick].to(self.device)
        x_pos = X[pos_idx]
        target = target.to(self.device)
        if (counts == 0).any():
            # a class absent from the training data: keep the pair but make it inert
            x_pos = torch.where((counts == 0).to(self.device)[:, None], x0, x_pos)

        gc, tc = cfg.generator, cfg.train
        res = search(
            self.model,
            x0,
            target,
            self.generator,
            T=gc.T,
            tau=gc.tau,
            lr=gc.lr,
            domain=d.domain,
            mutability=d.mutability,
            epsilon=tc.epsilon,
            epsilon_norm=tc.epsilon_norm,
            epsilon_strict=tc.epsilon_strict,
        )
        mature = res.converged
        if tc.mature == "converged_or_exhausted":
            mature = mature | res.exhausted
        x_cf = torch.where(mature[:, None], res.x_cf, x_pos)
        x_pos = protect_immutable(x_cf, x_pos, d.mutability)
        return CounterfactualBatch(x_cf, x_pos, target, res.x_ae, y0, res, mature)


def _optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr)
    return torch.optim.Adam(model.parameters(), lr=t.lr, amsgrad=t.optimizer == "amsgrad")


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def train(
    cfg: Config, data: Dataset | None = None, checkpoint: dict[str, Any] | None = None
) -> Iterator[dict[str, float]]:
    """Convenience generator: ``for record in train(cfg): ...`` (see :class:`Trainer`)."""
    yield from Trainer(cfg, data=data, checkpoint=checkpoint).run()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a :meth:`Trainer.state_dict` atomically."""
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(p)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    parse_config(state["config"])  # fails loudly on a checkpoint from an incompatible schema
    return state
