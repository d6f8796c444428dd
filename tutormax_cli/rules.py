"""Per-column SPEC §1 rules: one definition of every parse, applied value by value.

A value's verdict (accepted with which typed value, or rejected with which codes) depends
on the value alone, never on the batch it comes in. Each column is parsed with whole-column
Arrow kernels; where one Arrow cast refuses a column, the column is cut in halves and the
halves cast again, recursively, until the refused values are isolated (`cast_each`): the
same cast, never a second grammar. Each rule yields a `Problem` (a boolean mask over the
batch, an error code, a message); a value that fails its parse becomes null in the typed
output, so later rules and formulas never see it (its row is rejected anyway).

The rules (text is what CSV gives; native is what Parquet and JSON give):

Text, every type: a value is trimmed of surrounding whitespace first (Unicode whitespace).
Except in string and list fields, a value blank after trimming is null (missing).

Timestamps, text: `YYYY-MM-DD` (midnight UTC), or `YYYY-MM-DD` then `T` or one space then
`HH:MM`, `HH:MM:SS` or `HH:MM:SS.fraction`, then optionally `Z` or `±HH:MM` (no offset
means UTC). Seconds are optional; an hour alone (`2024-11-07T14`) is invalid. The fraction
has 1-9 digits; digits beyond microseconds are truncated. Offsets are `Z` or `±HH:MM` only
(hours 00-23, minutes 00-59; not `+0530`, not `+05`, not a lower-case `z`). Dates must
exist in the calendar (`2024-02-30` is invalid; `2024-02-29` is valid), hours are 00-23,
minutes and seconds 00-59. The resulting UTC instant must lie in the years 1-9999, so
`0001-01-01T00:00:00+05:00` and `0000-01-01` are invalid. Otherwise `invalid_timestamp`.
Timestamps, native: a timestamp of any unit and any timezone is its instant (a timestamp
without a timezone is read as UTC), truncated to microseconds (towards the past); a date
(date32, date64) is midnight UTC of that day; either must lie in the years 1-9999.
Anything else (numbers, times, durations, nested values, ...) is `invalid_timestamp`.

Ints, text: an optional `+` or `-`, then decimal digits only (leading zeros allowed),
within int64: `9223372036854775807` is valid, 20 digits, `0x10`, `7.0`, `1e3` and `+-7`
are `invalid_int`. Ints, native: integer types of any width within int64 (a uint64 above
it is `invalid_int`); a float (of any width) only if it is finite, integral and within
int64 (`45.0` is 45: pandas writes nullable int columns as floats; `4.5`, `1e20`, nan and
inf are `invalid_int`); a decimal only if integral and within int64. Booleans, dates,
timestamps, nested values and every other type are `invalid_int`.

Floats, text: Arrow's decimal float grammar (optional sign, digits with an optional
decimal point, optional exponent: `1.5`, `+.5`, `1.`, `-2e-3`), finite only: `nan`,
`inf`, `Infinity` and out-of-range values such as `1e309` are `invalid_float`; a value too
small for a double (`1e-400`) is 0. Floats, native: float16/32/64 (finite only), integer
types of any width (rounded to the nearest double, as text is), decimals (read as their
exact decimal text, so they round exactly as text does). Others are `invalid_float`.

Booleans: text `true`/`false`, `1`/`0`, `yes`/`no`, `t`/`f` in any case; native booleans;
native integers 0 and 1. Anything else is `invalid_bool`.

Strings: text as is (only ids are trimmed). A native scalar is rendered as text by Arrow's
cast to string: integers as digits (`45`), floats in shortest form (`4.5`, `1`, `1e+20`,
`nan`), decimals with their scale (`4.50`), booleans as `true`/`false`, dates as
`2024-11-07`, timestamps as their UTC instant `2024-11-07 14:00:00.000000Z` (a date or
timestamp outside the years 1-9999 is `invalid_string`). A nested value (list, struct,
map, union) or any other type where text belongs is `invalid_string`.

Lists, text: a value that starts with `[` is a JSON array (parsed with a nesting limit of
`schema.JSON_MAX_DEPTH`; strict JSON, so a raw tab inside a string is invalid); its string
items are kept as they are, numbers and booleans are rendered as text as native scalars
are (`2.0` is `2`, `true` is `true`), null items are dropped, a nested item (array,
object) makes the list invalid. Any other value is items joined by `;` or `|`, each item
trimmed, blank items dropped (a blank value is an empty list). Lists, native: a list of
any list type (list, large_list, fixed_size_list, list_view) whose items are text or
scalars: text items as they are, scalar items rendered as strings are, null items dropped;
a list holding a nested or unrenderable item is invalid. Either way a list of more than
`schema.LIST_MAX_ITEMS` items (after dropping nulls) is invalid. Otherwise `invalid_list`.

Any Arrow type: extension types are read as their storage, dictionaries and run-end
encoded arrays as their decoded values, string_view/binary_view/fixed_size_binary as
strings and binaries; a null-typed column is all nulls. A column whose type cannot hold
the field at all has every non-null value rejected with the field's parse code.

Binary text (CSV cells, JSON lone surrogates) must be valid UTF-8; `validate` rejects NUL
bytes, invalid UTF-8 and values over `schema.FIELD_MAX_BYTES` before any rule here runs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import errors as E
from .records import loads_bounded
from .schema import LIST_MAX_ITEMS, Column, Type

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

PARSE_CODES = {
    Type.STRING: E.INVALID_STRING,
    Type.INT: E.INVALID_INT,
    Type.FLOAT: E.INVALID_FLOAT,
    Type.BOOL: E.INVALID_BOOL,
    Type.TIMESTAMP: E.INVALID_TIMESTAMP,
    Type.LIST: E.INVALID_LIST,
}


@dataclass(frozen=True)
class Problem:
    field: str
    code: str
    mask: pa.Array  # bool, no nulls: True where the row breaks the rule
    message: str  # may hold {value}

    def render(self, value: Any) -> str:
        return self.message.format(value=value)


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
    # NOTE: 0.02 ms where pc.fill_null takes 0.8 ms (50k rows): null AND false is false.
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


# --- Arrow types -------------------------------------------------------------------------


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_bytes(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def is_list(t: pa.DataType) -> bool:
    """A list type after `plain` (list or large_list)."""
    return pa.types.is_list(t) or pa.types.is_large_list(t)


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


# --- the same cast, value by value -------------------------------------------------------

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
    verdict; it only spares the bisection a column of garbage (2.4 s for 50k refused values
    one by one, against milliseconds). Likewise a column whose values repeat is cut over
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
    memchr over the bytes of the array's values (0.2 ms where a per-value kernel takes
    2.8 ms a column of 50k rows). False is certain; True only means "look closer" (a match
    may straddle two values)."""
    if len(arr) == 0:
        return False
    bufs = arr.buffers()
    offsets, data = bufs[1], bufs[2]
    if data is None or offsets is None:
        return False
    fmt, width = (
        ("=q", 8)
        if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
        else ("=i", 4)
    )
    (start,) = struct.unpack_from(fmt, offsets, width * arr.offset)
    (stop,) = struct.unpack_from(fmt, offsets, width * (arr.offset + len(arr)))
    raw = data.slice(start, stop - start).to_pybytes()
    return any(raw.find(n) >= 0 for n in needles)


