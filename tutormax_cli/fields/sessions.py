"""SPEC §3 session fields."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import US_PER_MINUTE, clamped_floor_div, col, local, micros
from .base import Context, derived

# hour of day (0–23) -> SPEC time-of-day bucket
_TIME_OF_DAY = pa.array(
    ["night"] * 5 + ["morning"] * 7 + ["afternoon"] * 5 + ["evening"] * 5 + ["night"] * 2
)
_LATE_AFTER_MINUTES = 5


def _local_start(t: pa.Table, ctx: Context) -> pa.Array:
    return local(col(t, "scheduled_start"), ctx.timezone)


@derived("sessions", pa.bool_())
def is_weekend(t: pa.Table, ctx: Context) -> pa.Array:
    """tz(scheduled_start) is a Saturday or Sunday"""
    # NOTE: day_of_week counts Monday = 0 by default, so Saturday = 5 and Sunday = 6.
    return pc.greater_equal(pc.day_of_week(_local_start(t, ctx)), 5)


@derived("sessions", pa.string())
def time_of_day(t: pa.Table, ctx: Context) -> pa.Array:
    """hour h of tz(scheduled_start): `morning` 5 ≤ h < 12, `afternoon` 12 ≤ h < 17,
    `evening` 17 ≤ h < 22, else `night`"""
    return pc.take(_TIME_OF_DAY, pc.hour(_local_start(t, ctx)))


@derived("sessions", pa.bool_())
def is_late_start(t: pa.Table, ctx: Context) -> pa.Array:
    """late minutes > 5, where late minutes = late_start_minutes when given, else
    (actual_start − scheduled_start) in exact minutes, seconds included (5 min 30 s is late),
    when actual_start is given, else 0"""
    given = pc.greater(col(t, "late_start_minutes"), _LATE_AFTER_MINUTES)
    late_us = pc.subtract(micros(col(t, "actual_start")), micros(col(t, "scheduled_start")))
    measured = pc.greater(late_us, _LATE_AFTER_MINUTES * US_PER_MINUTE)
    # Compared separately (not converted to µs) so a huge late_start_minutes cannot overflow.
    return pc.coalesce(given, measured, False)


@derived("sessions", pa.int64())
def actual_duration_minutes(t: pa.Table, ctx: Context) -> pa.Array:
    """0 if no_show is true; null if actual_start is null; whole minutes (floor) of
    actual_end − actual_start when actual_end is given; else of (scheduled_start +
    duration_minutes) − actual_start; never below 0"""
    planned_end = pc.add(
        micros(col(t, "scheduled_start")),
        pc.multiply(col(t, "duration_minutes"), US_PER_MINUTE),
    )
    end = pc.coalesce(micros(col(t, "actual_end")), planned_end)
    elapsed = pc.subtract(end, micros(col(t, "actual_start")))  # null when actual_start is
    minutes = clamped_floor_div(elapsed, US_PER_MINUTE)
    return pc.if_else(pc.fill_null(col(t, "no_show"), False), 0, minutes)


@derived("sessions", pa.int64())
def week_of_year(t: pa.Table, ctx: Context) -> pa.Array:
    """ISO-8601 week number (1–53) of tz(scheduled_start)"""
    return pc.iso_week(_local_start(t, ctx))


@derived("sessions", pa.int64())
def month_of_year(t: pa.Table, ctx: Context) -> pa.Array:
    """month (1–12) of tz(scheduled_start)"""
    return pc.month(_local_start(t, ctx))
