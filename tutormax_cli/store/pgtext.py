"""The text the PostgreSQL write path sends and reads back besides binary COPY: array
literals both ways, rows as COPY CSV, and the upsert's select list and unchanged-rows filter.
No driver here (postgres.py alone imports psycopg2)."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.compute as pc

from ..schema import KINDS
from . import pgbinary
from .tables import compared_columns


def _escaped(values: pa.Array) -> pa.Array:
    """Strings as the inside of a double-quoted array element: `\\` and `"` escaped, so
    that any text reads back as itself."""
    return pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')


def text_array_literal(ids: pa.Array) -> str:
    """Non-null strings → one PostgreSQL text[] literal (`{"a","b \\"c\\""}`)."""
    return '{"' + '","'.join(_escaped(ids).to_pylist()) + '"}' if len(ids) else "{}"


# An element PostgreSQL's array output quotes (array_out): empty, NULL in any case, or
# holding a brace, a quote, a comma, a backslash or one of its blanks.
_NEEDS_QUOTES = r'^$|^[Nn][Uu][Ll][Ll]$|[{}",\\ \t\n\r\v\f]'


def array_literal(arr: pa.Array) -> pa.Array:
    """list<string> → PostgreSQL array literal text, as PostgreSQL itself writes it
    (`{Math,"SAT Prep","b \\"c\\""}`: quoted only where needed), vectorized. So a text
    column a DBA made of a list holds the same text whichever way a row came in (this COPY,
    or the staged upsert's cast), and a re-load finds it unchanged."""
    values = arr.values  # the whole child array; arr.offsets index into it
    quoted = pc.binary_join_element_wise('"', _escaped(values), '"', "")
    bare = pc.invert(pc.match_substring_regex(values, _NEEDS_QUOTES))
    elements = pc.if_else(bare, values, quoted).fill_null("NULL")
    relisted = pa.ListArray.from_arrays(arr.offsets, elements, mask=arr.is_null())
    return pc.binary_join_element_wise("{", pc.binary_join(relisted, ","), "}", "")


def copy_ready(table: pa.Table) -> pa.Table:
    """Make every column cheap and correct to render as COPY CSV."""
    arrays = []
    for col in table.columns:
        arr = col.combine_chunks()
        if pa.types.is_timestamp(arr.type):
            arr = arr.cast(pa.timestamp("us"))  # naive UTC wall time
        elif pa.types.is_list(arr.type):
            arr = array_literal(arr)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=table.column_names)


_WALL_TIME = ("timestamp without time zone", "date")


def staged_columns(schema: pa.Schema, stored: dict[str, tuple[str, str]]) -> str:
    """The staged columns as the upsert selects them, each as the straight COPY writes it
    into the table as it is now (`stored`: each column's type under any domain, and its
    category, from the catalog): a timestamptz into a column a DBA made `timestamp` (no
    zone) or `date` as its UTC wall time, into one made text of any kind (varchar,
    citext…) as the COPY's text of it (the implicit casts would take the session's
    TimeZone, and a re-load would find every such row changed)."""

    def expr(f: pa.Field) -> str:
        col, (base, category) = f's."{f.name}"', stored.get(f.name, ("", ""))
        if pa.types.is_timestamp(f.type) and base in _WALL_TIME:
            return f"{col} AT TIME ZONE 'UTC'"
        if pa.types.is_timestamp(f.type) and category == "S":
            return f"to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
        return col

    return ", ".join(map(expr, schema))


def unchanged_left_out(kind: str, table: pa.Table, types: dict[str, str]) -> str:
    """`WHERE NOT EXISTS (…)`: the staged rows whose stored row has every compared value
    (tables.compared_columns) already, left out of the upsert.

    Why: `ON CONFLICT … DO UPDATE … WHERE` locks every conflicting row before its WHERE is
    evaluated, so a row that changes nothing still wrote its lock to the heap and the WAL:
    re-loading an identical file wrote a lock for every row. The upsert's own WHERE decides
    the rest as before. Only for a table without user triggers (`plain`): a BEFORE INSERT
    trigger sees every proposed row, and may change what `excluded` holds.

    And only where every compared column is of a type its staged value is sent as
    (`types`, from the catalog; pgbinary.sendable): those compare exactly, as the upsert
    compares `excluded`. A column a DBA changed (a `real`, a `char(n)`, a `text` holding
    booleans) may compare otherwise or not at all, and a cast can cut a value (`char`
    alone is `char(1)`): that table gets the upsert alone, as before."""
    key = KINDS[kind].key
    compared = compared_columns(kind)
    if not all(pgbinary.sendable(table.schema.field(n).type, types.get(n, "")) for n in compared):
        return ""
    same = " AND ".join(f'o."{n}" IS NOT DISTINCT FROM s."{n}"' for n in compared)
    return f'WHERE NOT EXISTS (SELECT 1 FROM "{kind}" o WHERE o."{key}" = s."{key}" AND {same}) '


# One element of a one-dimensional array literal, and what follows it (`,` or the end):
# quoted, or bare (where a backslash escapes the next character too: `{SAT\\ Prep}`).
# Blanks are PostgreSQL's (array_isspace), not Python's `\s`, which also takes \x1c-\x1f.
_PG_BLANKS = " \t\n\r\v\f"
_ELEMENT = re.compile(
    rf'[{_PG_BLANKS}]*(?:"((?:[^"\\]|\\.)*)"[{_PG_BLANKS}]*|((?:[^,{{}}"\\]|\\.)+))([,}}])',
    re.DOTALL,
)  # (greedy and linear: a bare element's trailing blanks are cut after, by _bare)
_CHAR = re.compile(r"\\.|[^\\]", re.DOTALL)  # one character, or one escaped
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def arrays_as_json(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A list column a DBA made text holds PostgreSQL's array literals (`{Math,"A, B"}`:
    what ALTER … TYPE text and the staged upsert write): each as the JSON list the list rule
    reads; null for text in braces that is no one-dimensional literal (`{{a},{b}}`). Any
    other text is left to that rule, as a CSV cell is."""
    values = col.to_pylist()
    return pa.array([_array_json(v) if v else v for v in values], pa.string())


def _array_json(text: str) -> str | None:
    if not (text.startswith("{") and text.endswith("}")):
        return text
    body, pos = text[1:], 0
    items: list[str | None] = []
    if body.strip(_PG_BLANKS) == "}":
        return "[]"
    while (m := _ELEMENT.match(body, pos)) is not None:
        quoted, bare, end = m.groups()
        if quoted is not None:
            items.append(_ESCAPE.sub(r"\1", quoted))
        else:
            items.append(_bare(bare))
        pos = m.end()
        if end == "}":
            return json.dumps(items) if pos == len(body) else None
    return None  # not a one-dimensional literal


def _bare(text: str) -> str | None:
    """A bare element as PostgreSQL reads it: its unescaped trailing blanks cut, each
    escape taken as the character it escapes, `NULL` (any case, unescaped) null."""
    chars = _CHAR.findall(text)
    while chars and chars[-1] in _PG_BLANKS:
        chars.pop()
    if len(chars) == 4 and "".join(chars).upper() == "NULL":
        return None
    return "".join(c[-1] for c in chars)
