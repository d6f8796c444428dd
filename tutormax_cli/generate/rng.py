"""Counter-based randomness: SplitMix64 over row numbers, computed on whole Arrow batches."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from .compute import mod, null_where, pc, pick_slot, vocabulary


def _u64(v: int) -> pa.Scalar:
    return pa.scalar(v, pa.uint64())


# SplitMix64 (Steele, Lea, Flood 2014): the state advances by φ·2^64; the output mixes it.
_GOLDEN = _u64(0x9E3779B97F4A7C15)
_MIX1 = _u64(0xBF58476D1CE4E5B9)
_MIX2 = _u64(0x94D049BB133111EB)
_SHIFTS = (_u64(30), _u64(27), _u64(31), _u64(11))


class Rng:
    """Counter-based RNG: every draw is a pure function of (seed, stream, row number)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._keys: dict[str, pa.Scalar] = {}

    def _key(self, stream: str) -> pa.Scalar:
        key = self._keys.get(stream)
        if key is None:
            digest = hashlib.blake2b(f"{self.seed}\0{stream}".encode(), digest_size=8).digest()
            key = self._keys[stream] = _u64(int.from_bytes(digest, "little"))
        return key

    def uniform(self, stream: str, idx: pa.Array) -> pa.Array:
        """Floats in [0, 1), one per row number in `idx` (uint64)."""
        s30, s27, s31, s11 = _SHIFTS
        x = pc.add(pc.multiply(idx, _GOLDEN), self._key(stream))  # wraps mod 2**64
        x = pc.multiply(pc.bit_wise_xor(x, pc.shift_right(x, s30)), _MIX1)
        x = pc.multiply(pc.bit_wise_xor(x, pc.shift_right(x, s27)), _MIX2)
        x = pc.bit_wise_xor(x, pc.shift_right(x, s31))
        return pc.multiply(pc.cast(pc.shift_right(x, s11), pa.float64()), 2.0**-53)

    def randint(self, stream: str, idx: pa.Array, lo: Any, hi: Any) -> pa.Array:
        """Integers in [lo, hi], inclusive; lo/hi are ints or int64 arrays with hi >= lo."""
        span = pc.add(pc.subtract(hi, lo), 1)
        raw = pc.cast(pc.floor(pc.multiply(self.uniform(stream, idx), span)), pa.int64())
        return pc.add(pc.min_element_wise(raw, pc.subtract(span, 1)), lo)

    def chance(self, stream: str, idx: pa.Array, p: Any) -> pa.Array:
        """True with probability p (a float or a float array)."""
        return pc.less(self.uniform(stream, idx), p)

    def pick(self, stream: str, idx: pa.Array, weights: Sequence[int]) -> pa.Array:
        """Indexes into `weights`, drawn in proportion to them (integer weights)."""
        table = _pick_table(tuple(weights))
        return pc.take(table, self.randint(stream, idx, 0, len(table) - 1))

    def choice(self, stream: str, idx: pa.Array, options: Sequence[tuple[Any, int]]) -> pa.Array:
        """Values of a weighted vocabulary `((value, weight), …)`."""
        values = vocabulary(tuple(v for v, _ in options))
        return pc.take(values, self.pick(stream, idx, [w for _, w in options]))

    def optional(self, stream: str, idx: pa.Array, values: pa.Array, p_null: float) -> pa.Array:
        """`values`, each null with probability p_null (drawn from stream `<stream>.null`)."""
        return null_where(self.chance(f"{stream}.null", idx, p_null), values)


@functools.cache
def _pick_table(weights: tuple[int, ...]) -> pa.Array:
    """Index i repeated weights[i] times: a uniform draw from it is a weighted pick."""
    return pa.array([i for i, w in enumerate(weights) for _ in range(w)], pa.int64())


def distinct_picks(rng: Rng, stream: str, idx: pa.Array, size: int, k: int) -> list[pa.Array]:
    """k indexes into a vocabulary of prime `size`, all different within a row."""
    first = rng.randint(f"{stream}.first", idx, 0, size - 1)
    step = rng.randint(f"{stream}.step", idx, 1, size - 1)
    return [mod(pc.add(first, pc.multiply(step, j)), size) for j in range(k)]


def with_fraction(rng: Rng, stream: str, idx: pa.Array, whole_us: pa.Array) -> pa.Array:
    """Add milliseconds (35%) or microseconds (10%) to whole-second instants."""
    kind = rng.pick(f"{stream}.precision", idx, (55, 35, 10))
    ms = pc.multiply(rng.randint(f"{stream}.ms", idx, 0, 999), 1000)
    us = rng.randint(f"{stream}.us", idx, 0, 999_999)
    return pc.add(whole_us, pick_slot([pa.scalar(0, pa.int64()), ms, us], kind))
