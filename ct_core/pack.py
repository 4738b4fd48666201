"""Packed training: K CT settings trained in one process as one vectorised computation.

:class:`PackedTrainer` trains K configurations that share the data, the model architecture and
the epoch loop's shape (see :func:`pack_key`) but may differ in objective, λ's, ``nce``, burn-in,
generator (Generic/ECCo), ``T``, ``τ``, step size, generator penalties, ε and seed. REVISE settings
pack with REVISE settings only, and share the VAE (same data section and ``generator.vae_*``), so
their latent searches are one ``(K, N, z)`` search decoded by that VAE. The K classifiers are
stacked (:func:`ct_core.packed_search.stacked_forward`), one epoch's K counterfactual sweeps run as
one ``(K, N, D)`` search (:func:`ct_core.packed_search.packed_search`), and every mini-batch step
is one forward/backward over all K plus a per-setting masked optimiser step. Adam is elementwise,
so one Adam over the stacked parameters is K independent Adams (with per-setting step counts so a
setting whose loss is non-finite skips its update alone, as :class:`~ct_core.training.Trainer`
skips a batch). The validation metrics due in an epoch (``train.eval_every``) are one packed
test-time search over all those settings' validation points
(:func:`ct_core.evaluation.packed_validation_metrics`), for REVISE packs too (the test-time
generator is ECCo in feature space).

Each setting keeps its own ``torch.Generator`` seeded with its ``cfg.seed`` and draws exactly what
``Trainer`` draws, in the same order, so a pack reproduces K plain runs within float tolerance,
and :meth:`PackedTrainer.state_dicts` are ``Trainer`` checkpoints (resumable by either path).

Usage (one record list per epoch, one record per setting, ``None`` once a setting has failed)::

    pt = PackedTrainer(cfgs)
    for records in pt.run():
        for cfg, rec in zip(cfgs, records): ...
    models = pt.models()
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ct_core.config import Config
from ct_core.constraints import protect_immutable
from ct_core.data.base import Dataset
from ct_core.models import _ACTIVATIONS, build_model
from ct_core.objective import Weights
from ct_core.packability import can_pack, check_packable, generator_family, pack_key
from ct_core.packed_search import PackedSearchSpec, packed_search, stacked_forward
from ct_core.training import CHECKPOINT_VERSION, resolve_device

__all__ = ["PackedTrainer", "can_pack", "check_packable", "generator_family", "pack_key"]


class _StackedOptimizer:
    """Adam / AMSGrad / SGD over a flat ``(K, P)`` parameter matrix with a per-setting mask.

    Mirrors ``torch.optim.Adam``'s single-tensor update (bias corrections in double precision per
    setting) so each row follows the trajectory its own optimiser would; Adam is elementwise, so
    flattening K models' parameters into one matrix changes nothing.
    """

    def __init__(self, flat: Tensor, kind: str, lr: float, sizes: Sequence[int]):
        self.flat, self.kind, self.lr, self.sizes = flat, kind, lr, list(sizes)
        self.beta1, self.beta2, self.eps = 0.9, 0.999, 1e-8
        K = flat.shape[0]
        self.step_count = torch.zeros(K, dtype=torch.float64, device=flat.device)
        adam = kind in ("adam", "amsgrad")
        self.exp_avg = torch.zeros_like(flat) if adam else None
        self.exp_avg_sq = torch.zeros_like(flat) if adam else None
        self.max_sq = torch.zeros_like(flat) if kind == "amsgrad" else None
        self.uniform_step: int | None = 0

    @torch.no_grad()
    def step(self, grad: Tensor, mask: Tensor | None = None) -> None:
        """Update the rows where ``mask`` ``(K,)`` is true (all rows for ``None``)."""
        if mask is None:
            self._step_all(grad)
            return
        self.uniform_step = None
        p, mk = self.flat, mask[:, None]
        g = torch.where(mk, grad, 0.0)
        if self.kind == "sgd":
            p.copy_(torch.where(mk, p.add(g, alpha=-self.lr), p))
            return
        assert self.exp_avg is not None and self.exp_avg_sq is not None
        b1, b2 = self.beta1, self.beta2
        self.step_count += mask.to(torch.float64)
        st = self.step_count.clamp_min(1.0)
        step_size = (self.lr / (1 - b1**st)).to(p.dtype)[:, None]
        bc2_sqrt = ((1 - b2**st) ** 0.5).to(p.dtype)[:, None]
        m, v = self.exp_avg, self.exp_avg_sq
        m.copy_(torch.where(mk, m.lerp(g, 1 - b1), m))
        v.copy_(torch.where(mk, v.mul(b2).addcmul_(g, g, value=1 - b2), v))
        use = v
        if self.max_sq is not None:
            self.max_sq.copy_(torch.where(mk, torch.maximum(self.max_sq, v), self.max_sq))
            use = self.max_sq
        denom = (use.sqrt() / bc2_sqrt).add_(self.eps)
        p.copy_(torch.where(mk, p - step_size * (m / denom), p))

    def _step_all(self, g: Tensor) -> None:
        """Every row steps: ``torch.optim.Adam``'s own single-tensor arithmetic, with Python
        scalars while all rows share one step count."""
        p = self.flat
        if self.kind == "sgd":
            p.add_(g, alpha=-self.lr)
            return
        assert self.exp_avg is not None and self.exp_avg_sq is not None
        b1, b2 = self.beta1, self.beta2
        self.step_count += 1.0
        m, v = self.exp_avg, self.exp_avg_sq
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        use = v
        if self.max_sq is not None:
            torch.maximum(self.max_sq, v, out=self.max_sq)
            use = self.max_sq
        if self.uniform_step is not None:
            self.uniform_step += 1
            st = self.uniform_step
            denom = (use.sqrt() / (1 - b2**st) ** 0.5).add_(self.eps)
            p.addcdiv_(m, denom, value=-(self.lr / (1 - b1**st)))
            return
        step_size = (self.lr / (1 - b1**self.step_count)).to(p.dtype)[:, None]
        bc2_sqrt = ((1 - b2**self.step_count) ** 0.5).to(p.dtype)[:, None]
        denom = (use.sqrt() / bc2_sqrt).add_(self.eps)
        p.sub_(step_size * (m / denom))

    def sync_uniform(self) -> None:
        """Recompute whether all rows share one step count (enables the scalar fast path)."""
        lo, hi = float(self.step_count.min()), float(self.step_count.max())
        self.uniform_step = int(lo) if lo == hi else None

    def _columns(self, t: Tensor, k: int) -> list[Tensor]:
        return [c.detach().cpu().clone() for c in t[k].split(self.sizes)]

    def export(self, k: int, shapes: Sequence[torch.Size]) -> dict:
        """Row ``k``'s state in ``torch.optim`` ``state_dict`` form without ``param_groups``
        (they follow from the setting's config; :meth:`Trainer.load_state_dict` takes them from
        its own optimiser). Building a ``torch.optim`` optimiser for them would import
        ``torch._dynamo`` in every worker, about 1.5 s, at a pack's first checkpoint."""
        out: dict[str, Any] = {"state": {}}
        steps = float(self.step_count[k])
        if self.exp_avg is None or self.exp_avg_sq is None or steps == 0:
            return out
        m, v = self._columns(self.exp_avg, k), self._columns(self.exp_avg_sq, k)
        mx = self._columns(self.max_sq, k) if self.max_sq is not None else None
        for i, shape in enumerate(shapes):
            s = {
                "step": torch.tensor(steps),
                "exp_avg": m[i].view(shape),
                "exp_avg_sq": v[i].view(shape),
            }
            if mx is not None:
                s["max_exp_avg_sq"] = mx[i].view(shape)
            out["state"][i] = s
        return out

    @torch.no_grad()
    def load(self, k: int, state: dict[str, Any]) -> None:
        """Set row ``k`` from a ``torch.optim`` state dict."""
        per = state.get("state", {})
        if self.exp_avg is None or self.exp_avg_sq is None or not per:
            self.step_count[k] = 0.0
            return
        self.step_count[k] = float(per[0]["step"])
        n = len(self.sizes)
        self.exp_avg[k].copy_(torch.cat([per[i]["exp_avg"].flatten() for i in range(n)]))
        self.exp_avg_sq[k].copy_(torch.cat([per[i]["exp_avg_sq"].flatten() for i in range(n)]))
        if self.max_sq is not None:
            self.max_sq[k].copy_(torch.cat([per[i]["max_exp_avg_sq"].flatten() for i in range(n)]))


