"""CSV input: a bounded header probe, record batches of text cells (a cell of invalid UTF-8
comes back as bytes, in a binary column, and rejects its row, not the file), malformed rows
kept with their text."""

from __future__ import annotations

import csv
import io
import re
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from ..errors import InputError, first_line
from ..schema import MAX_COLUMNS, RECORD_MAX_BYTES
from .batch import MALFORMED_ECHO_BYTES, Malformed, RawBatch, _rebatch, record_number
from .csv_bounds import BoundedCsv, cut_reason
from .inputs import _check_names, _Input

CSV_BLOCK_BYTES = 1 << 20  # the fastest in the benchmark; Arrow reads ahead several blocks


# A record over the ordinary block is read again with blocks of CSV_GROWN_BLOCK_BYTES; one
# over those, through csv_bounds.BoundedCsv (no field over FIELD_MAX_BYTES + 1, no record
# over RECORD_MAX_BYTES), with blocks up to CSV_MAX_BLOCK_BYTES, which hold any such record.
CSV_GROWN_BLOCK_BYTES = 8 << 20
CSV_MAX_BLOCK_BYTES = 2 * RECORD_MAX_BYTES


CSV_HEADER_MAX_BYTES = 1 << 20  # a header row longer than this is refused, unparsed


class _Csv:
    @staticmethod
    def header(path: _Input) -> list[str]:
        return _header(path)[0]

    @staticmethod
    def batches(path: _Input, batch_size: int, *_: Any) -> Iterator[RawBatch]:
        block = CSV_BLOCK_BYTES
        bounded = False
        done = 0  # good rows already yielded, if a restart is needed
        parsed = [0]  # bytes of the rows yielded so far (a restart keeps the count)
        told: set[int] = set()  # malformed rows already yielded (a restart yields the rest)
        while True:
            try:
                for rb in _csv_pass(path, batch_size, block, done, parsed, bounded, told):
                    done += rb.table.num_rows
                    yield rb
                return
            except OSError as exc:  # a corrupt compressed stream, a read error
                raise InputError(f"{path}: read error: {first_line(exc)}") from None
            except pa.ArrowInvalid as exc:
                # NOTE: Arrow parses a record only whole within its block. One larger than
                # the block is read again with bigger blocks; past CSV_GROWN_BLOCK_BYTES,
                # through BoundedCsv, so that no field or record costs more than its cap.
                if "straddling" not in str(exc) or block >= CSV_MAX_BLOCK_BYTES:
                    raise InputError(f"{path}: CSV parse error: {first_line(exc)}") from None
                if block < CSV_GROWN_BLOCK_BYTES:
                    block = CSV_GROWN_BLOCK_BYTES
                elif not bounded:
                    bounded = True
                else:
                    block = CSV_MAX_BLOCK_BYTES


def _header(path: _Input) -> tuple[list[str], bool]:
    """The column names, as Arrow will read them, and whether the file holds nothing else.

    NOTE: Arrow is given the header's bytes from memory, not the file: a reader of a Python
    file leaves Python objects with Arrow's I/O threads (see cli._exit)."""
    names, head, only = _csv_header_row(path)
    if not head.endswith((b"\n", b"\r")):  # a header row that ends the file
        head += b"\n"
    try:
        reader = pv.open_csv(
            pa.BufferReader(_Utf8Guard(io.BytesIO(head)).read()),
            read_options=pv.ReadOptions(block_size=max(len(head), 1 << 20), use_threads=False),
            parse_options=pv.ParseOptions(newlines_in_values=True),
            convert_options=pv.ConvertOptions(column_types={n: pa.binary() for n in names}),
        )
        arrow_names = reader.schema.names
        reader.close()
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: not a readable CSV file: {first_line(exc)}") from None
    if arrow_names != names:  # NOTE: never seen; Arrow's reading is the one batches use
        _check_names(path, arrow_names)
    return arrow_names, only


