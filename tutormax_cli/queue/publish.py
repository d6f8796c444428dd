"""`tutormax publish` as a library call: file records → envelopes on the input streams.

The producer side, for backfills and tests. Files are checked (readable, kind, columns)
before anything is published; tutors go before sessions and sessions before feedback.
A row that cannot travel as JSON text (malformed, invalid UTF-8) is skipped and counted.
Inputs are what `enrich` reads: compressed files (`.csv.gz`…) and `-` for stdin (with
`--kind` and `--format`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import errors as E
from ..files import RawBatch, Source, is_stdin
from ..json_bounds import AsWritten, loses_text
from ..schema import KIND_ORDER
from .envelope import MESSAGE_MAX_BYTES
from .streams import Streams

PUBLISH_BATCH_ROWS = 10_000
MAX_PROBLEMS_SHOWN = 20
Progress = Callable[[str, str, int, float], None]  # source, kind, rows done, fraction read


@dataclass
class FilePublished:
    source: str
    kind: str
    stream: str
    published: int = 0
    skipped: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # the first few skipped rows, why


@dataclass
class PublishSummary:
    redis: str
    files: list[FilePublished] = field(default_factory=list)

    @property
    def published(self) -> int:
        return sum(f.published for f in self.files)

    @property
    def skipped(self) -> int:
        return sum(f.skipped for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "published": self.published, "skipped": self.skipped}


def publish_files(
    streams: Streams,
    paths: list[Path],
    kind: str | None = None,
    fmt: str | None = None,
    progress: Progress | None = None,
    batch_rows: int = PUBLISH_BATCH_ROWS,
    stop: Callable[[], bool] | None = None,
) -> PublishSummary:
    """Publish every input. `stop` is asked after every batch (the CLI's Ctrl-C or SIGTERM):
    when it says so, the run ends there with `errors.Interrupted`, saying how many records
    of each file are on their stream (a stop at once says so too: the batch in hand may be
    partly published)."""
    if sum(1 for p in paths if is_stdin(p)) > 1:
        raise E.UsageError("-: stdin is named more than once; it can be read once")
    sources = sorted(
        (Source(p, fmt, kind, stop) for p in paths), key=lambda s: KIND_ORDER.index(s.kind.name)
    )
    streams.ping()
    summary = PublishSummary(streams.url_masked)
    try:
        for src in sources:
            _publish_file(streams, src, summary, progress, batch_rows, stop)
    except KeyboardInterrupt:  # a stop at once: the batch in hand may be partly out
        raise E.Interrupted(_published_note(summary, at_once=True)) from None
    return summary


def _publish_file(
    streams: Streams,
    src: Source,
    summary: PublishSummary,
    progress: Progress | None,
    batch_rows: int,
    stop: Callable[[], bool] | None,
) -> None:
    name = src.kind.name
    f = FilePublished(str(src.path), name, streams.stream(name))
    summary.files.append(f)
    started = time.monotonic()
    for rb in src.batches(batch_rows):
        records = list(_records(rb, src.name if is_stdin(src.path) else src.path.name, f))

        def oversized(metadata: dict[str, Any], size: int) -> None:
            _skip(f, f"row {metadata['row']}: its message would be {size:,} bytes, over the "
                     f"{MESSAGE_MAX_BYTES:,}-byte cap every worker reads")  # fmt: skip

        f.published += streams.publish(name, iter(records), oversized)
        if progress is not None:
            progress(str(src.path), name, f.published + f.skipped, rb.done)
        if stop is not None and stop():
            raise E.Interrupted(_published_note(summary, at_once=False))
    f.seconds = round(time.monotonic() - started, 3)
    src.close()  # a spooled stdin's space, now rather than at exit


def _published_note(summary: PublishSummary, at_once: bool) -> str:
    """What an interrupted publish had put on the streams, per file."""
    if not summary.files:
        return " (nothing was published)"
    each = ", ".join(f"{Path(f.source).name} {f.published:,} → {f.stream}" for f in summary.files)
    if at_once:
        return (f" (at least {summary.published:,} records were published: {each}; the batch"
                " in hand may be partly published too)")  # fmt: skip
    return f" ({summary.published:,} records were published, in whole batches: {each})"


def _records(
    rb: RawBatch, file: str, f: FilePublished
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for m in rb.malformed:
        _skip(f, f"row {m.row}: {m.message}")
    rows, bad = (rb.records, {}) if rb.records is not None else _json_rows(rb.table)
    texts = rb.number_texts
    for i, row in enumerate(rows):
        number = rb.row_number(i)
        if i in bad:
            _skip(f, f"row {number}: {bad[i]}")
            continue
        if texts is not None and loses_text(row):  # `1e2` published as `1e2`, not `100.0`
            row = AsWritten(texts(i))
        yield row, {"source": "tutormax publish", "file": file, "row": number}


def _json_rows(table: pa.Table) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Rows as JSON-ready dicts: text decoded, timestamps and dates as ISO-8601 text."""
    bad: dict[int, str] = {}
    columns = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        t = col.type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            try:
                col = col.cast(pa.string())
            except pa.ArrowInvalid:
                col = pa.array(_decode(col.to_pylist(), name, bad), pa.string())
        elif pa.types.is_timestamp(t) and t.tz == "UTC":
            # NOTE: Arrow formats tz-aware timestamps far slower than naive ones; in UTC the
            # text is the naive one plus "Z", exactly.
            naive = col.cast(pa.timestamp(t.unit)).cast(pa.string())
            col = pc.binary_join_element_wise(naive, "Z", "")
        elif pa.types.is_temporal(t) or pa.types.is_decimal(t):
            col = col.cast(pa.string())
        columns[name] = col
    return pa.table(columns).to_pylist() if columns else [], bad


def _decode(values: list[bytes | None], column: str, bad: dict[int, str]) -> list[str | None]:
    out: list[str | None] = []
    for i, v in enumerate(values):
        try:
            out.append(None if v is None else v.decode())
        except UnicodeDecodeError:
            bad.setdefault(i, f"{column}: not valid UTF-8")
            out.append(None)
    return out


def _skip(f: FilePublished, problem: str) -> None:
    f.skipped += 1
    if len(f.problems) < MAX_PROBLEMS_SHOWN:
        f.problems.append(problem)
