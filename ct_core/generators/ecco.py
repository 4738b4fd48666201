"""ECCo: Generic plus an energy penalty that pulls counterfactuals towards low energy under the
model, i.e. towards where the model itself places the target class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ct_core.generators.base import Generator, Weights, l1_distance

if TYPE_CHECKING:
    from ct_core.config import GeneratorConfig

Num = float | Sequence[float] | Tensor


def energy_schedule(t: Any, T: Any) -> Any:
    """φ_t = a·(b + t)^(−0.9) with b = round(T/25), a = b/10 (CE.jl's polynomial decay); for
    numbers or tensors of per-setting ``T``.

    Note the consequence for short searches: T = 5 gives b = 0, a = 0, so the energy
    penalty vanishes and ECCo equals Generic. ``round`` is Julia's (and Python's and torch's)
    half-to-even.
    """
    b = torch.round(T / 25) if isinstance(T, Tensor) else round(T / 25)
    return b / 10 * (b + t) ** -0.9


class ECCo(Generator):
    """Penalties ``λ_cost·‖x′ − x‖₁ + λ_egy·φ_t·(E + r·E²)`` with E = −M(x′)[y⁺] (φ_t = 1
    without ``decay``)."""

    fields = ("lambda_cost", "lambda_energy", "T", "energy_reg", "energy_decay")

    def __init__(
        self,
        lambda_cost: Num = 0.001,
        lambda_energy: Num = 5.0,
        T: Num = 30,
        energy_reg: Num = 1e-3,
        decay: bool | Sequence[bool] | Tensor = True,
    ):
        super().__init__(
            lambda_cost=lambda_cost,
            lambda_energy=lambda_energy,
            T=T,
            energy_reg=energy_reg,
            energy_decay=decay,
        )

    @classmethod
    def from_configs(cls, cfgs: Sequence[GeneratorConfig], *args: Any, **kw: Any) -> ECCo:
        return cls(*([getattr(c, f) for c in cfgs] for f in cls.fields))

    def penalty(
        self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int, w: Weights
    ) -> Tensor:
        pen = w["lambda_cost"] * l1_distance(x, x0)
        phi = torch.where(w["energy_decay"] != 0, energy_schedule(t, w["T"]), 1.0)
        w_e = w["lambda_energy"] * phi
        e = -logits.gather(-1, target[..., None]).squeeze(-1)
        # settings without the energy term (λ_egy·φ_t = 0) do not see it at all, even where the
        # energy is not finite
        return pen + torch.where(w_e != 0, w_e * (e + w["energy_reg"] * e.square()), 0.0)
