"""SPEC §3 tutor fields."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import (
    US_PER_DAY,
    clamped_floor_div,
    col,
    instant,
    instant_micros,
    local_date,
    micros,
    row_numbers,
)
from .base import Context, derived

_LEVELS = pa.array(["junior", "mid", "senior"])


@derived("tutors", pa.int64())
def tenure_days(t: pa.Table, ctx: Context) -> pa.Array:
    """whole days from onboarding_date to as-of: floor((as_of − onboarding_date) / 24 h),
    never below 0"""
    elapsed = pc.subtract(instant_micros(ctx.as_of), micros(col(t, "onboarding_date")))
    return clamped_floor_div(elapsed, US_PER_DAY)


@derived("tutors", pa.bool_())
def is_new_tutor(t: pa.Table, ctx: Context) -> pa.Array:
    """tenure_days < 30"""
    return pc.less(tenure_days(t, ctx), 30)


@derived("tutors", pa.string())
def experience_level(t: pa.Table, ctx: Context) -> pa.Array:
    """`junior` if tenure_days < 90, `mid` if < 365, else `senior`"""
    days = tenure_days(t, ctx)
    # Index into _LEVELS = number of thresholds reached.
    level = pc.add(
        pc.greater_equal(days, 90).cast(pa.int64()), pc.greater_equal(days, 365).cast(pa.int64())
    )
    return pc.take(_LEVELS, level)


@derived("tutors", pa.int64())
def subject_count(t: pa.Table, ctx: Context) -> pa.Array:
    """number of distinct subjects after trimming, ignoring blanks, compared
    case-insensitively (Unicode casefold)"""
    subjects = col(t, "subjects")
    # NOTE: utf8_trim_whitespace and str.strip agree on every code point (checked on pyarrow 26).
    items = pc.utf8_trim_whitespace(pc.list_flatten(subjects))
    keep = pc.fill_null(pc.not_equal(items, ""), False)  # blanks and null items dropped
    parents = pc.filter(pc.list_parent_indices(subjects), keep)
    items = pc.filter(items, keep)
    # NOTE: no utf8_lower before casefold: Arrow lower-cases İ (U+0130) to "i" while
    # casefold gives "i̇", and its Unicode tables differ from Python's; folding the raw
    # distinct strings with str.casefold is exact and still one call per distinct value.
    distinct = items.dictionary_encode()
    folded = pa.array([s.casefold() for s in distinct.dictionary.to_pylist()], pa.string())
    keys = pc.take(folded, distinct.indices)
    counts = (
        pa.table({"row": parents, "key": keys})
        .group_by("row")
        .aggregate([("key", "count_distinct")])
    )
    # Scatter back to every row; rows with no surviving item (empty or null list) get 0.
    slot = pc.index_in(row_numbers(len(subjects)), value_set=counts["row"].cast(pa.int64()))
    return pc.fill_null(pc.take(counts["key_count_distinct"], slot), 0)


@derived("tutors", pa.bool_())
def is_active_today(t: pa.Table, ctx: Context) -> pa.Array:
    """updated_at is present and tz(updated_at) falls on the same calendar date as
    tz(as_of); false when updated_at is null"""
    today = local_date(instant(ctx.as_of), ctx.timezone)[0]
    same = pc.equal(local_date(col(t, "updated_at"), ctx.timezone), today)
    return pc.fill_null(same, False)
