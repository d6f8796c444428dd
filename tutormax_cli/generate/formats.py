"""A generated batch as each format's table: native Arrow (Parquet), text (CSV), JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..schema import Kind, Type
from .compute import pc
from .plan import Batch
from .render import join_list, render_bool, render_list, render_timestamp
from .rng import Rng
from .vocab import BLANK_TEXT, FEEDBACK_TEXT, FIRST_NAMES, LAST_NAMES

_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
for _item in (
    FEEDBACK_TEXT + BLANK_TEXT + tuple(n for pair in FIRST_NAMES + LAST_NAMES for n in pair)
):
    # _json_text escapes only these control characters
    assert all(ch >= " " or ch in "\n\r\t" for ch in _item), _item


def _list_array(slots: list[pa.Array], count: pa.Array) -> pa.Array:
    """list<string> from per-row slots: row i holds slots[0..count[i])[i]; null count = null."""
    n, k = len(count), len(slots)
    counts = pc.fill_null(count, 0)
    flat = pa.concat_arrays(
        [s if isinstance(s, pa.Array) else pa.array([s.as_py()] * n, pa.string()) for s in slots]
    )
    j = pa.array(range(n * k), pa.int64())
    row = pc.divide(j, k)
    slot = pc.subtract(j, pc.multiply(row, k))
    values = pc.filter(
        pc.take(flat, pc.add(pc.multiply(slot, n), row)), pc.less(slot, pc.take(counts, row))
    )
    offsets = pa.concat_arrays(
        [pa.array([0], pa.int32()), pc.cast(pc.cumulative_sum(counts), pa.int32())]
    )
    return pa.ListArray.from_arrays(offsets, values, mask=pc.is_null(count))


def _schema(kind: Kind) -> pa.Schema:
    return pa.schema([pa.field(col.name, col.type.arrow) for col in kind.columns])


def native_table(batch: Batch) -> pa.Table:
    """Parquet: the schema's own types (tz-aware timestamps, bools, list<string>)."""
    arrays = []
    for col in batch.kind.columns:
        if col.type is Type.LIST:
            arrays.append(_list_array(*batch.lists[col.name]))
        else:
            arrays.append(pc.cast(batch.values[col.name], col.type.arrow))
    return pa.Table.from_arrays(arrays, schema=_schema(batch.kind))


def _timestamp_text(rng: Rng, batch: Batch, name: str) -> pa.Array:
    return render_timestamp(
        rng,
        f"{batch.kind.name}.{name}.render",
        batch.idx,
        batch.values[name],
        bare_dates=name == "onboarding_date",
    )


def csv_table(rng: Rng, batch: Batch) -> pa.Table:
    """What a producer writes to CSV: text timestamps, spelled booleans, lists in one cell."""
    arrays = []
    for col in batch.kind.columns:
        stream = f"{batch.kind.name}.{col.name}.render"
        if col.type is Type.TIMESTAMP:
            arr = _timestamp_text(rng, batch, col.name)
        elif col.type is Type.BOOL:
            arr = render_bool(rng, stream, batch.idx, batch.values[col.name])
        elif col.type is Type.LIST:
            arr = render_list(rng, stream, batch.idx, *batch.lists[col.name])
        else:  # numbers stay numbers: the writer leaves them unquoted
            arr = pc.cast(batch.values[col.name], col.type.arrow)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=list(batch.kind.column_names))


def _quote(values: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', values, '"', "")


def _json_text(values: pa.Array) -> pa.Array:
    """Strings as JSON string literals."""
    for raw, escaped in _JSON_ESCAPES:
        values = pc.replace_substring(values, pattern=raw, replacement=escaped)
    return _quote(values)


def jsonl_lines(rng: Rng, batch: Batch) -> pa.Array:
    """One JSON object per row, as json.dumps writes it, built column-wise (no per-row Python).

    Timestamps are strings (as in CSV), numbers numbers, booleans booleans, lists arrays
    (`["a", "b"]`: items need no escaping). A third of the rows leave out their null fields
    instead of writing `null`, as sparse producers do.
    """
    sparse = rng.chance(f"{batch.kind.name}.jsonl.sparse", batch.idx, 1 / 3)
    fragments = []
    for col in batch.kind.columns:
        if col.type is Type.LIST:
            value = join_list(*batch.lists[col.name], '["', '", "', '"]')
        elif col.type is Type.TIMESTAMP:
            value = _quote(_timestamp_text(rng, batch, col.name))  # nothing to escape
        elif col.type is Type.BOOL:
            value = pc.if_else(batch.values[col.name], "true", "false")
        elif col.type is Type.STRING:
            value = _json_text(batch.values[col.name])
        else:  # Arrow writes numbers as JSON does: 3, 0.51, 7.5
            value = pc.cast(batch.values[col.name], pa.string())
        key = json.dumps(col.name) + ": "
        fragment = pc.binary_join_element_wise(key, value, ", ", "")
        absent = pc.if_else(sparse, "", key + "null, ")
        fragments.append(pc.if_else(pc.is_null(value), absent, fragment))
    body = pc.binary_join_element_wise(*fragments, "")
    return pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(body, 0, -2), "}\n", "")


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")

    def write(self, lines: pa.Array) -> None:
        # The lines are already UTF-8 in one Arrow buffer: write its bytes, no Python str
        # (one emoji would make a Python str of the whole batch 4 bytes a character).
        if len(lines) == 0:
            return
        assert lines.type == pa.string() and lines.null_count == 0
        offsets = memoryview(lines.buffers()[1]).cast("i")  # int32 offsets
        start, stop = offsets[lines.offset], offsets[lines.offset + len(lines)]
        self._file.write(memoryview(lines.buffers()[2])[start:stop])

    def close(self) -> None:
        self._file.close()


class _TableWriter:
    """A Parquet or CSV writer, opened on the first table (whose schema it takes)."""

    def __init__(self, path: Path, kind: str) -> None:
        self._path, self._kind = path, kind
        self._w: Any = None

    def write(self, table: pa.Table) -> None:
        if self._w is None:
            import pyarrow.csv as pcsv
            import pyarrow.parquet as pq

            opener = pq.ParquetWriter if self._kind == "parquet" else pcsv.CSVWriter
            self._w = opener(self._path, table.schema)
        self._w.write_table(table)

    def close(self) -> None:
        if self._w is not None:
            self._w.close()


@dataclass(frozen=True)
class Output:
    """How one format renders a generated batch, and what writes it."""

    render: Callable[[Rng, Batch], Any]
    open: Callable[[Path], Any]  # path → writer with write(rendered), close()


OUTPUTS: dict[str, Output] = {
    "parquet": Output(lambda _rng, b: native_table(b), lambda p: _TableWriter(p, "parquet")),
    "csv": Output(csv_table, lambda p: _TableWriter(p, "csv")),
    "jsonl": Output(jsonl_lines, JsonlWriter),
}
