"""Parquet input: the footer's width checked before Arrow decodes it, then record batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError, first_line
from ..schema import MAX_COLUMNS
from .batch import BATCH_MAX_BYTES, RawBatch
from .inputs import _check_names, _Input

PARQUET_MAX_FIELDS = 4 * MAX_COLUMNS  # schema nodes, nested ones included (a list is 3)
THRIFT_DEPTH_MAX = 32  # structs in structs in a page header or footer, at most


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
            for table in _joined(_pieces(path, pf, batch_size), batch_size):
                done = (first - 1 + table.num_rows) / total
                yield RawBatch(table, first, done=done)
                first += table.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: Parquet read error near row {first}: {exc}") from None


PARQUET_READ_BYTES = 1 << 20  # column chunks are read through a buffer of this size

# How a batch keeps to its byte budget (BATCH_MAX_BYTES), whatever the sizes of the rows and
# wherever they are in the file. What a step of rows can cost decoded is bounded before any
# of it is decoded, and each row group is decoded as many rows at a time as fit that bound
# in STEP_MAX_BYTES (_plan):
#
# * a text column (a byte array), from its page headers, which Arrow does not show
#   (_PageWalk): a data page's bytes over its values bound each of its rows; a dictionary
#   page bounds the rows that take values from it by its longest entry (measured when it
#   matters: a dictionary-encoded column, pyarrow's default, of a 1 MiB value in 1,000 rows
#   is 1 MiB in the file and 1 GiB decoded), or by its whole size when no entry repeats;
# * other columns, by their values' widths; nested ones, by their chunk's average.
#
# A text column of long entries that repeat (DICTIONARY_LONG_ENTRY, DICTIONARY_REPEAT_BYTES)
# is read as a dictionary instead (Arrow's read_dictionary): 4 bytes a row beside its
# entries, so its steps need not be few rows. NOTE: not every text column: decoding unique
# ids into a dictionary costs a hash of every value (+8% on a 1M-row run); and not one of
# many plain-encoded values (a dictionary that overflowed): Arrow adds them to the
# dictionary of every later step of the row group (185 s and 1 GB for 200 rows of 1 MiB
# among 40,000).
#
# Each step is then cut by the decoded size of each row (a dictionary value's length, taken
# by the rows that use it) before it is decoded (_decoded): each piece within the budget, or
# one row. _joined joins the pieces into batches of --batch-size rows, or fewer.
#
# NOTE: Arrow decompresses a page, and decodes a dictionary page, whole to read any row of it:
# a page of a thousand 1 MiB values costs a GiB however few of its rows are decoded. And the
# rows of nested columns, of DELTA_BYTE_ARRAY pages and of chunks whose page headers cannot
# be read (or past PAGE_HEADERS_MAX) are bounded by their chunk's average only: rows far
# over it, all in one step, can hold more than the budget there.
VALUE_BYTES = 8  # what a text value costs beside its bytes: an offset, an index
# A step's bound (its pieces are cut to BATCH_MAX_BYTES): twice the budget, as the bound is
# about twice what ordinary rows cost, and a step under --batch-size rows makes batches of
# two chunks a column.
STEP_MAX_BYTES = 2 * BATCH_MAX_BYTES
DICTIONARY_LONG_ENTRY = 1 << 10  # a dictionary of shorter entries is bounded by its bytes
DICTIONARY_REPEAT_BYTES = BATCH_MAX_BYTES // 16  # repeats adding more: read as a dictionary
PAGE_HEADERS_MAX = 1_000_000  # page headers read in a file (~25 s); past it, averages
_DICTIONARY_ENCODINGS = (2, 8)  # PLAIN_DICTIONARY, RLE_DICTIONARY
_CODECS = {"UNCOMPRESSED": 0, "SNAPPY": 1, "GZIP": 2, "LZO": 3, "BROTLI": 4, "LZ4": 5,
           "ZSTD": 6, "LZ4_RAW": 7}  # fmt: skip


@dataclass(frozen=True)
class _Plan:
    """How a row group is read."""

    step: int  # rows decoded at a time
    dictionary: frozenset[str]  # leaf columns read as dictionaries


@dataclass
class _Chunk:
    """A text column chunk, from its page headers."""

    dictionary: int = 0  # the dictionary page's bytes (0: none)
    longest: int = 0  # its longest entry, or a bound of it
    repeats: int = 0  # values taken from it beyond its entries, at most
    densest: int | None = None  # most bytes a value of a data page (None: DELTA_BYTE_ARRAY)
    plain: int = 0  # bytes of data pages not dictionary-encoded
    walked: bool = False  # False: the page headers could not all be read


def _plan(walk: _PageWalk, pf: pq.ParquetFile, i: int, text: set[str], batch_size: int) -> _Plan:
    """How row group `i` is read: which text columns as dictionaries, and as many rows at a
    time as the bound of what they cost decoded fits in STEP_MAX_BYTES."""
    rg, schema = pf.metadata.row_group(i), pf.schema
    rows = max(rg.num_rows, 1)
    dictionary = set()
    per_row = fixed = 0  # a step of k rows holds at most k * per_row + fixed decoded
    for j in range(rg.num_columns):
        col, leaf = rg.column(j), schema.column(j)
        values = max(col.num_values, 0)
        if leaf.physical_type != "BYTE_ARRAY" or leaf.logical_type.type == "DECIMAL":
            width = _width(leaf)  # values of a fixed width
            per_row += width * -(-values // rows) if leaf.max_repetition_level else width
            continue
        c = walk.chunk(col)
        as_dictionary = leaf.path in text and _as_dictionary(c, col)
        if as_dictionary:
            dictionary.add(leaf.path)
            fixed += c.dictionary  # held beside each step, with 4 bytes a row
        elif not c.repeats:
            fixed += c.longest  # its entries' bytes: each used once at most
        if c.densest is None or leaf.max_repetition_level:  # the chunk's average
            adds = 0 if as_dictionary else c.repeats * c.longest
            stored = max(col.total_uncompressed_size, 0)
            per_row += -(-(stored + VALUE_BYTES * values + adds) // rows)
        else:
            from_dict = c.longest if c.repeats and not as_dictionary else 0
            per_row += VALUE_BYTES + max(c.densest, from_dict)
    room = max(STEP_MAX_BYTES - fixed, BATCH_MAX_BYTES)
    return _Plan(max(1, min(batch_size, room // max(per_row, 1))), frozenset(dictionary))


def _as_dictionary(c: _Chunk, col: Any) -> bool:
    """Whether a text column chunk is better read as a dictionary: long entries repeated, and
    few plain-encoded values (Arrow adds those to the dictionary of every later step of the
    row group); pages not all read: when its plain values are at most what a step holds."""
    if not c.walked:
        return bool(col.total_uncompressed_size <= BATCH_MAX_BYTES)
    return (
        c.longest >= DICTIONARY_LONG_ENTRY
        and c.repeats * c.longest > DICTIONARY_REPEAT_BYTES
        and c.dictionary <= BATCH_MAX_BYTES
        and c.plain <= DICTIONARY_REPEAT_BYTES
    )


def _width(leaf: Any) -> int:
    """What a value of a fixed-width column costs decoded (a decimal: Arrow's decimal128 or
    decimal256; a FIXED_LEN_BYTE_ARRAY: its length, as a dictionary of 1 MiB ones can be)."""
    decimal = leaf.logical_type.type == "DECIMAL"
    if leaf.physical_type == "FIXED_LEN_BYTE_ARRAY":
        return max(leaf.length, 32 if decimal else 0)
    if leaf.physical_type == "BYTE_ARRAY":  # a decimal
        return 32
    if decimal:
        return 16
    return {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4}.get(leaf.physical_type, 8)


def _text_columns(pf: pq.ParquetFile) -> set[str]:
    """The columns Arrow can read as dictionaries: top-level byte arrays read as text or
    binary (not decimals, not JSON). NOTE: not a nested one: where its dictionary changes
    within a step (one that overflowed), Arrow refuses ("Nested data conversions not
    implemented for chunked array outputs")."""
    top = {f.name for f in pf.schema_arrow if _is_text(f.type)}
    schema = pf.schema
    return {
        schema.column(i).path
        for i in range(len(schema))
        if schema.column(i).physical_type == "BYTE_ARRAY"
        and schema.column(i).logical_type.type in ("STRING", "NONE")
        and schema.column(i).max_repetition_level == 0
        and schema.column(i).path in top
    }


class _PageWalk:
    """Page headers of column chunks, read from the file (Arrow does not show them)."""

    def __init__(self, path: _Input) -> None:
        self.left = PAGE_HEADERS_MAX
        try:
            self.fh: Any = path.open()
        except OSError:
            self.fh = None

    def __enter__(self) -> _PageWalk:
        return self

    def __exit__(self, *_: object) -> None:
        if self.fh is not None:
            self.fh.close()

    def chunk(self, col: Any) -> _Chunk:
        """What the page headers of a byte-array column chunk say."""
        start = col.data_page_offset
        if col.has_dictionary_page and 0 < (col.dictionary_page_offset or 0) < start:
            start = col.dictionary_page_offset
        end = start + max(col.total_compressed_size, 0)
        out = _Chunk()
        try:
            at, entries, encoded, densest = start, 0, 0, 0
            kind, size, stored, values, _, length = self.header(at)
            if kind == 2:  # the dictionary page: entries of a 4-byte length and their bytes
                entries, dict_at, dict_stored = values, at + length, stored
                out.dictionary, out.longest = size, max(size - 4 * entries, 0)
            else:
                length = stored = 0  # no dictionary: the first page is read again below
            while (at := at + length + stored) < end:
                kind, size, stored, values, encoding, length = self.header(at)
                if kind not in (0, 3):
                    continue
                if encoding in _DICTIONARY_ENCODINGS:
                    encoded += values
                else:
                    out.plain += size
                if encoding == 7:  # DELTA_BYTE_ARRAY: a value shares the last one's prefix
                    densest = -1
                if densest >= 0:
                    densest = max(densest, -(-size // max(values, 1)))
            out.repeats = max(encoded - entries, 0) if out.dictionary else 0
            if out.repeats and DICTIONARY_LONG_ENTRY // 4 < out.longest <= BATCH_MAX_BYTES:
                out.longest = self.longest_entry(col, dict_at, out.dictionary, dict_stored, entries)
            out.densest = densest if densest >= 0 else None
            out.walked = True
        except (OSError, ValueError, IndexError, KeyError, _WalkEnd, pa.ArrowException):
            out = _Chunk()  # the chunk's average bounds it
        return out

    def header(self, at: int) -> tuple[int, int, int, int, int, int]:
        """(page type, bytes uncompressed, bytes stored, values, encoding, the header's own
        length) of the page at `at`."""
        if self.fh is None or self.left <= 0:
            raise _WalkEnd
        self.left -= 1
        want = 256
        while True:
            self.fh.seek(at)
            data = self.fh.read(want)
            try:
                thrift = _Thrift(data)
                return (*_page_header(thrift), thrift.i)
            except IndexError:
                if len(data) < want or want >= PARQUET_READ_BYTES:
                    raise
                want *= 8

    def longest_entry(self, col: Any, at: int, size: int, stored: int, entries: int) -> int:
        """The longest entry of a dictionary page (its data at `at`), decoded by Arrow as the
        one data page of a file of one column (its entries are plain byte arrays, as are the
        values of a plain data page). ~2 ms for 60,000 entries."""
        self.fh.seek(at)
        payload = self.fh.read(stored)
        if len(payload) != stored:
            raise ValueError("dictionary page cut")
        page = _ThriftOut()
        page.i32(1, 0)  # a DATA_PAGE
        page.i32(2, size)
        page.i32(3, stored)
        page.begin(5)
        page.i32(1, entries)
        for fid in (2, 3, 4):  # values PLAIN; levels RLE (a required column has none)
            page.i32(fid, 0 if fid == 2 else 3)
        page.end()
        page.stop()
        head = bytes(page.data)
        meta = _ThriftOut()
        meta.i32(1, 1)  # version
        meta.list(2, 12, 2)  # schema: the root, and one required BYTE_ARRAY column "v"
        meta.element()
        meta.binary(4, b"r")
        meta.i32(5, 1)
        meta.end()
        meta.element()
        meta.i32(1, 6)
        meta.i32(3, 0)
        meta.binary(4, b"v")
        meta.end()
        meta.i64(3, entries)
        meta.list(4, 12, 1)  # one row group of one column chunk
        meta.element()
        meta.list(1, 12, 1)
        meta.element()
        meta.i64(2, 4)
        meta.begin(3)  # ColumnMetaData
        meta.i32(1, 6)
        meta.list(2, 5, 1)
        meta.varint(0)  # encodings: PLAIN
        meta.list(3, 8, 1)
        meta.varint(1)
        meta.data += b"v"
        meta.i32(4, _CODECS[col.compression])
        meta.i64(5, entries)
        meta.i64(6, len(head) + size)
        meta.i64(7, len(head) + stored)
        meta.i64(9, 4)  # data_page_offset
        meta.end()
        meta.end()
        meta.i64(2, size)
        meta.i64(3, entries)
        meta.end()
        meta.stop()
        footer = bytes(meta.data)
        data = b"PAR1" + head + payload + footer + len(footer).to_bytes(4, "little") + b"PAR1"
        values = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False).read().column(0)
        if len(values) != entries:
            raise ValueError("dictionary page misread")
        return int(pc.max(pc.binary_length(values)).as_py() or 0) if entries else 0


class _WalkEnd(Exception):
    """The page headers cannot be read (or enough were): the bound assumes the worst."""


def _page_header(t: _Thrift) -> tuple[int, int, int, int, int]:
    """A PageHeader: type (1), sizes (2, 3), and from the data page (5), dictionary page (7)
    or data page v2 (8) header its values (1) and encoding (2; 4 in v2)."""
    kind = size = stored = values = encoding = -1
    fid = 0
    while True:
        fid, ftype = t.field(fid)
        if ftype == 0:
            break
        if fid in (1, 2, 3) and ftype == 5:
            v = t.zigzag()
            if fid == 1:
                kind = v
            elif fid == 2:
                size = v
            else:
                stored = v
        elif fid in (5, 7, 8) and ftype == 12:
            sub = 0
            while True:
                sub, stype = t.field(sub)
                if stype == 0:
                    break
                if sub == 1 and stype == 5:
                    values = t.zigzag()
                elif stype == 5 and sub == (4 if fid == 8 else 2):
                    encoding = t.zigzag()
                else:
                    t.skip(stype)
        else:
            t.skip(ftype)
    if min(kind, size, stored, values) < 0:
        raise ValueError("not a page header")
    return kind, size, stored, values, encoding


def _pieces(path: _Input, pf: pq.ParquetFile, batch_size: int) -> Iterator[pa.Table]:
    """The file's rows, decoded, in tables of at most BATCH_MAX_BYTES (or one row). Each row
    group is planned as it comes (its page headers read then), so the first rows do not
    wait for the whole file's."""
    schema, text = pf.schema_arrow, _text_columns(pf)
    readers = {frozenset[str](): pf}  # by the columns they read as dictionaries
    with _PageWalk(path) as walk:
        for i in range(pf.metadata.num_row_groups):
            if pf.metadata.row_group(i).num_rows <= 0:
                continue
            plan = _plan(walk, pf, i, text, batch_size)
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


def _joined(pieces: Iterator[pa.Table], batch_size: int) -> Iterator[pa.Table]:
    """Pieces joined into batches of `batch_size` rows, or fewer where one more piece would
    take a batch past BATCH_MAX_BYTES (a piece over it is a batch of its own)."""
    pending: list[pa.Table] = []
    count = held = 0
    for t in pieces:
        if count and held + t.nbytes > BATCH_MAX_BYTES:
            yield pa.concat_tables(pending)
            pending, count, held = [], 0, 0
        pending.append(t)
        count += t.num_rows
        held += t.nbytes
        while count >= batch_size:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, batch_size)
            rest = whole.slice(batch_size)
            pending, count, held = [rest], rest.num_rows, rest.nbytes
    if count:
        yield pa.concat_tables(pending)


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


def _is_text(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_string(t)
        or pa.types.is_large_binary(t)
    )


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
    """Just enough of Thrift's compact protocol to read the start of a Parquet footer and
    page headers."""

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

    def skip(self, ftype: int, depth: int = 0) -> None:
        """Past a value of type `ftype` (as a struct field's header gives it)."""
        if depth > THRIFT_DEPTH_MAX:
            raise ValueError("thrift nested too deep")
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
        elif ftype in (9, 10):  # a list, a set: its size and element type, then each element
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            for _ in range(size):
                self._element(head & 0x0F, depth)
        elif ftype == 11:  # a map: its size, key and value types, then each pair
            size = self.varint()
            types = self.byte() if size else 0
            for _ in range(size):
                self._element(types >> 4, depth)
                self._element(types & 0x0F, depth)
        elif ftype == 12:
            fid = 0
            while True:
                fid, inner = self.field(fid)
                if inner == 0:
                    break
                self.skip(inner, depth + 1)
        else:
            raise ValueError(f"thrift type {ftype}")
        if self.i > len(self.data):
            raise IndexError("thrift cut")

    def _element(self, ftype: int, depth: int) -> None:
        """Past a container's element: a bool there takes a byte of its own."""
        if ftype in (1, 2):
            self.i += 1
            if self.i > len(self.data):
                raise IndexError("thrift cut")
        else:
            self.skip(ftype, depth + 1)


class _ThriftOut:
    """Just enough of Thrift's compact protocol to write a page header and a footer."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.last = [0]  # the last field id, in each struct open

    def varint(self, v: int) -> None:
        while v >= 0x80:
            self.data.append((v & 0x7F) | 0x80)
            v >>= 7
        self.data.append(v)

    def field(self, fid: int, ftype: int) -> None:
        delta = fid - self.last[-1]
        if 0 < delta <= 15:
            self.data.append(delta << 4 | ftype)
        else:
            self.data.append(ftype)
            self.varint((fid << 1) ^ (fid >> 63))
        self.last[-1] = fid

    def i32(self, fid: int, v: int) -> None:
        self.field(fid, 5)
        self.varint((v << 1) ^ (v >> 63))

    def i64(self, fid: int, v: int) -> None:
        self.field(fid, 6)
        self.varint((v << 1) ^ (v >> 63))

    def binary(self, fid: int, v: bytes) -> None:
        self.field(fid, 8)
        self.varint(len(v))
        self.data += v

    def list(self, fid: int, etype: int, size: int) -> None:
        self.field(fid, 9)
        if size < 15:
            self.data.append(size << 4 | etype)
        else:
            self.data.append(0xF0 | etype)
            self.varint(size)

    def begin(self, fid: int) -> None:
        """A struct as field `fid`; end() closes it."""
        self.field(fid, 12)
        self.last.append(0)

    def element(self) -> None:
        """A struct as a list's element; end() closes it."""
        self.last.append(0)

    def end(self) -> None:
        self.data.append(0)
        self.last.pop()

    def stop(self) -> None:
        """The end of the outermost struct."""
        self.data.append(0)
