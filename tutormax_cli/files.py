"""Read CSV, Parquet and JSON Lines as bounded record-batch streams; infer format and kind.

Every reader yields `RawBatch`es of at most `batch_size` rows, each row with its data record
number (from 1, header excluded), plus the rows that could not even be split into columns.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from . import errors as E
from .errors import InputError
from .records import StructureError, TooManyKeys, loads_record, records_to_table
from .schema import (
    FIELD_MAX_BYTES,
    MAX_COLUMNS,
    Kind,
    check_columns,
    get_kind,
    infer_kind,
)

FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
EXTENSIONS = {"csv": ".csv", "parquet": ".parquet", "jsonl": ".jsonl"}
CSV_BLOCK_BYTES = 1 << 20  # measured: fastest, and Arrow reads ahead several blocks
CSV_MAX_BLOCK_BYTES = 1 << 30
JSONL_MAX_LINE_BYTES = 16 * FIELD_MAX_BYTES
CSV_HEADER_MAX_BYTES = 1 << 20  # a header row longer than this is refused, unparsed
PARQUET_MAX_FIELDS = 4 * MAX_COLUMNS  # schema nodes, nested ones included (a list is 3)
MALFORMED_ECHO_BYTES = 200  # how much of an oversized line its reject shows


@dataclass
class Malformed:
    """A row that could not be split into fields: it is rejected with this reason."""

    row: int
    text: str
    message: str


def _value(column: pa.ChunkedArray) -> Any:
    """One value as Python, or as Arrow's text for it when Python cannot hold it (a
    timestamp past year 9999, a date before year 1)."""
    try:
        return column[0].as_py()
    except (OverflowError, ValueError, pa.ArrowException):
        try:
            return column.cast(pa.string())[0].as_py()
        except (OverflowError, ValueError, pa.ArrowException):
            return f"<a {column.type} value Python cannot show>"


@dataclass
class RawBatch:
    table: pa.Table
    base: int  # record number of table row 0, were there no gaps
    gaps: tuple[int, ...] = ()  # ascending record numbers that are not in any table (malformed)
    malformed: list[Malformed] = field(default_factory=list)
    done: float = 0.0  # fraction of the file read so far, for progress
    records: list[dict[str, Any]] | None = None  # JSON sources: the records exactly as read

    def values(self, i: int) -> dict[str, Any]:
        """Row i's original values, as read (for the rejects file)."""
        if self.records is not None:
            return self.records[i]
        row = self.table.slice(i, 1)
        try:
            return row.to_pylist()[0]
        except (OverflowError, ValueError, pa.ArrowException):
            return {name: _value(row.column(name)) for name in row.column_names}

    def row_number(self, i: int) -> int:
        """Data record number (from 1) of table row i; computed only for rows that need it."""
        r = self.base + i
        for g in self.gaps:
            if g > r:
                break
            r += 1
        return r


def check_format(fmt: str) -> str:
    if fmt not in EXTENSIONS:
        raise E.UsageError(f"--format {fmt!r}: expected one of csv, parquet, jsonl")
    return fmt


def detect_format(path: Path, fallback: str | None = None) -> str:
    """The format named by the file's extension, else `fallback` (--format)."""
    found = FORMATS.get(path.suffix.lower())
    if found:
        return found
    if fallback:
        return check_format(fallback)
    raise InputError(
        f"{path}: cannot tell the format from the extension {path.suffix!r}; "
        "use .csv, .parquet or .jsonl, or pass --format"
    )


class Source:
    """One input file, checked at open (readable, format, kind, required columns)."""

    def __init__(self, path: Path, fmt: str | None = None, kind: str | None = None) -> None:
        self.path = path
        self.format = detect_format(path, fmt)
        if not path.is_file():
            raise InputError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
        self.columns = _READERS[self.format].header(path)
        self.kind: Kind = get_kind(kind) if kind else infer_kind(self.columns, str(path))
        check_columns(self.kind, self.columns, str(path))

    def batches(self, batch_size: int) -> Iterator[RawBatch]:
        return _READERS[self.format].batches(self.path, batch_size, self.kind, self.columns)


# --- CSV ---------------------------------------------------------------------------------


