"""Read CSV, Parquet and JSON Lines as bounded record-batch streams; infer format and kind.

Every reader yields `RawBatch`es of at most `batch_size` rows, each row with its data record
number (from 1, header excluded), plus the rows that could not even be split into columns.

An input is a file, a compressed file (`.gz`, `.zst`/`.zstd`, `.bz2` after the format's
extension: `sessions.csv.gz`; CSV and JSON Lines only), or `-`: stdin. Stdin, and any input
that is not a regular file (a FIFO, `<(zcat …)`), is first copied to an unlinked temporary
file (in TMPDIR, 1 MiB at a time), because a run reads an input more than once (the header
probe, the duplicate-key pre-pass) and Parquet needs to seek; the space is freed when the
run ends, however it ends.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
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
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
STDIN = "-"
SPOOL_CHUNK_BYTES = 1 << 20
DONE_BEFORE_END = 0.999  # the most a batch that is not the last may report
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
    done: float = 0.0  # fraction of the input parsed so far (never read-ahead), for progress
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


def is_stdin(path: Path | str) -> bool:
    return str(path) == STDIN


def split_compression(name: str) -> tuple[str, str | None]:
    """(the name without its compression suffix, the codec): `a.csv.gz` → (`a.csv`, gzip)."""
    dot = name.rfind(".")
    codec = COMPRESSIONS.get(name[dot:].lower()) if dot > 0 else None
    return (name[:dot], codec) if codec else (name, None)


def named_format(path: Path) -> str | None:
    """The format the file name's extension names (under a compression suffix: `a.csv.gz`
    is CSV), else None; `-` names none."""
    return FORMATS.get(Path(split_compression(path.name)[0]).suffix.lower())


def detect_format(path: Path, fallback: str | None = None) -> str:
    """The format named by the file's extension (see named_format), else `fallback`
    (--format)."""
    found = named_format(path)
    if found:
        return found
    if fallback:
        return check_format(fallback)
    base, codec = split_compression(path.name)
    shown = Path(base).suffix + path.name[len(base) :] if codec else path.suffix
    raise InputError(
        f"{path}: cannot tell the format from the extension {shown!r}; "
        "use .csv, .parquet or .jsonl (optionally + .gz, .zst or .bz2), or pass --format"
    )


class Source:
    """One input, checked at open (readable, format, kind, required columns).

    `path` is the input as given (`-` for stdin): the name the summary and the rejects file
    show. `name` is its file name without a compression suffix (`stdin.<ext>` for stdin)."""

    def __init__(self, path: Path, fmt: str | None = None, kind: str | None = None) -> None:
        self.path = path
        if is_stdin(path):
            missing = [o for o, v in (("--kind", kind), ("--format", fmt)) if not v]
            if missing:
                raise E.UsageError(
                    f"-: reading stdin needs {' and '.join(missing)} "
                    "(a stream has no extension to tell them by)"
                )
        self.format = detect_format(path, fmt)
        self.input = _Input(path)
        if self.input.codec and self.format == "parquet":
            raise InputError(
                f"{path}: a compressed Parquet file is not read: Parquet compresses inside "
                "the file and needs to seek in it; decompress it first"
            )
        base = f"stdin{EXTENSIONS[self.format]}" if self.input.stdin else self.input.base
        self.name = base
        self.stem = Path(base).stem
        self.columns = _READERS[self.format].header(self.input)
        self.kind: Kind = get_kind(kind) if kind else infer_kind(self.columns, str(path))
        check_columns(self.kind, self.columns, str(path))

    def batches(self, batch_size: int) -> Iterator[RawBatch]:
        reader = _READERS[self.format]
        return _finishing(reader.batches(self.input, batch_size, self.kind, self.columns))

    def close(self) -> None:
        """Free the spool of stdin (also freed when the Source is collected, or at exit)."""
        self.input.close()


class _Input:
    """Where a source's bytes come from: a file, a compressed file, or a spool (stdin, a
    FIFO). `open()` gives a fresh binary reader each time; `fraction()` turns the bytes a
    reader has parsed into the fraction of the input done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stdin = is_stdin(path)
        self.label = "stdin" if self.stdin else str(path)
        self.base, self.codec = (STDIN, None) if self.stdin else split_compression(path.name)
        self._spool: Any = None
        if self.stdin:
            self._spool_from(sys.stdin.buffer if sys.stdin is not None else None)
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except OSError as exc:
            raise InputError(f"{path}: not readable: {exc.strerror or exc}") from None
        if stat.S_ISREG(st.st_mode):
            self.size = st.st_size
            return
        if stat.S_ISDIR(st.st_mode) or not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise InputError(f"{path}: not a file")
        try:  # a FIFO, /dev/stdin, <(zcat …): read once, into the spool
            with path.open("rb") as fh:
                self._spool_from(fh)
        except OSError as exc:
            raise InputError(f"{path}: not readable: {exc.strerror or exc}") from None

    def __str__(self) -> str:
        return self.label

    def _spool_from(self, stream: Any) -> None:
        if stream is None:
            raise InputError("stdin: there is no standard input to read")
        if stream.isatty():
            raise InputError("stdin is a terminal: pipe or redirect the input (… | tutormax …)")
        spool = tempfile.TemporaryFile(prefix="tutormax-input-")  # noqa: SIM115 - kept open
        try:
            shutil.copyfileobj(stream, spool, SPOOL_CHUNK_BYTES)
            spool.flush()
        except OSError as exc:
            spool.close()
            where = tempfile.gettempdir()
            raise InputError(
                f"{self.label}: cannot copy the input to a temporary file in {where}: "
                f"{exc.strerror or exc} (set TMPDIR to a roomier place)"
            ) from None
        self._spool = spool
        self.size = os.fstat(spool.fileno()).st_size
        head = os.pread(spool.fileno(), 4, 0)
        self.codec = next((c for magic, c in _MAGIC if head.startswith(magic)), None)

    def open(self) -> Any:
        """A new binary reader at the start: buffered, readline-able; seekable unless the
        input is compressed."""
        raw: Any
        if self._spool is not None:
            raw = io.BufferedReader(_SpoolView(self._spool.fileno(), self.size), 1 << 16)
            if self.codec is None:
                return raw
        elif self.codec is None:
            return self.path.open("rb")
        else:
            raw = pa.OSFile(str(self.path))
        try:
            stream = pa.CompressedInputStream(raw, self.codec)
        except (pa.ArrowException, OSError):
            raw.close()
            raise
        return io.BufferedReader(_Decompressed(stream, raw), 1 << 16)

    def native(self) -> Any:
        """What Arrow's Parquet reader opens: the path of a file, a reader of a spool."""
        return str(self.path) if self._spool is None else self.open()

    def fraction(self, parsed: int, fh: Any) -> float:
        """How much of the input `parsed` bytes (of decompressed text) are.

        NOTE: never the reader's position: Arrow reads far ahead of what it has parsed. For
        a compressed input the decompressed size is not known up front; it is estimated as
        the file size times the ratio seen so far (text produced / compressed bytes
        consumed), so the fraction is an estimate that firms up as the run goes."""
        if self.codec is None:
            return parsed / max(self.size, 1)
        dec = getattr(fh, "raw", None)
        if not isinstance(dec, _Decompressed) or not dec.consumed():
            return 0.0
        total = self.size * (dec.produced / dec.consumed())
        return parsed / max(total, 1.0)

    def close(self) -> None:
        if self._spool is not None:
            spool, self._spool = self._spool, None
            spool.close()


