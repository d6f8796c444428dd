"""Arrow plumbing the rules share: problems and masks, type predicates, plain layouts,
and `cast_each` (one Arrow cast, bisected to isolate the values it refuses)."""

from __future__ import annotations

import reprlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

UTC_US = pa.timestamp("us", tz="UTC")


LIST_OF_STRINGS = pa.list_(pa.string())


INT64_MIN = -(1 << 63)


INT64_MAX = (1 << 63) - 1


# The instants of years 1-9999, in microseconds since the epoch.
MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z


MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z


_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1}


_US_PER_DAY = 86_400_000_000


_MIN_DAY = MIN_US // _US_PER_DAY  # 0001-01-01 (exact: the bounds are whole days)


_MAX_DAY = (MAX_US + 1) // _US_PER_DAY - 1  # 9999-12-31


@dataclass(frozen=True)
class Problem:
    field: str
    code: str
    mask: pa.Array  # bool, no nulls: True where the row breaks the rule
    message: str  # may hold {value}

    def render(self, value: Any) -> str:
        return self.message.format(value=_QuotedValue(value))


# A value quoted in an error message is abbreviated (reprlib): a 10,000-item list or a long
# string is named by its start, never copied whole into every rejects line and log.
_QUOTE = reprlib.Repr()  # Python 3.11: limits are attributes, not arguments
_QUOTE.maxstring = _QUOTE.maxother = 120
_QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxdict = 12
_QUOTE.maxlevel = 2


class _QuotedValue:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return _QUOTE.repr(self.value)


def false_mask(n: int) -> pa.Array:
    return pa.repeat(pa.scalar(False), n) if n else pa.array([], pa.bool_())


def any_of(problems: list[Problem], n: int) -> pa.Array:
    bad = false_mask(n)
    for p in problems:
        bad = pc.or_(bad, p.mask)
    return bad


def nulls_false(arr: pa.Array) -> pa.Array:
    """A boolean array with null read as False."""
    if arr.null_count == 0:
        return arr
    # NOTE: null AND false is false, and and_kleene is far cheaper than pc.fill_null.
    return pc.and_kleene(arr, pc.is_valid(arr))


def _any(mask: pa.Array | None) -> bool:
    return mask is not None and bool(pc.any(mask).as_py())


def _or(a: pa.Array | None, b: pa.Array | None) -> pa.Array | None:
    if a is None:
        return b
    if b is None:
        return a
    return pc.or_(a, b)


def null_where(arr: pa.Array, bad: pa.Array | None) -> pa.Array:
    if not _any(bad):
        return arr
    return pc.if_else(bad, pa.nulls(len(arr), arr.type), arr)


def is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def is_bytes(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t))


def is_list(t: pa.DataType) -> bool:
    """A list type after `plain` (list or large_list)."""
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t))


def _is_list_like(t: pa.DataType) -> bool:
    return (
        is_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


def plain(arr: pa.Array) -> pa.Array:
    """The same values in one of a few plain layouts: extension types as their storage,
    dictionaries and run-end encoded arrays decoded, views and fixed-size binaries as
    (large) strings and binaries, every list type as a list whose null rows hold no items
    (so its values are exactly its items, in row order)."""
    while True:
        t = arr.type
        if isinstance(arr, pa.ExtensionArray):
            arr = arr.storage
        elif pa.types.is_dictionary(t):
            arr = arr.dictionary_decode()
        elif pa.types.is_run_end_encoded(t):
            arr = pc.run_end_decode(arr)
        elif pa.types.is_string_view(t):
            arr = arr.cast(pa.large_string())
        elif pa.types.is_binary_view(t) or pa.types.is_fixed_size_binary(t):
            arr = arr.cast(pa.large_binary())
        elif _is_list_like(t):
            return _plain_list(arr)
        else:
            return arr


def _plain_list(arr: pa.Array) -> pa.Array:
    # NOTE: rebuilt from `flatten` (which skips null rows and honours slices) and the row
    # lengths, not cast: Arrow 26 casts a list_view whose views are out of order to wrong
    # values, and a null list row may own items that `list_parent_indices` would count.
    flat = arr.flatten()
    items = plain(flat)
    if is_list(arr.type) and arr.offset == 0 and len(arr.values) == len(flat):
        # Already plain: not sliced, and no null row owns items (flatten skips those).
        return arr if items is flat else with_items(arr, items)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).cast(pa.int64())
    offsets = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(lengths)])
    nulls = arr.is_null() if arr.null_count else None
    if len(items) < (1 << 31) - 1:
        return pa.ListArray.from_arrays(offsets.cast(pa.int32()), items, mask=nulls)
    return pa.LargeListArray.from_arrays(offsets, items, mask=nulls)


