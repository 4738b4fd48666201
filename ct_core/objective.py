"""The CT objective (paper Eq. 1–3 and the ridge term), per setting of a pack.

With M the logits and energy E_θ(x, y⁺) = −M(x)[y⁺], for the n_b counterfactual pairs assigned to
a mini-batch:

* contrastive divergence (Eq. 2): ``div = mean_j [E(x⁺_j) − E(x′_j)] = mean_j [M(x′_j)[y⁺_j] − M(x⁺_j)[y⁺_j]]``
* ridge on the energies: ``reg = mean_j [E(x⁺_j)² + E(x′_j)²]``
* adversarial loss (Eq. 3): cross-entropy of the nascent counterfactuals x_AE against the
  factual's ground-truth label
* total: ``λ_class·class + λ_div·div + λ_reg·reg + λ_adv·adv`` (Eq. 1)

x′, x⁺ and x_AE are constants with respect to θ; gradients flow through M at those points.
Every function works on K settings at once: logits ``(K, n, C)``, targets ``(K, n)``, and a
``mask`` ``(K, n)`` of the pairs that exist (settings with fewer pairs are padded); means run
over a setting's own pairs, so each setting's terms are what it gets alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ct_core.config import TrainConfig

__all__ = ["Weights", "adversarial_loss", "contrastive_divergence", "ct_loss", "energy", "ridge"]


def energy(logits: Tensor, target: Tensor) -> Tensor:
    """E(x, y⁺) = −M(x)[y⁺]: ``(K, n, C), (K, n) -> (K, n)``."""
    return -logits.gather(-1, target[..., None]).squeeze(-1)


def _mean(v: Tensor, mask: Tensor | None, count: Tensor | None = None) -> Tensor:
    """Mean over the last dimension of the masked entries ``(K, n) -> (K,)`` (0 with none);
    ``count`` the masked entries per setting, if at hand."""
    if mask is None:
        return v.mean(-1)
    if count is None:
        count = mask.sum(-1).clamp_min(1).to(v.dtype)
    return torch.where(mask, v, 0.0).sum(-1) / count


def contrastive_divergence(
    e_cf: Tensor, e_pos: Tensor, mask: Tensor | None = None, count: Tensor | None = None
) -> Tensor:
    """Eq. 2: mean energy differential E(x⁺) − E(x′) over pairs, from the energies ``(K, n)``
    of the counterfactuals and the target-class samples, per setting ``(K,)``.

    Minimising it lowers the energy of the target-class sample x⁺ and raises that of the
    counterfactual x′, so the model learns to place y⁺ where real y⁺ data lie.
    """
    return _mean(e_pos - e_cf, mask, count)


def ridge(
    e_cf: Tensor, e_pos: Tensor, mask: Tensor | None = None, count: Tensor | None = None
) -> Tensor:
    """Ridge penalty on both energies: mean of E(x⁺)² + E(x′)², per setting ``(K,)``."""
    return _mean(e_pos.square() + e_cf.square(), mask, count)


def adversarial_loss(
    logits_ae: Tensor, y_true: Tensor, mask: Tensor | None = None, count: Tensor | None = None
) -> Tensor:
    """Eq. 3: cross-entropy of nascent counterfactuals against the factuals' true labels,
    per setting ``(K,)``."""
    ce = F.cross_entropy(logits_ae.flatten(0, 1), y_true.flatten(), reduction="none")
    return _mean(ce.view(y_true.shape), mask, count)


@dataclass(frozen=True)
class Weights:
    """λ's of the objective per setting, ``(K,)`` each; terms an objective does not use have
    weight 0."""

    class_: Tensor
    div: Tensor
    reg: Tensor
    adv: Tensor

    @classmethod
    def from_configs(cls, ts: Sequence[TrainConfig], device: torch.device | str = "cpu") -> Weights:
        """``full`` uses all four terms; ``energy`` (ablation "CD") class + div + reg;
        ``adversarial`` (ablation "AR") class + adv; ``vanilla`` class only."""

        def vec(vals: list[float]) -> Tensor:
            return torch.tensor(vals, dtype=torch.float32, device=device)

        on_div = [t.objective in ("full", "energy") for t in ts]
        on_adv = [t.objective in ("full", "adversarial") for t in ts]
        return cls(
            vec([t.lambda_class for t in ts]),
            vec([t.lambda_div if on else 0.0 for t, on in zip(ts, on_div)]),
            vec([t.lambda_reg if on else 0.0 for t, on in zip(ts, on_div)]),
            vec([t.lambda_adv if on else 0.0 for t, on in zip(ts, on_adv)]),
        )


def ct_loss(
    logits: Tensor,
    y: Tensor,
    w: Weights,
    target: Tensor | None = None,
    y_factual: Tensor | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 1 per setting from one forward over a mini-batch and its chunk of pairs.

    ``logits`` ``(K, B + 2m [+ m], C)``: the batch's B rows, then the m counterfactuals x′, the m
    samples x⁺ and, where present, the m nascent counterfactuals x_AE; ``y`` ``(K, B)`` (or a
    shared ``(B,)``) the batch's labels, ``target`` ``(K, m)`` y⁺, ``y_factual`` ``(K, m)`` the
    factuals' labels, ``mask`` ``(K, m)`` the pairs that exist. Without ``target`` (no pairs this
    epoch) only the class loss counts. Returns the total ``(K,)`` and the terms ``(K,)``.
    """
    K, B = logits.shape[0], y.shape[-1]
    cl = F.cross_entropy(logits[:, :B].flatten(0, 1), y.expand(K, B).flatten(), reduction="none")
    cl = cl.view(K, B).mean(1)
    if target is None:
        zero = torch.zeros_like(cl)
        return w.class_ * cl, {"class_loss": cl, "div": zero, "reg": zero, "adv": zero}
    m = target.shape[1]
    count = None if mask is None else mask.sum(-1).clamp_min(1).to(cl.dtype)
    e_cf = energy(logits[:, B : B + m], target)
    e_pos = energy(logits[:, B + m : B + 2 * m], target)
    div = contrastive_divergence(e_cf, e_pos, mask, count)
    reg = ridge(e_cf, e_pos, mask, count)
    loss = w.class_ * cl + w.div * div + w.reg * reg
    adv = torch.zeros_like(cl)
    if logits.shape[1] > B + 2 * m:  # λ_adv = 0 everywhere leaves x_AE out of the forward
        assert y_factual is not None
        adv_k = adversarial_loss(logits[:, B + 2 * m :], y_factual, mask, count)
        adv = torch.where(w.adv > 0, adv_k, 0.0)
        loss = loss + w.adv * adv
    return loss, {"class_loss": cl, "div": div, "reg": reg, "adv": adv}
