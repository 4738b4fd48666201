"""Julia's default random streams (Julia 1.11, the version the paper's experiments ran on).

The paper's synthetic datasets are drawn by MLJBase under ``Xoshiro(42)`` and shuffled under
``Xoshiro(2025)`` (``docs/julia_streams.md``). This module re-implements, in Python, the parts of
Julia's ``Random`` standard library those calls touch, so that the same integers give the same
points:

* :class:`Xoshiro`: the xoshiro256++ generator; an integer seed ``n >= 0`` is split into 32-bit
  little-endian words, hashed with SHA-256, and the digest read as four little-endian ``UInt64``
  state words.
* :meth:`Xoshiro.rand`: ``rand(rng)`` for ``Float64``, the top 53 bits times ``2^-53``.
* :meth:`Xoshiro.rand_array`: ``rand(rng, n)`` / ``rand!`` on a ``Float64`` array. Arrays of at
  least 64 bytes go through Julia's bulk path: eight child generators are forked from the parent
  (32 draws, each multiplied by an odd constant) and interleaved; the remainder comes from the
  parent.
* :meth:`Xoshiro.randn`: Julia's 256-strip ziggurat (Marsaglia and Tsang) on 52 random bits, with
  tables computed here in 50-digit arithmetic from the strip area of the tail at
  ``r = 3.65415288536100879635``; this reproduces Julia's constant tables entry for entry.
* :meth:`Xoshiro.randperm`: ``randperm(rng, n)``, the "inside-out" Fisher–Yates shuffle with
  masked rejection sampling of ``j ∈ [1, i]`` from 52-bit draws.

Everything here is sequential by nature (each draw depends on the last) and written for the few
hundred thousand draws the datasets need.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct

import numpy as np

__all__ = ["Xoshiro", "seed_state", "ziggurat_tables"]

_M64 = (1 << 64) - 1
# Multipliers of Julia's bulk-generation fork (odd 64-bit constants, one per state word).
_FORK = (0x02011CE34BCE797F, 0x5A94851FB48A6E05, 0x3688CF5D48899FA7, 0x867B4BB4C42E5661)
_BULK_LANES = 8
_BULK_MIN_BYTES = 64
_ZIG_R = 3.6541528853610087963519472518
_ZIG_INV_R = 1.0 / _ZIG_R


def seed_state(seed: int) -> tuple[int, int, int, int]:
    """The four xoshiro256++ state words Julia derives from a non-negative integer seed."""
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    words = []
    n = int(seed)
    while True:
        words.append(n & 0xFFFFFFFF)
        n >>= 32
        if n == 0:
            break
    digest = hashlib.sha256(b"".join(struct.pack("<I", w) for w in words)).digest()
    return struct.unpack("<4Q", digest)


@functools.lru_cache(maxsize=1)
def ziggurat_tables() -> tuple[list[int], list[float], list[float]]:
    """``(ki, wi, fi)`` of Julia's normal ziggurat (0-based, 256 strips, 51-bit integers).

    Strip area ``v = r·f(r) + ∫_r^∞ f`` with ``f(x) = exp(−x²/2)``; ``x_255 = r``,
    ``x_i = f⁻¹(v/x_{i+1} + f(x_{i+1}))``; ``ki[i+1] = ⌊2^51·x_i/x_{i+1}⌋``, ``wi[i] = x_i/2^51``,
    ``fi[i] = f(x_i)``; strip 0 is the tail (``ki[0] = ⌊2^51·r·f(r)/v⌋``, ``wi[0] = v/f(r)/2^51``,
    ``fi[0] = 1``) and ``ki[1] = 0``. Computed at 50 digits and rounded once to ``Float64``.
    """
    import mpmath as mp

    with mp.workdps(50):
        r = mp.mpf("3.6541528853610087963519472518")

        def f(x: mp.mpf) -> mp.mpf:
            return mp.exp(-x * x / 2)

        v = r * f(r) + mp.sqrt(mp.pi / 2) * mp.erfc(r / mp.sqrt(2))
        scale = mp.mpf(2) ** 51
        ki = [0] * 256
        wi = [mp.mpf(0)] * 256
        fi = [mp.mpf(0)] * 256
        x1 = r
        wi[255], fi[255] = x1 / scale, f(x1)
        ki[0] = int(mp.floor(x1 * fi[255] / v * scale))
        wi[0], fi[0] = v / fi[255] / scale, mp.mpf(1)
        for i in range(254, 0, -1):
            x = mp.sqrt(-2 * mp.log(v / x1 + fi[i + 1]))
            ki[i + 1] = int(mp.floor(x / x1 * scale))
            wi[i], fi[i] = x / scale, f(x)
            x1 = x
        ki[1] = 0
        return ki, [float(w) for w in wi], [float(p) for p in fi]


def _stream(state: tuple[int, int, int, int], n: int) -> tuple[list[int], tuple[int, ...]]:
    """``n`` outputs of one generator from ``state`` and the state after them."""
    s0, s1, s2, s3 = state
    out = [0] * n
    for k in range(n):
        t = (s0 + s3) & _M64
        out[k] = ((((t << 23) | (t >> 41)) & _M64) + s0) & _M64
        t = (s1 << 17) & _M64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = ((s3 << 45) | (s3 >> 19)) & _M64
    return out, (s0, s1, s2, s3)


def _to_unit(words: list[int]) -> np.ndarray:
    """``UInt64`` draws to ``Float64`` in [0, 1): the top 53 bits times ``2^-53``."""
    return (np.array(words, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * 2.0**-53


class Xoshiro:
    """Julia's ``Xoshiro(seed)`` (xoshiro256++), drawing exactly the numbers Julia 1.11 draws."""

    __slots__ = ("state",)

    def __init__(self, seed: int | None = None, *, state: tuple[int, ...] | None = None) -> None:
        if (seed is None) == (state is None):
            raise ValueError("give exactly one of seed or state")
        self.state = tuple(state) if state is not None else seed_state(int(seed))  # type: ignore[arg-type]

    def next_u64(self) -> int:
        """``rand(rng, UInt64)``."""
        (out,), self.state = _stream(self.state, 1)
        return out

    def u64(self, n: int) -> list[int]:
        """``n`` consecutive ``rand(rng, UInt64)`` draws."""
        out, self.state = _stream(self.state, n)
        return out

    def rand(self) -> float:
        """``rand(rng)``: a ``Float64`` in [0, 1)."""
        return (self.next_u64() >> 11) * 2.0**-53

    def rand_array(self, n: int) -> np.ndarray:
        """``rand(rng, n)`` (also ``rand(rng, n, m)`` read column-major): ``(n,)`` float64.

        From 64 bytes (8 values) on, Julia fills arrays with eight forked generators whose
        outputs interleave (value ``8k + l`` from child ``l``), then the leftover ``n mod 8`` from
        the parent; the children are discarded, so the parent moves on by 32 + ``n mod 8``.
        """
        out = np.empty(n, dtype=np.float64)
        done = 0
        if 8 * n >= _BULK_MIN_BYTES:
            fork = [[(c * w) & _M64 for w in self.u64(_BULK_LANES)] for c in _FORK]
            rounds = n // _BULK_LANES
            block = np.empty((rounds, _BULK_LANES), dtype=np.float64)
            for lane in range(_BULK_LANES):
                words, _ = _stream(tuple(f[lane] for f in fork), rounds)  # type: ignore[arg-type]
                block[:, lane] = _to_unit(words)
            done = rounds * _BULK_LANES
            out[:done] = block.reshape(-1)
        if done < n:
            out[done:] = _to_unit(self.u64(n - done))
        return out

    def randn(self) -> float:
        """``randn(rng)``: one standard normal ``Float64`` (Julia's ziggurat)."""
        ki, wi, fi = ziggurat_tables()
        while True:
            r = self.next_u64() >> 12
            rabs = r >> 1
            idx = rabs & 0xFF
            x = float(-rabs if r & 1 else rabs) * wi[idx]
            if rabs < ki[idx]:
                return x
            if idx == 0:  # the tail beyond r
                while True:
                    xx = -_ZIG_INV_R * math.log(self.rand())
                    yy = -math.log(self.rand())
                    if yy + yy > xx * xx:
                        return -_ZIG_R - xx if (rabs >> 8) & 1 else _ZIG_R + xx
            if (fi[idx - 1] - fi[idx]) * self.rand() + fi[idx] < math.exp(-0.5 * x * x):
                return x
            # rejected: Julia starts over with a fresh draw

    def randn_array(self, n: int) -> np.ndarray:
        """``randn(rng, n)`` (or ``randn(rng, n, m)`` read column-major): ``(n,)`` float64."""
        return np.fromiter((self.randn() for _ in range(n)), dtype=np.float64, count=n)

    def randperm(self, n: int) -> np.ndarray:
        """``randperm(rng, n) .- 1``: a 0-based permutation ``(n,)`` int64.

        Julia builds it inside out: ``a[1] = 1``; for ``i = 2..n`` draw ``j`` uniform in
        ``1..i`` by masking 52-bit draws with the smallest ``2^k − 1 ≥ i − 1`` and rejecting
        values above ``i − 1``, then ``a[i] = a[j]; a[j] = i``.
        """
        a = [0] * max(n, 0)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        a[0] = 1
        mask = 3
        s0, s1, s2, s3 = self.state
        # the xoshiro step is written out here as in _stream: a call per draw would double the
        # time of the 100 000-point permutations
        for i in range(2, n + 1):
            while True:
                t = (s0 + s3) & _M64
                w = ((((t << 23) | (t >> 41)) & _M64) + s0) & _M64
                t = (s1 << 17) & _M64
                s2 ^= s0
                s3 ^= s1
                s1 ^= s2
                s0 ^= s3
                s2 ^= t
                s3 = ((s3 << 45) | (s3 >> 19)) & _M64
                x = (w >> 12) & mask
                if x <= i - 1:
                    break
            j = x + 1
            if i != j:
                a[i - 1] = a[j - 1]
            a[j - 1] = i
            if i == 1 + mask:
                mask = 2 * mask + 1
        self.state = (s0, s1, s2, s3)
        return np.array(a, dtype=np.int64) - 1
