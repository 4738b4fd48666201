"""What a counterfactual generator plugs into the one search loop (:mod:`ct_core.search`).

A generator defines the penalties of the search objective (the common objective of the
authors' generators is ``yloss(M(x′), y⁺) + Σ_k λ_k·pen_k(x′)``), once, batched over K settings
and N factuals, and for latent-space generators how a search state maps to and from feature
space. Everything else (gradient steps, constraints, per-row convergence, the adversarial-example
bookkeeping, the compaction of finished rows) belongs to the loop.

Per-setting weights (λ's, a schedule's T, ...) are ``(K,)`` tensors in :attr:`Generator.weights`.
The loop hands :meth:`Generator.penalty` those of the settings still searching, as ``(K', 1)``
columns that broadcast against ``(K', N')`` rows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ct_core.config import GeneratorConfig
    from ct_core.data.base import Dataset

__all__ = ["Generator", "LatentGenerator", "Mixture", "PenaltyFunction", "l1_distance"]

Weights = Mapping[str, Tensor]


def l1_distance(x: Tensor, x0: Tensor) -> Tensor:
    """``‖x − x0‖₁`` over the last dimension: ``(..., D) -> (...)`` (CE.jl ``distance_l1``,
    not MAD-weighted)."""
    return (x - x0).abs().sum(-1)


class Generator:
    """A feature-space generator of K settings: the search state *is* the counterfactual.

    ``weights`` are per-setting numbers (a float applies to every setting). Subclasses set
    :attr:`fields`, the ``generator.*`` config fields :meth:`from_configs` reads into weights of
    the same names, and implement :meth:`penalty`.
    """

    latent = False
    fields: tuple[str, ...] = ("lambda_cost",)

    def __init__(self, **weights: float | Sequence[float] | Tensor):
        self.weights = {
            n: torch.as_tensor(v, dtype=torch.float32).reshape(-1) for n, v in weights.items()
        }

    @classmethod
    def from_configs(
        cls,
        cfgs: Sequence[GeneratorConfig],
        data: Dataset | None = None,
        *,
        data_key: dict | None = None,
        device: torch.device | str = "cpu",
    ) -> Generator:
        """The generator of the settings ``cfgs`` (``data`` is for latent generators' models)."""
        return cls(**{f: [float(getattr(c, f)) for c in cfgs] for f in cls.fields})

    def to(self, device: torch.device | str) -> Generator:
        self.weights = {n: v.to(device) for n, v in self.weights.items()}
        return self

    def select(self, rows: Sequence[int]) -> Generator:
        """The generator of the settings ``rows`` (in that order) of this one."""
        out = copy.copy(self)
        idx = list(rows)
        out.weights = {n: v if v.numel() == 1 else v[idx] for n, v in self.weights.items()}
        return out

    def penalty(
        self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int, w: Weights
    ) -> Tensor:
        """Penalty ``(K, N)`` of points ``x`` ``(K, N, D)`` (decoded, for latent generators)
        with factuals ``x0`` ``(K, N, D)``, the model's ``logits`` ``(K, N, C)`` at ``x``,
        targets ``(K, N)``, at search iteration ``t`` (1-based), with weights ``w`` (``(K, 1)``
        each, of the K settings searched)."""
        raise NotImplementedError


class LatentGenerator(Generator):
    """A generator whose search state lives in a latent space shared by its settings."""

    latent = True

    def encode(self, x: Tensor) -> Tensor:
        """Initial states ``(K, N, z)`` of factuals ``x`` ``(K, N, D)``."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """Feature-space points ``(K, N, D)`` of states ``z`` ``(K, N, z)``."""
        raise NotImplementedError


class PenaltyFunction(Generator):
    """A feature-space generator given as a penalty function ``fn(x, x0, logits, target, t, w)``
    (:meth:`Generator.penalty`'s arguments); ``w`` holds :attr:`fields`."""

    fields = ("lambda_cost", "lambda_energy", "energy_reg", "T")

    def __init__(self, penalty: Callable[..., Tensor], **weights: Any):
        super().__init__(**weights)
        self.fn = penalty

    def penalty(
        self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int, w: Weights
    ) -> Tensor:
        return self.fn(x, x0, logits, target, t, w)


class Mixture(Generator):
    """Feature-space generators of different types sharing one search: each setting's rows get
    the penalty of its own generator (``parts``: a generator and the settings it holds)."""

    def __init__(self, parts: Sequence[tuple[Generator, Sequence[int]]], size: int):
        super().__init__()
        self.parts = [g for g, _ in parts]
        part = torch.zeros(size)
        for i, (g, rows) in enumerate(parts):
            idx = torch.tensor(list(rows), dtype=torch.long)
            part[idx] = float(i)
            for n, v in g.weights.items():  # each setting's own value; 0 for other settings
                self.weights.setdefault(n, torch.zeros(size))[idx] = v.expand(len(idx))
        self.weights["_part"] = part

    def to(self, device: torch.device | str) -> Generator:
        self.parts = [g.to(device) for g in self.parts]
        return super().to(device)

    def penalty(
        self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int, w: Weights
    ) -> Tensor:
        pens = [g.penalty(x, x0, logits, target, t, w) for g in self.parts]
        out = pens[0]
        for i, p in enumerate(pens[1:], start=1):
            out = torch.where(w["_part"] == i, p, out)
        return out
