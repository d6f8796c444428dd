"""pyarrow.compute with cached literals, time units, and small column helpers."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as _pc

# Instants are int64 microseconds since the epoch (UTC).
SEC = 1_000_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR

# Functions whose positional arguments are all data, so Python literals among them can be
# swapped for Arrow scalars.
_DATA_ONLY = frozenset(
    (
        "add",
        "subtract",
        "multiply",
        "divide",
        "power",
        "equal",
        "less",
        "greater",
        "greater_equal",
        "if_else",
        "min_element_wise",
        "max_element_wise",
        "binary_join_element_wise",
        "bit_wise_xor",
        "shift_right",
        "and_",
        "or_",
        "coalesce",
        "fill_null",
    )
)
_LITERALS: dict[tuple[type, Any], pa.Scalar] = {}


def _datum(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        key = (type(value), value)
        scalar = _LITERALS.get(key)
        if scalar is None:
            scalar = _LITERALS[key] = pa.scalar(value)
        return scalar
    return value


class _Compute:
    """pyarrow.compute, with Python literals passed as cached Arrow scalars.

    pyarrow converts a Python literal on every call, and that conversion retries an
    optional import (dateutil) each time when it is not installed: a third of the run
    time on small batches.
    """

    def __getattr__(self, name: str) -> Any:
        fn = getattr(_pc, name)
        if name in _DATA_ONLY:

            def call(*args: Any, **kwargs: Any) -> Any:
                return fn(*map(_datum, args), **kwargs)

            setattr(self, name, call)
            return call
        setattr(self, name, fn)
        return fn


pc: Any = _Compute()


@functools.cache
def vocabulary(values: tuple[Any, ...]) -> pa.Array:
    """`values` as an Arrow array, built once."""
    return pa.array(values)


def lookup(values: tuple[Any, ...], idx: pa.Array) -> pa.Array:
    """Per row, values[idx]."""
    return pc.take(vocabulary(values), idx)


def null_where(mask: pa.Array, values: pa.Array) -> pa.Array:
    return pc.if_else(mask, pa.scalar(None, values.type), values)


def mod(x: Any, d: int) -> pa.Array:
    """x mod d for non-negative int64 x."""
    return pc.subtract(x, pc.multiply(pc.divide(x, d), d))


def pick_slot(slots: Sequence[pa.Array], which: pa.Array) -> pa.Array:
    """Per row, slots[which]."""
    out = slots[-1]
    for j in range(len(slots) - 2, -1, -1):
        out = pc.if_else(pc.equal(which, j), slots[j], out)
    return out


def ids(prefix: str, number: pa.Array, width: int) -> pa.Array:
    """`prefix` + 1-based zero-padded number: tut_0001."""
    digits = pc.utf8_lpad(pc.cast(pc.add(number, 1), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")
