"""`tutormax publish`: put file records on the input streams (the producer side)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import err, handle_errors, open_streams, print_json
from .options import (
    PREFIX_DEFAULT,
    STREAMS_DEFAULT,
    FormatName,
    JsonFlag,
    Kind,
    Prefix,
    RedisUrl,
    Streams,
)
from .progress import FileProgress


@handle_errors
def publish(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...",
            help="Input files: .csv, .parquet, .jsonl (also .gz, .zst, .bz2); - reads stdin "
            "(with --kind and --format).",
        ),
    ],
    kind: Kind = None,
    fmt: Annotated[
        FormatName | None, typer.Option("--format", help="Input format for unknown extensions.")
    ] = None,
    redis: RedisUrl = None,
    streams: Streams = STREAMS_DEFAULT,
    prefix: Prefix = PREFIX_DEFAULT,
    json_out: JsonFlag = False,
) -> None:
    """Put file records on the input streams, one envelope per record (the producer side).

    Example:

      tutormax publish tutors.csv sessions.parquet feedback.jsonl --redis redis://localhost:6379/0
    """
    from ..queue.publish import publish_files

    with open_streams(redis, prefix, streams) as s, FileProgress(enabled=not json_out) as bar:
        summary = publish_files(
            s, paths, kind.value if kind else None, fmt.value if fmt else None, bar.update
        )
    if json_out:
        print_json(summary.as_dict())
    else:
        for f in summary.files:
            rate = f.published / f.seconds if f.seconds else 0
            err.print(
                f"{f.source}: {f.published:,} {f.kind} → {f.stream} ({rate:,.0f} msgs/s)"
                + (f", {f.skipped:,} skipped" if f.skipped else ""),
                markup=False,
            )
            for p in f.problems:
                err.print(f"  skipped {p}", markup=False)
    raise typer.Exit(1 if summary.skipped else 0)
