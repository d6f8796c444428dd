"""How a batch becomes bytes in each output format (one encoder a format, named in
formats.py): Parquet keeps native types; CSV and JSON Lines get ISO-8601 UTC timestamps,
lists as JSON arrays (CSV) or JSON lists, native JSON booleans, numbers and nulls."""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Dictionary-encode only text that is likely repetitive: dictionary encoding of unique
    ids and instants costs a large share of Parquet writing, for no size gain."""
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
    # NOTE: a cast of the naive UTC wall time to text is much faster than pc.strftime.
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


class ParquetEncoder:
    """Native types; dictionary encoding only for text that repeats (see _dictionary_columns)."""

    def __init__(self, sink: Any, schema: pa.Schema) -> None:
        self._w = pq.ParquetWriter(sink, schema, use_dictionary=_dictionary_columns(schema))

    def write(self, table: pa.Table) -> None:
        self._w.write_table(table)

    def close(self) -> None:
        self._w.close()


class CsvEncoder:
    """ISO-8601 UTC timestamps, lists as JSON arrays."""

    def __init__(self, sink: Any, schema: pa.Schema) -> None:
        text_schema = _for_text(schema.empty_table(), lists_as_json=True).schema
        self._w = pv.CSVWriter(sink, text_schema)

    def write(self, table: pa.Table) -> None:
        self._w.write_table(_for_text(table, lists_as_json=True))

    def close(self) -> None:
        self._w.close()


class JsonlEncoder:
    """One JSON object a line (see jsonl_bytes)."""

    def __init__(self, sink: Any, schema: pa.Schema) -> None:
        self._sink = sink

    def write(self, table: pa.Table) -> None:
        self._sink.write(jsonl_bytes(table))

    def close(self) -> None:
        """Nothing of its own to close: the sink is the writer's."""
