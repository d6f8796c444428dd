"""The bench's data: generated once under bench/data/, the same values as CSV and Parquet.

The values come from tutormax's seeded generator (native Parquet: tz-aware UTC instants,
int64, bool, list<string>). The CSV is NOT the generator's CSV (which spells every boolean
and list several ways to exercise validation): it is what an ordinary export from another
system looks like, rendered here from the Parquet values:

* timestamps as `datetime.isoformat()` writes an aware datetime in the writer's local zone:
  `2024-06-04T13:00:00+05:30`, `2024-06-04T07:30:00.947000Z`, with the UTC offset mixed per
  row and per column (`Z`, `+00:00`, `+05:30`, `-05:00`, `-08:00`, `+01:00`, `+09:00`) and a
  6-digit fraction only when the instant has one;
* booleans `true` / `false`; lists as JSON arrays (`["Math","SAT Prep"]`);
* numbers bare, strings quoted only where CSV needs it, empty cells for nulls.

So a DuckDB or Polars user can declare the column types and read it, and tutormax reads the
same values (the check in bench/check_duckdb_reference.py relies on that).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SEED = 7
KINDS = ("tutors", "sessions", "feedback")

# (suffix, minutes east of UTC, weight)
OFFSETS = (
    ("Z", 0, 30),
    ("+00:00", 0, 10),
    ("+05:30", 330, 15),
    ("-05:00", -300, 18),
    ("-08:00", -480, 12),
    ("+01:00", 60, 10),
    ("+09:00", 540, 5),
)
_US_PER_MIN = 60_000_000


def dataset(rows: int, tutors: int, fmt: str) -> dict[str, Path]:
    """tutors, sessions and feedback (`rows` each of the last two) as `fmt` (csv, parquet);
    generated once per (rows, tutors), kept under bench/data/."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"bench data is csv or parquet, not {fmt!r}")
    native = _native(rows, tutors)
    if fmt == "parquet":
        return native
    target = DATA / f"{rows}-{tutors}t-csv"
    marker = target / "done.json"
    if marker.exists():
        return {k: Path(v) for k, v in json.loads(marker.read_text()).items()}
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    print(f"rendering {rows:,}-row export CSV…", file=sys.stderr)
    paths = {}
    for kind in KINDS:
        paths[kind] = target / f"{kind}.csv"
        export_csv(native[kind], paths[kind])
    marker.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


def _native(rows: int, tutors: int) -> dict[str, Path]:
    target = DATA / f"{rows}-{tutors}t-parquet"
    marker = target / "done.json"
    if marker.exists():
        return {k: Path(v) for k, v in json.loads(marker.read_text()).items()}
    from tutormax_cli.generate import generate

    shutil.rmtree(target, ignore_errors=True)
    print(
        f"generating {rows:,} sessions + {rows:,} feedback + {tutors:,} tutors (parquet)…",
        file=sys.stderr,
    )
    paths = generate(target, tutors=tutors, sessions=rows, feedback=rows, seed=SEED, fmt="parquet")
    marker.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


def export_csv(src: Path, dst: Path) -> None:
    """One generated Parquet file as an ordinary export CSV (see the module docstring)."""
    pf = pq.ParquetFile(src)
    start = 0
    with dst.open("wb") as out:
        out.write((",".join(_cell(n) for n in pf.schema_arrow.names) + "\n").encode())
        for batch in pf.iter_batches(batch_size=100_000):
            table = render(pa.Table.from_batches([batch]), start)
            start += batch.num_rows
            cells = [c.combine_chunks() for c in table.columns]
            row = pc.binary_join_element_wise(
                *cells, ",", null_handling="replace", null_replacement=""
            )
            out.write(_utf8(pc.binary_join_element_wise(row, "", "\n")))


def _utf8(lines: pa.Array) -> memoryview:
    """The bytes of a string array's values, back to back (no Python str on the way)."""
    offsets = memoryview(lines.buffers()[1]).cast("i")
    start, stop = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return memoryview(lines.buffers()[2])[start:stop]


