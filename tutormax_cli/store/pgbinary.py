"""Arrow columns as PostgreSQL's binary COPY format, built a column at a time in Arrow.

Why: the staging tables' COPY parsed every value from text, and parsing timestamps was
the largest part of it (README, Performance). In the binary format a timestamp is its
8 bytes, a number its bytes, a text its UTF-8; nothing is parsed. Only into tables whose
column types are known: the TEMP staging tables tutormax creates, and a table itself when
the catalog says its columns are of types the values can be sent as (`encode`'s `types`):
the binary format names no type, so a value must be exactly the column's.

The format (https://www.postgresql.org/docs/current/sql-copy.html, "Binary Format"): a
header; each row a 16-bit field count, then each field a 32-bit length (-1: null) and its
bytes, all big-endian; a 16-bit -1 at the end. A `text[]` field is `array_send`'s layout:
dimensions, a has-nulls flag, the element type, the length and lower bound (1), then the
elements as fields.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
# Every array here is large (64-bit offsets): a worker's batch of 5,000 messages of up to
# 1 MiB each can pass 2 GiB, where a binary array's 32-bit offsets end.
_BYTES = pa.large_binary()
_NULL = pa.scalar(b"\xff\xff\xff\xff", _BYTES)  # a field's length -1
_NONE = pa.scalar(b"", _BYTES)  # the separator of joins
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC, PostgreSQL's zero, in Unix µs
_TEXT_OID = 25


def pg_type(type_: pa.DataType) -> str:
    """The PostgreSQL type a column of this Arrow type is staged as (TypeError: none)."""
    for test, types in _SENT_TO:
        if test(type_):
            return types[0]
    raise TypeError(f"no binary COPY encoding for {type_}")


_INT_WIDTHS = {"bigint": 8, "integer": 4, "smallint": 2}
# Each Arrow type and the PostgreSQL types (as format_type names them) its values can be
# sent to in binary; the first is the staging tables'. A varchar(n) reads text's bytes
# and checks its length as from CSV.
_SENT_TO: list[tuple[Callable[[pa.DataType], bool], tuple[str, ...]]] = [
    (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), ("text", "character varying")),
    (pa.types.is_int64, ("bigint", "integer", "smallint")),
    (pa.types.is_float64, ("double precision",)),
    (pa.types.is_boolean, ("boolean",)),
    (lambda t: pa.types.is_timestamp(t) and t.unit == "us" and t.tz is not None,
     ("timestamp with time zone",)),
    (lambda t: pa.types.is_list(t) and pa.types.is_string(t.value_type), ("text[]",)),
]  # fmt: skip


def stage_table_sql(name: str, schema: pa.Schema) -> str:
    """The TEMP table a COPY of these columns is staged in (its types pg_type's), emptied
    at each commit."""
    cols = ", ".join(f'"{f.name}" {pg_type(f.type)}' for f in schema)
    return f"CREATE TEMP TABLE IF NOT EXISTS {name} ({cols}) ON COMMIT DELETE ROWS"


def sendable(type_: pa.DataType, to: str) -> bool:
    """Whether values of this Arrow type can be sent as PostgreSQL's type `to` (as
    format_type names it): then they also compare with that column's values exactly."""
    return any(test(type_) and to in types for test, types in _SENT_TO)


def encode(table: pa.Table, types: Sequence[str] | None = None) -> Stream:
    """The table's rows as one binary COPY stream (header, rows, trailer), each column as
    `types` says (default: the staging types, pg_type). TypeError when a column cannot be
    sent as its type: no encoding, or an integer out of the type's range."""
    n = table.num_rows
    if types is None:
        types = [pg_type(f.type) for f in table.schema]
    count = pa.scalar(struct.pack(">h", table.num_columns), _BYTES)
    fields = [_field(col, to) for col, to in zip(table.columns, types, strict=True)]
    if not n:
        return Stream([HEADER, TRAILER])
    rows = pc.binary_join_element_wise(count, *fields, _NONE)
    offsets = np.frombuffer(rows.buffers()[1], np.int64, n + 1, rows.offset * 8)
    return Stream([HEADER, rows.buffers()[2][offsets[0] : offsets[-1]], TRAILER])


