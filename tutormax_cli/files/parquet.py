"""Parquet input: the footer's width checked before Arrow decodes it, then record batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError, first_line
from ..schema import MAX_COLUMNS
from .batch import BATCH_MAX_BYTES, RawBatch, _rebatch
from .inputs import _check_names, _Input
from .parquet_plan import (
    PAGE_MAX_BYTES,
    PARQUET_READ_BYTES,
    VALUE_BYTES,
    PageTooBig,
    _is_text,
    _PageWalk,
    _plan,
    _text_columns,
)
from .thrift import _Thrift

PARQUET_MAX_FIELDS = 4 * MAX_COLUMNS  # schema nodes, nested ones included (a list is 3)


class _Parquet:
    @staticmethod
    def header(path: _Input) -> list[str]:
        _check_parquet_width(path)
        try:
            names = list(pq.ParquetFile(path.native()).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: not a readable Parquet file: {first_line(exc)}") from None
        _check_names(path, names)
        return names

    @staticmethod
    def batches(path: _Input, batch_size: int, *_: Any) -> Iterator[RawBatch]:
        first = 1
        try:
            # NOTE: pre-buffering (the default) reads the whole file ahead, and without a
            # buffer size a column chunk is read whole (256 rows of 1 MiB in one row group:
            # 256 MB at once): memory grows with the file either way.
            pf = pq.ParquetFile(path.native(), pre_buffer=False, buffer_size=PARQUET_READ_BYTES)
            total = max(pf.metadata.num_rows, 1)
            pieces = _pieces(path, pf, batch_size)
            for table in _rebatch(pieces, batch_size, BATCH_MAX_BYTES, cut=False):
                done = (first - 1 + table.num_rows) / total
                yield RawBatch(table, first, done=done)
                first += table.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: Parquet read error near row {first}: {exc}") from None


def _pieces(path: _Input, pf: pq.ParquetFile, batch_size: int) -> Iterator[pa.Table]:
    """The file's rows, decoded, in tables of at most BATCH_MAX_BYTES (or one row). Each row
    group is planned as it comes (its page headers read then), so the first rows do not
    wait for the whole file's."""
    schema, text = pf.schema_arrow, _text_columns(pf)
    readers = {frozenset[str](): pf}  # by the columns they read as dictionaries
    first = 1  # the row group's first row
    with _PageWalk(path) as walk:
        for i in range(pf.metadata.num_row_groups):
            rows = pf.metadata.row_group(i).num_rows
            if rows <= 0:
                continue
            try:
                plan = _plan(walk, pf, i, text, batch_size)
            except PageTooBig as exc:
                raise InputError(
                    f"{path}: column {exc.column}, rows {first:,}-{first + rows - 1:,} (row "
                    f"group {i}): a page of {exc.size:,} bytes decompressed, over the "
                    f"{PAGE_MAX_BYTES:,}-byte limit of one page: not read (write the file "
                    "with smaller pages)"
                ) from None
            first += rows
            reader = readers.get(plan.dictionary)
            if reader is None:
                reader = readers[plan.dictionary] = pq.ParquetFile(
                    path.native(),
                    pre_buffer=False,
                    buffer_size=PARQUET_READ_BYTES,
                    metadata=pf.metadata,
                    read_dictionary=sorted(plan.dictionary),
                )
            for b in reader.iter_batches(batch_size=plan.step, row_groups=[i]):
                yield from _decoded(b, schema)


def _decoded(b: pa.RecordBatch, schema: pa.Schema) -> Iterator[pa.Table]:
    """A step of rows decoded in pieces of at most BATCH_MAX_BYTES decoded, or one row: cut
    by each row's decoded size (dictionaries decoded only piece by piece)."""
    if not b.num_rows:
        return
    if sum(_most_bytes(c) for c in b.columns) <= BATCH_MAX_BYTES:
        yield _plain(b, schema)
        return
    sizes = np.zeros(b.num_rows, dtype=np.int64)
    for c in b.columns:
        sizes += _row_bytes(c)
    ends = np.cumsum(sizes)
    start = 0
    while start < b.num_rows:
        before = int(ends[start - 1]) if start else 0
        stop = int(np.searchsorted(ends, before + BATCH_MAX_BYTES, side="right"))
        stop = max(stop, start + 1)  # a row over the budget is a piece of its own
        yield _plain(b.slice(start, stop - start), schema)
        start = stop


def _plain(b: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """The rows with the file's own types: columns read as dictionaries decoded."""
    if b.schema.equals(schema):
        return pa.Table.from_batches([b])
    pairs = zip(b.columns, schema, strict=True)
    columns = [c if c.type == f.type else c.cast(f.type) for c, f in pairs]
    return pa.Table.from_arrays(columns, schema=schema)


def _value_lengths(arr: pa.Array) -> np.ndarray:
    """Each value's bytes (0 for a null), for a string or binary array."""
    lengths = pc.fill_null(pc.binary_length(arr), 0)
    return np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64)