def decode_utf8(arr: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """(large) binary → (large) string by Arrow's validating cast, value by value."""
    target = pa.large_string() if pa.types.is_large_binary(arr.type) else pa.string()
    return cast_each(arr, lambda a: a.cast(target), target)


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


# --- the column entry point --------------------------------------------------------------


def check_column(col: Column, raw: pa.Array) -> tuple[pa.Array, list[Problem]]:
    """Typed array for `col` and every problem found: parse errors, required, rule breaks."""
    raw = plain(raw)
    typed, bad_parse = _PARSERS[col.type](raw)
    if col.trim:
        typed = pc.utf8_trim_whitespace(typed)
    problems: list[Problem] = []
    if _any(bad_parse):
        assert bad_parse is not None
        msg = f"not a valid {col.type.value}: {{value!r}}"
        problems.append(Problem(col.name, PARSE_CODES[col.type], bad_parse, msg))
        typed = null_where(typed, bad_parse)
    if col.required:
        missing = pc.invert(present(raw))
        if is_text(raw.type) and col.type is not Type.STRING:
            missing = pc.or_kleene(missing, pc.equal(pc.utf8_trim_whitespace(raw), ""))
        missing = nulls_false(missing)
        if _any(missing):
            problems.append(Problem(col.name, E.REQUIRED, missing, "is required"))
    problems.extend(_rules(col, typed))
    return typed, problems


def _rules(col: Column, typed: pa.Array) -> list[Problem]:
    out: list[Problem] = []

    def check(bad: pa.Array, code: str, message: str) -> None:
        bad = nulls_false(bad)
        if _any(bad):
            out.append(Problem(col.name, code, bad, message))

    if col.type is Type.STRING:
        length = pc.utf8_length(typed)
        if col.min_chars is not None:
            check(
                pc.less(length, col.min_chars),
                E.TOO_SHORT,
                f"must be at least {col.min_chars} character(s)",
            )
        if col.max_chars is not None:
            check(
                pc.greater(length, col.max_chars),
                E.TOO_LONG,
                f"must be at most {col.max_chars} characters (got {{value!r}})",
            )
        if col.non_blank:
            check(pc.equal(pc.utf8_trim_whitespace(typed), ""), E.BLANK, "must not be blank")
        if col.email:
            one_at = pc.match_substring_regex(typed, r"^[^@]+@[^@]+$")
            check(
                pc.invert(one_at),
                E.INVALID_EMAIL,
                "must hold exactly one @ with text on both sides (got {value!r})",
            )
        if col.choices is not None:
            allowed = pc.is_in(typed, value_set=pa.array(col.choices))
            check(
                pc.and_(pc.is_valid(typed), pc.invert(allowed)),
                E.INVALID_CHOICE,
                f"must be one of {', '.join(col.choices)} (got {{value!r}})",
            )
    elif col.min_value is not None or col.max_value is not None:
        lo, hi = col.min_value, col.max_value
        bad = false_mask(len(typed))
        if lo is not None:
            bad = pc.or_(bad, nulls_false(pc.less(typed, lo)))
        if hi is not None:
            bad = pc.or_(bad, nulls_false(pc.greater(typed, hi)))
        span = (
            f"between {_num(lo)} and {_num(hi)}"
            if lo is not None and hi is not None
            else (f"at least {_num(lo)}" if lo is not None else f"at most {_num(hi)}")
        )
        check(bad, E.OUT_OF_RANGE, f"must be {span} (got {{value!r}})")
    return out


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


Parsed = tuple[pa.Array, pa.Array | None]


def _refuse_all(raw: pa.Array, target: pa.DataType) -> Parsed:
    """A column of a type that cannot hold the field: every value there is refused."""
    return pa.nulls(len(raw), target), present(raw)


# --- strings -----------------------------------------------------------------------------


def _parse_string(raw: pa.Array) -> Parsed:
    rendered = render_text(raw)
    if rendered is None:
        return _refuse_all(raw, pa.string())
    return rendered


def render_text(arr: pa.Array) -> Parsed | None:
    """Values as text: text as is, binary decoded, scalars by Arrow's cast to string, dates
    and timestamps after the checks of their instant; None for a type that has no text."""
    t = arr.type
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string()), None
    if is_text(t):
        return _as_string(arr), None
    if is_bytes(t):
        text, bad = decode_utf8(arr)
        return _as_string(text), bad
    if (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_boolean(t)
    ):
        return cast_each(arr, lambda a: a.cast(pa.string()), pa.string())
    if pa.types.is_date(t):
        days, bad = _days(arr)
        return null_where(days, bad).view(pa.date32()).cast(pa.string()), bad
    if pa.types.is_timestamp(t):
        instants, bad = _native_timestamps(arr)
        return instants.cast(pa.string()), bad
    return None


