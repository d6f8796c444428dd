"""Per-column SPEC §1 rules: text or native Arrow input → the column's canonical Arrow type.

Each rule yields a `Problem`: a boolean mask over the batch, an error code and a message.
Values that fail a rule become null in the typed output, so later rules and formulas never
see them (their row is rejected anyway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import errors as E
from .schema import Column, Type


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


def _mask(arr: pa.Array) -> pa.Array:
    return pc.fill_null(arr, False)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


_INT_RE = r"^\s*[+-]?\d{1,18}\s*$"
_FLOAT_RE = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
# SPEC §2: date, then optional time with `T` or space, optional fraction, optional offset.
_TS_RE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?)?$"
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
_SIMPLE_JSON_LIST = r'^\[\s*("[^"\\]*"\s*(,\s*"[^"\\]*"\s*)*)?\]$'


def coerce(col: Column, raw: pa.Array) -> tuple[pa.Array, list[Problem]]:
    """Typed array for `col` and every problem found: parse errors, required, rule breaks."""
    typed, bad_parse = _PARSERS[col.type](raw)
    if col.trim:
        typed = pc.utf8_trim_whitespace(typed)
    problems: list[Problem] = []
    if bad_parse is not None:
        msg = f"not a valid {col.type.value}: {{value!r}}"
        problems.append(Problem(col.name, _PARSE_CODES[col.type], bad_parse, msg))
        typed = pc.if_else(bad_parse, pa.nulls(len(typed), typed.type), typed)
    if col.required:
        missing = pc.is_null(raw)
        if _is_text(raw.type) and col.type is not Type.STRING:
            missing = pc.or_kleene(missing, pc.equal(pc.utf8_trim_whitespace(raw), ""))
        missing = _mask(missing)
        if pc.any(missing).as_py():
            problems.append(Problem(col.name, E.REQUIRED, missing, "is required"))
    problems.extend(_rules(col, typed))
    return typed, problems


def _rules(col: Column, typed: pa.Array) -> list[Problem]:
    out: list[Problem] = []

    def check(bad: pa.Array, code: str, message: str) -> None:
        bad = _mask(bad)
        if pc.any(bad).as_py():
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
            bad = pc.or_(bad, _mask(pc.less(typed, lo)))
        if hi is not None:
            bad = pc.or_(bad, _mask(pc.greater(typed, hi)))
        span = (
            f"between {_num(lo)} and {_num(hi)}"
            if lo is not None and hi is not None
            else (f"at least {_num(lo)}" if lo is not None else f"at most {_num(hi)}")
        )
        check(bad, E.OUT_OF_RANGE, f"must be {span} (got {{value!r}})")
    return out


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def _parse_string(raw: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    if _is_text(raw.type):
        return raw.cast(pa.string()), None
    if pa.types.is_null(raw.type):
        return pa.nulls(len(raw), pa.string()), None
    if pa.types.is_nested(raw.type):  # a JSON list where text was expected
        return pa.nulls(len(raw), pa.string()), pc.is_valid(raw)
    return raw.cast(pa.string()), None


def _text_parser(regex: str, target: pa.DataType, native: Any) -> Any:
    def parse(raw: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        if pa.types.is_null(raw.type):
            return pa.nulls(len(raw), target), None
        if not _is_text(raw.type):
            return native(raw)
        trimmed = pc.utf8_trim_whitespace(raw)
        try:  # fast path: every value is well formed
            typed = trimmed.cast(target)
            if pa.types.is_floating(target) and not pc.all(pc.is_finite(typed)).as_py():
                raise pa.ArrowInvalid("nan or inf")
            return typed, None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        # NOTE: Arrow's cast fails the whole array on one bad value; the regex finds which.
        blank = pc.equal(trimmed, "")
        ok = pc.match_substring_regex(trimmed, regex)
        bad = _mask(pc.and_(pc.invert(ok), pc.invert(blank)))
        clean = pc.if_else(ok, trimmed, pa.nulls(len(raw), pa.string()))
        return clean.cast(target), bad

    return parse


def _native_int(raw: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    if pa.types.is_integer(raw.type):
        return raw.cast(pa.int64()), None
    if pa.types.is_floating(raw.type):
        whole = pc.equal(pc.floor(raw), raw)
        bad = _mask(pc.invert(whole))
        clean = pc.if_else(bad, pa.nulls(len(raw), raw.type), raw)
        return clean.cast(pa.int64()), bad
    return pa.nulls(len(raw), pa.int64()), pc.is_valid(raw)


def _native_float(raw: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    if pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type):
        arr = raw.cast(pa.float64())
        finite = _mask(pc.is_finite(arr))
        bad = pc.and_(pc.is_valid(arr), pc.invert(finite))
        return pc.if_else(bad, pa.nulls(len(arr), pa.float64()), arr), bad
    return pa.nulls(len(raw), pa.float64()), pc.is_valid(raw)


def _parse_bool(raw: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    if pa.types.is_boolean(raw.type):
        return raw, None
    if pa.types.is_null(raw.type):
        return pa.nulls(len(raw), pa.bool_()), None
    if _is_text(raw.type):
        key = pc.utf8_lower(pc.utf8_trim_whitespace(raw))
        idx = pc.index_in(key, value_set=_BOOL_KEYS)
        typed = pc.take(_BOOL_VALUES, idx)
        bad = _mask(pc.and_(pc.is_null(idx), pc.not_equal(key, "")))
        return typed, bad
    if pa.types.is_integer(raw.type):
        ok = pc.is_in(raw, value_set=pa.array([0, 1], raw.type))
        bad = _mask(pc.invert(ok))
        typed = pc.if_else(bad, pa.nulls(len(raw), pa.bool_()), pc.equal(raw, 1))
        return typed, bad
    return pa.nulls(len(raw), pa.bool_()), pc.is_valid(raw)


UTC_US = pa.timestamp("us", tz="UTC")


def _parse_timestamp(raw: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    t = raw.type
    if pa.types.is_null(t):
        return pa.nulls(len(raw), UTC_US), None
    if pa.types.is_timestamp(t):
        # NOTE: a naive timestamp is UTC (SPEC §2); cast keeps its wall value as the UTC instant.
        return raw.cast(pa.timestamp(t.unit, tz=t.tz or "UTC")).cast(UTC_US, safe=False), None
    if pa.types.is_date(t):
        return raw.cast(pa.timestamp("us")).cast(UTC_US), None
    if not _is_text(t):
        return pa.nulls(len(raw), UTC_US), pc.is_valid(raw)
    trimmed = pc.utf8_trim_whitespace(raw)
    try:  # fast path: every value is a well-formed ISO-8601 timestamp or date
        return _with_offset(trimmed).cast(UTC_US), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # NOTE: Arrow's cast fails the whole array on one bad value; the SPEC §2 pattern finds
    # which, and the values that fit it are parsed one by one (2024-02-30 fits the pattern).
    ok = pc.match_substring_regex(trimmed, _TS_RE)
    bad = _mask(pc.and_(pc.invert(ok), pc.not_equal(trimmed, "")))
    text = pc.if_else(ok, trimmed, pa.nulls(len(raw), pa.string()))
    return _timestamps_one_by_one(_with_offset(text), bad)


def _with_offset(text: pa.Array) -> pa.Array:
    """Give every value an explicit offset: no offset means UTC; a bare date is midnight UTC.

    NOTE: Arrow parses offsets only into tz-aware timestamps and there refuses values
    without one. Shapes are told by length and by the character where `±HH:MM` starts.
    """
    length = pc.utf8_length(text)
    sign = pc.utf8_slice_codeunits(text, start=-6, stop=-5)
    has_offset = pc.or_(pc.ends_with(text, "Z"), pc.is_in(sign, value_set=_SIGNS))
    has_offset = pc.and_(has_offset, pc.greater(length, 10))
    if pc.all(has_offset).as_py() is not False:  # the common case of one producer's format
        return text
    suffix = pc.if_else(has_offset, "", pc.if_else(pc.equal(length, 10), "T00:00:00Z", "Z"))
    return pc.binary_join_element_wise(text, suffix, "")


_SIGNS = pa.array(["+", "-"])


def _timestamps_one_by_one(text: pa.Array, bad: pa.Array) -> tuple[pa.Array, pa.Array]:
    # NOTE: a regex-shaped but impossible value (2024-02-30) fails Arrow's cast for the
    # whole array; only such a batch is parsed value by value to find the culprit rows.
    from datetime import datetime

    out: list[Any] = []
    flags: list[bool] = []
    for v, b in zip(text.to_pylist(), bad.to_pylist(), strict=True):
        try:
            out.append(None if v is None else datetime.fromisoformat(v))
            flags.append(b)
        except ValueError:
            out.append(None)
            flags.append(True)
    return pa.array(out, UTC_US), pa.array(flags, pa.bool_())


def _parse_list(raw: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    target = pa.list_(pa.string())
    t = raw.type
    if pa.types.is_null(t):
        return pa.nulls(len(raw), target), None
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        try:
            return raw.cast(target), None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return pa.nulls(len(raw), target), pc.is_valid(raw)
    if not _is_text(t):
        return pa.nulls(len(raw), target), pc.is_valid(raw)
    trimmed = pc.utf8_trim_whitespace(raw)
    is_json = _mask(pc.starts_with(trimmed, "["))
    simple = _mask(pc.match_substring_regex(trimmed, _SIMPLE_JSON_LIST))
    # Simple JSON arrays of plain strings: strip the brackets and quotes, split on `","`.
    inner = pc.replace_substring_regex(trimmed, r'^\[\s*"?|"?\s*\]$', "")
    from_json = pc.split_pattern_regex(inner, r'"\s*,\s*"')
    empty_json = pc.match_substring_regex(trimmed, r"^\[\s*\]$")
    from_json = pc.if_else(empty_json, pa.scalar([], target), from_json)
    # `a;b|c`: trimmed items, blanks dropped.
    delimited = _split_delimited(trimmed)
    typed = pc.if_else(is_json, from_json, delimited)
    complex_json = pc.and_(is_json, pc.invert(simple))
    if not pc.any(complex_json).as_py():
        return typed.cast(target), None
    return _json_lists_one_by_one(trimmed, complex_json, typed.cast(target))


def _split_delimited(text: pa.Array) -> pa.Array:
    parts = pc.split_pattern_regex(text, r"[;|]")
    items = pc.utf8_trim_whitespace(parts.values)
    keep = pc.not_equal(items, "")
    # NOTE: Arrow has no "filter inside each list"; rebuild the offsets from a running count
    # of the kept items, taken at the old list boundaries.
    kept_before = pc.cumulative_sum(pc.cast(keep, pa.int32()))
    running = pa.concat_arrays([pa.array([0], pa.int32()), kept_before])
    offsets = pc.take(running, parts.offsets)
    lists = pa.ListArray.from_arrays(offsets, items.filter(keep))
    return pc.if_else(pc.is_valid(text), lists, pa.nulls(len(text), lists.type))


def _json_lists_one_by_one(
    text: pa.Array, complex_json: pa.Array, typed: pa.Array
) -> tuple[pa.Array, pa.Array]:
    # NOTE: JSON arrays with escapes or non-string items are rare; parse only those rows.
    values = typed.to_pylist()
    bad = [False] * len(values)
    for i, (v, c) in enumerate(zip(text.to_pylist(), complex_json.to_pylist(), strict=True)):
        if not c:
            continue
        try:
            items = json.loads(v)
            if not isinstance(items, list) or any(isinstance(x, list | dict) for x in items):
                raise ValueError
            values[i] = [x if isinstance(x, str) else json.dumps(x) for x in items if x is not None]
        except ValueError:
            values[i], bad[i] = None, True
    return pa.array(values, pa.list_(pa.string())), pa.array(bad, pa.bool_())


_PARSERS: dict[Type, Any] = {
    Type.STRING: _parse_string,
    Type.INT: _text_parser(_INT_RE, pa.int64(), _native_int),
    Type.FLOAT: _text_parser(_FLOAT_RE, pa.float64(), _native_float),
    Type.BOOL: _parse_bool,
    Type.TIMESTAMP: _parse_timestamp,
    Type.LIST: _parse_list,
}
_PARSE_CODES = {
    Type.STRING: E.INVALID_CHOICE,
    Type.INT: E.INVALID_INT,
    Type.FLOAT: E.INVALID_FLOAT,
    Type.BOOL: E.INVALID_BOOL,
    Type.TIMESTAMP: E.INVALID_TIMESTAMP,
    Type.LIST: E.INVALID_LIST,
}