def _csv_header_row(path: _Input) -> tuple[list[str], bytes, bool]:
    """The header's column names, read by Python's csv module from at most
    CSV_HEADER_MAX_BYTES, and checked (count, duplicates, UTF-8) before Arrow sees them;
    the bytes of the header record (blank lines before it included); whether the file holds
    nothing else (an export of an empty table, often without a final newline).

    NOTE: Arrow builds a schema and a column builder per header field before it reads a row,
    which a header of 100,000 names makes slow and big (README, Performance)."""
    try:
        with path.open() as fh:
            head = fh.read(CSV_HEADER_MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: not readable: {exc}") from None
    except pa.ArrowException as exc:
        raise InputError(f"{path}: not readable: {first_line(exc)}") from None
    whole = len(head) <= CSV_HEADER_MAX_BYTES
    text = head[:CSV_HEADER_MAX_BYTES].decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    buf = io.StringIO(text, newline="")
    row: list[str] = []
    try:
        for row in csv.reader(buf):
            if row:  # blank lines before the header are skipped, as Arrow does
                break
    except csv.Error as exc:
        if "field larger" in str(exc):
            limit = csv.field_size_limit()
            raise InputError(f"{path}: a header name is over {limit:,} characters") from None
        raise InputError(f"{path}: not a readable CSV header: {exc}") from None
    if not row:
        raise InputError(f"{path}: empty CSV file (no header row)")
    if not whole and not text[: buf.tell()].endswith(("\n", "\r")):
        if len(row) > MAX_COLUMNS:
            raise InputError(
                f"{path}: at least {len(row):,} columns in the header, "
                f"over the limit of {MAX_COLUMNS:,}"
            )
        raise InputError(f"{path}: the header row is over {CSV_HEADER_MAX_BYTES:,} bytes")
    _check_names(path, row)
    if any(_SURROGATES.search(n) for n in row):
        raise InputError(f"{path}: the header row is not valid UTF-8")
    only = whole and not text[buf.tell() :].strip("\r\n")
    return row, text[: buf.tell()].encode("utf-8", "surrogateescape"), only


def _csv_pass(
    path: _Input,
    batch_size: int,
    block: int,
    skip: int,
    parsed: list[int],
    bounded: bool,
    told: set[int],
) -> Iterator[RawBatch]:
    """One reading of the file (`bounded`: through BoundedCsv), yielding the good rows after
    the first `skip` and the malformed ones not in `told` (it adds those it yields: a pass
    that failed may have found some and yielded none); `parsed[0]` counts the bytes of the
    rows yielded (progress)."""

    def untold(found: list[Malformed]) -> list[Malformed]:
        return [m for m in found if m.row not in told and (m.row > 0 or not skip)]

    def telling(found: list[Malformed]) -> list[Malformed]:
        told.update(m.row for m in found)
        parsed[0] += sum(len(m.text.encode("utf-8", "replace")) + 1 for m in found)
        return found

    malformed: list[Malformed] = []
    cuts: deque[int] = deque()
    cut_fields: dict[int, dict[int, int]] | None = None
    record_sizes: dict[int, int] | None = None

    def on_invalid(row: Any) -> str:
        # The header is record 1 to Arrow; SPEC's row numbers count data records from 1.
        number = -1 if row.number is None else row.number - 1
        msg = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        text = row.text
        if cuts and (cut := cut_reason(text, cuts)):
            text, msg = cut[0][:MALFORMED_ECHO_BYTES], cut[1]
        text = _unescape(text.encode()).decode("utf-8", "backslashreplace")
        size = record_sizes.get(number) if record_sizes else None  # a field of it was cut
        malformed.append(Malformed(number, text, msg, size))
        return "skip"

    names, only = _header(path)
    if only:  # no data row: nothing to read (Arrow refuses a header that ends the file)
        return
    if not parsed[0]:  # the header row, roughly: names, delimiters, the line end
        parsed[0] = sum(len(n.encode()) for n in names) + len(names)
    scale = _csv_overhead(path)
    with path.open() as fh:
        source: Any = fh
        if bounded:
            source = BoundedCsv(fh, len(names))
            cuts, cut_fields, record_sizes = source.cuts, source.cut_fields, source.record_sizes
        guard = _Utf8Guard(source)
        reader = pv.open_csv(
            guard,
            # NOTE: single-threaded parsing is what makes Arrow report a malformed row's number.
            read_options=pv.ReadOptions(block_size=block, use_threads=False),
            parse_options=pv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            # Text, unchecked: the guard hands Arrow valid UTF-8 only (each invalid byte
            # escaped), so Arrow's check could find nothing. A cell that held invalid bytes
            # gets them back in a binary column (`_unescape_table`), rejecting its row only.
            convert_options=pv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                check_utf8=False,
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=True,
            ),
        )
        try:
            gaps: list[int] = []  # record numbers of malformed rows seen so far, ascending
            good = 0  # good rows read so far
            waiting: list[Malformed] = []  # malformed rows to yield with the next batch
            for table in _rebatch((pa.Table.from_batches([b]) for b in reader), batch_size):
                fresh, malformed[:] = list(malformed), []
                gaps.extend(m.row for m in fresh)
                waiting += untold(fresh)
                start, good = good, good + table.num_rows
                if good <= skip:
                    continue
                if start < skip:  # a restart with bigger blocks: drop what was already yielded
                    table, start = table.slice(skip - start), skip
                if guard.escaped:
                    table = _unescape_table(table)
                parsed[0] += _csv_bytes(table)
                # Arrow reports a block's malformed rows at once: each goes with the batch it
                # falls in, so the rejects keep input order at any batch size.
                last = record_number(start + 1, tuple(gaps), table.num_rows - 1)
                bad = telling([m for m in waiting if m.row <= last])
                waiting = [m for m in waiting if m.row > last]
                done = path.fraction(int(parsed[0] * scale), fh)
                yield RawBatch(table, start + 1, tuple(gaps), bad, done, cut=cut_fields)
            waiting += untold(malformed)  # malformed rows after the last good one
            if waiting:
                gaps.extend(m.row for m in malformed)
                empty = pa.table({n: pa.array([], pa.string()) for n in names})
                yield RawBatch(empty, good + 1, tuple(gaps), telling(waiting), 1.0)
        finally:
            guard.close()
            reader.close()


