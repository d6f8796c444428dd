"""The rules of scalar fields: strings, ints, floats and booleans (see rules/__init__.py)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .arrow import (
    _CAST_ERRORS,
    INT64_MAX,
    Parsed,
    _any,
    _as_string,
    _or,
    _refuse_all,
    _trimmed,
    cast_each,
    decode_utf8,
    is_bytes,
    is_text,
    may_hold,
    null_where,
    nulls_false,
    text_of,
)
from .timestamps import _days, _native_timestamps


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
    if not may_hold(s, b"x", b"X"):
        # The usual column in one cast: a column the cast accepts whole, hex aside, is only
        # `-?[0-9]+` within int64 (no blank, no whitespace, no `+`), which the rule accepts
        # as the cast reads it. Any other column takes the way below.
        try:
            return _to_int64(s), None
        except _CAST_ERRORS:
            pass
    return _general_ints(s)


def _general_ints(s: pa.Array) -> Parsed:
    """Text (not binary) → int64 by the rule, whatever the column holds."""
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
    if (text := text_of(raw)) is not None:
        # A boolean column holds few distinct texts: each is read once, in the dictionary.
        coded = text.dictionary_encode()
        key = _as_string(pc.utf8_lower(_trimmed(coded.dictionary)))
        idx = pc.index_in(key, value_set=_BOOL_KEYS)
        typed = pc.take(_BOOL_VALUES, idx)
        bad = nulls_false(pc.and_(pc.is_null(idx), pc.is_valid(key)))
        return pc.take(typed, coded.indices), nulls_false(pc.take(bad, coded.indices))
    if pa.types.is_integer(t):
        ok = pc.is_in(raw, value_set=pa.array([0, 1], t))
        bad = nulls_false(pc.and_(pc.is_valid(raw), pc.invert(ok)))
        typed = pc.if_else(bad, pa.nulls(len(raw), pa.bool_()), pc.equal(raw, pa.scalar(1, t)))
        return typed, bad
    return _refuse_all(raw, pa.bool_())
