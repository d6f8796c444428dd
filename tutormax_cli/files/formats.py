"""The formats, one table: name, extensions, reader, encoder, and what it allows.
Adding a format is one entry in `TABLE` (and its reader and encoder modules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import errors as E
from ..errors import InputError
from .csv import _Csv
from .encode import CsvEncoder, JsonlEncoder, ParquetEncoder
from .inputs import split_compression
from .jsonl import _JsonLines
from .parquet import _Parquet


@dataclass(frozen=True)
class Format:
    name: str
    extensions: tuple[str, ...]  # the first one names outputs
    reader: Any  # header(input) -> columns; batches(input, size, kind, columns) -> RawBatches
    encoder: Any  # (sink, schema) -> write(table), close()
    streams: bool  # can be read from a pipe and written to stdout as it goes
    outer_compression: bool  # `.gz`/`.zst`/`.bz2` around the file make sense


TABLE: dict[str, Format] = {
    f.name: f
    for f in (
        Format("csv", (".csv",), _Csv, CsvEncoder, streams=True, outer_compression=True),
        Format(
            "parquet",
            (".parquet", ".pq"),
            _Parquet,
            ParquetEncoder,
            streams=False,
            outer_compression=False,
        ),  # fmt: skip
        Format(
            "jsonl",
            (".jsonl", ".ndjson", ".json"),
            _JsonLines,
            JsonlEncoder,
            streams=True,
            outer_compression=True,
        ),  # fmt: skip
    )
}
FORMATS = {ext: f.name for f in TABLE.values() for ext in f.extensions}  # extension → name
EXTENSIONS = {f.name: f.extensions[0] for f in TABLE.values()}  # name → output extension


def check_format(fmt: str) -> str:
    if fmt not in TABLE:
        raise E.UsageError(f"--format {fmt!r}: expected one of {', '.join(TABLE)}")
    return fmt


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