# --- ints --------------------------------------------------------------------------------

_INT64_MAX_U = pa.scalar(INT64_MAX, pa.uint64())


def _to_int64(a: pa.Array) -> pa.Array:
    return a.cast(pa.int64())


def _parse_int(raw: pa.Array) -> Parsed:
    t = raw.type
    if pa.types.is_null(t):
        return pa.nulls(len(raw), pa.int64()), None
    if is_text(t) or is_bytes(t):
        return _text_ints(raw)
    if pa.types.is_integer(t):
        bad = None
        if pa.types.is_uint64(t) and (pc.max(raw).as_py() or 0) > INT64_MAX:
            bad = nulls_false(pc.greater(raw, _INT64_MAX_U))
        typed, refused = cast_each(null_where(raw, bad), _to_int64, pa.int64())
        return typed, _or(bad, refused)
    if pa.types.is_floating(t):
        x = raw.cast(pa.float64())  # exact from float16/32
        whole = pc.and_(pc.is_finite(x), pc.equal(pc.floor(x), x))
        # NOTE: -2^63 and 2^63 are exact doubles; every integral double in [-2^63, 2^63)
        # is an int64, so the safe cast below cannot refuse a value that passes here.
        inside = pc.and_(pc.greater_equal(x, -(2.0**63)), pc.less(x, 2.0**63))
        bad = pc.and_(pc.is_valid(x), pc.invert(nulls_false(pc.and_(whole, inside))))
        typed, refused = cast_each(null_where(x, bad), _to_int64, pa.int64())
        return typed, _or(bad, refused)
    if pa.types.is_decimal(t):
        # Rescale to scale 0 (refused iff there is a fractional part, or the integral part
        # is too wide for 38/76 digits, so outside int64 too), then the safe cast to int64
        # (refused iff outside int64). NOTE: Arrow 26 casts decimal32 to int64 wrongly
        # ("out of bounds" for 1.00); the detour through decimal128 is exact.
        wide = pa.decimal256(76, 0) if pa.types.is_decimal256(t) else pa.decimal128(38, 0)
        return cast_each(raw, lambda a: a.cast(wide).cast(pa.int64()), pa.int64())
    return _refuse_all(raw, pa.int64())


