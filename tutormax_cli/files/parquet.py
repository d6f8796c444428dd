"""Parquet input: the footer's width checked before Arrow decodes it, then record batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError, first_line
from ..schema import MAX_COLUMNS
from .batch import BATCH_MAX_BYTES, RawBatch
from .inputs import _check_names, _Input

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
            for b in pf.iter_batches(batch_size=_rows_within_bytes(pf, batch_size)):
                done = (first - 1 + b.num_rows) / total
                yield RawBatch(pa.Table.from_batches([b]), first, done=done)
                first += b.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: Parquet read error near row {first}: {exc}") from None


PROBE_ROWS = 16  # rows read first to learn how big a decoded row is (a row can be MiBs)
PARQUET_READ_BYTES = 1 << 20  # column chunks are read through a buffer of this size


def _rows_within_bytes(pf: pq.ParquetFile, batch_size: int) -> int:
    """--batch-size, or fewer rows where decoded rows are big (BATCH_MAX_BYTES).

    The footer cannot say: a dictionary-encoded column of 1 MiB values repeated is 1 MiB in
    the footer however many rows hold it. So the first rows are decoded and measured."""
    probe = next(pf.iter_batches(batch_size=min(batch_size, PROBE_ROWS)), None)
    if probe is None or not probe.num_rows:
        return batch_size
    per_row = max(probe.nbytes // probe.num_rows, 1)
    return max(1, min(batch_size, BATCH_MAX_BYTES // per_row))


def _check_parquet_width(path: _Input) -> None:
    """Refuse a schema of too many columns from the footer's first bytes, before Arrow
    decodes the footer. NOTE: Arrow took 1.1 s and 300 MB to open 100,000 columns."""
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


class _Thrift:
    """Just enough of Thrift's compact protocol to read the start of a Parquet footer."""

    def __init__(self, data: bytes) -> None:
        self.data, self.i = data, 0

    def byte(self) -> int:
        b = self.data[self.i]
        self.i += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def field(self, last: int) -> tuple[int, int]:
        """(field id, type) of the next field; type 0 is the end of the struct."""
        head = self.byte()
        if head == 0:
            return 0, 0
        delta, ftype = head >> 4, head & 0x0F
        return (last + delta if delta else self.zigzag()), ftype

    def skip(self, ftype: int) -> None:
        if ftype in (1, 2):  # a bool, held in the field header
            return
        if ftype == 3:
            self.i += 1
        elif ftype in (4, 5, 6):
            self.varint()
        elif ftype == 7:
            self.i += 8
        elif ftype == 8:
            length = self.varint()  # NOTE: not `self.i += self.varint()`: i is read first
            self.i += length
        else:  # a container in the root element: not worth reading
            raise ValueError(f"thrift type {ftype}")
        if self.i > len(self.data):
            raise IndexError("footer cut")