def _most_bytes(arr: pa.Array) -> int:
    """At least what `arr` costs decoded (dictionaries decoded), cheaply: a dictionary's
    longest value for every row."""
    t = arr.type
    if not _has_dictionary(t):
        return int(arr.nbytes)
    if pa.types.is_dictionary(t):
        longest = 0
        if len(arr.dictionary) and _is_text(t.value_type):
            longest = int(pc.max(pc.binary_length(arr.dictionary)).as_py() or 0)
        return len(arr) * (longest + VALUE_BYTES)
    if isinstance(arr, (pa.ListArray, pa.LargeListArray)):  # a map is a list of structs
        first, last = arr.offsets[0].as_py(), arr.offsets[-1].as_py()
        return len(arr) * VALUE_BYTES + _most_bytes(arr.values.slice(first, last - first))
    if isinstance(arr, pa.FixedSizeListArray):
        size = t.list_size
        return _most_bytes(arr.values.slice(arr.offset * size, len(arr) * size))
    if isinstance(arr, pa.StructArray):
        return len(arr) + sum(_most_bytes(f) for f in arr.flatten())
    return int(arr.nbytes)


def _has_dictionary(t: pa.DataType) -> bool:
    return pa.types.is_dictionary(t) or any(
        _has_dictionary(t.field(i).type) for i in range(t.num_fields)
    )


def _row_bytes(arr: pa.Array) -> np.ndarray:
    """What each row of `arr` costs decoded (dictionaries decoded), in bytes."""
    t, n = arr.type, len(arr)
    if pa.types.is_dictionary(t):
        if not _is_text(t.value_type):
            return np.full(n, arr.nbytes // max(n, 1) + VALUE_BYTES, dtype=np.int64)
        per_value = pa.array(_value_lengths(arr.dictionary) + VALUE_BYTES)
        taken = pc.fill_null(pc.take(per_value, arr.indices), 0)
        return np.asarray(taken.to_numpy(zero_copy_only=False), dtype=np.int64)
    if _is_text(t):
        return _value_lengths(arr) + VALUE_BYTES
    if isinstance(arr, (pa.ListArray, pa.LargeListArray)):  # a map is a list of structs
        offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        base = offsets[0]
        inner = np.concatenate(
            ([0], np.cumsum(_row_bytes(arr.values.slice(base, offsets[-1] - base))))
        )
        return inner[offsets[1:] - base] - inner[offsets[:-1] - base] + VALUE_BYTES
    if isinstance(arr, pa.FixedSizeListArray):
        size = t.list_size
        inner = _row_bytes(arr.values.slice(arr.offset * size, n * size))
        return inner.reshape(n, size).sum(axis=1) + VALUE_BYTES if size else np.zeros(n, np.int64)
    if isinstance(arr, pa.StructArray):
        sizes = np.ones(n, dtype=np.int64)
        for f in arr.flatten():
            sizes += _row_bytes(f)
        return sizes
    return np.full(n, -(-arr.nbytes // max(n, 1)), dtype=np.int64)  # fixed width, or as even


def _check_parquet_width(path: _Input) -> None:
    """Refuse a schema of too many columns from the footer's first bytes, before Arrow
    decodes the footer. NOTE: Arrow is slow and big opening a very wide file (README)."""
    try:
        counts = _parquet_schema_counts(path)
    except (OSError, IndexError, ValueError):
        return  # not a footer we can read: Arrow will say what is wrong with it
    if counts is None:
        return
    fields, top = counts
    if top > MAX_COLUMNS:
        raise InputError(f"{path}: {top:,} columns, over the limit of {MAX_COLUMNS:,}")
    if fields > PARQUET_MAX_FIELDS:
        raise InputError(
            f"{path}: {fields:,} schema fields (nested ones included), "
            f"over the limit of {PARQUET_MAX_FIELDS:,}"
        )


def _parquet_schema_counts(path: _Input) -> tuple[int, int] | None:
    """(schema fields, top-level columns) from the footer's FileMetaData: its field 1 is
    the version, field 2 the flattened schema, a list whose first element is the root
    (num_children = top-level columns). Thrift compact protocol; None if laid out otherwise."""
    with path.open() as fh:
        size = fh.seek(0, 2)
        if size < 12:
            return None
        fh.seek(size - 8)
        tail = fh.read(8)
        length = int.from_bytes(tail[:4], "little")
        if tail[4:] != b"PAR1" or length > size - 12:
            return None
        fh.seek(size - 8 - length)
        thrift = _Thrift(fh.read(min(length, 1 << 20)))
    fid, ftype = thrift.field(0)
    if (fid, ftype) == (1, 5):  # version: i32
        thrift.varint()
        fid, ftype = thrift.field(fid)
    if (fid, ftype) != (2, 9):  # schema: list
        return None
    head = thrift.byte()
    fields = head >> 4 if head >> 4 != 15 else thrift.varint()
    if head & 0x0F != 12 or fields < 1:  # a list of structs
        return None
    fid = 0
    while True:  # the root SchemaElement
        fid, ftype = thrift.field(fid)
        if ftype == 0:
            return fields - 1, 0
        if fid == 5 and ftype == 5:  # num_children: i32
            return fields - 1, thrift.zigzag()
        thrift.skip(ftype)
