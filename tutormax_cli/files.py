"""Read CSV, Parquet and JSON Lines as bounded record-batch streams; infer format and kind.

Every reader yields `RawBatch`es of at most `batch_size` rows, each row with its data record
number (from 1, header excluded), plus the rows that could not even be split into columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from . import errors as E
from .errors import InputError
from .schema import FIELD_MAX_BYTES, Kind, check_columns, get_kind, infer_kind

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


@dataclass
class Malformed:
    """A row that could not be split into fields: it is rejected with this reason."""

    row: int
    text: str
    message: str


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
        return self.table.slice(i, 1).to_pylist()[0]

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
        return _READERS[self.format].batches(self.path, batch_size)


# --- CSV ---------------------------------------------------------------------------------


class _Csv:
    @staticmethod
    def header(path: Path) -> list[str]:
        try:
            reader = pv.open_csv(
                path,
                read_options=pv.ReadOptions(block_size=1 << 20),
                parse_options=pv.ParseOptions(
                    newlines_in_values=True, invalid_row_handler=lambda _row: "skip"
                ),
                convert_options=pv.ConvertOptions(column_types={}, strings_can_be_null=True),
            )
            names = reader.schema.names
            reader.close()
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
            if "straddling" in str(exc):  # a first row over the probe block: read the header
                return _first_line_columns(path)
            raise InputError(f"{path}: not a readable CSV file: {_first_line(exc)}") from None
        if not names:
            raise InputError(f"{path}: empty CSV file (no header row)")
        return names

    @staticmethod
    def batches(path: Path, batch_size: int) -> Iterator[RawBatch]:
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


def _csv_pass(path: Path, batch_size: int, block: int, skip: int) -> Iterator[RawBatch]:
    malformed: list[Malformed] = []

    def on_invalid(row: Any) -> str:
        # The header is record 1 to Arrow; SPEC's row numbers count data records from 1.
        number = -1 if row.number is None else row.number - 1
        msg = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        malformed.append(Malformed(number, row.text, msg))
        return "skip"

    names = _Csv.header(path)
    size = max(path.stat().st_size, 1)
    with path.open("rb") as fh:
        reader = pv.open_csv(
            fh,
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
            done = min(fh.tell() / size, 1.0)
            yield RawBatch(table, start + 1, tuple(gaps), fresh if skip == 0 else [], done)
        if malformed and skip == 0:  # malformed rows after the last good one
            empty = pa.table({n: pa.array([], pa.binary()) for n in names})
            yield RawBatch(empty, good + 1, tuple(gaps), list(malformed), 1.0)


def _first_line_columns(path: Path) -> list[str]:
    with path.open("rb") as fh:
        line = fh.readline(1 << 20)
    return list(pv.read_csv(pa.BufferReader(line)).column_names)


# --- Parquet -----------------------------------------------------------------------------


class _Parquet:
    @staticmethod
    def header(path: Path) -> list[str]:
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: not a readable Parquet file: {_first_line(exc)}") from None

    @staticmethod
    def batches(path: Path, batch_size: int) -> Iterator[RawBatch]:
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


# --- JSON Lines --------------------------------------------------------------------------


class _JsonLines:
    @staticmethod
    def header(path: Path) -> list[str]:
        """Keys of the first record (later records may add keys; see records_to_table)."""
        try:
            with path.open("rb") as fh:
                for raw in fh:
                    if raw.strip():
                        obj = json.loads(raw)
                        if not isinstance(obj, dict):
                            break
                        return list(obj)
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable JSON Lines file: {exc}") from None
        raise InputError(f"{path}: no JSON object on the first non-blank line")

    @staticmethod
    def batches(path: Path, batch_size: int) -> Iterator[RawBatch]:
        # Row numbers are line numbers; blank and malformed lines are the gaps.
        records: list[dict[str, Any]] = []
        malformed: list[Malformed] = []
        gaps: list[int] = []
        seen = 0  # records read so far
        size = max(path.stat().st_size, 1)
        try:
            with path.open("rb") as fh:
                for number, line in enumerate(fh, start=1):
                    obj = _json_record(number, line, malformed)
                    if obj is None:
                        gaps.append(number)
                        continue
                    records.append(obj)
                    seen += 1
                    if len(records) >= batch_size:
                        base = seen - len(records) + 1
                        table = records_to_table(records)
                        done = fh.tell() / size
                        yield RawBatch(table, base, tuple(gaps), malformed, done, records)
                        records, malformed = [], []
        except OSError as exc:
            raise InputError(f"{path}: read error: {exc}") from None
        if records or malformed:
            base = seen - len(records) + 1
            table = records_to_table(records)
            yield RawBatch(table, base, tuple(gaps), malformed, 1.0, records)


def _json_record(number: int, line: bytes, malformed: list[Malformed]) -> dict[str, Any] | None:
    line = line.rstrip(b"\r\n")
    if not line.strip():
        return None
    if len(line) > JSONL_MAX_LINE_BYTES:
        reason = f"line over {JSONL_MAX_LINE_BYTES} bytes, rejected unread"
        malformed.append(Malformed(number, line[:200].decode("utf-8", "replace"), reason))
        return None
    try:
        obj = json.loads(line)
    except UnicodeDecodeError:
        malformed.append(
            Malformed(number, line.decode("utf-8", "backslashreplace"), "line is not valid UTF-8")
        )
        return None
    except ValueError as exc:
        malformed.append(Malformed(number, line.decode("utf-8", "replace"), f"not JSON: {exc}"))
        return None
    if not isinstance(obj, dict):
        malformed.append(Malformed(number, line.decode(), "not a JSON object"))
        return None
    return obj


def records_to_table(records: list[dict[str, Any]]) -> pa.Table:
    """JSON records → Arrow table, columns in first-seen order; mixed-type columns as text."""
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    columns = {}
    for name in names:
        values = [r.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array([_as_text(v) for v in values], pa.string())
        except UnicodeEncodeError:
            # NOTE: JSON may escape a lone surrogate (\ud800), which no UTF-8 string can
            # hold; as bytes, validation rejects just that row as invalid UTF-8.
            columns[name] = pa.array([_as_bytes(v) for v in values], pa.binary())
    return pa.table(columns) if columns else pa.table({"_": pa.nulls(len(records))}).drop(["_"])


def _as_bytes(v: Any) -> bytes | None:
    text = _as_text(v)
    return None if text is None else text.encode("utf-8", errors="surrogatepass")


def _as_text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


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