class PackedTrainer:
    """Train K compatible settings at once (see the module docstring).

    ``data`` defaults to ``load_dataset(cfgs[0].data)``; ``checkpoints`` are K
    :meth:`~ct_core.training.Trainer.state_dict`-format dicts (all at the same epoch) to resume.
    Records have :class:`~ct_core.training.Trainer`'s keys; their ``time_*``/``seconds`` are the
    pack's wall time divided by the number of live settings. A setting whose every mini-batch of
    an epoch was non-finite gets a record with ``failed`` (the reason) and ``None`` afterwards.
    """

    search_compact: float | None = None
    """``compact`` of :func:`~ct_core.packed_search.packed_search` (0: mask only, never compact;
    ``None``: 0.75 on the CPU, where it saves up to a third of a REVISE pack's time, 0 on a GPU,
    where it was measured not to pay)."""

    batch_validation: bool = True
    """Compute the validation metrics (``train.eval_every``) of all settings due in an epoch as
    one packed search (:func:`~ct_core.evaluation.packed_validation_metrics`); false: one
    :func:`~ct_core.evaluation.validation_metrics` call per setting (the path before; same
    results and random draws, kept for comparison)."""

    def __init__(
        self,
        cfgs: Sequence[Config],
        data: Dataset | None = None,
        checkpoints: Sequence[dict[str, Any]] | None = None,
        device: str | torch.device | None = None,
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
        self.data = data.to(self.device) if data.X_train.device != self.device else data
        d = self.data
        self.rngs = [torch.Generator().manual_seed(c.seed) for c in self.cfgs]
        models = [
            build_model(c.model, d.n_features, d.n_classes, generator=g)
            for c, g in zip(self.cfgs, self.rngs)
        ]
        named = list(models[0].named_parameters())
        self._names = [n for n, _ in named]
        self._shapes = [p.shape for _, p in named]
        self._sizes = [p.numel() for _, p in named]
        # all K models' parameters as one (K, P) matrix; layers are views into it
        self.flat = (
            torch.stack([torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models])
            .to(self.device)
            .requires_grad_(True)
        )
        self._act = _ACTIVATIONS[c0.model.activation]()
        self.optimizer = _StackedOptimizer(self.flat, c0.train.optimizer, c0.train.lr, self._sizes)
        w = [Weights.from_config(c.train) for c in self.cfgs]
        f32 = dict(dtype=torch.float32, device=self.device)
        self._w = {
            "class": torch.tensor([x.class_ for x in w], **f32),
            "div": torch.tensor([x.div for x in w], **f32),
            "reg": torch.tensor([x.reg for x in w], **f32),
            "adv": torch.tensor([x.adv for x in w], **f32),
        }
        self._spec = PackedSearchSpec.from_configs(self.cfgs, self.device)
        self._latent = generator_family(c0) == "latent"
        self._vae: nn.Module | None = None
        self.epoch = 0
        self.histories: list[list[dict[str, Any]]] = [[] for _ in range(K)]
        self.failed: list[str | None] = [None] * K
        y = d.y_train
        self._class_counts = torch.bincount(y, minlength=d.n_classes)
        self._class_sorted = torch.argsort(y, stable=True)
        self._class_offsets = torch.cumsum(self._class_counts, 0) - self._class_counts
        self._cpu = self.device.type == "cpu"
        bs = c0.train.batch_size
        self._y_rep = [yb.repeat(K) for yb in d.y_train.split(bs)]  # fixed batches (no shuffle)
        if checkpoints is not None:
            self.load_state_dicts(checkpoints)

    # ------------------------------------------------------------------ models and state

    def _views(self, flat: Tensor) -> list[Tensor]:
        """Per-layer ``(K, …)`` views of a ``(K, P)`` parameter matrix."""
        K = flat.shape[0]
        return [c.view(K, *s) for c, s in zip(flat.split(self._sizes, dim=1), self._shapes)]

    def forward(self, x: Tensor, flat: Tensor | None = None) -> Tensor:
        """Logits ``(K, N, C)`` of the stacked models on ``x`` ``(K, N, D)`` or ``(N, D)``."""
        return stacked_forward(self._views(self.flat if flat is None else flat), x, self._act)

    def models(self) -> list[nn.Module]:
        """K ordinary ``nn.Module``s (unstacked copies, as :func:`ct_core.models.build_model`)."""
        return [self._module(k) for k in range(self.K)]

    def _module(self, k: int) -> nn.Module:
        d = self.data
        m = build_model(self.cfgs[k].model, d.n_features, d.n_classes, generator=torch.Generator())
        m.load_state_dict(self._model_state(k))
        return m.to(self.device).eval()

    def _model_state(self, k: int) -> dict[str, Tensor]:
        cols = self.flat[k].detach().cpu().split(self._sizes)
        return {n: c.view(s).clone() for n, c, s in zip(self._names, cols, self._shapes)}

    def state_dicts(self) -> list[dict[str, Any]]:
        """K checkpoints in :meth:`Trainer.state_dict` format (a failed one carries ``failed``;
        the optimiser state has no ``param_groups``, see :meth:`_StackedOptimizer.export`)."""
        out = []
        for k, c in enumerate(self.cfgs):
            sd: dict[str, Any] = {
                "version": CHECKPOINT_VERSION,
                "epoch": self.epoch,
                "model": self._model_state(k),
                "optimizer": self.optimizer.export(k, self._shapes),
                "rng": self.rngs[k].get_state(),
                "history": [dict(r) for r in self.histories[k]],
                "config": c.to_dict(),
            }
            if self.failed[k] is not None:
                sd["failed"] = self.failed[k]
            out.append(sd)
        return out

    @torch.no_grad()
    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        if len(states) != self.K:
            raise ValueError(f"expected {self.K} checkpoints, got {len(states)}")
        epochs = {int(s["epoch"]) for s in states}
        if len(epochs) != 1:
            raise ValueError(f"checkpoints of one pack must share the epoch, got {sorted(epochs)}")
        for k, s in enumerate(states):
            if s.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"unsupported checkpoint version {s.get('version')!r}")
            self.flat[k].copy_(torch.cat([s["model"][n].flatten() for n in self._names]))
            self.optimizer.load(k, s["optimizer"])
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
        for _ in self.run():
            pass
        return self.models()

    @property
    def vae(self) -> nn.Module | None:
        """The pack's shared REVISE VAE (``None`` for Generic/ECCo packs), built on first use
        exactly as :attr:`Trainer.generator` builds it (same cache key, so the same VAE)."""
        if self._latent and self._vae is None:
            from ct_core.generators import make_generator

            c0 = self.cfgs[0]
            with torch.enable_grad():  # a first use trains the VAE (callers may be in no_grad)
                gen = make_generator(
                    c0.generator,
                    self.data,
                    data_key=c0.data.model_dump(mode="json"),
                    device=self.device,
                )
            self._vae = gen.vae  # type: ignore[attr-defined]
        return self._vae

    def _ct_active(self, k: int, epoch: int) -> bool:
        t = self.cfgs[k].train
        return t.objective != "vanilla" and epoch > round(t.burnin * t.epochs)

    def _train_epoch(self, epoch: int) -> list[dict[str, Any] | None]:
        t0 = time.perf_counter()
        d, K, dev = self.data, self.K, self.device
        X = d.X_train
        batches = torch.arange(X.shape[0], device=dev).split(self.cfgs[0].train.batch_size)
        nb = len(batches)
        alive = [f is None for f in self.failed]
        alive_t = torch.tensor(alive, device=dev)
        A = [k for k in range(K) if alive[k] and self._ct_active(k, epoch)]
        ces = self._counterfactuals(A, nb) if A else None
        t_search = time.perf_counter() - t0

        w = self._w
        adv_on = w["adv"] > 0
        use_adv = ces is not None and bool(adv_on[ces["rows"]].any())
        zero = torch.zeros(K, device=dev)
        logs: list[Tensor] = []  # per batch (5, K): loss, class, div, reg, adv
        oks: list[Tensor] = []
        for i, idx in enumerate(batches):
            xb, yb = X[idx], self._y_rep[i]
            B = xb.shape[0]
            with torch.enable_grad():
                if ces is None:
                    lo = self.forward(xb)  # (K, B, C)
                else:  # one forward over the batch and its chunk of pairs, all K at once
                    parts = [xb.expand(K, -1, -1), ces["x_cf"][:, i], ces["x_pos"][:, i]]
                    if use_adv:
                        parts.append(ces["x_ae"][:, i])
                    lo = self.forward(torch.cat(parts, dim=1))
                cl = F.cross_entropy(lo[:, :B].flatten(0, 1), yb, reduction="none")
                cl = cl.view(K, B).mean(1)
                if ces is None:
                    div = reg = adv = zero
                    loss = w["class"] * cl
                else:  # Eq. 1 per setting
                    div, reg, adv = self._ct_terms(ces, i, lo[:, B:], use_adv)
                    loss = w["class"] * cl + w["div"] * div + w["reg"] * reg
                    if use_adv:  # λ_adv = 0 drops the term (Trainer does not compute it)
                        adv = torch.where(adv_on, adv, 0.0)
                        loss = loss + w["adv"] * adv
                ok = torch.isfinite(loss) & alive_t
                # on the CPU a look at the mask is free: take the unmasked path when all is well
                all_ok = self._cpu and bool(ok.all())
                objective = loss.sum() if all_ok else torch.where(ok, loss, 0.0).sum()
                (grad,) = torch.autograd.grad(objective, self.flat)
            self.optimizer.step(grad, None if all_ok else ok)
            logs.append(torch.stack([loss, cl, div, reg, adv]).detach())
            oks.append(ok)
        ok_all = torch.stack(oks)  # (nb, K)
        sums = torch.where(ok_all[:, None, :], torch.stack(logs).double(), 0.0).sum(0)
        skipped = (~ok_all & alive_t).sum(0)
        if self.optimizer.uniform_step is None:
            self.optimizer.sync_uniform()
        t_train = time.perf_counter() - t0 - t_search

        acc = self._accuracy()
        skipped_l = skipped.tolist()
        sums_l = dict(zip(("loss", "class_loss", "div", "reg", "adv"), sums.tolist()))
        n_alive = max(sum(alive), 1)
        records: list[dict[str, Any] | None] = []
        val_ks: list[int] = []  # settings whose validation metrics are due this epoch
        t_eval0 = time.perf_counter()
        for k in range(K):
            if not alive[k]:
                records.append(None)
                continue
            done = nb - skipped_l[k]
            rec: dict[str, Any] = {"epoch": float(epoch)}
            if done == 0:
                self.failed[k] = (
                    f"epoch {epoch}: the loss was non-finite (NaN/Inf) in all {nb} mini-batches; "
                    "the run cannot continue (try a smaller train.lr or a larger train.lambda_reg)"
                )
            rec.update({key: v[k] / done if done else math.nan for key, v in sums_l.items()})
            rec.update({key: v[k] for key, v in acc.items()})
            j = A.index(k) if k in A else None
            rec["mature"] = ces["mature"][j] if ces is not None and j is not None else math.nan
            rec["ce_steps"] = ces["ce_steps"][j] if ces is not None and j is not None else math.nan
            rec["skipped_batches"] = float(skipped_l[k])
            if self.failed[k] is not None:
                rec["failed"] = self.failed[k]
            else:
                every = self.cfgs[k].train.eval_every
                if every and (epoch % every == 0 or epoch == self.cfgs[k].train.epochs):
                    val_ks.append(k)
            records.append(rec)
        if val_ks:
            for k, metrics in zip(val_ks, self._validations(val_ks)):
                rec_k = records[k]
                assert rec_k is not None
                rec_k.update(metrics)
        t_eval = time.perf_counter() - t_eval0
        total = time.perf_counter() - t0
        for rec in records:
            if rec is not None:
                rec["time_search"] = t_search / n_alive
                rec["time_train"] = t_train / n_alive
                rec["time_eval"] = t_eval / n_alive
                rec["seconds"] = total / n_alive
        return records

    def _ct_terms(
        self, ces: dict[str, Any], i: int, lo: Tensor, use_adv: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. 2, the ridge and Eq. 3 ``(K,)`` from the logits ``lo`` ``(K, 2m or 3m, C)`` of
        batch ``i``'s chunk of pairs (padded rows and non-CT settings masked to 0)."""
        mask = ces["mask"][:, i]  # (K, m)
        m = mask.shape[1]
        tgt = ces["target"][:, i, :, None]
        e_cf = -lo[:, :m].gather(-1, tgt).squeeze(-1)
        e_pos = -lo[:, m : 2 * m].gather(-1, tgt).squeeze(-1)
        cnt = mask.sum(1).clamp_min(1).to(lo.dtype)
        div = torch.where(mask, e_pos - e_cf, 0.0).sum(1) / cnt
        reg = torch.where(mask, e_pos.square() + e_cf.square(), 0.0).sum(1) / cnt
        if not use_adv:
            return div, reg, torch.zeros_like(div)
        ce = F.cross_entropy(
            lo[:, 2 * m :].flatten(0, 1), ces["y_factual"][:, i].flatten(), reduction="none"
        )
        adv = torch.where(mask, ce.view(mask.shape), 0.0).sum(1) / cnt
        return div, reg, adv

    @torch.no_grad()
    def _accuracy(self) -> dict[str, list[float]]:
        d, K = self.data, self.K
        out: dict[str, list[float]] = {}
        for split in ("train", "val"):
            X, y = d.split(split)
            if X.shape[0] == 0:
                out[f"{split}_acc"] = [math.nan] * K
                continue
            logits = self.forward(X)
            out[f"{split}_acc"] = (logits.argmax(-1) == y).float().mean(1).tolist()
            if split == "val":
                ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(K), reduction="none")
                out["val_loss"] = ce.view(K, -1).mean(1).tolist()
        return out

    def _validations(self, ks: list[int]) -> list[dict[str, float]]:
        """The validation metrics of settings ``ks``: one packed search over all of them
        (:func:`~ct_core.evaluation.packed_validation_metrics`; each setting draws its points
        from a generator seeded with its ``evaluation.seed``, as :meth:`_validation` does), or
        one :meth:`_validation` per setting when :attr:`batch_validation` is false or only one
        setting is due (nothing to batch)."""
        if not self.batch_validation or len(ks) == 1:
            return [self._validation(k) for k in ks]
        from ct_core.evaluation import packed_validation_metrics

        flat = self.flat.detach()
        if len(ks) < self.K:
            flat = flat.index_select(0, torch.tensor(ks, dtype=torch.long, device=self.device))
        return packed_validation_metrics(
            lambda x, sel: self.forward(x, flat if sel is None else flat[sel]),
            self.data,
            [self.cfgs[k] for k in ks],
            [torch.Generator().manual_seed(self.cfgs[k].evaluation.seed) for k in ks],
            compact=self._compact(),
        )

    def _compact(self) -> float:
        if self.search_compact is not None:
            return self.search_compact
        return 0.75 if self._cpu else 0.0

    def _validation(self, k: int) -> dict[str, float]:
        """Setting ``k``'s validation metrics on its own module (:func:`validation_metrics`, as
        :class:`~ct_core.training.Trainer` computes them)."""
        from ct_core.evaluation import validation_metrics

        return validation_metrics(self._module(k), self.data, self.cfgs[k])  # as Trainer does

    # ------------------------------------------------------------------ counterfactuals

    @torch.no_grad()
    def _counterfactuals(self, A: list[int], nb: int) -> dict[str, Any]:
        """One sweep per CT-active setting (reference §1.2), drawn from each setting's own
        generator in ``Trainer.counterfactuals``' order, searched as one packed search, then
        chunked per mini-batch (padded to the largest chunk, with a mask)."""
        d, dev = self.data, self.device
        X, y = d.X_train, d.y_train
        n, C = X.shape[0], d.n_classes
        nces = [max(self.cfgs[k].train.nce, nb) for k in A]
        KA, N = len(A), max(nces)
        idx = torch.zeros(KA, N, dtype=torch.long)
        r = torch.zeros(KA, N, dtype=torch.long)
        u = torch.zeros(KA, N)
        valid = torch.zeros(KA, N, dtype=torch.bool)
        for j, (k, nce) in enumerate(zip(A, nces)):
            g = self.rngs[k]
            if nce <= n:
                idx[j, :nce] = torch.randperm(n, generator=g)[:nce]
            else:
                idx[j, :nce] = torch.randint(n, (nce,), generator=g)
            r[j, :nce] = torch.randint(C - 1, (nce,), generator=g)
            u[j, :nce] = torch.rand(nce, generator=g)
            valid[j, :nce] = True
        idx, r, u, valid = idx.to(dev), r.to(dev), u.to(dev), valid.to(dev)
        A_t = torch.tensor(A, dtype=torch.long, device=dev)
        flat = self.flat.detach().index_select(0, A_t)
        x0, y0 = X[idx], y[idx]
        pred = self.forward(x0, flat).argmax(-1)
        target = r + (r >= pred).long()  # y⁺ uniform over the non-predicted classes
        counts = self._class_counts[target]
        pick = self._class_offsets[target] + (u * counts).long().clamp_max(counts - 1).clamp_min(0)
        x_pos = X[self._class_sorted[pick]]
        x_pos = torch.where((counts == 0)[..., None], x0, x_pos)

        spec = self._spec.select(A)
        res = packed_search(
            lambda x, ks: self.forward(x, flat if ks is None else flat[ks]),
            x0,
            target,
            valid,
            spec,
            domain=d.domain,
            mutability=d.mutability,
            vae=self.vae,
            compact=self._compact(),
        )
        exhausted_ok = torch.tensor(
            [self.cfgs[k].train.mature == "converged_or_exhausted" for k in A], device=dev
        )
        mature = res.converged | (res.exhausted & exhausted_ok[:, None])
        x_cf = torch.where(mature[..., None], res.x_cf, x_pos)
        x_pos = protect_immutable(x_cf, x_pos, d.mutability)

        # chunk j of setting a: rows [start, start + size) of its own sweep (Trainer's
        # ``arange(nce).tensor_split(nb)``), padded to the largest chunk of the pack
        sizes = torch.tensor([[len(c) for c in torch.arange(m).tensor_split(nb)] for m in nces])
        starts = torch.cumsum(sizes, 1) - sizes
        mmax = int(sizes.max())
        ar = torch.arange(mmax)
        rows = starts[..., None] + ar  # (KA, nb, m)
        mask = ar < sizes[..., None]
        last = torch.tensor(nces)[:, None, None] - 1
        rows = torch.minimum(rows, last).to(dev).flatten(1)  # (KA, nb·m)

        def chunk(t: Tensor) -> Tensor:
            if t.dim() == 3:
                g = t.gather(1, rows[..., None].expand(-1, -1, t.shape[-1]))
                return g.view(KA, nb, mmax, t.shape[-1])
            return t.gather(1, rows).view(KA, nb, mmax)

        def full(t: Tensor) -> Tensor:  # rows of all K settings, zeros where no CT this epoch
            if KA == self.K:
                return t
            out = t.new_zeros((self.K, *t.shape[1:]))
            return out.index_copy(0, A_t, t)

        vf = valid.float()
        return {
            "rows": A_t,
            "x_cf": full(chunk(x_cf)),
            "x_pos": full(chunk(x_pos)),
            "x_ae": full(chunk(res.x_ae)),
            "target": full(chunk(target)),
            "y_factual": full(chunk(y0)),
            "mask": full(mask.to(dev)),
            "mature": ((mature.float() * vf).sum(1) / vf.sum(1)).tolist(),
            "ce_steps": ((res.steps.float() * vf).sum(1) / vf.sum(1)).tolist(),
        }