class _Csv:
    @staticmethod
    def header(path: Path) -> list[str]:
        names = _csv_header_row(path)
        try:
            with path.open("rb") as fh:
                reader = pv.open_csv(
                    _Utf8Guard(fh),
                    read_options=pv.ReadOptions(block_size=1 << 20),
                    parse_options=pv.ParseOptions(
                        newlines_in_values=True, invalid_row_handler=lambda _row: "skip"
                    ),
                    convert_options=pv.ConvertOptions(
                        column_types={n: pa.binary() for n in names}, strings_can_be_null=True
                    ),
                )
                arrow_names = reader.schema.names
                reader.close()
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
            if "straddling" in str(exc):  # a first row over the probe block: the header is read
                return names
            raise InputError(f"{path}: not a readable CSV file: {_first_line(exc)}") from None
        if arrow_names != names:  # NOTE: never seen; Arrow's reading is the one batches use
            _check_names(path, arrow_names)
        return arrow_names

    @staticmethod
    def batches(path: Path, batch_size: int, *_: Any) -> Iterator[RawBatch]:
        block = CSV_BLOCK_BYTES
        done = 0  # good rows already yielded, if a restart is needed
        while True:
            try:
                for rb in _csv_pass(path, batch_size, block, skip=done):
                    done += rb.table.num_rows
                    yield rb
                return
            except pa.ArrowInvalid as exc:
                # NOTE: Arrow cannot parse a row larger than its block; such a row (a huge
                # field) is retried with bigger blocks so it can be rejected by size, not crash.
                if "straddling" not in str(exc) or block >= CSV_MAX_BLOCK_BYTES:
                    raise InputError(f"{path}: CSV parse error: {_first_line(exc)}") from None
                block *= 8


def _csv_header_row(path: Path) -> list[str]:
    """The header's column names, read by Python's csv module from at most
    CSV_HEADER_MAX_BYTES, and checked (count, duplicates, UTF-8) before Arrow sees them.

    NOTE: Arrow builds a schema and a column builder per header field before it reads a row:
    a 1 MB header of 100,000 names cost 36 s and 1.9 GB there; here, milliseconds."""
    try:
        with path.open("rb") as fh:
            head = fh.read(CSV_HEADER_MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: not readable: {exc}") from None
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
    return row


def _check_names(path: Path, names: list[str]) -> None:
    """A header of at most MAX_COLUMNS columns, each name once (CSV and Parquet)."""
    if len(names) > MAX_COLUMNS:
        raise InputError(
            f"{path}: {len(names):,} columns in the header, over the limit of {MAX_COLUMNS:,}"
        )
    twice = [n for n, count in Counter(names).items() if count > 1]
    if twice:
        shown = ", ".join(repr(n) for n in twice[:10]) + (" …" if len(twice) > 10 else "")
        raise InputError(f"{path}: duplicate column names in the header: {shown}")


def _csv_pass(path: Path, batch_size: int, block: int, skip: int) -> Iterator[RawBatch]:
    malformed: list[Malformed] = []

    def on_invalid(row: Any) -> str:
        # The header is record 1 to Arrow; SPEC's row numbers count data records from 1.
        number = -1 if row.number is None else row.number - 1
        msg = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        text = _unescape(row.text.encode()).decode("utf-8", "backslashreplace")
        malformed.append(Malformed(number, text, msg))
        return "skip"

    names = _Csv.header(path)
    size = max(path.stat().st_size, 1)
    with path.open("rb") as fh:
        guard = _Utf8Guard(fh)
        reader = pv.open_csv(
            guard,
            # NOTE: single-threaded parsing is what makes Arrow report a malformed row's number.
            read_options=pv.ReadOptions(block_size=block, use_threads=False),
            parse_options=pv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            # Binary, not string: invalid UTF-8 must reject its row, not the file.
            convert_options=pv.ConvertOptions(
                column_types={n: pa.binary() for n in names},
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=True,
            ),
        )
        gaps: list[int] = []  # record numbers of malformed rows seen so far, ascending
        good = 0  # good rows read so far
        for table in _rebatch((pa.Table.from_batches([b]) for b in reader), batch_size):
            fresh, malformed[:] = list(malformed), []
            gaps.extend(m.row for m in fresh)
            start, good = good, good + table.num_rows
            if good <= skip:
                continue
            if start < skip:  # a restart with bigger blocks: drop what was already yielded
                table, start = table.slice(skip - start), skip
            if guard.escaped:
                table = _unescape_table(table)
            done = min(fh.tell() / size, 1.0)
            yield RawBatch(table, start + 1, tuple(gaps), fresh if skip == 0 else [], done)
        if malformed and skip == 0:  # malformed rows after the last good one
            empty = pa.table({n: pa.array([], pa.binary()) for n in names})
            yield RawBatch(empty, good + 1, tuple(gaps), list(malformed), 1.0)


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
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._out = b""
        self._eof = False
        self.escaped = False  # a mark was written: cells may need their bytes back
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or not self._out):
            chunk = self._raw.read(n if n > 0 else -1)
            self._eof = not chunk or n < 0
            text = self._decoder.decode(chunk, final=self._eof)
            if not text.isascii() and _TO_ESCAPE.search(text):
                self.escaped = True
                text = _TO_ESCAPE.sub(_escape_char, text)
            self._out += text.encode()
        if n < 0 or len(self._out) <= n:
            out, self._out = self._out, b""
        else:
            out, self._out = self._out[:n], self._out[n:]
        return out

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


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
    for i, name in enumerate(table.column_names):
        col = table.column(name).combine_chunks()
        if not pa.types.is_binary(col.type):
            continue
        if not pc.any(pc.match_substring(col, _MARK)).as_py():
            continue
        values = [None if v is None else _unescape(v) for v in col.to_pylist()]
        table = table.set_column(i, name, pa.array(values, pa.binary()))
    return table