def present(arr: pa.Array) -> pa.Array:
    """True where a value is there (not null), for an array of any type."""
    try:
        return pc.is_valid(arr)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([v is not None for v in arr.to_pylist()], pa.bool_())


_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError)


def cast_each(
    arr: pa.Array,
    cast: Callable[[pa.Array], pa.Array],
    target: pa.DataType,
    plausible: str | None = None,
) -> tuple[pa.Array, pa.Array | None]:
    """`cast(arr)`, with a value the cast refuses turned into null and flagged in the mask.

    `cast` must be element-wise: each output value depends on its input value alone, and
    the call fails iff some non-null value fails (true of Arrow's cast kernels). Then one
    call on the whole column, and calls on halves of a column that failed, give for every
    value exactly what a call on that value alone gives: the verdict does not depend on
    the neighbours. Only a column that fails is cut (about 2·k·log2(n/k) calls for k bad
    values among n); returns (typed, None) when nothing was refused.

    `plausible`, a regex, must match every value the cast accepts (a necessary condition,
    a superset of the cast's grammar). On a column that failed, values it does not match
    are refused without casting them: the cast would refuse them too, so this changes no
    verdict; it only spares the bisection a column of garbage (README, Performance).
    Likewise a column whose values repeat is cut over
    its distinct values.
    """
    try:
        return cast(arr), None
    except _CAST_ERRORS:
        pass
    implausible = None
    if plausible is not None:
        implausible = nulls_false(pc.invert(pc.match_substring_regex(arr, plausible)))
        if _any(implausible):
            arr = null_where(arr, implausible)
            try:
                return cast(arr), implausible
            except _CAST_ERRORS:
                pass
        else:
            implausible = None
    # The cast is a function of the value: casting each distinct value once and taking the
    # results by index is the same, and far fewer casts when the refused values repeat.
    encoded = arr.dictionary_encode() if len(arr) > 64 else None
    if encoded is not None and len(encoded.dictionary) * 4 <= len(arr):
        typed, refused_values = cast_each(encoded.dictionary, cast, target)
        if refused_values is None:  # pragma: no cover - the whole column failed above
            return pc.take(typed, encoded.indices), implausible
        refused_rows = nulls_false(pc.take(refused_values, encoded.indices))
        return pc.take(typed, encoded.indices), _or(implausible, refused_rows)
    pieces: list[pa.Array] = []
    refused: list[int] = []

    def split(start: int, n: int) -> None:  # arr[start:start+n] is known to fail
        if n == 1:
            pieces.append(pa.nulls(1, target))
            refused.append(start)
            return
        half = n // 2
        for s, m in ((start, half), (start + half, n - half)):
            piece = arr.slice(s, m)
            if piece.null_count == m:
                pieces.append(pa.nulls(m, target))
                continue
            try:
                pieces.append(cast(piece))
            except _CAST_ERRORS:
                split(s, m)

    split(0, len(arr))
    flags = [False] * len(arr)
    for i in refused:
        flags[i] = True
    return pa.concat_arrays(pieces), _or(implausible, pa.array(flags, pa.bool_()))


def may_hold(arr: pa.Array, *needles: bytes) -> bool:
    """Whether any value of a (large) string/binary array may contain one of `needles`: a
    memchr over the bytes of the array's values, far cheaper than a per-value kernel.
    False is certain; True only means "look closer" (a match
    may straddle two values)."""
    span = _data_span(arr)
    if span is None:
        return False
    data, start, stop = span
    raw = data.slice(start, stop - start).to_pybytes()
    return any(raw.find(n) >= 0 for n in needles)


