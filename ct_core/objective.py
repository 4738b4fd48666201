"""The CT objective (paper Eq. 1–3 and the ridge term; reference §1.4).

With M the logits and energy E_θ(x, y⁺) = −M(x)[y⁺], for the n_b counterfactual pairs assigned to
a mini-batch:

* contrastive divergence (Eq. 2): ``div = mean_j [E(x⁺_j) − E(x′_j)] = mean_j [M(x′_j)[y⁺_j] − M(x⁺_j)[y⁺_j]]``
* ridge on the energies: ``reg = mean_j [E(x⁺_j)² + E(x′_j)²]``
* adversarial loss (Eq. 3): cross-entropy of the nascent counterfactuals x_AE against the
  factual's ground-truth label
* total: ``λ_class·class + λ_div·div + λ_reg·reg + λ_adv·adv`` (Eq. 1)

x′, x⁺ and x_AE are constants with respect to θ; gradients flow through M at those points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ct_core.config import TrainConfig

__all__ = [
    "Weights",
    "adversarial_loss",
    "contrastive_divergence",
    "energy",
    "ridge",
    "total_loss",
]


def energy(logits: Tensor, target: Tensor) -> Tensor:
    """E(x, y⁺) = −M(x)[y⁺]: ``(N, K), (N,) -> (N,)``."""
    return -logits.gather(1, target[:, None]).squeeze(1)


def contrastive_divergence(logits_cf: Tensor, logits_pos: Tensor, target: Tensor) -> Tensor:
    """Eq. 2: mean energy differential E(x⁺) − E(x′) over pairs; ``(N, K), (N, K), (N,) -> ()``.

    Minimising it lowers the energy of the target-class sample x⁺ and raises that of the
    counterfactual x′, so the model learns to place y⁺ where real y⁺ data lie.
    """
    return (energy(logits_pos, target) - energy(logits_cf, target)).mean()


def ridge(logits_cf: Tensor, logits_pos: Tensor, target: Tensor) -> Tensor:
    """Ridge penalty on both energies: mean of E(x⁺)² + E(x′)²; ``-> ()``."""
    return (energy(logits_pos, target).square() + energy(logits_cf, target).square()).mean()


def adversarial_loss(logits_ae: Tensor, y_true: Tensor) -> Tensor:
    """Eq. 3: cross-entropy of nascent counterfactuals against the factuals' true labels."""
    return F.cross_entropy(logits_ae, y_true)


@dataclass(frozen=True)
class Weights:
    """λ's of the objective; terms an objective does not use have weight 0."""

    class_: float = 1.0
    div: float = 0.5
    reg: float = 0.1
    adv: float = 0.25

    @classmethod
    def from_config(cls, t: TrainConfig) -> Weights:
        """``full`` uses all four terms; ``energy`` (ablation "CD") class + div + reg;
        ``adversarial`` (ablation "AR") class + adv; ``vanilla`` class only."""
        div = t.lambda_div if t.objective in ("full", "energy") else 0.0
        reg = t.lambda_reg if t.objective in ("full", "energy") else 0.0
        adv = t.lambda_adv if t.objective in ("full", "adversarial") else 0.0
        return cls(t.lambda_class, div, reg, adv)


def total_loss(
    model: torch.nn.Module,
    xb: Tensor,
    yb: Tensor,
    w: Weights,
    x_cf: Tensor | None = None,
    x_pos: Tensor | None = None,
    target: Tensor | None = None,
    x_ae: Tensor | None = None,
    y_factual: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 1 on one mini-batch ``xb`` ``(B, D)`` and its chunk of counterfactual pairs ``(n_b, D)``.

    One forward pass over the concatenation of all inputs. Returns the total and each term
    (detached) for logging.
    """
    zero = xb.new_zeros(())
    if x_cf is None or x_cf.shape[0] == 0:
        logits = model(xb)
        cl = F.cross_entropy(logits, yb)
        return w.class_ * cl, {"class_loss": cl.detach(), "div": zero, "reg": zero, "adv": zero}
    b, m = xb.shape[0], x_cf.shape[0]
    parts = [xb, x_cf, x_pos]
    if w.adv:
        parts.append(x_ae)
    logits = model(torch.cat(parts))
    lb, lcf, lpos = logits[:b], logits[b : b + m], logits[b + m : b + 2 * m]
    cl = F.cross_entropy(lb, yb)
    div = contrastive_divergence(lcf, lpos, target)
    reg = ridge(lcf, lpos, target)
    adv = adversarial_loss(logits[b + 2 * m :], y_factual) if w.adv else zero
    total = w.class_ * cl + w.div * div + w.reg * reg + w.adv * adv
    return total, {
        "class_loss": cl.detach(),
        "div": div.detach(),
        "reg": reg.detach(),
        "adv": adv.detach(),
    }