def _text_ints(raw: pa.Array) -> Parsed:
    s = raw
    if is_bytes(s.type):
        s, _ = decode_utf8(s)  # invalid UTF-8 is null here; `validate` rejected it already
    s = _trimmed(s)
    # Arrow's int64 cast accepts exactly `-?[0-9]+` within int64, plus hex (`0x1F`; see
    # arrow/util/value_parsing.h). The rule is `[+-]?[0-9]+`: so a leading `+` is dropped
    # before the cast, and values holding an `x` (hex) or starting `+-` are refused.
    bad = None
    if may_hold(s, b"x", b"X"):
        bad = nulls_false(pc.match_substring(s, "x", ignore_case=True))
    if may_hold(s, b"+"):
        plus = nulls_false(pc.starts_with(s, "+"))
        if _any(plus):
            bad = _or(bad, nulls_false(pc.starts_with(s, "+-")))
            s = pc.if_else(plus, pc.utf8_slice_codeunits(s, 1), s)
    typed, refused = cast_each(null_where(s, bad), _to_int64, pa.int64(), _PLAUSIBLE_INT)
    return typed, _or(bad, refused)


# What Arrow's int64 cast can accept once hex is refused (see above).
_PLAUSIBLE_INT = r"^-?[0-9]+$"


# --- floats ------------------------------------------------------------------------------


def _to_float64(a: pa.Array) -> pa.Array:
    return a.cast(pa.float64())


# A finite value that Arrow's float cast accepts is written with these characters only;
# any other (`nan`, `inf`, `Infinity`, `nan(1)`) is refused by the cast or not finite.
_PLAUSIBLE_FLOAT = r"^[0-9.eE+-]+$"


def _parse_float(raw: pa.Array) -> Parsed:
    t = raw.type
    if pa.types.is_null(t):
        return pa.nulls(len(raw), pa.float64()), None
    if is_text(t) or is_bytes(t) or pa.types.is_decimal(t):
        if pa.types.is_decimal(t):
            text = raw.cast(pa.string())  # exact: `4.50`, `1.23E+4`
        elif is_bytes(t):
            text, _ = decode_utf8(raw)
        else:
            text = raw
        typed, bad = cast_each(_trimmed(text), _to_float64, pa.float64(), _PLAUSIBLE_FLOAT)
    elif pa.types.is_floating(t):
        typed, bad = raw.cast(pa.float64()), None  # exact from float16/32
    elif pa.types.is_integer(t):
        # safe=False only allows rounding to the nearest double (above 2^53), as text does.
        typed, bad = raw.cast(pa.float64(), safe=False), None
    else:
        return _refuse_all(raw, pa.float64())
    if pc.all(pc.is_finite(typed)).as_py() is False:  # None: all null
        infinite = nulls_false(pc.invert(pc.is_finite(typed)))
        return null_where(typed, infinite), _or(bad, infinite)
    return typed, bad


