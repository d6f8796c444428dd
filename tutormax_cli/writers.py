"""Write enriched batches as CSV, Parquet or JSON Lines, and rejected rows as the rejects file.

Writers stream: one batch at a time, into `<path>.partial`, renamed into place by
`commit()` so a failed run never leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from .errors import OutputError
from .schema import REJECT_ECHO_BYTES


class BatchWriter:
    """Streams tables of one schema to a file; the first batch fixes the schema.

    Encoding and writing happen on a background thread (Arrow releases the GIL there), so
    the next batch is enriched while this one is written; errors surface on the next call.
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.format = fmt
        self.partial = path.with_name(path.name + ".partial")
        self.schema: pa.Schema | None = None
        self._writer: Any = None
        self._fh: IO[bytes] | None = None
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tutormax-writer"
        )
        self._pending: Future[None] | None = None

    def write(self, table: pa.Table) -> None:
        with _writing(self.path):
            if self.schema is None:
                self.schema = table.schema
                self.partial.parent.mkdir(parents=True, exist_ok=True)
                self._open(table.schema)
            self._wait()
            assert self._pool is not None
            self._pending = self._pool.submit(self._write, conform(table, self.schema))

    def _write(self, table: pa.Table) -> None:
        if self.format == "parquet":
            self._writer.write_table(table)
        elif self.format == "csv":
            self._writer.write_table(_for_text(table, lists_as_json=True))
        else:
            assert self._fh is not None
            self._fh.write(jsonl_bytes(table))

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _open(self, schema: pa.Schema) -> None:
        if self.format == "parquet":
            self._writer = pq.ParquetWriter(
                self.partial, schema, use_dictionary=_dictionary_columns(schema)
            )
        elif self.format == "csv":
            text_schema = _for_text(schema.empty_table(), lists_as_json=True).schema
            self._writer = pv.CSVWriter(self.partial, text_schema)
        else:
            self._fh = self.partial.open("wb")

    def finish(self, empty_schema: pa.Schema | None = None) -> None:
        """Write out and close the temporary file; an output with no row still gets a header."""
        with _writing(self.path):
            if self.schema is None:
                self.write((empty_schema or pa.schema([])).empty_table())
            self._wait()
            self._close()

    def commit(self, empty_schema: pa.Schema | None = None) -> None:
        """Finish (if not yet) and move the file into place under its real name."""
        if self._pool is not None:
            self.finish(empty_schema)
        with _writing(self.path):
            os.replace(self.partial, self.path)

    def abort(self) -> None:
        with suppress(Exception):
            self._wait()
        with suppress(Exception):
            self._close()
        with suppress(OSError):
            self.partial.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while writing an output (full disk, permissions) is a fatal error that
    names the file, not a traceback."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OutputError(f"cannot write {path}: {reason}") from exc
    except pa.ArrowException as exc:  # Arrow's own I/O errors (IOError subclasses) land here
        raise OutputError(f"cannot write {path}: {exc}") from exc


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Dictionary-encode only text that is likely repetitive: measured, dictionary encoding of
    unique ids and instants cost more than half of Parquet writing, for no size gain."""
    return [
        f.name
        for f in schema
        if (pa.types.is_string(f.type) or pa.types.is_list(f.type)) and not f.name.endswith("_id")
    ]


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast a batch to the first batch's schema (JSON sources infer types batch by batch)."""
    if table.schema.equals(schema):
        return table
    cols = []
    for f in schema:
        if f.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        try:
            cols.append(col.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cols.append(pa.nulls(table.num_rows, f.type))  # pragma: no cover - schema drift
    return pa.table(cols, schema=schema)


def iso_timestamps(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """timestamp[us, UTC] → ISO-8601 text (`2024-11-07T14:00:00Z`, fraction only if any)."""
    # NOTE: a cast of the naive UTC wall time to text is ~28x faster than pc.strftime.
    text = arr.cast(pa.timestamp("us")).cast(pa.string())
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    text = pc.replace_substring_regex(text, r"(\.\d*[1-9])0+$", r"\1")
    text = pc.replace_substring_regex(text, r"\.0+$", "")
    return pc.binary_join_element_wise(text, pa.scalar("Z"), "")


def json_lists(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """list<string> → JSON array text, vectorized (`["Math","SAT Prep"]`)."""
    items = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    values = items.values
    for a, b in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        values = pc.replace_substring(values, a, b)
    quoted = pa.ListArray.from_arrays(items.offsets, values, mask=pc.is_null(items))
    joined = pc.binary_join(quoted, '","')
    text = pc.binary_join_element_wise(pa.scalar('["'), joined, pa.scalar('"]'), "")
    empty = pc.equal(pc.list_value_length(items), 0)
    return pc.if_else(empty, pa.scalar("[]"), text)


def _for_text(table: pa.Table, *, lists_as_json: bool) -> pa.Table:
    cols = []
    for f, col in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(f.type):
            col = iso_timestamps(col)
        elif lists_as_json and pa.types.is_list(f.type):
            col = json_lists(col)
        elif pa.types.is_binary(f.type):
            col = col.cast(pa.string())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def jsonl_bytes(table: pa.Table) -> bytes:
    """JSON Lines: booleans, numbers and nulls native, timestamps ISO-8601 strings.

    JSON has no NaN or infinity: such a value (only an unchecked extra column can hold one)
    is written as null."""
    rows = _for_text(table, lists_as_json=False).to_pylist()
    out = []
    for r in rows:
        try:
            line = json.dumps(r, ensure_ascii=False, allow_nan=False)
        except ValueError:
            line = json.dumps(_finite(r), ensure_ascii=False, allow_nan=False)
        out.append(line.encode("utf-8", "backslashreplace") + b"\n")
    return b"".join(out)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class RejectsWriter:
    """SPEC §4 rejects file: JSON Lines of {source, row, values, errors}; created on first use.

    It survives any value: bytes, decimals, instants, NaN and lone surrogates become JSON
    text, and a value over REJECT_ECHO_BYTES is echoed as its first bytes and its length
    (`{"truncated": true, "bytes": N, "prefix": "…"}`), so a 300 MB field costs 1 KiB here."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[bytes] | None = None

    def write(
        self, source: str, row: int | None, values: Any, errors: list[dict[str, Any]]
    ) -> None:
        record = {"source": source, "row": row, "values": jsonable(values), "errors": errors}
        line = json.dumps(record, ensure_ascii=False, default=str)
        with _writing(self.path):
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("wb")
            # NOTE: a lone surrogate (JSON can escape one) cannot be UTF-8; backslashreplace
            # writes it as the JSON escape \udXXX, which reads back as the same string.
            self._fh.write(line.encode("utf-8", "backslashreplace") + b"\n")
        self.count += 1

    def flush(self) -> None:
        if self._fh is not None:
            with _writing(self.path):
                self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with _writing(self.path):
                fh.close()


def jsonable(value: Any, depth: int = 0) -> Any:
    """Original values as read, made JSON-safe and bounded (see RejectsWriter)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, str):
        return _bounded(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": JSON has no such number
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Decimal | timedelta):
        return str(value)
    return _bounded(str(value))


def _bounded(text: str) -> Any:
    size = len(text)  # characters ≤ UTF-8 bytes: a cheap first test
    if size * 4 <= REJECT_ECHO_BYTES:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= REJECT_ECHO_BYTES:
        return text
    prefix = data[:REJECT_ECHO_BYTES].decode("utf-8", "ignore")  # not half a character
    return {"truncated": True, "bytes": len(data), "prefix": prefix}
