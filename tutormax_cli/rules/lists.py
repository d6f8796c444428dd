"""The rule of list fields: JSON arrays, `;`/`|`-joined text, native lists."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..json_bounds import loads_bounded
from ..schema import LIST_MAX_ITEMS
from .arrow import (
    LIST_OF_STRINGS,
    Parsed,
    _any,
    _as_string,
    _or,
    _refuse_all,
    drop_null_items,
    is_list,
    may_hold,
    null_where,
    nulls_false,
    present,
    rows_with,
    text_of,
    with_items,
)
from .scalars import render_text

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
    if (text := text_of(raw)) is not None:
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


# The same, written without whitespace: what JSON writers produce.
_COMPACT_JSON_LIST = rf"^\[({_STR}(,{_STR})*)?\]$"


def _text_lists(raw: pa.Array) -> Parsed:
    compact = _compact_json_lists(raw)
    if compact is not None:
        return compact, None
    return _general_lists(raw)


def _general_lists(raw: pa.Array) -> Parsed:
    """Text → list<string> by the rule, whatever the column holds."""
    trimmed = pc.utf8_trim_whitespace(raw)
    is_json = nulls_false(pc.starts_with(trimmed, "["))
    if not _any(is_json):
        return _split_delimited(trimmed), None
    # Delimited text is split only where there is some; elsewhere its lists are never used.
    delimited = _split_delimited(null_where(trimmed, is_json))
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


def _compact_json_lists(raw: pa.Array) -> pa.Array | None:
    """The usual column in a few kernels, or None (then the general path decides): every
    value a compact JSON array of plain strings, `[]` or `["a","b"]`. Its items are what
    lies between the first `["` and the last `"]`, split on `","` (a plain string holds no
    quote): what json.loads gives, and what the general path gives."""
    if raw.null_count == len(raw) or not may_hold(raw, b"["):
        return None
    if not pc.all(pc.match_substring_regex(raw, _COMPACT_JSON_LIST)).as_py():
        return None
    empty = pc.equal(pc.binary_length(raw), 2)  # `[]`, which would split into [""]
    items = pc.split_pattern(pc.utf8_slice_codeunits(null_where(raw, empty), 2, -2), '","')
    # NOTE: `[]` was split as a null, whose slot holds no item: valid again, it is the
    # empty list. (pc.if_else of an empty-list scalar was most of this function's cost.)
    span = items.offsets[-1].as_py() - items.offsets[0].as_py()
    if (pc.sum(pc.list_value_length(items)).as_py() or 0) != span:  # a null owning items
        return pc.if_else(empty, pa.scalar([], items.type), items).cast(LIST_OF_STRINGS)
    lists = pa.ListArray.from_arrays(items.offsets, items.values, mask=pc.is_null(raw))
    return lists.cast(LIST_OF_STRINGS)


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
                    if not math.isfinite(x):  # NaN, Infinity, 1e999: not JSON numbers
                        raise ValueError("a non-finite number")
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
