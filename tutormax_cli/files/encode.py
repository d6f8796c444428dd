"""How a batch becomes bytes in each output format (one encoder a format, named in
formats.py): Parquet keeps native types; CSV and JSON Lines get ISO-8601 UTC timestamps,
lists as JSON arrays (CSV) or JSON lists, native JSON booleans, numbers and nulls."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from ..json_bounds import as_null, dumps_strict


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
    """timestamp[UTC] → ISO-8601 text (`2024-11-07T14:00:00Z`, fraction only if any).

    NOTE: a cast of the naive UTC wall time to text is much faster than pc.strftime. The
    cast keeps the column's unit: an unchecked extra timestamp[s] past year 294,247 does not
    fit in microseconds. An instant Arrow cannot show is written as its count of units from
    the epoch (`1000000000000000 s from 1970-01-01T00:00:00Z`): nothing is lost."""
    unit = arr.type.unit
    text = arr.cast(pa.timestamp(unit)).cast(pa.string())
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    text = pc.replace_substring_regex(text, r"(\.\d*[1-9])0+$", r"\1")
    text = pc.replace_substring_regex(text, r"\.0+$", "")
    text = pc.binary_join_element_wise(text, pa.scalar("Z"), "")
    shown = pc.invert(pc.starts_with(text, "<"))  # Arrow's `<value out of range: …>`
    if pc.all(shown).as_py() is not False:
        return text
    count = arr.cast(pa.int64()).cast(pa.string())
    raw = pc.binary_join_element_wise(count, f" {unit} from 1970-01-01T00:00:00Z", "")
    return pc.if_else(shown, text, raw)


def json_lists(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """list<string> → JSON array text, vectorized (`["Math","SAT Prep"]`); a null item is
    `null` (`["x",null]`), a null list stays null."""
    items = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    values = items.values
    for a, b in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        values = pc.replace_substring(values, a, b)
    quoted = pc.binary_join_element_wise('"', values, '"', "").fill_null("null")
    relisted = type(items).from_arrays(items.offsets, quoted, mask=pc.is_null(items))
    return pc.binary_join_element_wise("[", pc.binary_join(relisted, ","), "]", "")


# Extra columns are not validated (SPEC §1: kept in output files), so a Parquet input can bring
# any Arrow type. Text formats get each in a form JSON and CSV can hold: dates, times and
# decimals as Arrow's exact text, durations as ISO-8601 (`PT90S`), bytes as UTF-8 text (an
# invalid byte as `\\xNN`); nested values as JSON (CSV: JSON text in the cell).
_TEXT_CAST = (pa.types.is_date, pa.types.is_time, pa.types.is_decimal)
_BINARY = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_fixed_size_binary)
_NESTED = (pa.types.is_nested, pa.types.is_union)
_SECONDS_PER = {"s": 0, "ms": 3, "us": 6, "ns": 9}  # decimal digits of a second in each unit


def _text_column(col: pa.ChunkedArray, *, csv: bool) -> pa.Array | pa.ChunkedArray:
    t = col.type
    if csv and _is_text_list(t):
        return json_lists(col)
    if any(is_(t) for is_ in _NESTED):
        nested = _leaves_as_text(col.combine_chunks())
        if not csv:
            return nested
        return pa.array([None if v is None else _dumps(v) for v in nested.to_pylist()], pa.string())
    return _leaves_as_text(col)


def _leaves_as_text(col: Any) -> Any:
    """An array (or chunked array) with its dates, times, decimals, durations and bytes as
    text, inside nested values too: Python cannot hold a date past 9999 or a timestamp past
    what microseconds hold, so nothing reaches Python that it would have to."""
    t = col.type
    if isinstance(t, pa.BaseExtensionType):  # a UUID, JSON, a tensor…: its storage
        if t.extension_name == "arrow.uuid":
            return _uuid_text(col)
        col, t = _storage(col), t.storage_type
        if pa.types.is_string(t) or pa.types.is_large_string(t):  # unchecked text
            return _nul_escaped(col.cast(pa.string()))
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_timestamp(t):
        return iso_timestamps(col)
    if any(is_(t) for is_ in _TEXT_CAST):
        return col.cast(pa.string())
    if pa.types.is_duration(t):
        return _iso_durations(col)
    if any(is_(t) for is_ in _BINARY):
        return _nul_escaped(_utf8_text(col))
    if isinstance(col, pa.ChunkedArray) or not any(is_(t) for is_ in _NESTED):
        return col
    nulls = col.is_null() if col.null_count else None
    if pa.types.is_struct(t):
        fields = [_leaves_as_text(col.field(i)) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(fields, names=_unique([f.name for f in t]), mask=nulls)
    if pa.types.is_map(t):
        return pa.MapArray.from_arrays(
            col.offsets, _leaves_as_text(col.keys), _leaves_as_text(col.items), mask=nulls
        )
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return type(col).from_arrays(col.offsets, _leaves_as_text(col.values), mask=nulls)
    if pa.types.is_fixed_size_list(t):
        return pa.FixedSizeListArray.from_arrays(
            _leaves_as_text(col.values), t.list_size, mask=nulls
        )
    return col  # a union: as Python sees it


def _storage(col: Any) -> Any:
    if isinstance(col, pa.ChunkedArray):
        return pa.chunked_array([c.storage for c in col.chunks], col.type.storage_type)
    return col.storage


def _uuid_text(col: Any) -> pa.Array:
    values = _storage(col).to_pylist()
    return pa.array([None if v is None else str(UUID(bytes=v)) for v in values], pa.string())


def _unique(names: list[str]) -> list[str]:
    """Struct field names as a JSON object can hold them: a repeated name gets `#2`, `#3`…"""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _is_text_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) and (pa.types.is_string(t.value_type) or
                                    pa.types.is_large_string(t.value_type))  # fmt: skip


def _iso_durations(col: pa.ChunkedArray) -> pa.Array:
    digits = _SECONDS_PER[col.type.unit]
    values = col.cast(pa.int64()).to_pylist()
    return pa.array(
        [None if v is None else _iso_duration(Decimal(v).scaleb(-digits)) for v in values],
        pa.string(),
    )


def _iso_duration(seconds: Decimal) -> str:
    """ISO-8601 duration of a number of seconds: `PT90S`, `PT1.5S`."""
    return f"PT{seconds.normalize():f}S"


def _utf8_text(col: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    try:
        return col.cast(pa.string())
    except pa.ArrowInvalid:  # invalid UTF-8 in an unchecked column
        values = col.to_pylist()
        return pa.array(
            [None if v is None else v.decode("utf-8", "backslashreplace") for v in values],
            pa.string(),
        )


def _nul_escaped(col: Any) -> Any:
    """Text of a column no check has read (bytes, an extension type's text) with its NUL
    bytes written `\\x00`, as invalid bytes are written `\\xff`: a text output never holds
    a NUL (tutormax rejects a CSV row holding one, as SPEC §6a wants)."""
    if not pc.any(pc.match_substring(col, "\x00")).as_py():
        return col
    return pc.replace_substring(col, "\x00", "\\x00")


def _json_default(value: Any) -> Any:
    """What json.dumps meets inside a nested extra value: text, as in a column of its own."""
    if isinstance(value, datetime):
        text = value.isoformat()
        return text.replace("+00:00", "Z") if value.tzinfo else text
    if isinstance(value, date | time | Decimal):
        return str(value)
    if isinstance(value, timedelta):
        return _iso_duration(Decimal(str(value.total_seconds())))
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> str:
    """A row of an output file: a non-finite float (JSON has none) is null, as in Arrow."""
    return dumps_strict(value, as_null, ensure_ascii=False, default=_json_default)


def _for_text(table: pa.Table, *, csv: bool) -> pa.Table:
    cols = [_text_column(col, csv=csv) for col in table.columns]
    return pa.table(cols, names=table.column_names)


def jsonl_bytes(table: pa.Table) -> bytes:
    """JSON Lines: booleans, numbers and nulls native, timestamps ISO-8601 strings.

    JSON has no NaN or infinity: such a value (only an unchecked extra column can hold one)
    is written as null."""
    rows = _for_text(table, csv=False).to_pylist()
    return b"".join(_dumps(r).encode("utf-8", "backslashreplace") + b"\n" for r in rows)


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
        text_schema = _for_text(schema.empty_table(), csv=True).schema
        self._w = pv.CSVWriter(sink, text_schema)

    def write(self, table: pa.Table) -> None:
        self._w.write_table(_for_text(table, csv=True))

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