def _cell(text: str) -> str:
    """Python csv's QUOTE_MINIMAL: quoted only when it holds a quote, a comma or a line end."""
    if any(c in text for c in '",\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _minimal_quotes(arr: pa.Array) -> pa.Array:
    """_cell, vectorized."""
    needs = pc.match_substring_regex(arr, '[",\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(arr, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, arr)


def render(table: pa.Table, start: int) -> pa.Table:
    """Native columns as export text cells; `start` is the first row's number in the file."""
    rows = pa.array(range(start, start + table.num_rows), pa.int64())
    cols = []
    for i, (field, col) in enumerate(zip(table.schema, table.columns, strict=True)):
        arr = col.combine_chunks()
        if pa.types.is_timestamp(field.type):
            arr = iso_text(arr, _pick_offsets(rows, i))
        elif pa.types.is_boolean(field.type):
            arr = pc.if_else(arr, "true", "false")
        elif pa.types.is_list(field.type):
            arr = _minimal_quotes(_json_lists(arr))
        elif pa.types.is_string(field.type):
            arr = _minimal_quotes(arr)
        else:
            arr = arr.cast(pa.string())
        cols.append(arr)
    return pa.table(cols, names=table.column_names)


def _pick_offsets(rows: pa.Array, salt: int) -> pa.Array:
    """An index into OFFSETS per row, by weight, from a cheap hash of (row, column)."""
    total = sum(w for *_, w in OFFSETS)
    h = pc.bit_wise_and(pc.add(pc.multiply(rows, 2654435761), salt * 40503), (1 << 31) - 1)
    h = pc.subtract(h, pc.multiply(pc.divide(h, 7919), 7919))  # h mod 7919
    bucket = pc.subtract(h, pc.multiply(pc.divide(h, total), total))  # mod total
    which = pa.repeat(pa.scalar(len(OFFSETS) - 1, pa.int64()), len(rows))
    edges, upper = [], 0
    for j, (*_, w) in enumerate(OFFSETS):
        upper += w
        edges.append((j, upper))
    for j, upper in reversed(edges):
        which = pc.if_else(pc.less(bucket, upper), j, which)
    return which


def iso_text(us: pa.Array, which: pa.Array) -> pa.Array:
    """timestamp[us, UTC] → `YYYY-MM-DDTHH:MM:SS[.ffffff]±HH:MM` (or `Z`) in the offset
    OFFSETS[which] per row: the same instant, written as that zone's wall time."""
    minutes = pc.take(pa.array([m for _, m, _ in OFFSETS], pa.int64()), which)
    suffix = pc.take(pa.array([s for s, _, _ in OFFSETS]), which)
    v = us.cast(pa.int64())
    wall = pc.add(v, pc.multiply(minutes, _US_PER_MIN)).cast(pa.timestamp("us"))
    text = wall.cast(pa.string())  # "YYYY-MM-DD HH:MM:SS.ffffff" or without the fraction
    whole = pc.equal(pc.subtract(v, pc.multiply(pc.divide(v, 1_000_000), 1_000_000)), 0)
    text = pc.if_else(whole, pc.utf8_slice_codeunits(text, 0, 19), _six_digits(text))
    text = pc.utf8_replace_slice(text, 10, 11, "T")
    return pc.binary_join_element_wise(text, suffix, "")


def _six_digits(text: pa.Array) -> pa.Array:
    """Arrow writes a fraction as it needs; isoformat always writes six digits."""
    head = pc.utf8_slice_codeunits(text, 0, 19)
    frac = pc.utf8_slice_codeunits(text, 20, 26)
    frac = pc.utf8_rpad(frac, width=6, padding="0")
    return pc.binary_join_element_wise(head, frac, ".")


def _json_lists(arr: pa.Array) -> pa.Array:
    """list<string> → `["a","b"]` (the generator's items need no escaping)."""
    quoted = pa.ListArray.from_arrays(
        arr.offsets, pc.binary_join_element_wise('"', arr.values, '"', ""), mask=arr.is_null()
    )
    joined = pc.binary_join_element_wise("[", pc.binary_join(quoted, ","), "]", "")
    return joined


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    for f in ("parquet", "csv"):
        print(dataset(n, max(n // 10, 10), f))
