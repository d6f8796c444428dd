"""JSON records → Arrow: bounded structure, and values that do not depend on the batch.

Two jobs, for every JSON input of tutormax (JSON Lines records, queue envelopes, JSON
lists in CSV cells):

**Bounded structure** (SPEC §6a). Python's json module builds whatever it is given: a
record nested 10,000 deep raises RecursionError, and one nested 900 deep parses into
something that Arrow then turns into gigabytes. `loads_bounded` refuses such text before
json builds anything (the depth is counted on the raw text first), and `check_width`
refuses a record of more than `MAX_COLUMNS` keys the same way.

**Batch-independent values** (SPEC §6a: a row's verdict depends on the row alone).
`records_to_table` is the one JSON-records → Arrow function (the JSON Lines reader and
the queue worker both call it). `pa.array(values)` infers one type from the whole column,
so a record's `60` used to become `60.0` next to a `60.5`, and a JSON object was a struct
alone but JSON text next to a string. Here each JSON value type has one meaning per column
type, defined once below; `pa.array` is only a fast path, taken when a column is *pure*
(every value is of the one JSON type the path handles, so it provably gives the same
verdicts). Any other column is converted value by value into **text**, which validation
parses with the column's rule exactly as it parses a CSV cell (rules.py).

What each JSON value becomes, by column type:

* str: the string, in any column.
* int: its digits (`60`); in a list column also *misplaced* (a number is not a list).
* float: in an int column, the digits of the int if it is whole and within int64
  (`60.0` → `60`, as rules.py takes a native 45.0), else its JSON text (`60.5`, `NaN`:
  `invalid_int`). In float, bool and timestamp columns, its JSON text (repr: the exact
  double; `1.0` is no bool, as a native float is none). In string and list columns and
  columns not the kind's, Arrow's rendering of the double (`60`, `0.5`, `1e+20`, `nan`),
  as rules.py renders a native float; in a list column also *misplaced*.
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
NOTE: until validate.py calls it, the masks travel as extra columns that nothing reads, so
a misplaced value in an int, float, bool or timestamp field is still refused by its rule
(its JSON text does not parse), but in a string or list field it passes as its JSON text.
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
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import pyarrow as pa

from .schema import JSON_MAX_DEPTH, MAX_COLUMNS, Kind, Type


class StructureError(ValueError):
    """JSON text whose structure is over a documented limit (nesting depth, width)."""


class TooManyKeys(StructureError):
    """A JSON object of more keys than the limit; `keys` says how many it has."""

    def __init__(self, keys: int, limit: int) -> None:
        super().__init__(f"JSON object of {keys:,} keys, over the limit of {limit:,}")
        self.keys = keys


# -- bounded parsing ---------------------------------------------------------------------------

# A JSON string (with its escapes) or one bracket; brackets inside strings are skipped.
_TOKENS_B = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_TOKENS_S = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
# The same, plus the `:` after each object key.
_KEY_TOKENS_B = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:]', re.DOTALL)
_KEY_TOKENS_S = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]', re.DOTALL)
_OPEN = frozenset("[{")
_CLOSE = frozenset("]}")


def _marks(text: bytes | str, with_colons: bool = False) -> Iterator[str]:
    """The first character of each JSON string and each bracket (and `:`) in `text`."""
    if isinstance(text, bytes):
        tokens_b = _KEY_TOKENS_B if with_colons else _TOKENS_B
        return (chr(m.group()[0]) for m in tokens_b.finditer(text))
    tokens_s = _KEY_TOKENS_S if with_colons else _TOKENS_S
    return (m.group()[0] for m in tokens_s.finditer(text))


def nesting_depth(text: bytes | str) -> int:
    """The deepest nesting of arrays and objects in JSON text (0 for a scalar)."""
    depth = deepest = 0
    for c in _marks(text):
        if c in _OPEN:
            depth += 1
            deepest = max(deepest, depth)
        elif c != '"':
            depth -= 1
    return deepest


def check_depth(text: bytes | str, max_depth: int = JSON_MAX_DEPTH) -> None:
    """Raise StructureError if `text` nests deeper than `max_depth`, without parsing it.

    NOTE: depth can never exceed the number of `[` and `{` characters, and counting them
    is a C-speed scan; only text with more openers than the limit is scanned exactly."""
    if isinstance(text, bytes):
        openers = text.count(b"[") + text.count(b"{")
    else:
        openers = text.count("[") + text.count("{")
    if openers <= max_depth:
        return
    depth = nesting_depth(text)
    if depth > max_depth:
        raise StructureError(f"JSON nested {depth} deep, over the limit of {max_depth}")


def top_level_keys(text: bytes | str) -> int:
    """How many keys the outermost JSON object of `text` has (0 if it is not an object)."""
    depth = keys = 0
    for c in _marks(text, with_colons=True):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif c == ":" and depth == 1:
            keys += 1
    return keys


def check_width(text: bytes | str, max_keys: int = MAX_COLUMNS) -> None:
    """Raise StructureError if the JSON object in `text` has more than `max_keys` keys,
    without parsing it. NOTE: as for depth, a C-speed count of `:` bounds the key count;
    only text with more colons than the limit is scanned exactly."""
    colons = text.count(b":") if isinstance(text, bytes) else text.count(":")
    if colons <= max_keys:
        return
    keys = top_level_keys(text)
    if keys > max_keys:
        raise TooManyKeys(keys, max_keys)


_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def json_loads(text: bytes | str) -> Any:
    """`json.loads(text)`, a third faster on the usual input: UTF-8 bytes holding exactly
    one JSON value. Anything else (other encodings, a BOM, whitespace around the value,
    errors) is left to json.loads itself, so results and error messages are its own.
    Unbounded: check the depth first (or call loads_bounded)."""
    try:
        s = text.decode() if isinstance(text, bytes) else text
        value, end = _scan_once(s, 0)
        if end == len(s):
            return value
    except (UnicodeDecodeError, StopIteration, ValueError):
        pass
    return json.loads(text)


def loads_bounded(text: bytes | str, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """`json.loads(text)`, but StructureError (a ValueError) for text nested too deep."""
    check_depth(text, max_depth)
    return json_loads(text)


def loads_record(
    text: bytes | str, max_depth: int = JSON_MAX_DEPTH, max_keys: int = MAX_COLUMNS
) -> dict[str, Any]:
    """One JSON record (an object) within the limits; StructureError or ValueError (not
    JSON, not an object, a key with a NUL byte or a lone surrogate) otherwise."""
    check_depth(text, max_depth)
    check_width(text, max_keys)
    obj = json_loads(text)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    check_keys(obj)
    return obj


def check_keys(obj: dict[str, Any]) -> None:
    """A record's keys must be able to name columns: UTF-8 text without NUL bytes."""
    keys = "".join(obj)
    if "\x00" in keys:
        raise ValueError("a key holds a NUL byte")
    try:
        keys.encode()
    except UnicodeEncodeError:
        raise ValueError("a key is not valid UTF-8 (a lone surrogate)") from None


