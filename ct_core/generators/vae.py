"""The VAE behind REVISE (CE.jl ``generative_models/vae.jl``), trained once per
dataset on its training split and cached on disk.

Encoder Dense(D→h, sigmoid) → heads for μ and log σ; decoder Dense(z→h, tanh) → Dense(h→D).
Loss = Σ‖x̂ − x‖² / batch + KL(q ‖ N(0, I)) + 0.01·Σ‖decoder weights‖²; Adam(1e-3), batch 50.
Sizes: D ≤ 2 → z = 2, h = 16; otherwise z = 4, h = 32.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn


class VAE(nn.Module):
    def __init__(self, n_features: int, latent: int, hidden: int):
        super().__init__()
        self.n_features, self.latent, self.hidden = n_features, latent, hidden
        self.enc = nn.Sequential(nn.Linear(n_features, hidden), nn.Sigmoid())
        self.mu = nn.Linear(hidden, latent)
        self.logsigma = nn.Linear(hidden, latent)
        self.dec = nn.Sequential(
            nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, n_features)
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, D) -> (μ, log σ)``, each ``(N, z)``."""
        h = self.enc(x)
        return self.mu(h), self.logsigma(h)

    def decode(self, z: Tensor) -> Tensor:
        """``(N, z) -> (N, D)``."""
        return self.dec(z)

    def loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mu, logsigma = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + eps * logsigma.exp()
        rec = (self.decode(z) - x).square().sum() / x.shape[0]
        kl = 0.5 * (mu.square() + (2 * logsigma).exp() - 1 - 2 * logsigma).sum() / x.shape[0]
        l2 = sum(p.square().sum() for n, p in self.dec.named_parameters() if n.endswith("weight"))
        return rec + kl + 0.01 * l2


def default_sizes(n_features: int) -> tuple[int, int]:
    """(latent, hidden) as in the authors' ``train_vae.jl``."""
    return (2, 16) if n_features <= 2 else (4, 32)


def train_vae(
    x: Tensor,
    latent: int | None = None,
    hidden: int | None = None,
    epochs: int = 100,
    batch_size: int = 50,
    seed: int = 0,
) -> VAE:
    """Fit a VAE on ``x`` ``(n, D)`` (CPU, deterministic for a seed)."""
    z0, h0 = default_sizes(x.shape[1])
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    vae = VAE(x.shape[1], latent or z0, hidden or h0)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    x = x.detach().float().cpu()
    n = x.shape[0]
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(batch_size):
            opt.zero_grad()
            vae.loss(x[idx], g).backward()
            opt.step()
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def cache_dir() -> Path:
    root = os.environ.get("CT_CACHE_DIR") or os.path.join(Path.home(), ".cache", "ct")
    return Path(root) / "vae"


_MEMO: dict[str, VAE] = {}


def cached_vae(
    key: dict, x: Tensor, latent: int | None, hidden: int | None, epochs: int, seed: int = 0
) -> VAE:
    """Train once per (dataset config, sizes) and reuse: in memory, then on disk (state dict only)."""
    z0, h0 = default_sizes(x.shape[1])
    latent, hidden = latent or z0, hidden or h0
    spec = json.dumps(
        {
            "data": key,
            "latent": latent,
            "hidden": hidden,
            "epochs": epochs,
            "seed": seed,
            "n": int(x.shape[0]),
            "D": int(x.shape[1]),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
    if digest in _MEMO:
        return _MEMO[digest]
    path = cache_dir() / f"{digest}.pt"
    vae = VAE(x.shape[1], latent, hidden)
    if path.exists():
        try:
            vae.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            vae.eval()
            for p in vae.parameters():
                p.requires_grad_(False)
            _MEMO[digest] = vae
            return vae
        except Exception:  # a corrupt or stale cache file: retrain below
            pass
    vae = train_vae(x, latent, hidden, epochs, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(vae.state_dict(), tmp)
    os.replace(tmp, path)
    _MEMO[digest] = vae
    return vae