# --- Parquet -----------------------------------------------------------------------------


class _Parquet:
    @staticmethod
    def header(path: Path) -> list[str]:
        _check_parquet_width(path)
        try:
            names = list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: not a readable Parquet file: {_first_line(exc)}") from None
        _check_names(path, names)
        return names

    @staticmethod
    def batches(path: Path, batch_size: int, *_: Any) -> Iterator[RawBatch]:
        first = 1
        try:
            # NOTE: pre-buffering (the default) read the whole file ahead: 400 MiB RSS at 5M rows.
            pf = pq.ParquetFile(path, pre_buffer=False)
            total = max(pf.metadata.num_rows, 1)
            for b in pf.iter_batches(batch_size=batch_size):
                done = (first - 1 + b.num_rows) / total
                yield RawBatch(pa.Table.from_batches([b]), first, done=done)
                first += b.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: Parquet read error near row {first}: {exc}") from None


def _check_parquet_width(path: Path) -> None:
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


def _parquet_schema_counts(path: Path) -> tuple[int, int] | None:
    """(schema fields, top-level columns) from the footer's FileMetaData: its field 1 is
    the version, field 2 the flattened schema, a list whose first element is the root
    (num_children = top-level columns). Thrift compact protocol; None if laid out otherwise."""
    with path.open("rb") as fh:
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


# --- JSON Lines --------------------------------------------------------------------------


