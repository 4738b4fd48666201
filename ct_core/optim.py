"""The optimiser of a pack: Adam, AMSGrad or SGD over K settings' stacked parameters.

A pack's parameters are one ``(K, P)`` matrix (:class:`ct_core.stack.ModelStack`). Adam is
elementwise, so one Adam over the matrix is K independent Adams, but for two things
``torch.optim.Adam`` cannot do on one tensor: skip the update of one setting whose loss was
non-finite while the others step (the authors' code skips that batch), and keep a step count
per setting for the bias corrections. K parameter tensors in ``torch.optim.Adam`` could, at K
times the operations per step, most of a small model's step. So this is ``torch.optim.Adam``'s
single-tensor arithmetic (``foreach=False``; bias corrections in double precision per setting)
row-wise with a mask: each row follows the trajectory ``torch.optim.Adam`` gives that setting's
parameters, and its state is exported in ``torch.optim``'s ``state_dict`` form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["StackedOptimizer"]


class StackedOptimizer:
    """``kind`` (``adam``, ``amsgrad`` or ``sgd``) with learning rate ``lr`` over the rows of
    ``flat`` ``(K, P)``, whose columns are parameters of ``sizes`` elements (for the export)."""

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
        """The step count all rows share (``None`` once they differ): Python scalars then."""

    @torch.no_grad()
    def step(self, grad: Tensor, mask: Tensor | None = None) -> None:
        """Update the rows where ``mask`` ``(K,)`` is true (all rows for ``None``): the others
        keep their parameters, moments and step counts."""
        if mask is None:
            self._step_all(grad)
            return
        state = [
            t for t in (self.flat, self.exp_avg, self.exp_avg_sq, self.max_sq) if t is not None
        ]
        before = [t.clone() for t in state]
        self.uniform_step = None
        self._step_all(torch.where(mask[:, None], grad, 0.0))
        for t, b in zip(state, before):
            t.copy_(torch.where(mask[:, None], t, b))
        if self.exp_avg is not None:
            self.step_count -= (~mask).to(torch.float64)

    def _step_all(self, g: Tensor) -> None:
        """Every row steps: ``torch.optim.Adam``'s single-tensor arithmetic, with Python scalars
        while all rows share one step count."""
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
        st = self.step_count.clamp_min(1.0)
        step_size = (self.lr / (1 - b1**st)).to(p.dtype)[:, None]
        bc2_sqrt = ((1 - b2**st) ** 0.5).to(p.dtype)[:, None]
        denom = (use.sqrt() / bc2_sqrt).add_(self.eps)
        p.sub_(step_size * (m / denom))

    def sync_uniform(self) -> None:
        """Recompute whether all rows share one step count (enables the scalar path)."""
        lo, hi = float(self.step_count.min()), float(self.step_count.max())
        self.uniform_step = int(lo) if lo == hi else None

    def _moments(self) -> dict[str, Tensor]:
        """The optimiser's per-parameter state by its ``torch.optim`` name."""
        named = {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}
        return {n: t for n, t in {**named, "max_exp_avg_sq": self.max_sq}.items() if t is not None}

    def state_dict(self, k: int, shapes: Sequence[torch.Size]) -> dict[str, Any]:
        """Row ``k``'s state in ``torch.optim``'s ``state_dict`` form without ``param_groups``
        (they follow from the setting's config)."""
        steps = float(self.step_count[k])
        if self.kind == "sgd" or steps == 0:
            return {"state": {}}
        cols = {n: t[k].detach().cpu().split(self.sizes) for n, t in self._moments().items()}
        state = {
            i: {"step": torch.tensor(steps), **{n: c[i].view(s).clone() for n, c in cols.items()}}
            for i, s in enumerate(shapes)
        }
        return {"state": state}

    @torch.no_grad()
    def load_state_dict(self, k: int, state: dict[str, Any]) -> None:
        """Set row ``k`` from a ``torch.optim`` state dict (its ``param_groups`` are ignored)."""
        per = state.get("state", {})
        self.step_count[k] = float(per[0]["step"]) if per and self.kind != "sgd" else 0.0
        for n, t in self._moments().items() if per else ():
            t[k].copy_(torch.cat([per[i][n].flatten() for i in range(len(self.sizes))]))
