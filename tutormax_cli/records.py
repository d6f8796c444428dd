"""JSON records → Arrow, with values that do not depend on the batch.

The text is parsed within bounds first (json_bounds.py: depth, width, keys).

**Batch-independent values** (SPEC §6a: a row's verdict depends on the row alone).
`records_to_table` is the one JSON-records → Arrow function (the JSON Lines reader and
the queue worker both call it). `pa.array(values)` infers one type from the whole column,
so a record's `60` used to become `60.0` next to a `60.5`, and a JSON object was a struct
alone but JSON text next to a string. Here each JSON value type has one meaning per column
type, defined once below; `pa.array` is only a fast path, taken when a column is *pure*
(every value is of the one JSON type the path handles, so it provably gives the same
verdicts). Any other column is converted value by value into **text**, which validation
parses with the column's rule exactly as it parses a CSV cell (rules/).

What each JSON value becomes, by column type:

* str: the string, in any column.
* a number in a string column: its text as written (`60`, `1e2`, `-0`, `0.5000`,
  `123456789012345678.1`), given `number_texts` (the JSON Lines reader and the queue both
  give it): two records whose ids are different numbers are two keys, though an int or a
  double of Python's may hold them alike (`1e2` and `100`, `-0` and `0`, two 18-digit
  decimals). Only where the parsed value may have lost its text (a float, an int 0) is the
  record parsed again (json_bounds.loads_number_texts).
* int: its digits (`60`); in a list column also *misplaced* (a number is not a list).
* float: in an int column, the digits of the int if it is whole and within int64
  (`60.0` → `60`, as rules/ takes a native 45.0), else its JSON text (`60.5`, `NaN`:
  `invalid_int`). In float, bool and timestamp columns, its JSON text (repr: the exact
  double; `1.0` is no bool, as a native float is none). In list columns, columns not the
  kind's, and string columns without `number_texts`, Arrow's rendering of the double (`60`,
  `0.5`, `1e+20`, `nan`), as rules/ renders a native float; in a list column also
  *misplaced*.
* bool: `true` / `false`; in a list column also *misplaced*.
* null: null.
* list: in a list column, its JSON text (the list rule's JSON path: string items kept,
  numbers and bools rendered, null items dropped, a nested item `invalid_list`); in other
  columns of the kind its JSON text, *misplaced*; in columns not the kind's its JSON text.
* object: its JSON text; *misplaced* in every column of the kind.

Fast paths (pure columns), each giving the verdicts the text would:

* string, timestamp and columns not the kind's: every value a str → string (always
  string, even all null: the output schema stays the same from batch to batch).
* int: every value an int (not a bool) within int64 → int64.
* float: every value a float, or an int that a double holds exactly → float64.
* bool: every value a bool → bool.
* list: every value a list of str items only → list<string>.

Whatever the path, text holding a lone surrogate (JSON can escape `\\ud800`, UTF-8 cannot
hold it) makes its column binary, so validation rejects just those rows as `invalid_utf8`.

**Misplaced values.** A JSON object or array where the column holds text, or anything but
a list or text in a list column, is wrong for that row only, and no single Arrow array can
hold it beside the text of the other rows. It is kept as text in its column and flagged in
a boolean mask column named `<column>` + `MISPLACED_SUFFIX` (present only when some row is
flagged); `misplaced_masks(table)` splits the masks off again, for validation to reject
the flagged rows with the field's parse code (`invalid_string` for a string field).
No column is named by a key holding a NUL byte (`loads_record` refuses such records and
`records_to_table` skips such keys), so a mask cannot collide with an input column.

**Columns.** The table holds the `columns` asked for (for JSON Lines: the file's header, the
keys of its first record) and every column of the kind found in any record; with
`columns=None`, every key of the batch. So a key first seen after the header is not carried
(not in the output file) unless it is a column of the kind, which is always validated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import pyarrow as pa

from .json_bounds import NumberText, as_null, dumps_strict
from .schema import Kind, Type

# -- records → Arrow ---------------------------------------------------------------------------

MISPLACED_SUFFIX = "\x00misplaced"  # <column> + this: rows whose JSON container is misplaced

_NONE = type(None)
_TEXT_COLUMNS = (None, Type.STRING, Type.TIMESTAMP)
_LIST_OF_TEXT = pa.list_(pa.string())


NumberTexts = Callable[[int], Any]  # record i parsed again, numbers as their token text


def records_to_table(
    records: Sequence[dict[str, Any]],
    kind: Kind | None = None,
    columns: Iterable[str] | None = None,
    number_texts: NumberTexts | None = None,
) -> pa.Table:
    """JSON records → one Arrow table whose row i depends on record i alone (module doc).
    `number_texts(i)`: record i as `json_bounds.loads_number_texts` reads its text, called
    only for a record with a float or an int 0 in a string field."""
    types = {c.name: c.type for c in kind.columns} if kind is not None else {}
    names = _names(records, types, columns)
    arrays: list[pa.Array] = []
    out_names: list[str] = []
    texts = _TokenTexts(number_texts) if number_texts is not None else None
    for name, values in zip(names, _transpose(records, names), strict=True):
        typ = types.get(name)
        token = texts.of(name) if texts is not None and typ is Type.STRING else None
        array, misplaced = column_array(values, typ, token)
        arrays.append(array)
        out_names.append(name)
        if misplaced is not None:
            arrays.append(misplaced)
            out_names.append(name + MISPLACED_SUFFIX)
    if not arrays:
        return pa.table({"_": pa.nulls(len(records))}).drop_columns(["_"])
    return pa.Table.from_arrays(arrays, names=out_names)


def misplaced_masks(table: pa.Table) -> tuple[pa.Table, dict[str, pa.Array]]:
    """The table without its misplaced-container masks, and the masks by column name."""
    masks = {
        name[: -len(MISPLACED_SUFFIX)]: table.column(name).combine_chunks()
        for name in table.column_names
        if name.endswith(MISPLACED_SUFFIX)
    }
    if not masks:
        return table, masks
    return table.drop_columns([n + MISPLACED_SUFFIX for n in masks]), masks


def _names(
    records: Sequence[dict[str, Any]], types: dict[str, Type], columns: Iterable[str] | None
) -> list[str]:
    if columns is None:
        keys = dict.fromkeys(chain.from_iterable(records))
        return [k for k in keys if _usable(k)]
    names = list(dict.fromkeys(columns))
    if types:
        present = set().union(*records)
        listed = set(names)
        names += [c for c in types if c in present and c not in listed]
    return names


def _usable(key: Any) -> bool:
    """A key that can name a column (readers refuse the others before they get here)."""
    if not isinstance(key, str) or "\x00" in key:
        return False
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


def _transpose(records: Sequence[dict[str, Any]], names: list[str]) -> list[Sequence[Any]]:
    """The values of each named column. NOTE: when every record holds every name, one
    C-level transpose (itemgetter + zip) is faster than a dict lookup per value."""
    if not names:
        return []
    if not records:
        return [[] for _ in names]
    try:
        if len(names) == 1:  # itemgetter of one key returns the value, not a 1-tuple
            return [[r[names[0]] for r in records]]
        return list(zip(*map(itemgetter(*names), records), strict=True))
    except KeyError:  # some record lacks some name: dict.get, mapped at C level
        return [list(map(dict.get, records, repeat(n))) for n in names]


class _TokenTexts:
    """Records parsed again with their numbers' token texts, each at most once a batch."""

    def __init__(self, number_texts: NumberTexts) -> None:
        self._parse = number_texts
        self._records: dict[int, Any] = {}

    def of(self, name: str) -> Callable[[int], str | None]:
        def token(i: int) -> str | None:
            if i not in self._records:
                self._records[i] = self._parse(i)
            record = self._records[i]
            value = record.get(name) if isinstance(record, dict) else None
            return str(value) if isinstance(value, NumberText) else None

        return token


