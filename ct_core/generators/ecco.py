"""ECCo: Generic plus an energy penalty that pulls counterfactuals towards low energy under the
model, i.e. towards where the model itself places the target class (reference §3)."""

from __future__ import annotations

from torch import Tensor

from ct_core.generators.base import Generator, l1_distance


def energy_schedule(t: int, T: int) -> float:
    """φ_t = a·(b + t)^(−0.9) with b = round(T/25), a = b/10 (CE.jl's polynomial decay).

    Note the reference's consequence for short searches: T = 5 gives b = 0, a = 0, so the energy
    penalty vanishes and ECCo equals Generic. ``round`` is Julia's (and Python's) half-to-even.
    """
    b = round(T / 25)
    a = b / 10
    if a == 0:
        return 0.0
    return a * (b + t) ** -0.9


class ECCo(Generator):
    """Penalties ``λ_cost·‖x′ − x‖₁ + λ_egy·φ_t·(E + r·E²)`` with E = −M(x′)[y⁺]."""

    name = "ecco"

    def __init__(
        self,
        lambda_cost: float = 0.001,
        lambda_energy: float = 5.0,
        T: int = 30,
        energy_reg: float = 1e-3,
        decay: bool = True,
    ):
        self.lambda_cost = float(lambda_cost)
        self.lambda_energy = float(lambda_energy)
        self.T = int(T)
        self.energy_reg = float(energy_reg)
        self.decay = decay

    def penalty(self, x: Tensor, x0: Tensor, logits: Tensor, target: Tensor, t: int) -> Tensor:
        pen = self.lambda_cost * l1_distance(x, x0)
        phi = energy_schedule(t, self.T) if self.decay else 1.0
        if self.lambda_energy and phi:
            e = -logits.gather(1, target[:, None]).squeeze(1)
            pen = pen + self.lambda_energy * phi * (e + self.energy_reg * e.square())
        return pen
