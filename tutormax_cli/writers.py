"""Write enriched batches as CSV, Parquet or JSON Lines, and rejected rows as the rejects file.

Writers stream: one batch at a time, into `<path>.partial`, renamed into place by
`commit()` so a failed run never leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq


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
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tutormax-writer")
        self._pending: Future[None] | None = None

    def write(self, table: pa.Table) -> None:
        if self.schema is None:
            self.schema = table.schema
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            self._open(table.schema)
        self._wait()
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

    def commit(self, empty_schema: pa.Schema | None = None) -> None:
        """Close and move into place; a run with no accepted row still gets a header."""
        if self.schema is None:
            self.write((empty_schema or pa.schema([])).empty_table())
        self._wait()
        self._close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        with suppress(Exception):
            self._wait()
        self._close()
        self.partial.unlink(missing_ok=True)

    def _close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None


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
    """JSON Lines: booleans, numbers and nulls native, timestamps ISO-8601 strings."""
    rows = _for_text(table, lists_as_json=False).to_pylist()
    return b"".join(
        json.dumps(r, ensure_ascii=False, allow_nan=False).encode() + b"\n" for r in rows
    )


class RejectsWriter:
    """SPEC §4 rejects file: JSON Lines of {source, row, values, errors}; created on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None

    def write(
        self, source: str, row: int | None, values: Any, errors: list[dict[str, Any]]
    ) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")
        record = {"source": source, "row": row, "values": jsonable(values), "errors": errors}
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def jsonable(value: Any) -> Any:
    """Original values as read, made JSON-safe (bytes decoded, instants as ISO-8601)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value