def column_array(
    values: Sequence[Any], typ: Type | None, token: Callable[[int], str | None] | None = None
) -> tuple[pa.Array, pa.Array | None]:
    """One column's Arrow array, and its misplaced-container mask (None if no row is).
    `token(i)`: the text of row i's number as written (a string column's, see the module
    doc), None if it has none."""
    fast = _pure(values, typ)
    return (fast, None) if fast is not None else _as_text(values, typ, token)


def _pure(values: Sequence[Any], typ: Type | None) -> pa.Array | None:
    """`pa.array` where it provably gives what the per-value text would parse to.

    NOTE: `pa.array(values, pa.string())` takes only str (and None), and `pa.bool_()` only
    bool, raising on anything else: the conversion is its own purity check. int64 would
    take whole floats and float64 bools, so those columns check the Python types first.
    A column of text alone (a producer that sends every value as a string, as `publish`
    of a CSV does) is that text, which is what `_as_text` would make of it value by value."""
    try:
        if typ in _TEXT_COLUMNS:  # always string, even all-null: a stable output schema
            return pa.array(values, pa.string())
        if typ is Type.BOOL:
            with suppress(pa.ArrowInvalid, pa.ArrowTypeError):
                return pa.array(values, pa.bool_())
        found = set(map(type, values))
        found.discard(_NONE)
        if not found:
            return pa.nulls(len(values))
        if found == {str}:
            return pa.array(values, pa.string())
        if found == {int} and typ is Type.INT:
            return pa.array(values, pa.int64())  # OverflowError beyond int64: by text
        if found <= {int, float} and typ is Type.FLOAT:
            # NOTE: Arrow refuses an int a double cannot hold exactly; such a column goes by
            # text, which parses to the nearest double.
            return pa.array(values, pa.float64())
        if found == {list} and typ is Type.LIST:
            items = set(map(type, chain.from_iterable(v for v in values if v is not None)))
            return pa.array(values, _LIST_OF_TEXT) if items <= {str} else None
    except (UnicodeEncodeError, OverflowError, pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # another JSON type, a lone surrogate, an int over int64: by value
    return None


def _as_text(
    values: Sequence[Any], typ: Type | None, token: Callable[[int], str | None] | None = None
) -> tuple[pa.Array, pa.Array | None]:
    """Each value's text (`_text`), as a string array (binary if a lone surrogate is in
    it), and the misplaced mask (None when no value is misplaced)."""
    texts: list[str | None] = []
    misplaced: list[bool] | None = None
    floats: list[int] = []  # positions of floats to render as Arrow renders native ones
    arrow_floats = typ not in (Type.INT, Type.FLOAT, Type.BOOL, Type.TIMESTAMP)
    for i, v in enumerate(values):
        written = None
        if token is not None and (type(v) is float or (type(v) is int and v == 0)):
            written = token(i)  # a number whose text the float or the int 0 may not hold
        if written is not None:
            text, wrong = written, False
        elif typ is None and type(v) is float and not math.isfinite(v):
            text, wrong = None, False  # an extra column's NaN or infinity: null in the output
        elif arrow_floats and type(v) is float:
            floats.append(i)
            text, wrong = None, typ is Type.LIST
        else:
            text, wrong = _text(v, typ)
        texts.append(text)
        if wrong:
            if misplaced is None:
                misplaced = [False] * len(values)
            misplaced[i] = True
    if floats:
        # NOTE: Arrow's cast is elementwise, so one call for all of them is per value.
        rendered = pa.array([values[i] for i in floats], pa.float64()).cast(pa.string())
        for i, text in zip(floats, rendered.to_pylist(), strict=True):
            texts[i] = text
    try:
        array = pa.array(texts, pa.string())
    except UnicodeEncodeError:
        # NOTE: JSON may escape a lone surrogate (\ud800), which no UTF-8 string can hold;
        # as bytes, validation rejects just that row as invalid UTF-8.
        raw = [None if t is None else t.encode("utf-8", "surrogatepass") for t in texts]
        array = pa.array(raw, pa.binary())
    return array, None if misplaced is None else pa.array(misplaced, pa.bool_())


_INT64_BOUND = float(2**63)


def _text(v: Any, typ: Type | None) -> tuple[str | None, bool]:
    """One JSON value as text for a column of type `typ`, and whether it is misplaced."""
    t = type(v)
    if t is str or v is None:
        return v, False
    if t is list or t is dict:
        if typ is None:  # an extra column's cell, in output rows: NaN is null (dumps_strict)
            return dumps_strict(v, as_null, ensure_ascii=False), False
        # read back by the column's rule, which refuses a NaN in a list as Python's json did
        text = json.dumps(v, ensure_ascii=False)
        return text, not (t is list and typ is Type.LIST)
    wrong = typ is Type.LIST  # a number or a bool is not a list
    if t is bool:
        return ("true" if v else "false"), wrong
    if t is int:
        return str(v), wrong
    if t is float:  # (in text columns, `_as_text` has Arrow render it)
        if typ is Type.INT:
            whole = math.isfinite(v) and v.is_integer() and -_INT64_BOUND <= v < _INT64_BOUND
            return (str(int(v)) if whole else json.dumps(v)), False
        return json.dumps(v), False  # repr: the exact double; `1.0` is no bool
    return str(v), wrong


__all__ = ["MISPLACED_SUFFIX", "column_array", "misplaced_masks", "records_to_table"]
