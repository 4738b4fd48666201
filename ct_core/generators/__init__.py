"""Counterfactual generators: one batched search loop (:func:`search`) with pluggable penalties.

``make_generator`` builds the configured one: Generic, ECCo or REVISE (whose VAE is trained once
per dataset and cached).
"""

from __future__ import annotations

import torch

from ct_core.config import GeneratorConfig
from ct_core.data.base import Dataset
from ct_core.generators.base import Generator, l1_distance
from ct_core.generators.ecco import ECCo, energy_schedule
from ct_core.generators.generic import Generic
from ct_core.generators.revise import REVISE
from ct_core.generators.search import SearchResult, ball_distance, search
from ct_core.generators.vae import VAE, cached_vae, train_vae

__all__ = [
    "ECCo",
    "Generator",
    "Generic",
    "REVISE",
    "SearchResult",
    "VAE",
    "ball_distance",
    "energy_schedule",
    "l1_distance",
    "make_generator",
    "search",
    "train_vae",
]


def make_generator(
    cfg: GeneratorConfig,
    data: Dataset | None = None,
    *,
    data_key: dict | None = None,
    device: torch.device | str = "cpu",
) -> Generator:
    """The generator ``cfg`` describes. REVISE needs ``data`` (its VAE is fitted on
    ``data.X_train``; ``data_key`` — e.g. the data config — keys the on-disk cache)."""
    if cfg.type == "generic":
        return Generic(cfg.lambda_cost)
    if cfg.type == "ecco":
        return ECCo(cfg.lambda_cost, cfg.lambda_energy, cfg.T, cfg.energy_reg, cfg.energy_decay)
    if data is None:
        raise ValueError("generator.type 'revise' needs the dataset to fit its VAE")
    key = data_key if data_key is not None else {"name": data.name}
    vae = cached_vae(key, data.X_train.cpu(), cfg.vae_latent, cfg.vae_hidden, cfg.vae_epochs)
    return REVISE(vae.to(device), cfg.lambda_cost)
