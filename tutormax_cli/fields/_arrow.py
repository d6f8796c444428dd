"""Small Arrow helpers shared by the field formulas: instants as integer microseconds,
the reporting timezone, and exact half-even rounding of integer ratios."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

US_PER_MINUTE = 60_000_000
US_PER_HOUR = 60 * US_PER_MINUTE
US_PER_DAY = 24 * US_PER_HOUR

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UTC_US = pa.timestamp("us", tz="UTC")


def col(t: pa.Table, name: str) -> pa.Array:
    """One column of the table as a single contiguous array (a column of one chunk is that
    chunk, not a copy of it)."""
    column = t.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def micros(ts: pa.Array) -> pa.Array:
    """timestamp[us] -> int64 microseconds since the Unix epoch (nulls kept)."""
    return ts.cast(pa.int64())


def instant_micros(dt: datetime) -> int:
    """An instant as exact integer microseconds since the epoch (naive means UTC, SPEC §2)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1)


def instant(dt: datetime) -> pa.Array:
    """A one-element timestamp[us, UTC] array holding `dt`."""
    return pa.array([instant_micros(dt)], pa.int64()).cast(_UTC_US)


def local(ts: pa.Array, tz: str) -> pa.Array:
    """The same instants labelled with the reporting timezone.

    NOTE: Arrow's temporal component kernels (hour, day_of_week, iso_week, month, ...)
    return *local* wall-clock components for a tz-aware timestamp, DST included; the
    stored value stays UTC, so this cast is free.
    """
    return ts.cast(pa.timestamp("us", tz=tz))


def local_date(ts: pa.Array, tz: str) -> pa.Array:
    """The calendar date (date32) of each instant in the reporting timezone."""
    # NOTE: local_timestamp drops the tz after shifting to wall-clock time, so the date32
    # cast below is unambiguously the local date whatever the Arrow version does for
    # tz-aware -> date casts.
    return pc.local_timestamp(local(ts, tz)).cast(pa.date32())


def clamped_floor_div(num: pa.Array, den: int) -> pa.Array:
    """floor(max(num, 0) / den) for int64 num (nulls stay null) and den > 0."""
    # NOTE: max_element_wise skips nulls by default (max(null, 0) == 0); keep them null.
    # Clamping first makes Arrow's truncating integer division a floor.
    return pc.divide(pc.max_element_wise(num, 0, skip_nulls=False), den)


def row_numbers(n: int) -> pa.Array:
    """0, 1, …, n−1 as int64, without a Python loop (pyarrow has no arange)."""
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)


def round_half_even(num: pa.Array, den: pa.Array | int) -> pa.Array:
    """Exact round-half-even of the rational num/den (int64 in, int64 out; den > 0).

    NOTE: Arrow's integer `divide` truncates toward zero (-7 / 2 == -3, not -4), so the
    quotient is taken of |num| (where truncation is floor) and the sign restored after;
    half-even is symmetric, so this is half-even on the signed value.
    """
    mag = pc.abs_checked(num)
    q = pc.divide(mag, den)
    twice_rem = pc.multiply(pc.subtract(mag, pc.multiply(q, den)), 2)
    q_odd = pc.equal(pc.bit_wise_and(q, 1), 1)
    up = pc.or_(pc.greater(twice_rem, den), pc.and_(pc.equal(twice_rem, den), q_odd))
    rounded = pc.add(q, up.cast(pa.int64()))
    return pc.if_else(pc.less(num, 0), pc.negate(rounded), rounded)


def hundredths_to_float(hundredths: pa.Array) -> pa.Array:
    """n -> n/100 as float64: the nearest double to the 2-decimal value (IEEE division is
    correctly rounded, so 25 -> 0.25 exactly as float('0.25'))."""
    return pc.divide(hundredths.cast(pa.float64()), 100.0)