class Stream:
    """Buffers read one after the other, as COPY reads a file (no copy of them joined)."""

    def __init__(self, parts: list[Any]) -> None:
        self._parts = [memoryview(p) for p in parts]
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        while self._parts and self._at >= len(self._parts[0]):
            self._parts.pop(0)
            self._at = 0
        if not self._parts:
            return b""
        part = self._parts[0]
        end = len(part) if size < 0 else min(len(part), self._at + size)
        chunk = part[self._at : end].tobytes()
        self._at = end
        return chunk


def _field(col: pa.ChunkedArray, to: str) -> pa.Array:
    """Each value as a field of type `to` (length, then bytes); a null as length -1."""
    type_ = col.type
    if not sendable(type_, to):
        raise TypeError(f"no binary COPY encoding of {type_} as {to}")
    if pa.types.is_list(type_):  # (widened chunk by chunk: their sum may pass 2 GiB)
        return _prefixed(_text_array(col.cast(pa.large_list(_BYTES)).combine_chunks()))
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return _prefixed(col.cast(_BYTES).combine_chunks())
    return _fixed(col.combine_chunks(), _INT_WIDTHS.get(to, 8))


def _fixed(arr: pa.Array, width: int) -> pa.Array:
    """A fixed-width column: length and value in one numpy record a row."""
    if pa.types.is_boolean(arr.type):
        values, width = arr.fill_null(False).to_numpy(zero_copy_only=False).astype(">u1"), 1
    elif pa.types.is_timestamp(arr.type):
        micros = arr.cast(pa.int64()).fill_null(0).to_numpy()
        values = (micros - _PG_EPOCH_US).astype(">i8")
    elif pa.types.is_float64(arr.type):
        values = arr.fill_null(0.0).to_numpy().astype(">f8")
    else:
        values = arr.fill_null(0).to_numpy()
        if width < 8 and len(values):
            bound = 1 << (8 * width - 1)
            if values.min() < -bound or values.max() >= bound:
                raise TypeError(f"an integer out of the range of {8 * width} bytes")
        values = values.astype(f">i{width}")
    rec = np.empty(len(arr), dtype=[("n", ">i4"), ("v", values.dtype)])
    rec["n"] = width
    rec["v"] = values
    fields = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(4 + width), len(arr), [None, pa.py_buffer(rec.tobytes())]
    ).cast(_BYTES)
    return pc.if_else(arr.is_null(), _NULL, fields) if arr.null_count else fields


def _prefixed(payload: pa.Array) -> pa.Array:
    """Binary values (nulls among them) → length-prefixed fields; a null → length -1."""
    lengths = pc.binary_length(payload).fill_null(0).to_numpy().astype(">i4")
    prefix = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(4), len(payload), [None, pa.py_buffer(lengths.tobytes())]
    ).cast(_BYTES)
    fields = pc.binary_join_element_wise(prefix, payload, _NONE)
    return pc.if_else(payload.is_null(), _NULL, fields) if payload.null_count else fields


def _text_array(arr: pa.Array) -> pa.Array:
    """large_list<large_binary> → `array_send` payloads of one-dimensional text[] (null
    lists null)."""
    elements = _prefixed(arr.values)  # arr.offsets index into values
    counts = pc.list_value_length(arr).fill_null(0).to_numpy()
    relisted = pa.LargeListArray.from_arrays(arr.offsets, elements)
    joined = pc.binary_join(relisted, _NONE).fill_null(_NONE)
    head = np.empty(len(arr), dtype=[("dims", ">i4"), ("nulls", ">i4"), ("oid", ">i4"),
                                     ("len", ">i4"), ("lbound", ">i4")])  # fmt: skip
    head["dims"], head["nulls"], head["oid"] = counts > 0, 0, _TEXT_OID
    head["len"], head["lbound"] = counts, 1
    heads = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(20), len(arr), [None, pa.py_buffer(head.tobytes())]
    ).cast(_BYTES)
    # An empty array has no dimension (12 bytes): neither length nor lower bound.
    heads = pc.if_else(pc.equal(counts, 0), pc.binary_slice(heads, 0, 12), heads)
    payload = pc.binary_join_element_wise(heads, joined, _NONE)
    return pc.if_else(arr.is_null(), pa.scalar(None, _BYTES), payload)