# -- records → Arrow ---------------------------------------------------------------------------

MISPLACED_SUFFIX = "\x00misplaced"  # <column> + this: rows whose JSON container is misplaced

_NONE = type(None)
_TEXT_COLUMNS = (None, Type.STRING, Type.TIMESTAMP)
_LIST_OF_TEXT = pa.list_(pa.string())


def records_to_table(
    records: Sequence[dict[str, Any]],
    kind: Kind | None = None,
    columns: Iterable[str] | None = None,
) -> pa.Table:
    """JSON records → one Arrow table whose row i depends on record i alone (module doc)."""
    types = {c.name: c.type for c in kind.columns} if kind is not None else {}
    names = _names(records, types, columns)
    arrays: list[pa.Array] = []
    out_names: list[str] = []
    for name, values in zip(names, _transpose(records, names), strict=True):
        array, misplaced = column_array(values, types.get(name))
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
    C-level transpose (itemgetter + zip) is 2.3× faster than a dict lookup per value."""
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


def column_array(values: Sequence[Any], typ: Type | None) -> tuple[pa.Array, pa.Array | None]:
    """One column's Arrow array, and its misplaced-container mask (None if no row is)."""
    fast = _pure(values, typ)
    return (fast, None) if fast is not None else _as_text(values, typ)


def _pure(values: Sequence[Any], typ: Type | None) -> pa.Array | None:
    """`pa.array` where it provably gives what the per-value text would parse to.

    NOTE: `pa.array(values, pa.string())` takes only str (and None), and `pa.bool_()` only
    bool, raising on anything else: the conversion is its own purity check. int64 would
    take whole floats and float64 bools, so those columns check the Python types first."""
    try:
        if typ in _TEXT_COLUMNS:  # always string, even all-null: a stable output schema
            return pa.array(values, pa.string())
        if typ is Type.BOOL:
            return pa.array(values, pa.bool_())
        found = set(map(type, values))
        found.discard(_NONE)
        if not found:
            return pa.nulls(len(values))
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


def _as_text(values: Sequence[Any], typ: Type | None) -> tuple[pa.Array, pa.Array | None]:
    """Each value's text (`_text`), as a string array (binary if a lone surrogate is in
    it), and the misplaced mask (None when no value is misplaced)."""
    texts: list[str | None] = []
    misplaced: list[bool] | None = None
    floats: list[int] = []  # positions of floats to render as Arrow renders native ones
    arrow_floats = typ not in (Type.INT, Type.FLOAT, Type.BOOL, Type.TIMESTAMP)
    for i, v in enumerate(values):
        if arrow_floats and type(v) is float:
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
        text = json.dumps(v, ensure_ascii=False)
        return text, typ is not None and not (t is list and typ is Type.LIST)
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


__all__ = [
    "MISPLACED_SUFFIX",
    "StructureError",
    "TooManyKeys",
    "check_depth",
    "check_keys",
    "check_width",
    "column_array",
    "json_loads",
    "loads_bounded",
    "loads_record",
    "misplaced_masks",
    "nesting_depth",
    "records_to_table",
    "top_level_keys",
]
