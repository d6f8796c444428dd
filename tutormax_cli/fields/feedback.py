"""SPEC §3 feedback fields."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ..schema import CATEGORY_RATINGS
from ._arrow import (
    US_PER_HOUR,
    col,
    hundredths_to_float,
    micros,
    round_half_even,
)
from .base import Context, derived

_TS = pa.timestamp("us", tz="UTC")
_NULL_FLOAT = pa.scalar(None, pa.float64())


def _rating_sums(t: pa.Table) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(k, S, Q): count, sum and sum of squares of the non-null category ratings."""
    k = s = q = pa.scalar(0, pa.int64())
    for name in CATEGORY_RATINGS:  # 5 columns, not rows
        r = col(t, name)
        k = pc.add(k, r.is_valid().cast(pa.int64()))
        s = pc.add(s, pc.fill_null(r, 0))
        q = pc.add(q, pc.fill_null(pc.multiply(r, r), 0))
    return k, s, q


def _hundredths_or_null(k: pa.Array, num: pa.Array, den: pa.Array) -> pa.Array:
    """round_half_even(num/den) as a 2-decimal float, null where there are no ratings (k=0)."""
    none = pc.equal(k, 0)
    safe_den = pc.if_else(none, 1, den)  # never divide by zero, even in masked rows
    return pc.if_else(none, _NULL_FLOAT, hundredths_to_float(round_half_even(num, safe_den)))


def _session_start(t: pa.Table, ctx: Context) -> pa.Array:
    """session_scheduled_start, else ctx.session_start for the rows that lack it."""
    start = col(t, "session_scheduled_start")
    if ctx.session_start is None or start.null_count == 0:
        return start
    missing = start.is_null()
    looked_up = ctx.session_start(pc.filter(col(t, "session_id"), missing))
    if isinstance(looked_up, pa.ChunkedArray):
        looked_up = looked_up.combine_chunks()
    # NOTE: replace_with_mask takes the replacements in order, one per true mask slot.
    return pc.replace_with_mask(start, missing, looked_up.cast(_TS))


@derived("feedback", pa.bool_())
def is_positive(t: pa.Table, ctx: Context) -> pa.Array:
    """overall_rating ≥ 4"""
    return pc.greater_equal(col(t, "overall_rating"), 4)


@derived("feedback", pa.bool_())
def is_poor(t: pa.Table, ctx: Context) -> pa.Array:
    """overall_rating < 3"""
    return pc.less(col(t, "overall_rating"), 3)


@derived("feedback", pa.float64())
def avg_category_rating(t: pa.Table, ctx: Context) -> pa.Array:
    """mean of the non-null category ratings, rounded half-even to 2 decimals; null when none"""
    k, s, _ = _rating_sums(t)
    # mean = S/k exactly, so hundredths = round(100·S / k)
    return _hundredths_or_null(k, pc.multiply(s, 100), k)


@derived("feedback", pa.float64())
def category_variance(t: pa.Table, ctx: Context) -> pa.Array:
    """population variance of the non-null category ratings, rounded half-even to 2
    decimals; null when none"""
    k, s, q = _rating_sums(t)
    # variance = Q/k − (S/k)² = (k·Q − S²) / k² exactly
    num = pc.multiply(pc.subtract(pc.multiply(k, q), pc.multiply(s, s)), 100)
    return _hundredths_or_null(k, num, pc.multiply(k, k))


@derived("feedback", pa.bool_())
def has_text_feedback(t: pa.Table, ctx: Context) -> pa.Array:
    """free_text_feedback has a non-whitespace character"""
    text = col(t, "free_text_feedback")
    # NOTE: RE2's \S is ASCII-only; utf8_is_space uses Unicode whitespace (same as
    # str.isspace on every code point) but is false for "", hence the length test.
    blank = pc.or_(pc.utf8_is_space(text), pc.equal(pc.utf8_length(text), 0))
    return pc.fill_null(pc.invert(blank), False)


@derived("feedback", pa.float64())
def feedback_delay_hours(t: pa.Table, ctx: Context) -> pa.Array:
    """(submitted_at − the session's scheduled_start) in hours, rounded half-even to 2
    decimals; the session comes from a `session_scheduled_start` field on the record, else
    the sessions of the same run, else the sessions table (not with `--no-db`); null when
    none is found"""
    delay_us = pc.subtract(micros(col(t, "submitted_at")), micros(_session_start(t, ctx)))
    # hundredths of an hour = delay_us / (US_PER_HOUR / 100), rounded exactly
    return hundredths_to_float(round_half_even(delay_us, US_PER_HOUR // 100))
