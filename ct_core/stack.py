"""K classifiers of one architecture evaluated as one: the models of a pack (built-in, or any
``nn.Module`` mapping ``(N, D)`` features to ``(N, C)`` logits).

The K models' parameters are one ``(K, P)`` matrix (:attr:`ModelStack.flat`, stepped as one
tensor by :mod:`ct_core.optim`), buffers are stacked ``(K, ...)``, and a forward on ``(K, N, D)``
(or a shared ``(N, D)``) gives ``(K, N, C)`` logits through ``torch.func``: ``functional_call``
of one template module under ``vmap`` over the K parameter sets, for every architecture alike.

What the search relies on: a model treats the rows of a batch independently. BatchNorm does not
(its statistics mix factuals with counterfactuals, and settings' running statistics would be
updated under ``vmap``), so a model with a BatchNorm layer is rejected; LayerNorm and GroupNorm
are per-row. Dropout and other random operations draw from torch's global generator, separately
per setting (``vmap(randomness="different")``): a pack's dropout masks are not those of its
settings trained alone, and a checkpoint does not hold that generator's state.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ct_core.search import Forward

__all__ = ["ModelStack"]

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class ModelStack:
    """K models of one architecture (same parameter and buffer names and shapes) on ``device``.

    The models are copied: training changes :attr:`flat`, not them (:meth:`module` writes a
    setting's weights back into a module).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        device: torch.device | str | None = None,
    ):
        if not models:
            raise ValueError("a model stack needs at least one model")
        ref = models[0]
        for name, m in ref.named_modules():
            if isinstance(m, BATCH_NORMS):
                raise ValueError(
                    f"{type(m).__name__} at {name!r}: batch statistics mix a batch's rows (the "
                    "factuals with their counterfactuals); use a per-row normalisation such as "
                    "nn.LayerNorm or nn.GroupNorm"
                )
        params = dict(ref.named_parameters())
        if not params:
            raise ValueError("the model has no parameters to train")
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.state_keys = list(ref.state_dict())
        for k, m in enumerate(models[1:], start=1):
            mine = {n: p.shape for n, p in m.named_parameters()}
            if mine != dict(zip(self.names, self.shapes)):
                raise ValueError(
                    f"model {k} differs from model 0 in its parameters' names or shapes"
                )
        dev = torch.device(device) if device is not None else next(iter(params.values())).device
        self.template = copy.deepcopy(ref).to(dev)
        rows = [
            torch.cat([dict(m.named_parameters())[n].detach().reshape(-1) for n in self.names])
            for m in models
        ]
        self.flat = torch.stack(rows).to(dev).requires_grad_(True)
        self.buffers = {
            n: torch.stack([dict(m.named_buffers())[n].detach() for m in models]).to(dev)
            for n, _ in ref.named_buffers()
        }

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def train(self, mode: bool = True) -> ModelStack:
        """Training or evaluation mode of the template (dropout on or off)."""
        self.template.train(mode)
        return self

    def __call__(self, x: Tensor) -> Tensor:
        """Logits ``(K, N, C)`` on ``x`` ``(K, N, D)`` or a shared ``(N, D)`` (gradients flow
        into :attr:`flat`)."""
        return self._apply(self.flat, self.buffers, x)

    def forward_fn(self, rows: Sequence[int] | Tensor | None = None) -> Forward:
        """The :data:`~ct_core.search.Forward` of settings ``rows`` (all for ``None``) with the
        parameters as they are now, detached (what a search needs)."""
        flat, bufs = self.flat.detach(), self.buffers
        if rows is not None:
            idx = torch.as_tensor(rows, dtype=torch.long, device=self.device)
            flat, bufs = flat.index_select(0, idx), {n: b[idx] for n, b in bufs.items()}

        def forward(x: Tensor, ks: Tensor | None = None) -> Tensor:
            if ks is None:
                return self._apply(flat, bufs, x)
            return self._apply(flat[ks], {n: b[ks] for n, b in bufs.items()}, x)

        return forward

    def _apply(self, flat: Tensor, bufs: dict[str, Tensor], x: Tensor) -> Tensor:
        K = flat.shape[0]
        params = {
            n: c.view(K, *s) for n, c, s in zip(self.names, flat.split(self.sizes, 1), self.shapes)
        }

        def one(p: dict[str, Tensor], b: dict[str, Tensor], xs: Tensor) -> Tensor:
            return functional_call(self.template, (p, b), (xs,))

        x_dim = 0 if x.dim() == 3 else None
        return vmap(one, in_dims=(0, 0, x_dim), randomness="different")(params, bufs, x)

    # ------------------------------------------------------------------ per setting

    def state_dict(self, k: int) -> dict[str, Tensor]:
        """Setting ``k``'s weights as its module's ``state_dict()`` (CPU copies)."""
        cols = self.flat[k].detach().cpu().split(self.sizes)
        out = {n: c.view(s).clone() for n, c, s in zip(self.names, cols, self.shapes)}
        out.update({n: b[k].detach().cpu().clone() for n, b in self.buffers.items()})
        return {n: out[n] for n in self.state_keys}

    @torch.no_grad()
    def load_state_dict(self, k: int, state: dict[str, Tensor]) -> None:
        """Set setting ``k``'s weights from a module ``state_dict()``."""
        self.flat[k].copy_(torch.cat([state[n].reshape(-1) for n in self.names]))
        for n, b in self.buffers.items():
            if n in state:
                b[k].copy_(state[n])

    @torch.no_grad()
    def module(self, k: int, into: nn.Module | None = None) -> nn.Module:
        """Setting ``k``'s weights in an ordinary module: ``into`` (updated in place) or a copy
        of the template; in evaluation mode."""
        m = into if into is not None else copy.deepcopy(self.template)
        cols = self.flat[k].detach().split(self.sizes)
        for n, c, s in zip(self.names, cols, self.shapes):
            m.get_parameter(n).copy_(c.view(s))
        for n, b in self.buffers.items():
            m.get_buffer(n).copy_(b[k])
        return m.eval()
