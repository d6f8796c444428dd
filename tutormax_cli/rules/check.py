"""A column's parse and its SPEC §1 constraints: `check_column`, the rules' entry point."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from .. import errors as E
from ..schema import Column, Type
from .arrow import (
    Parsed,
    Problem,
    _any,
    false_mask,
    is_text,
    null_where,
    nulls_false,
    plain,
    present,
)
from .lists import _parse_list
from .scalars import _parse_bool, _parse_float, _parse_int, _parse_string
from .timestamps import _parse_timestamp

PARSE_CODES = {
    Type.STRING: E.INVALID_STRING,
    Type.INT: E.INVALID_INT,
    Type.FLOAT: E.INVALID_FLOAT,
    Type.BOOL: E.INVALID_BOOL,
    Type.TIMESTAMP: E.INVALID_TIMESTAMP,
    Type.LIST: E.INVALID_LIST,
}


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


_PARSERS: dict[Type, Callable[[pa.Array], Parsed]] = {
    Type.STRING: _parse_string,
    Type.INT: _parse_int,
    Type.FLOAT: _parse_float,
    Type.BOOL: _parse_bool,
    Type.TIMESTAMP: _parse_timestamp,
    Type.LIST: _parse_list,
}
