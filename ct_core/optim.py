"""The optimiser of a pack: Adam, AMSGrad or SGD over K settings' stacked parameters.

A pack's parameters are one ``(K, P)`` matrix (:class:`ct_core.stack.ModelStack`). Adam is
elementwise, so one Adam over the matrix is K independent Adams, with two things
``torch.optim.Adam`` cannot do on one tensor: skip the update of one setting whose loss was
non-finite while the others step (the authors' code skips that batch), and
keep a step count per setting for the bias corrections. K separate parameter tensors in
``torch.optim.Adam`` could, at K times the operations per step, which is most of a small
model's step. So the arithmetic below is ``torch.optim.Adam``'s own single-tensor update
(``foreach=False``; bias corrections in double precision per setting), applied row-wise with a
mask; each row follows the trajectory ``torch.optim.Adam`` gives that setting's parameters, and
its state is exported in ``torch.optim``'s ``state_dict`` form.
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
        """Every row steps, with Python scalars while all rows share one step count."""
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
        """Recompute whether all rows share one step count (enables the scalar path)."""
        lo, hi = float(self.step_count.min()), float(self.step_count.max())
        self.uniform_step = int(lo) if lo == hi else None

    def _columns(self, t: Tensor, k: int) -> list[Tensor]:
        return [c.detach().cpu().clone() for c in t[k].split(self.sizes)]

    def state_dict(self, k: int, shapes: Sequence[torch.Size]) -> dict[str, Any]:
        """Row ``k``'s state in ``torch.optim``'s ``state_dict`` form without ``param_groups``
        (they follow from the setting's config)."""
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
    def load_state_dict(self, k: int, state: dict[str, Any]) -> None:
        """Set row ``k`` from a ``torch.optim`` state dict (its ``param_groups`` are ignored)."""
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