# --- bools -------------------------------------------------------------------------------

_BOOLS = {
    "true": True,
    "1": True,
    "yes": True,
    "t": True,
    "false": False,
    "0": False,
    "no": False,
    "f": False,
}
_BOOL_KEYS = pa.array(list(_BOOLS))
_BOOL_VALUES = pa.array(list(_BOOLS.values()))


def _parse_bool(raw: pa.Array) -> Parsed:
    t = raw.type
    if pa.types.is_boolean(t):
        return raw, None
    if pa.types.is_null(t):
        return pa.nulls(len(raw), pa.bool_()), None
    if is_text(t) or is_bytes(t):
        text = decode_utf8(raw)[0] if is_bytes(t) else raw
        key = _as_string(pc.utf8_lower(_trimmed(text)))
        idx = pc.index_in(key, value_set=_BOOL_KEYS)
        typed = pc.take(_BOOL_VALUES, idx)
        return typed, nulls_false(pc.and_(pc.is_null(idx), pc.is_valid(key)))
    if pa.types.is_integer(t):
        ok = pc.is_in(raw, value_set=pa.array([0, 1], t))
        bad = nulls_false(pc.and_(pc.is_valid(raw), pc.invert(ok)))
        typed = pc.if_else(bad, pa.nulls(len(raw), pa.bool_()), pc.equal(raw, pa.scalar(1, t)))
        return typed, bad
    return _refuse_all(raw, pa.bool_())


# --- timestamps --------------------------------------------------------------------------

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
    if is_text(t) or is_bytes(t):
        text = decode_utf8(raw)[0] if is_bytes(t) else raw
        return _text_timestamps(text)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _native_timestamps(raw)
    return _refuse_all(raw, UTC_US)


def _text_timestamps(raw: pa.Array) -> Parsed:
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


# --- lists -------------------------------------------------------------------------------

# A JSON array of plain strings (no escapes, no control characters), JSON whitespace only:
# json.loads would give exactly the items that the brackets-and-quotes split below gives.
_WS = "[ \\t\\n\\r]*"
_STR = '"[^"\\\\\\x00-\\x1f]*"'
_SIMPLE_JSON_LIST = rf"^\[{_WS}({_STR}{_WS}(,{_WS}{_STR}{_WS})*)?\]$"
_EMPTY_JSON_LIST = rf"^\[{_WS}\]$"


def _parse_list(raw: pa.Array) -> Parsed:
    t = raw.type
    if pa.types.is_null(t):
        return pa.nulls(len(raw), LIST_OF_STRINGS), None
    if is_text(t) or is_bytes(t):
        text = decode_utf8(raw)[0] if is_bytes(t) else raw
        typed, bad = _text_lists(_as_string(text))
    elif is_list(t):
        typed, bad = _native_lists(raw)
    else:
        return _refuse_all(raw, LIST_OF_STRINGS)
    lengths = pc.list_value_length(typed)
    if (pc.max(lengths).as_py() or 0) > LIST_MAX_ITEMS:
        too_many = nulls_false(pc.greater(lengths, LIST_MAX_ITEMS))
        bad = _or(bad, too_many)
        typed = null_where(typed, too_many)
    return typed, bad


def _native_lists(raw: pa.Array) -> Parsed:
    """A plain list array → list<string>: items rendered as text, null items dropped; a row
    holding an item that has no text (nested, or a time, a duration…) is refused."""
    items = raw.values
    rendered = render_text(items)
    if rendered is None:
        text, item_bad = pa.nulls(len(items), pa.string()), present(items)
    else:
        text, item_bad = rendered
    bad = None
    if _any(item_bad):
        assert item_bad is not None
        bad = rows_with(raw, item_bad)
    lists = drop_null_items(with_items(raw, text))
    if lists.type != LIST_OF_STRINGS:
        lists = lists.cast(LIST_OF_STRINGS)
    return null_where(lists, bad), bad


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


