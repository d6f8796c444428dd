"""The floor of the file path: pyarrow reads the input with the column types declared and
writes it to Parquet, batch by batch, and does nothing else (no validation, no derived
field, no join). Whatever enriches the same file cannot be much faster than this.

CSV: `pyarrow.csv.open_csv` with `column_types` (timestamp[us, UTC], int64, bool, float64,
string; a list column stays its JSON text), on Arrow's reader threads; Parquet:
`iter_batches`. Then one `ParquetWriter` per file.

Run: `python -m bench.floor SRC DST [SRC DST …]`.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from tutormax_cli.schema import Type, infer_kind

_ARROW = {
    Type.STRING: pa.string(),
    Type.INT: pa.int64(),
    Type.FLOAT: pa.float64(),
    Type.BOOL: pa.bool_(),
    Type.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Type.LIST: pa.string(),
}


def _batches(src: Path) -> tuple[pa.Schema, object]:
    if src.suffix.lower() == ".parquet":
        pf = pq.ParquetFile(src)
        return pf.schema_arrow, pf.iter_batches(batch_size=65_536)
    with src.open(newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    kind = infer_kind(header, str(src))
    known = set(kind.column_names)
    types = {n: _ARROW[kind.column(n).type] if n in known else pa.string() for n in header}
    reader = pv.open_csv(
        src,
        convert_options=pv.ConvertOptions(column_types=types, strings_can_be_null=True),
    )
    return reader.schema, reader


def copy(src: Path, dst: Path) -> None:
    schema, batches = _batches(src)
    with pq.ParquetWriter(dst, schema) as writer:
        for batch in batches:  # type: ignore[attr-defined]
            writer.write_batch(batch)


def main(argv: list[str]) -> None:
    for i in range(0, len(argv), 2):
        copy(Path(argv[i]), Path(argv[i + 1]))


if __name__ == "__main__":
    main(sys.argv[1:])
