"""The rule of timestamp fields, text and native (see rules/__init__.py)."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from .arrow import (
    _CAST_ERRORS,
    _MAX_DAY,
    _MIN_DAY,
    _US_PER,
    _US_PER_DAY,
    MAX_US,
    MIN_US,
    UTC_US,
    Parsed,
    _any,
    _bytes_view,
    _or,
    _refuse_all,
    _trimmed,
    cast_each,
    null_where,
    nulls_false,
    text_of,
)

_SIGNS = pa.array([b"+", b"-"])


_DIGITS = pa.array([str(d).encode() for d in range(10)])


_DOT = pa.scalar(b".")


# Digits 7-9 of a fraction (and only of a fraction of at most 9 digits) are dropped.
_LONG_FRACTION = r"^(.{19}\.[0-9]{6})[0-9]{1,3}([^0-9]|$)"


_NAIVE_US = pa.timestamp("us")


# Every value Arrow's ISO-8601 parser accepts has digits and `-` at the date's fixed
# places, then nothing or `T`/space and only digits, `:`, `.`, `Z` and offset signs.
_PLAUSIBLE_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.Z+-]*)?$"


def _to_utc_us(a: pa.Array) -> pa.Array:
    return a.cast(UTC_US)


def _naive_to_utc_us(a: pa.Array) -> pa.Array:
    return a.cast(_NAIVE_US).view(UTC_US)


def _parse_timestamp(raw: pa.Array) -> Parsed:
    t = raw.type
    if pa.types.is_null(t):
        return pa.nulls(len(raw), UTC_US), None
    if (text := text_of(raw)) is not None:
        return _text_timestamps(text)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _native_timestamps(raw)
    return _refuse_all(raw, UTC_US)


def _text_timestamps(raw: pa.Array) -> Parsed:
    """SPEC §2 text → timestamp[us, UTC]: `_compact_timestamps` when it can say, else
    `_general_timestamps`; both give every value the same verdict."""
    compact = _compact_timestamps(raw)
    return compact if compact is not None else _general_timestamps(raw)


_COLON = pa.scalar(b":")


def _compact_timestamps(raw: pa.Array) -> Parsed | None:
    """The usual column in one cast, or None (then the general path decides).

    A column that Arrow's zoned cast accepts whole holds only values with an offset and no
    blanks (the cast reads no whitespace). If moreover every value is at least 20 long
    (so none is an hour alone: those are 13, 14 or 19 long, see below) and ends with `Z`
    or has `:` 3 from the end (so its offset is `±HH:MM`, not `±HH` or `±HHMM`: Arrow
    reads a sign 3 or 5 from the end as those), each value takes the general path's zoned
    group and passes its checks 1-3: the verdicts are the same, in a few kernels."""
    if raw.null_count == len(raw):
        return None
    try:
        typed = raw.cast(UTC_US)
    except _CAST_ERRORS:
        return None
    if (pc.min(pc.binary_length(raw)).as_py() or 0) < 20:
        return None
    b = _bytes_view(raw)
    shaped = pc.or_(pc.ends_with(b, b"Z"), pc.equal(pc.binary_slice(b, -3, -2), _COLON))
    if not pc.all(shaped).as_py():
        return None
    return _in_years(typed)


def _general_timestamps(raw: pa.Array) -> Parsed:
    """SPEC §2 text → timestamp[us, UTC]: Arrow's ISO-8601 casts plus three checks.

    Arrow's parser (arrow/util/value_parsing.h) accepts `D` or `D sep T off`: D a calendar
    date `YYYY-MM-DD`, sep `T` or a space, T one of hh, hh:mm, hh:mm:ss, hh:mm:ss.f{1,6}
    (7-9 digits only at unit ns), off one of none, `Z`, `±HH`, `±HHMM`, `±HH:MM`, told apart
    in this order: `Z` at the end, else a sign 3, else 5, else 6 characters from the end
    (with `:` 3 from the end). A cast to a zoned type refuses a value without an offset;
    a cast to a naive type refuses a value with one. Per value:

    1. A value *has an offset* when it is not 10 characters long (a bare date, whose `-`
       sits 6 from the end) and ends with `Z` or has a sign 6 characters from the end.
       Such values take the zoned cast, the others the naive cast, read as UTC. The naive
       cast accepts exactly `D` and `D sep T` without an offset (`±HH` and `±HHMM` are
       offsets to Arrow, so refused). The zoned cast of a value with a sign 6 from the
       end cannot read `±HH` or `±HHMM`: that would put the sign inside T or on T's last
       digit, where the parser wants a digit, `:` or `.`; so it reads `Z` or `±HH:MM`, or
       refuses. Together: exactly the rule's shapes, plus an hour alone.
    2. Arrow accepts an hour alone; the rule does not. Among accepted values it is exactly
       length 13 (`D sep hh`), 14 (`D sep hhZ`), or 19 with an offset (`D sep hh±HH:MM`;
       19 without one is `hh:mm:ss`).
    3. Fractions of 7-9 digits are truncated to 6 before the cast. Arrow refuses them at
       unit us, so when a group casts whole the truncation is the identity on it, and it
       runs only on a group whose cast failed. It changes neither the end of a value nor
       its length class above (a truncated value is at least 26 long).
    4. The instant must lie in the years 1-9999 (Arrow reads year 0 and offsets past the
       ends of the calendar).
    """
    s = _trimmed(raw)
    b = _bytes_view(s)
    length = pc.binary_length(s)
    has_offset = nulls_false(
        pc.and_(
            pc.or_(pc.ends_with(s, "Z"), pc.is_in(pc.binary_slice(b, -6, -5), value_set=_SIGNS)),
            pc.not_equal(length, pa.scalar(10, length.type)),
        )
    )
    without = pc.invert(has_offset)
    zoned, bad_z = _cast_group(s, b, has_offset, _to_utc_us)
    naive, bad_n = _cast_group(s, b, without, _naive_to_utc_us)
    typed = pc.if_else(has_offset, zoned, naive)
    bad = _or(bad_z, bad_n)
    hour_only = pc.or_(
        pc.or_(pc.equal(length, _LEN[13]), pc.equal(length, _LEN[14])),
        pc.and_(pc.equal(length, _LEN[19]), has_offset),
    )
    hour_only = nulls_false(pc.and_(hour_only, pc.is_valid(typed)))
    if _any(hour_only):
        bad = _or(bad, hour_only)
        typed = null_where(typed, hour_only)
    typed, outside = _in_years(typed)
    return typed, _or(bad, outside)


_LEN = {n: pa.scalar(n, pa.int32()) for n in (13, 14, 19)}


def _cast_group(
    s: pa.Array, b: pa.Array, group: pa.Array, cast: Callable[[pa.Array], pa.Array]
) -> Parsed:
    """`cast` of the values of `s` in `group` (the others null), with step 3 above."""
    part = null_where(s, pc.invert(group))
    if part.null_count == len(part):
        return pa.nulls(len(s), UTC_US), None
    try:
        return cast(part), None
    except _CAST_ERRORS:
        pass
    long_fraction = nulls_false(
        pc.and_(
            pc.equal(pc.binary_slice(b, 19, 20), _DOT),
            pc.is_in(pc.binary_slice(b, 26, 27), value_set=_DIGITS),
        )
    )
    long_fraction = pc.and_(long_fraction, pc.is_valid(part))
    if _any(long_fraction):
        cut = pc.replace_substring_regex(part.filter(long_fraction), _LONG_FRACTION, r"\1\2")
        part = pc.replace_with_mask(part, long_fraction, cut)
    return cast_each(part, cast, UTC_US, _PLAUSIBLE_TIMESTAMP)


def _in_years(typed: pa.Array) -> Parsed:
    """timestamp[us, UTC] outside the years 1-9999 → null and flagged."""
    outside = _outside(typed.view(pa.int64()), MIN_US, MAX_US)
    return null_where(typed, outside), outside


def _outside(values: pa.Array, lo: int, hi: int) -> pa.Array | None:
    """Mask of values outside [lo, hi], or None when all are inside."""
    bounds = pc.min_max(values)
    vmin, vmax = bounds["min"].as_py(), bounds["max"].as_py()
    if vmin is None or (vmin >= lo and vmax <= hi):
        return None
    return nulls_false(pc.or_(pc.less(values, lo), pc.greater(values, hi)))


def _native_timestamps(raw: pa.Array) -> Parsed:
    """timestamp (any unit, any tz; naive = UTC) or date → timestamp[us, UTC], years 1-9999.

    The stored int64 of a timestamp is its UTC instant whatever the timezone (Arrow keeps
    instants, the timezone is display metadata). Values are range-checked in their own
    unit before scaling, so the scaling cannot overflow."""
    t = raw.type
    if pa.types.is_date(t):
        days, bad = _days(raw)
        us = pc.multiply(null_where(days, bad).cast(pa.int64()), _US_PER_DAY)
        return us.view(UTC_US), bad
    v = raw.view(pa.int64())
    if t.unit == "ns":  # int64 nanoseconds span 1677-2262: always inside
        us = pc.divide(v, 1000)  # truncates toward zero; make it floor
        if (pc.min(v).as_py() or 0) < 0:
            us = pc.if_else(pc.greater(pc.multiply(us, 1000), v), pc.subtract(us, 1), us)
        return us.view(UTC_US), None
    per = _US_PER[t.unit]
    bad = _outside(v, -(-MIN_US // per), MAX_US // per)
    v = null_where(v, bad)
    us = v if per == 1 else pc.multiply(v, per)
    return us.view(UTC_US), bad


def _days(raw: pa.Array) -> Parsed:
    """date32/date64 → int32 days since the epoch, years 1-9999 (others flagged)."""
    if pa.types.is_date32(raw.type):
        days = raw.view(pa.int32())
        bad = _outside(days, _MIN_DAY, _MAX_DAY)
        return null_where(days, bad), bad
    ms = raw.view(pa.int64())
    bad = _outside(ms, _MIN_DAY * 86_400_000, (_MAX_DAY + 1) * 86_400_000 - 1)
    ms = null_where(ms, bad)
    days = pc.divide(ms, 86_400_000)  # truncates toward zero; make it floor
    if (pc.min(ms).as_py() or 0) < 0:
        days = pc.if_else(pc.greater(pc.multiply(days, 86_400_000), ms), pc.subtract(days, 1), days)
    return days.cast(pa.int32()), bad