def data_bytes(arr: pa.Array) -> int:
    """The bytes of all values of a (large) string/binary array together, from its offsets:
    O(1), so a column that is small in all cannot hold a value over a cap."""
    span = _data_span(arr)
    return 0 if span is None else span[2] - span[1]


def _data_span(arr: pa.Array) -> tuple[pa.Buffer, int, int] | None:
    """(data buffer, start, stop) of the values of a (large) string/binary array."""
    if len(arr) == 0:
        return None
    bufs = arr.buffers()
    offsets, data = bufs[1], bufs[2]
    if data is None or offsets is None:
        return None
    fmt, width = (
        ("=q", 8)
        if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
        else ("=i", 4)
    )
    (start,) = struct.unpack_from(fmt, offsets, width * arr.offset)
    (stop,) = struct.unpack_from(fmt, offsets, width * (arr.offset + len(arr)))
    return data, start, stop


def decode_utf8(arr: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """(large) binary → (large) string by Arrow's validating cast, value by value."""
    target = pa.large_string() if pa.types.is_large_binary(arr.type) else pa.string()
    return cast_each(arr, lambda a: a.cast(target), target)


def text_of(raw: pa.Array) -> pa.Array | None:
    """Text as it is, binary decoded (validation has already refused invalid UTF-8); None
    for any other type."""
    t = raw.type
    if is_text(t):
        return raw
    return decode_utf8(raw)[0] if is_bytes(t) else None


def _as_string(arr: pa.Array) -> pa.Array:
    return arr if pa.types.is_string(arr.type) else arr.cast(pa.string())


def _bytes_view(s: pa.Array) -> pa.Array:
    return s.view(pa.large_binary() if pa.types.is_large_string(s.type) else pa.binary())


def _trimmed(raw: pa.Array) -> pa.Array:
    """Text trimmed; blank → null."""
    s = pc.utf8_trim_whitespace(raw)
    blank = pc.equal(pc.binary_length(s), _ZERO)
    return null_where(s, nulls_false(blank))


_ZERO = pa.scalar(0, pa.int32())


Parsed = tuple[pa.Array, pa.Array | None]


def _refuse_all(raw: pa.Array, target: pa.DataType) -> Parsed:
    """A column of a type that cannot hold the field: every value there is refused."""
    return pa.nulls(len(raw), target), present(raw)


def with_items(like: pa.Array, items: pa.Array) -> pa.Array:
    """A list array with the rows of `like` (a plain list) and these items."""
    cls = pa.LargeListArray if pa.types.is_large_list(like.type) else pa.ListArray
    nulls = like.is_null() if like.null_count else None
    return cls.from_arrays(like.offsets, items, mask=nulls)


def rows_with(lists: pa.Array, item_mask: pa.Array) -> pa.Array:
    """Per row of a plain list array: does any of its items have `item_mask` set?"""
    return pc.greater(per_row_sum(lists, pc.cast(item_mask, pa.int64())), 0)


def per_row_sum(lists: pa.Array, item_values: pa.Array) -> pa.Array:
    """Per row of a plain list array: the sum of `item_values` (int64, one per item) over
    its items (0 for a null or empty row)."""
    running = pa.concat_arrays(
        [pa.array([0], pa.int64()), pc.cumulative_sum(pc.fill_null(item_values, 0))]
    )
    at = pc.take(running, lists.offsets)
    return pc.subtract(at.slice(1), at.slice(0, len(lists)))


def drop_null_items(lists: pa.Array) -> pa.Array:
    """A plain list array without its null items."""
    items = lists.values
    if items.null_count == 0:
        return lists
    keep = pc.is_valid(items)
    # NOTE: Arrow has no "filter inside each list"; rebuild the offsets from a running count
    # of the kept items, taken at the old list boundaries.
    kept = pc.cumulative_sum(pc.cast(keep, pa.int64()))
    running = pa.concat_arrays([pa.array([0], pa.int64()), kept])
    offsets = pc.take(running, lists.offsets).cast(lists.offsets.type)
    cls = pa.LargeListArray if pa.types.is_large_list(lists.type) else pa.ListArray
    nulls = lists.is_null() if lists.null_count else None
    return cls.from_arrays(offsets, items.filter(keep), mask=nulls)