# A spooled input (stdin, a FIFO) is told compressed by its first bytes.
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bz2"))


class _SpoolView(io.RawIOBase):
    """One reader of the spool, with its own position: reads by offset (pread), so readers
    of the same spool never move each other."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd, self._size, self._pos = fd, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self._fd, len(buffer), self._pos)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos


class _Decompressed(io.RawIOBase):
    """Arrow's decompressing stream as a Python raw stream, counting what it produces and
    (through the file under it) what it consumed, for `_Input.fraction`."""

    def __init__(self, stream: Any, raw: Any) -> None:
        super().__init__()
        self._stream, self._raw = stream, raw
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = int(self._stream.readinto(buffer))
        except pa.ArrowException as exc:  # a corrupt or truncated stream
            raise OSError(f"cannot decompress: {_first_line(exc)}") from None
        self.produced += n
        return n

    def consumed(self) -> int:
        try:
            return int(self._raw.tell())
        except (OSError, ValueError, pa.ArrowException):
            return 0

    def close(self) -> None:
        if not self.closed:
            with suppress(Exception):
                self._stream.close()
            with suppress(Exception):
                self._raw.close()
        super().close()


def _finishing(batches: Iterator[RawBatch]) -> Iterator[RawBatch]:
    """Progress that never goes back and says 1.0 once, on the last batch: each batch is
    held until the next one is read, so the last is known to be the last."""
    held: RawBatch | None = None
    best = 0.0
    for rb in batches:
        if held is not None:
            yield held
        best = max(best, min(rb.done, DONE_BEFORE_END))
        held = replace(rb, done=best) if rb.done != best else rb
    if held is not None:
        yield replace(held, done=1.0) if held.done != 1.0 else held


# --- CSV ---------------------------------------------------------------------------------


class _Csv:
    @staticmethod
    def header(path: _Input) -> list[str]:
        names = _csv_header_row(path)
        try:
            with path.open() as fh:
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
            if path.codec and isinstance(exc, OSError):
                raise InputError(f"{path}: not a readable {path.codec} file: {exc}") from None
            raise InputError(f"{path}: not a readable CSV file: {_first_line(exc)}") from None
        if arrow_names != names:  # NOTE: never seen; Arrow's reading is the one batches use
            _check_names(path, arrow_names)
        return arrow_names

    @staticmethod
    def batches(path: _Input, batch_size: int, *_: Any) -> Iterator[RawBatch]:
        block = CSV_BLOCK_BYTES
        done = 0  # good rows already yielded, if a restart is needed
        parsed = [0]  # bytes of the rows yielded so far (a restart keeps the count)
        while True:
            try:
                for rb in _csv_pass(path, batch_size, block, done, parsed):
                    done += rb.table.num_rows
                    yield rb
                return
            except OSError as exc:  # a corrupt compressed stream, a read error
                raise InputError(f"{path}: read error: {_first_line(exc)}") from None
            except pa.ArrowInvalid as exc:
                # NOTE: Arrow cannot parse a row larger than its block; such a row (a huge
                # field) is retried with bigger blocks so it can be rejected by size, not crash.
                if "straddling" not in str(exc) or block >= CSV_MAX_BLOCK_BYTES:
                    raise InputError(f"{path}: CSV parse error: {_first_line(exc)}") from None
                block *= 8


def _csv_header_row(path: _Input) -> list[str]:
    """The header's column names, read by Python's csv module from at most
    CSV_HEADER_MAX_BYTES, and checked (count, duplicates, UTF-8) before Arrow sees them.

    NOTE: Arrow builds a schema and a column builder per header field before it reads a row:
    a 1 MB header of 100,000 names cost 36 s and 1.9 GB there; here, milliseconds."""
    try:
        with path.open() as fh:
            head = fh.read(CSV_HEADER_MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: not readable: {exc}") from None
    except pa.ArrowException as exc:
        raise InputError(f"{path}: not readable: {_first_line(exc)}") from None
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


def _check_names(path: _Input, names: list[str]) -> None:
    """A header of at most MAX_COLUMNS columns, each name once (CSV and Parquet)."""
    if len(names) > MAX_COLUMNS:
        raise InputError(
            f"{path}: {len(names):,} columns in the header, over the limit of {MAX_COLUMNS:,}"
        )
    twice = [n for n, count in Counter(names).items() if count > 1]
    if twice:
        shown = ", ".join(repr(n) for n in twice[:10]) + (" …" if len(twice) > 10 else "")
        raise InputError(f"{path}: duplicate column names in the header: {shown}")


def _csv_pass(
    path: _Input, batch_size: int, block: int, skip: int, parsed: list[int]
) -> Iterator[RawBatch]:
    """One reading of the file; `parsed[0]` counts the bytes of the rows yielded (progress)."""
    malformed: list[Malformed] = []

    def on_invalid(row: Any) -> str:
        # The header is record 1 to Arrow; SPEC's row numbers count data records from 1.
        number = -1 if row.number is None else row.number - 1
        msg = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        text = _unescape(row.text.encode()).decode("utf-8", "backslashreplace")
        malformed.append(Malformed(number, text, msg))
        return "skip"

    names = _Csv.header(path)
    if not parsed[0]:  # the header row, roughly: names, delimiters, the line end
        parsed[0] = sum(len(n.encode()) for n in names) + len(names)
    scale = _csv_overhead(path)
    with path.open() as fh:
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
            parsed[0] += _csv_bytes(table)
            if skip == 0:
                parsed[0] += sum(len(m.text.encode("utf-8", "replace")) + 1 for m in fresh)
            done = path.fraction(int(parsed[0] * scale), fh)
            yield RawBatch(table, start + 1, tuple(gaps), fresh if skip == 0 else [], done)
        if malformed and skip == 0:  # malformed rows after the last good one
            empty = pa.table({n: pa.array([], pa.binary()) for n in names})
            yield RawBatch(empty, good + 1, tuple(gaps), list(malformed), 1.0)


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
    def header(path: _Input) -> list[str]:
        _check_parquet_width(path)
        try:
            names = list(pq.ParquetFile(path.native()).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: not a readable Parquet file: {_first_line(exc)}") from None
        _check_names(path, names)
        return names

    @staticmethod
    def batches(path: _Input, batch_size: int, *_: Any) -> Iterator[RawBatch]:
        first = 1
        try:
            # NOTE: pre-buffering (the default) read the whole file ahead: 400 MiB RSS at 5M rows.
            pf = pq.ParquetFile(path.native(), pre_buffer=False)
            total = max(pf.metadata.num_rows, 1)
            for b in pf.iter_batches(batch_size=batch_size):
                done = (first - 1 + b.num_rows) / total
                yield RawBatch(pa.Table.from_batches([b]), first, done=done)
                first += b.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: Parquet read error near row {first}: {exc}") from None


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


# --- JSON Lines --------------------------------------------------------------------------


class _JsonLines:
    @staticmethod
    def header(path: _Input) -> list[str]:
        """Keys of the first record: the first non-blank line that is a JSON object within
        the depth limit (lines before it are rejected as rows by `batches`); more keys than
        MAX_COLUMNS is an error. Keys first seen in later records are not carried to the
        output (see records.records_to_table)."""
        try:
            with path.open() as fh:
                for number, line in _lines(fh, [0]):
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
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{path}: not a readable JSON Lines file: {exc}") from None
        raise InputError(f"{path}: no JSON object on any line")

    @staticmethod
    def batches(
        path: _Input, batch_size: int, kind: Kind | None = None, columns: list[str] | None = None
    ) -> Iterator[RawBatch]:
        # Row numbers are line numbers; blank and malformed lines are the gaps.
        records: list[dict[str, Any]] = []
        malformed: list[Malformed] = []
        gaps: list[int] = []
        seen = 0  # records read so far
        parsed = [0]  # bytes of the lines read so far (their ends included), for progress
        try:
            with path.open() as fh:
                for number, line in _lines(fh, parsed):
                    obj = _json_record(number, line, malformed)
                    if obj is None:
                        gaps.append(number)
                        continue
                    records.append(obj)
                    seen += 1
                    if len(records) >= batch_size:
                        base = seen - len(records) + 1
                        table = records_to_table(records, kind, columns)
                        done = path.fraction(parsed[0], fh)
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


def _lines(fh: Any, parsed: list[int]) -> Iterator[tuple[int, bytes | _Oversized]]:
    """(line number, line without its end) for each line; a line over JSONL_MAX_LINE_BYTES
    is skipped unread (its length instead), so no line costs more than the cap. `parsed[0]`
    counts the bytes consumed, line ends included (the parser's position, not the reader's)."""
    number = 0
    while line := fh.readline(JSONL_MAX_LINE_BYTES + 2):
        number += 1
        parsed[0] += len(line)
        text = line.rstrip(b"\r\n")
        if len(text) <= JSONL_MAX_LINE_BYTES:
            yield number, text
            continue
        size = len(text)
        while not line.endswith(b"\n") and (line := fh.readline(CSV_BLOCK_BYTES)):
            parsed[0] += len(line)
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
