"""The synthetic datasets (docs/julia_streams.md): LS, OL, Moons, Circles and the 10-D GaussM blobs.

Two generators, chosen by ``data.rng``:

* ``julia`` (default): the authors' points. TaijaData draws each set with MLJBase's
  ``make_blobs`` / ``make_moons`` / ``make_circles`` under a fresh ``Xoshiro(data.seed)`` and the
  experiments shuffle the 100 000 points with ``randperm(Xoshiro(data.split_seed), 100_000)``;
  :func:`generate_julia` replays those calls on :mod:`ct_core.data.julia_rng` (Julia 1.11's
  streams), so train+validation and test hold the paper's points (``docs/julia_streams.md``).
* ``numpy``: the same recipes on numpy's stream (:func:`generate`, scikit-learn's draws), the
  generator ct used before; the points differ, the distributions do not.

MLJBase's recipes (``make_*`` with ``rng``), which :func:`generate_julia` follows draw for draw:

* blobs: centres ``20·rand(rng, c, p) − 10``; ``randn(rng, n, p)`` scaled and shifted per
  centre over row ranges ``1:n₁`` and ``n₁:n`` (the boundary row ``n₁`` is moved by both centres,
  as MLJBase does); labels 1, 2.
* moons: ``θ = π·rand(rng, n, 1)``; the last ``n − n÷2`` angles are negated and those points
  shifted by (xshift, yshift) = (1.0, 0.3); ``randn(rng, n, 2)·noise`` with noise 0.1; label 0
  for the first ``n÷2`` points.
* circles: ``θ = 2π·rand(rng, n, 1)``; the first ``n÷2`` points scaled by ``factor`` = 0.01
  (the inner "circle", label 0); noise 0.15.
* then every set is shuffled with ``randperm(rng, n)`` on the same generator.

Split (``CTX/model_and_data.jl::get_data``): generate 100 000 points (``seed``), shuffle them
(``split_seed``), take the first ``n_train + n_val`` as train+validation and the last ``n_test``
as test, then split off the validation set keeping class ratios (the authors draw that split from
Julia's global stream, whose state depends on the whole script; ct draws it from
``split_seed``). Not standardised by default.

numpy generator details: ``moons`` takes scikit-learn's output (class 1 is
(1 − cos t, 0.5 − sin t)) and moves class 1 down by 0.2 to MLJBase's yshift; scikit-learn spaces
the angles evenly instead of at random. ``circles`` flips scikit-learn's labels so that the inner
circle is 0 as in MLJBase.
"""

from __future__ import annotations

import os

import numpy as np

from ct_core.config import ConfigError, DataConfig
from ct_core.data.preprocess import stratified_split
from ct_core.data.registry import N_GENERATED, check_sizes

__all__ = ["N_GENERATED", "generate", "generate_julia", "n_features", "synthetic_splits"]

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


def generate_julia(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of ``name`` as TaijaData draws them with ``Xoshiro(seed)`` (module docstring).

    ``X`` ``(n, D)`` float64 and ``y`` ``(n,)`` int64 in {0, 1} (MLJBase's blob labels 1, 2 map
    to 0, 1), in MLJBase's shuffled order."""
    from ct_core.data.julia_rng import Xoshiro

    rng = Xoshiro(seed)
    if name in _BLOBS:
        p, std = _BLOBS[name]
        u = rng.rand_array(2 * p).reshape(p, 2).T  # rand(rng, 2, p), column-major
        centers = 20.0 * u - 10.0  # center_box (-10, 10)
        x = rng.randn_array(n * p).reshape(p, n).T.copy()
        n1 = n // 2  # divrem(n, 2): the last centre takes the remainder
        for rows, c in ((slice(0, n1), centers[0]), (slice(n1 - 1, n), centers[1])):
            x[rows] *= std
            x[rows] += c
        y = np.repeat(np.arange(2), [n1, n - n1])
    elif name == "moons":
        n1 = n // 2
        n2 = n - n1
        theta = np.pi * rng.rand_array(n)
        theta[n2:] *= -1.0
        x = np.column_stack([np.cos(theta), np.sin(theta)])
        x[n2:, 0] += 1.0
        x[n2:, 1] += MOONS_YSHIFT
        y = np.repeat(np.arange(2), [n1, n - n1])
        x += 0.1 * rng.randn_array(2 * n).reshape(2, n).T
    elif name == "circles":
        theta = (2.0 * np.pi) * rng.rand_array(n)
        n0 = n // 2
        x = np.column_stack([np.cos(theta), np.sin(theta)])
        x[:n0] *= 0.01
        y = np.repeat(np.arange(2), [n0, n - n0])
        x += 0.15 * rng.randn_array(2 * n).reshape(2, n).T
    else:
        raise ConfigError(f"data.name: {name!r} is not a synthetic dataset")
    perm = rng.randperm(n)
    return x[perm].astype(np.float64), y[perm].astype(np.int64)


_CACHE_VERSION = 1
"""Bump when :func:`generate_julia` or :class:`~ct_core.data.julia_rng.Xoshiro` changes output."""


def _julia_cached(name: str, n: int, seed: int, split_seed: int) -> tuple[np.ndarray, ...]:
    """:func:`generate_julia` and the split permutation, kept in ``$CT_CACHE_DIR/synthetic``.

    Replaying Julia's streams in Python takes about a second; sweep workers each load the data,
    so the arrays are written once (atomically) and read back after that."""
    from ct_core.data.download import cache_dir
    from ct_core.data.julia_rng import Xoshiro

    path = cache_dir() / "synthetic" / f"julia-v{_CACHE_VERSION}-{name}-{n}-{seed}-{split_seed}.npz"
    try:
        with np.load(path) as f:
            return f["x"], f["y"], f["perm"]
    except (OSError, KeyError, ValueError):
        pass
    x, y = generate_julia(name, n, seed)
    perm = Xoshiro(split_seed).randperm(n)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y, perm=perm)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the regeneration
    return x, y, perm


def synthetic_splits(
    cfg: DataConfig, n_train: int, n_val: int, n_test: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train/val/test arrays for a synthetic ``cfg.name`` (the authors' split)."""
    check_sizes(cfg.name, n_train, n_val, n_test)
    n_trval = n_train + n_val
    n_gen = N_GENERATED
    rng = np.random.default_rng(cfg.split_seed)
    if cfg.rng == "julia":
        x, y, perm = _julia_cached(cfg.name, n_gen, cfg.seed, cfg.split_seed)
    else:
        x, y = generate(cfg.name, n_gen, cfg.seed)
        perm = rng.permutation(n_gen)
    trval, test = perm[:n_trval], perm[n_gen - n_test :]
    tr, va = stratified_split(y[trval], n_val, rng)
    tr, va = trval[tr], trval[va]
    return {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[test], y[test])}