def _csv_overhead(path: _Input) -> float:
    """What the parsed values miss of the file's bytes: quotes and CRs, as counted in the
    first MiB (a file quoted throughout is ~13% quotes), as a factor for `_csv_bytes`."""
    with path.open() as fh:
        head = fh.read(CSV_BLOCK_BYTES)
    unseen = head.count(b'"') + head.count(b"\r")
    return len(head) / (len(head) - unseen) if unseen < len(head) else 1.0


def _csv_bytes(table: pa.Table) -> int:
    """The bytes a CSV table's rows took in the file, as parsed: every value, a delimiter or
    line end after each (quotes and CRs are not counted: `_csv_overhead` scales for them).
    O(columns × chunks), no row work."""
    total = table.num_rows * table.num_columns
    for col in table.columns:
        for chunk in col.chunks:
            total += _value_bytes(chunk)
    return total


def _value_bytes(arr: pa.Array) -> int:
    """Bytes of a binary/string array's values, from its offsets buffer."""
    if len(arr) == 0:
        return 0
    if not (pa.types.is_binary(arr.type) or pa.types.is_string(arr.type)):
        return int(pc.sum(pc.binary_length(arr.cast(pa.string()))).as_py() or 0)
    offsets = memoryview(arr.buffers()[1]).cast("i")
    return int(offsets[arr.offset + len(arr)] - offsets[arr.offset])


# NOTE: pyarrow decodes a malformed row's text as UTF-8 before it calls invalid_row_handler,
# so a malformed row holding invalid UTF-8 made Arrow fail the whole file (after printing
# "Exception ignored"). Arrow is therefore fed valid UTF-8: each invalid byte becomes the
# noncharacter U+FFFE and two hex digits (a real U+FFFE becomes U+FFFE "!!"), and the cells
# and malformed rows that hold the mark get their original bytes back.
_MARK = "\ufffe"


_MARK_BYTES = _MARK.encode()


