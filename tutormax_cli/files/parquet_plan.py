"""How a Parquet file is read within the batch byte budget: the rows decoded at a time in
each row group, bounded from the page headers before anything is decoded (files/parquet.py
reads by these plans)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .batch import BATCH_MAX_BYTES
from .inputs import _Input
from .thrift import _Thrift, _ThriftOut

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
# ids into a dictionary costs a hash of every value; and not one of many plain-encoded
# values (a dictionary that overflowed): Arrow adds them to the dictionary of every later
# step of the row group, which grows with the square of the rows (README, Performance).
#
# Each step is then cut by the decoded size of each row (a dictionary value's length, taken
# by the rows that use it) before it is decoded (_decoded): each piece within the budget, or
# one row. batch._rebatch joins whole pieces into batches of at most --batch-size rows.
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
T = TypeVar("T")
PAGE_HEADERS_MAX = 1_000_000  # page headers read in a file; past it, averages
# Arrow decompresses a page whole: a page over this (its header says how big it is
# decompressed) makes the file unreadable, before any of it is decompressed. 8 KB of zstd
# held a 200 MB page and cost 919 MB. Writers aim at 1 MiB pages (pyarrow, Spark, Polars);
# only values averaging over 64 KiB in a page of 1,024 of them come near.
PAGE_MAX_BYTES = 4 * BATCH_MAX_BYTES


class PageTooBig(Exception):
    """A page over PAGE_MAX_BYTES decompressed (its size as its header says), of `column`."""

    def __init__(self, size: int, column: str = "") -> None:
        super().__init__(size)
        self.size, self.column = size, column


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
            _named(walk.pages, col, leaf.path)  # none of them over PAGE_MAX_BYTES
            continue
        c = _named(walk.chunk, col, leaf.path)
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
    step = max(1, min(batch_size, room // max(per_row, 1)))
    step = -(-rows // -(-rows // step))  # the row group in even steps: no short last one
    return _Plan(step, frozenset(dictionary))


def _named(walk: Callable[[Any], T], col: Any, path: str) -> T:
    """A walk of a column chunk; a PageTooBig of it names the column."""
    try:
        return walk(col)
    except PageTooBig as exc:
        raise PageTooBig(exc.size, path) from None


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

    def pages(self, col: Any) -> None:
        """Walk a column chunk's page headers only for their sizes (PageTooBig)."""
        at = col.data_page_offset
        if col.has_dictionary_page and 0 < (col.dictionary_page_offset or 0) < at:
            at = col.dictionary_page_offset
        end = at + max(col.total_compressed_size, 0)
        with suppress(OSError, ValueError, IndexError, KeyError, _WalkEnd, pa.ArrowException):
            while at < end:
                _kind, _size, stored, _values, _encoding, length = self.header(at)
                if stored < 0 or length <= 0:
                    return
                at += length + stored

    def header(self, at: int) -> tuple[int, int, int, int, int, int]:
        """(page type, bytes uncompressed, bytes stored, values, encoding, the header's own
        length) of the page at `at`; PageTooBig for one over PAGE_MAX_BYTES."""
        if self.fh is None or self.left <= 0:
            raise _WalkEnd
        self.left -= 1
        want = 256
        while True:
            self.fh.seek(at)
            data = self.fh.read(want)
            try:
                thrift = _Thrift(data)
                head = (*_page_header(thrift), thrift.i)
            except IndexError:
                if len(data) < want or want >= PARQUET_READ_BYTES:
                    raise
                want *= 8
                continue
            if head[1] > PAGE_MAX_BYTES:
                raise PageTooBig(head[1])
            return head

    def longest_entry(self, col: Any, at: int, size: int, stored: int, entries: int) -> int:
        """The longest entry of a dictionary page (its data at `at`), decoded by Arrow as the
        one data page of a file of one column (its entries are plain byte arrays, as are the
        values of a plain data page)."""
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


def _is_text(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_string(t)
        or pa.types.is_large_binary(t)
    )
