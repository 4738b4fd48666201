"""The synthetic datasets (reference §4), regenerated with TaijaData's parameters.

TaijaData draws them with MLJBase's generators (Julia ``Xoshiro(42)``); numpy's streams differ,
so the points differ but the distributions are the same:

* ``lin_sep`` / ``over`` / ``gaussm``: ``make_blobs(n, p; centers=2, cluster_std)`` with centres
  uniform in the box (-10, 10)^p; MLJBase and scikit-learn use the same recipe.
* ``moons``: MLJBase draws angles θ ~ U(0, π); class 0 is (cos θ, sin θ), class 1 is
  (cos θ + xshift, −sin θ + yshift) with xshift 1.0, yshift 0.3, plus N(0, 0.1²) noise.
  scikit-learn's class 1 is (1 − cos t, 0.5 − sin t), the same curve 0.2 higher; so we take
  scikit-learn's output and move class 1 down by 0.2. (scikit-learn spaces the angles evenly
  instead of at random; after drawing a few thousand of 100 000 points that is immaterial.)
* ``circles``: ``make_circles(noise=0.15, factor=0.01)``; MLJBase labels the inner circle 0 and
  the outer 1, scikit-learn the reverse, so labels are flipped.

Split (``CTX/model_and_data.jl::get_data``): generate 100 000 points (``seed``), shuffle them
(``split_seed``), take the first ``n_train + n_val`` as train+validation and the last ``n_test``
as test, then split off the validation set keeping class ratios. Not standardised by default.
"""

from __future__ import annotations

import numpy as np

from ct_core.config import ConfigError, DataConfig
from ct_core.data.preprocess import stratified_split

__all__ = ["N_GENERATED", "generate", "n_features", "synthetic_splits"]

N_GENERATED = 100_000
"""Points generated before the shuffle, as the reference does."""

_BLOBS = {"lin_sep": (2, 0.5), "over": (2, 2.0), "gaussm": (10, 0.5)}
MOONS_YSHIFT = 0.3
"""MLJBase's default vertical offset of the second moon (scikit-learn's is 0.5)."""


def n_features(name: str) -> int:
    return _BLOBS[name][0] if name in _BLOBS else 2


def _two_curves(
    out_x: np.ndarray,
    out_y: np.ndarray,
    in_x: np.ndarray,
    in_y: np.ndarray,
    rng: np.random.RandomState,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``make_moons``/``make_circles`` tail: stack the outer (label 0) and inner
    (label 1) curves, shuffle, add N(0, noise²) noise. ``X`` ``(n, 2)``, ``y`` ``(n,)``."""
    x = np.vstack([np.append(out_x, in_x), np.append(out_y, in_y)]).T
    y = np.hstack([np.zeros(len(out_x), dtype=np.intp), np.ones(len(in_x), dtype=np.intp)])
    x, y = _shuffle(x, y, rng)
    x += rng.normal(scale=noise, size=x.shape)
    return x, y


def _shuffle(x: np.ndarray, y: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, ...]:
    """``sklearn.utils.shuffle``: one in-place shuffle of the row indices."""
    idx = np.arange(len(y))
    rng.shuffle(idx)
    return x[idx], y[idx]


def generate(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of ``name``: ``X`` ``(n, D)`` float64 and ``y`` ``(n,)`` int64 in {0, 1}.

    The recipes of scikit-learn's ``make_blobs``/``make_moons``/``make_circles`` written out in
    numpy, draw for draw (``tests/test_data.py`` checks they give the same arrays): importing
    scikit-learn costs each trial worker about a second, longer than generating the data."""
    rng = np.random.RandomState(seed)
    if name in _BLOBS:
        p, std = _BLOBS[name]
        centers = rng.uniform(-10.0, 10.0, size=(2, p))  # center_box (-10, 10)
        sizes = [n // 2 + n % 2, n // 2]
        x = np.concatenate(
            [rng.normal(loc=c, scale=std, size=(m, p)) for c, m in zip(centers, sizes)]
        )
        y = np.repeat(np.arange(2), sizes)
        x, y = _shuffle(x, y, rng)
    elif name == "moons":
        n_out, n_in = n // 2, n - n // 2
        t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
        x, y = _two_curves(
            np.cos(t_out), np.sin(t_out), 1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5, rng, 0.1
        )
        x[y == 1, 1] += MOONS_YSHIFT - 0.5
    elif name == "circles":
        n_out, n_in, factor = n // 2, n - n // 2, 0.01
        t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
        t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
        x, y = _two_curves(
            np.cos(t_out), np.sin(t_out), np.cos(t_in) * factor, np.sin(t_in) * factor, rng, 0.15
        )
        y = 1 - y
    else:
        raise ConfigError(f"data.name: {name!r} is not a synthetic dataset")
    return x.astype(np.float64), y.astype(np.int64)


def synthetic_splits(
    cfg: DataConfig, n_train: int, n_val: int, n_test: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train/val/test arrays for a synthetic ``cfg.name`` (reference §4 split logic)."""
    n_trval = n_train + n_val
    n_gen = max(N_GENERATED, n_trval + n_test)
    x, y = generate(cfg.name, n_gen, cfg.seed)
    rng = np.random.default_rng(cfg.split_seed)
    perm = rng.permutation(n_gen)
    trval, test = perm[:n_trval], perm[n_gen - n_test :]
    tr, va = stratified_split(y[trval], n_val, rng)
    tr, va = trval[tr], trval[va]
    return {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[test], y[test])}