_TO_ESCAPE = re.compile("[\udc80-\udcff\ufffe]")


_ESCAPED = re.compile(re.escape(_MARK_BYTES) + rb"(!!|[0-9A-F]{2})")


_SURROGATES = re.compile("[\ud800-\udfff]")


class _Utf8Guard:
    """A read-only byte stream over `raw` that is always valid UTF-8 (see the note above)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._tail = b""  # the start of a character the last read split
        self._out = b""
        self._eof = False
        self.escaped = False  # a mark was written: cells may need their bytes back
        self.closed = False
        self._reading = threading.Lock()  # held by a read in progress (Arrow's read-ahead)

    def read(self, n: int = -1) -> bytes:
        with self._reading:
            return b"" if self.closed else self._read(n)

    def _read(self, n: int) -> bytes:
        # Exactly n bytes unless the input ends: the decoder holds back a character split
        # by a read, and a short read of a few bytes made Arrow's chunker see a row
        # straddle two blocks (a restart from the top with 8x blocks, 8x the memory).
        while not self._eof and (n < 0 or len(self._out) < n):
            chunk = self._raw.read(n if n > 0 else -1)
            self._eof = not chunk or n < 0
            data = self._tail + chunk
            cut = len(data) if self._eof else _whole_characters(data)
            self._out += self._guarded(data[:cut])
            self._tail = data[cut:]
        if n < 0 or len(self._out) <= n:
            out, self._out = self._out, b""
        else:
            out, self._out = self._out[:n], self._out[n:]
        return out

    def _guarded(self, data: bytes) -> bytes:
        """`data` (whole characters, or the end of the input) as valid UTF-8 with each
        invalid byte marked. Valid UTF-8 without the mark passes as it is: a check at C
        speed, where decoding and encoding every chunk cost most of the read."""
        if data.isascii():
            return data
        # memchr for the mark's lead byte (rare in text) first, faster than `in`
        if (data.find(_MARK_BYTES[:1]) < 0 or _MARK_BYTES not in data) and valid_utf8(data):
            return data
        text = data.decode("utf-8", "surrogateescape")
        if _TO_ESCAPE.search(text):
            self.escaped = True
            text = _TO_ESCAPE.sub(_escape_char, text)
        return text.encode()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        """End of input from now on; waits for a read in progress on Arrow's read-ahead thread,
        so that once the reader is dropped nothing of Arrow's is inside Python (a thread that
        calls into an exiting interpreter aborts the process)."""
        with self._reading:
            self.closed = True


def valid_utf8(data: bytes) -> bool:
    """Whether `data` is valid UTF-8, as Python's strict decoder says, by Arrow's validator:
    ~20x faster than a decode on this data (tests/test_csv_reads.py compares the two)."""
    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    text = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _whole_characters(data: bytes) -> int:
    """Where to cut `data` so that a character its end splits goes with the next read: before
    a lead byte in the last 3 whose sequence is not complete (anything else, valid or not,
    is left to the decoder as it is)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b < 0x80:
            return n
        if b >= 0xC0:  # a lead byte: 2, 3 or 4 bytes in all
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n if back >= need else n - back
    return n


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    return _MARK + ("!!" if c == _MARK else f"{ord(c) - 0xDC00:02X}")


def _unescape(data: bytes) -> bytes:
    if _MARK_BYTES not in data:
        return data
    return _ESCAPED.sub(
        lambda m: _MARK_BYTES if m.group(1) == b"!!" else bytes([int(m.group(1), 16)]), data
    )


def _unescape_table(table: pa.Table) -> pa.Table:
    """Cells that held invalid UTF-8 get their bytes back; their columns become binary."""
    for i, name in enumerate(table.column_names):
        col = table.column(name).combine_chunks()
        if not (pa.types.is_string(col.type) or pa.types.is_binary(col.type)):
            continue
        if not pc.any(pc.match_substring(col, _MARK)).as_py():
            continue
        col = col.cast(pa.binary())
        values = [None if v is None else _unescape(v) for v in col.to_pylist()]
        table = table.set_column(i, name, pa.array(values, pa.binary()))
    return table