class _JsonLines:
    @staticmethod
    def header(path: Path) -> list[str]:
        """Keys of the first record: the first non-blank line that is a JSON object within
        the depth limit (lines before it are rejected as rows by `batches`); more keys than
        MAX_COLUMNS is an error. Keys first seen in later records are not carried to the
        output (see records.records_to_table)."""
        try:
            with path.open("rb") as fh:
                for number, line in _lines(fh):
                    if isinstance(line, _Oversized) or not line.strip():
                        continue
                    try:
                        return list(loads_record(line))
                    except TooManyKeys as exc:
                        raise InputError(
                            f"{path}: line {number}: the first record has {exc.keys:,} keys, "
                            f"over the limit of {MAX_COLUMNS:,} columns"
                        ) from None
                    except ValueError:  # not JSON, too deep, not an object: a row to reject
                        continue
        except OSError as exc:
            raise InputError(f"{path}: not a readable JSON Lines file: {exc}") from None
        raise InputError(f"{path}: no JSON object on any line")

    @staticmethod
    def batches(
        path: Path, batch_size: int, kind: Kind | None = None, columns: list[str] | None = None
    ) -> Iterator[RawBatch]:
        # Row numbers are line numbers; blank and malformed lines are the gaps.
        records: list[dict[str, Any]] = []
        malformed: list[Malformed] = []
        gaps: list[int] = []
        seen = 0  # records read so far
        size = max(path.stat().st_size, 1)
        try:
            with path.open("rb") as fh:
                for number, line in _lines(fh):
                    obj = _json_record(number, line, malformed)
                    if obj is None:
                        gaps.append(number)
                        continue
                    records.append(obj)
                    seen += 1
                    if len(records) >= batch_size:
                        base = seen - len(records) + 1
                        table = records_to_table(records, kind, columns)
                        done = fh.tell() / size
                        yield RawBatch(table, base, tuple(gaps), malformed, done, records)
                        records, malformed = [], []
        except OSError as exc:
            raise InputError(f"{path}: read error: {exc}") from None
        if records or malformed:
            base = seen - len(records) + 1
            table = records_to_table(records, kind, columns)
            yield RawBatch(table, base, tuple(gaps), malformed, 1.0, records)


@dataclass
class _Oversized:
    """A JSON Lines line over JSONL_MAX_LINE_BYTES: its length and first bytes, no more."""

    size: int
    head: bytes


def _lines(fh: Any) -> Iterator[tuple[int, bytes | _Oversized]]:
    """(line number, line without its end) for each line; a line over JSONL_MAX_LINE_BYTES
    is skipped unread (its length instead), so no line costs more than the cap."""
    number = 0
    while line := fh.readline(JSONL_MAX_LINE_BYTES + 2):
        number += 1
        text = line.rstrip(b"\r\n")
        if len(text) <= JSONL_MAX_LINE_BYTES:
            yield number, text
            continue
        size = len(text)
        while not line.endswith(b"\n") and (line := fh.readline(CSV_BLOCK_BYTES)):
            size += len(line.rstrip(b"\r\n"))
        yield number, _Oversized(size, text[:MALFORMED_ECHO_BYTES])


def _json_record(
    number: int, line: bytes | _Oversized, malformed: list[Malformed]
) -> dict[str, Any] | None:
    if isinstance(line, _Oversized):
        cap = JSONL_MAX_LINE_BYTES
        reason = f"line of {line.size:,} bytes, over the {cap:,}-byte cap: rejected unread"
        malformed.append(Malformed(number, line.head.decode("utf-8", "replace"), reason))
        return None
    if not line.strip():
        return None
    try:
        return loads_record(line)
    except UnicodeDecodeError:
        reason = "line is not valid UTF-8"
    except StructureError as exc:
        reason = f"{exc}, rejected unread"
    except json.JSONDecodeError as exc:
        reason = f"not JSON: {exc}"
    except ValueError as exc:  # not an object, a bad key, an int of over 4,300 digits
        reason = str(exc)
    malformed.append(Malformed(number, line.decode("utf-8", "backslashreplace"), reason))
    return None


def _rebatch(tables: Iterator[pa.Table], size: int) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into tables of exactly `size` rows (the last may be short)."""
    pending: list[pa.Table] = []
    count = 0
    for t in tables:
        pending.append(t)
        count += t.num_rows
        while count >= size:
            whole = pa.concat_tables(pending)
            yield whole.slice(0, size)
            rest = whole.slice(size)
            pending, count = [rest], rest.num_rows
    if count:
        yield pa.concat_tables(pending)


def prefetch(batches: Iterator[RawBatch], depth: int = 1) -> Iterator[RawBatch]:
    """Read ahead on a background thread (Arrow parses without the GIL) while the caller
    works on the current batch; at most `depth` batches wait in memory."""
    import queue
    import threading

    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    thread = threading.Thread(target=produce, name="tutormax-reader", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with suppress(queue.Empty):
                slots.get_nowait()
            thread.join(timeout=0.05)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


_READERS: dict[str, Any] = {"csv": _Csv, "parquet": _Parquet, "jsonl": _JsonLines}