def _text_lists(raw: pa.Array) -> Parsed:
    trimmed = pc.utf8_trim_whitespace(raw)
    is_json = nulls_false(pc.starts_with(trimmed, "["))
    delimited = _split_delimited(trimmed)
    if not _any(is_json):
        return delimited, None
    simple = nulls_false(pc.match_substring_regex(trimmed, _SIMPLE_JSON_LIST))
    # Simple JSON arrays of plain strings: strip the brackets and quotes, split on `","`.
    inner = pc.replace_substring_regex(trimmed, rf'^\[{_WS}"?|"?{_WS}\]$', "")
    from_json = pc.split_pattern_regex(inner, rf'"{_WS},{_WS}"')
    empty_json = pc.match_substring_regex(trimmed, _EMPTY_JSON_LIST)
    from_json = pc.if_else(empty_json, pa.scalar([], LIST_OF_STRINGS), from_json)
    typed = pc.if_else(is_json, from_json, delimited).cast(LIST_OF_STRINGS)
    complex_json = pc.and_(is_json, pc.invert(simple))
    if not _any(complex_json):
        return typed, None
    return _json_lists_one_by_one(trimmed, complex_json, typed)


def _split_delimited(text: pa.Array) -> pa.Array:
    parts = pc.split_pattern_regex(text, r"[;|]")
    items = pc.utf8_trim_whitespace(parts.values)
    blanks_as_null = null_where(items, nulls_false(pc.equal(items, "")))
    lists = drop_null_items(with_items(parts, blanks_as_null))
    return pc.if_else(pc.is_valid(text), lists, pa.nulls(len(text), lists.type))


def _json_lists_one_by_one(
    text: pa.Array, complex_json: pa.Array, typed: pa.Array
) -> tuple[pa.Array, pa.Array]:
    # NOTE: JSON arrays with escapes or non-string items are rare; parse only those rows.
    values = typed.to_pylist()
    bad = [False] * len(values)
    floats: list[float] = []  # rendered by Arrow, as a native list<double> item would be
    for i, (v, c) in enumerate(zip(text.to_pylist(), complex_json.to_pylist(), strict=True)):
        if not c:
            continue
        try:
            items = loads_bounded(v)
            if not isinstance(items, list):
                raise ValueError("not a JSON array")
            out: list[Any] = []
            for x in items:
                if x is None:
                    continue
                if isinstance(x, str):
                    x.encode()  # a lone surrogate (`"\\ud800"`) is no text: ValueError
                    out.append(x)
                elif isinstance(x, bool):
                    out.append("true" if x else "false")
                elif isinstance(x, int):
                    out.append(str(x))
                elif isinstance(x, float):
                    out.append(len(floats))
                    floats.append(x)
                else:
                    raise ValueError("a nested item")
            values[i] = out
        except ValueError:
            values[i], bad[i] = None, True
    if floats:
        as_text = pa.array(floats, pa.float64()).cast(pa.string()).to_pylist()
        for row in values:
            if row:
                row[:] = [as_text[x] if isinstance(x, int) else x for x in row]
    return pa.array(values, LIST_OF_STRINGS), pa.array(bad, pa.bool_())


_PARSERS: dict[Type, Callable[[pa.Array], Parsed]] = {
    Type.STRING: _parse_string,
    Type.INT: _parse_int,
    Type.FLOAT: _parse_float,
    Type.BOOL: _parse_bool,
    Type.TIMESTAMP: _parse_timestamp,
    Type.LIST: _parse_list,
}

__all__ = [
    "PARSE_CODES",
    "Problem",
    "any_of",
    "cast_each",
    "check_column",
    "decode_utf8",
    "false_mask",
    "is_bytes",
    "is_list",
    "is_text",
    "may_hold",
    "null_where",
    "nulls_false",
    "per_row_sum",
    "plain",
    "present",
    "render_text",
    "rows_with",
    "with_items",
]
