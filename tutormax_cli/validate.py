"""Raw batch → typed Arrow table of the accepted rows, plus every error of each rejected row.

Input columns may arrive as text (CSV; binary so invalid UTF-8 can be caught per row) or as
native Arrow types of any kind (Parquet, JSON). Each column is first put in a plain layout
(`rules.plain`: dictionaries decoded, views and extension types unwrapped, lists rebuilt),
then checked for hostile values, then parsed by the one definition in `rules`. Each SPEC §1
rule is one vectorized check producing a mask; only rejected rows are ever visited one by
one, to spell out their errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import errors as E
from .records import misplaced_masks
from .rules import PARSE_CODES, Problem, check_column
from .rules.arrow import (
    _any,
    any_of,
    data_bytes,
    decode_utf8,
    false_mask,
    is_bytes,
    is_list,
    is_text,
    may_hold,
    null_where,
    nulls_false,
    per_row_sum,
    plain,
    rows_with,
    with_items,
)
from .schema import FIELD_MAX_BYTES, Kind


@dataclass(frozen=True)
class FieldError:
    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


@dataclass
class Rejected:
    index: int  # position in the raw batch
    errors: list[FieldError]


@dataclass
class Validated:
    table: pa.Table  # accepted rows; every column of the kind, canonical types, schema order
    others: dict[str, pa.Array]  # accepted rows; input columns not in the schema, text decoded
    accepted: pa.Array  # int64 positions of the accepted rows in the raw batch
    rejected: list[Rejected] = field(default_factory=list)


def validate(kind: Kind, raw: pa.Table) -> Validated:
    """Check every SPEC §1 rule of `kind` on `raw`, collecting all errors of each row."""
    n = raw.num_rows
    raw, misplaced = misplaced_masks(raw)
    problems: list[Problem] = []
    unread: list[Problem] = []  # a field's value rejected as it stands: no further errors
    fields = set(kind.column_names)
    for name, mask in misplaced.items():
        if name in fields:  # a JSON object or array (or a scalar in a list field)
            col = kind.column(name)
            message = f"a JSON value of the wrong shape for a {col.type.value} field: {{value!r}}"
            unread.append(Problem(name, PARSE_CODES[col.type], pc.fill_null(mask, False), message))
    problems.extend(unread)
    # One column at a time: the parallelism is between batches (ordered.in_order). Checking
    # a batch's columns on a pool of threads too made every kernel's return wait for the
    # interpreter lock (README, Performance: measured and not kept).
    checked = [_column(kind, name, _one_chunk(raw.column(name))) for name in raw.column_names]
    text: dict[str, pa.Array] = {}
    typed: dict[str, pa.Array] = {}
    by_column: dict[str, list[Problem]] = {}
    for name, (arr, hostile, parsed) in zip(raw.column_names, checked, strict=True):
        text[name] = arr
        problems.extend(hostile)
        if parsed is not None:
            typed[name], by_column[name] = parsed
    for col in kind.columns:
        if col.name not in typed:  # absent from the input: every value is missing
            typed[col.name], by_column[col.name] = check_column(col, pa.nulls(n, pa.null()))
        problems.extend(by_column[col.name])
    typed = {col.name: typed[col.name] for col in kind.columns}

    bad = any_of(problems, n)
    table = pa.table(typed)
    others = {k: v for k, v in text.items() if k not in typed}
    if not pc.any(bad).as_py():
        return Validated(table, others, positions(n))
    good = pc.invert(bad)
    accepted = pc.indices_nonzero(good).cast(pa.int64())
    rejected = _spell_out(problems, bad, raw, unread)
    kept = {k: v.filter(good) for k, v in others.items()}
    return Validated(table.filter(good), kept, accepted, rejected)


_Checked = tuple[pa.Array, list[Problem], tuple[pa.Array, list[Problem]] | None]


def _column(kind: Kind, name: str, arr: pa.Array) -> _Checked:
    """One input column: (its values in a plain layout, text decoded; the problems of its
    hostile values; for a column of the kind, its typed values and their problems)."""
    col = kind.column(name) if name in kind.column_names else None
    if col is None and not _holds_text(arr.type):
        return arr, [], None  # an extra column of numbers, blobs, uuids…: kept as it is
    arr, hostile = _hostile_checks(name, arr)
    return arr, hostile, None if col is None else check_column(col, arr)


_POSITIONS = pa.array([], pa.int64())


def positions(n: int) -> pa.Array:
    """0..n-1 as int64, sliced from a cached array (built once, not per batch)."""
    global _POSITIONS
    if len(_POSITIONS) < n:
        _POSITIONS = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), 1)
    return _POSITIONS.slice(0, n)


def _one_chunk(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _holds_text(t: pa.DataType) -> bool:
    """Text, or binary that stands for text (CSV cells), in any layout, or lists of it.
    Fixed-size binary and extension types (uuid, …) are data, not text."""
    if pa.types.is_dictionary(t):
        return _holds_text(t.value_type)
    if pa.types.is_run_end_encoded(t):
        return _holds_text(t.value_type)
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    ):
        return _holds_text(t.value_type)
    return is_text(t) or is_bytes(t) or pa.types.is_string_view(t) or pa.types.is_binary_view(t)


def _hostile_checks(name: str, arr: pa.Array) -> tuple[pa.Array, list[Problem]]:
    """SPEC §6a: invalid UTF-8, NUL bytes and fields over the cap reject their row, unread.

    Applies to every column that holds text, whatever its Arrow type (dictionary values,
    large and view types included: `plain` decodes them first), and to the items of lists.
    Returns the column in its plain layout, binary decoded to text, hostile values null."""
    arr = plain(arr)
    t = arr.type
    if is_list(t):
        return _hostile_items(name, arr)
    if not (is_text(t) or is_bytes(t)):
        return arr, []
    problems: list[Problem] = []
    # A column whose values are within the cap all together holds no value over it.
    if data_bytes(arr) > FIELD_MAX_BYTES and _any(
        too_big := nulls_false(pc.greater(pc.binary_length(arr), FIELD_MAX_BYTES))
    ):
        problems.append(
            Problem(name, E.FIELD_TOO_LARGE, too_big, f"field is over {FIELD_MAX_BYTES} bytes")
        )
        arr = null_where(arr, too_big)
    if is_bytes(t):
        arr, bad_utf8 = decode_utf8(arr)
        if bad_utf8 is not None:
            problems.append(Problem(name, E.INVALID_UTF8, bad_utf8, "value is not valid UTF-8"))
    if may_hold(arr, b"\x00"):
        nul = nulls_false(pc.match_substring(arr, "\x00"))
        if pc.any(nul).as_py():
            problems.append(Problem(name, E.NUL_BYTE, nul, "value contains a NUL byte"))
            arr = null_where(arr, nul)
    return arr, problems


def _hostile_items(name: str, arr: pa.Array) -> tuple[pa.Array, list[Problem]]:
    """A native list (JSON, Parquet) rejects its row for an item over the cap, a list whose
    items together are over the cap, an item that is not valid UTF-8 or holds a NUL byte.
    `arr` is a plain list (its values are exactly its items); its rows that break one of
    these are returned null, binary items decoded to text."""
    items = arr.values
    if not (is_text(items.type) or is_bytes(items.type)):
        return arr, []
    problems: list[Problem] = []
    bad_rows = None

    def reject(item_mask: pa.Array | None, code: str, message: str) -> None:
        nonlocal bad_rows
        if item_mask is None or not pc.any(item_mask).as_py():
            return
        rows = rows_with(arr, item_mask)
        problems.append(Problem(name, code, rows, message))
        bad_rows = rows if bad_rows is None else pc.or_(bad_rows, rows)

    sizes = pc.binary_length(items).cast(pa.int64())
    if (pc.sum(sizes).as_py() or 0) > FIELD_MAX_BYTES:
        too_big = nulls_false(pc.greater(sizes, FIELD_MAX_BYTES))
        reject(too_big, E.FIELD_TOO_LARGE, f"an item is over {FIELD_MAX_BYTES} bytes")
        items = null_where(items, too_big)
        total = per_row_sum(arr, sizes)
        over = pc.greater(total, FIELD_MAX_BYTES)
        if pc.any(over).as_py():
            message = f"the list's items are over {FIELD_MAX_BYTES} bytes together"
            problems.append(Problem(name, E.FIELD_TOO_LARGE, over, message))
            bad_rows = over if bad_rows is None else pc.or_(bad_rows, over)
    if is_bytes(items.type):
        items, bad_utf8 = decode_utf8(items)
        reject(bad_utf8, E.INVALID_UTF8, "an item is not valid UTF-8")
    if may_hold(items, b"\x00"):
        reject(
            nulls_false(pc.match_substring(items, "\x00")),
            E.NUL_BYTE,
            "an item contains a NUL byte",
        )
    if items is not arr.values:
        arr = with_items(arr, items)
    return null_where(arr, bad_rows), problems


def _spell_out(
    problems: list[Problem], bad: pa.Array, raw: pa.Table, unread: list[Problem]
) -> list[Rejected]:
    rows = pc.indices_nonzero(bad).to_pylist()
    by_row: dict[int, list[FieldError]] = {i: [] for i in rows}
    hostile: set[tuple[int, str]] = set()
    first = {id(p) for p in unread}
    for p in problems:
        hits = pc.filter(p.mask, bad).to_pylist()
        for i, hit in zip(rows, hits, strict=True):
            # A value rejected unread (NUL, bad UTF-8, too large, a misplaced JSON
            # container) gets no further errors.
            if hit and (i, p.field) not in hostile:
                if p.code in _HOSTILE or id(p) in first:
                    hostile.add((i, p.field))
                value = _display(raw, p.field, i)
                by_row[i].append(FieldError(p.field, p.code, p.render(value)))
    return [Rejected(i, errs) for i, errs in by_row.items()]


_HOSTILE = {E.INVALID_UTF8, E.NUL_BYTE, E.FIELD_TOO_LARGE}


def _display(raw: pa.Table, name: str, i: int) -> Any:
    if name not in raw.column_names:
        return None
    column = raw.column(name)
    try:
        value = column[i].as_py()
    except (OverflowError, ValueError, pa.ArrowException):  # e.g. a timestamp past year 9999
        try:  # Arrow's text for it: `<value out of range: 4611686018427387904>`
            value = column.slice(i, 1).cast(pa.string())[0].as_py()
        except (OverflowError, ValueError, pa.ArrowException):
            value = f"<{column.type}>"
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, str) and len(value) > 80:
        value = value[:77] + "..."
    return value


__all__ = ["FieldError", "Rejected", "Validated", "false_mask", "validate"]
