"""`tutormax publish`: put file records on the input streams (the producer side)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from .common import err, graceful, handle_errors, open_streams, print_json
from .options import (
    PREFIX_DEFAULT,
    STREAMS_DEFAULT,
    FormatName,
    JsonFlag,
    Kind,
    Level,
    LogLevel,
    Prefix,
    Quiet,
    RedisUrl,
    Streams,
    Verbose,
)
from .progress import FileProgress

log = logging.getLogger("tutormax.publish")


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
    log_level: Level = LogLevel.info,
    verbose: Verbose = False,
    quiet: Quiet = False,
    json_out: JsonFlag = False,
) -> None:
    """Put file records on the input streams, one envelope per record (the producer side).

    On stderr: a progress bar (on a terminal) and a line per file; -q (--log-level
    warning) only the records skipped, --log-level error nothing but errors; -v
    (--log-level debug) adds a log line per batch. --json puts the summary on stdout.
    Exit 1 when records were skipped.

    Example:

      tutormax publish tutors.csv sessions.parquet feedback.jsonl --redis redis://localhost:6379/0
    """
    from ..queue.publish import publish_files
    from . import logs

    level = logs.setup(log_level, verbose=verbose, quiet=quiet)
    bar_on = not json_out and logs.shows(level, LogLevel.info)
    stopping = "stopping after this batch (again: at once)"
    with (
        open_streams(redis, prefix, streams) as s,
        FileProgress(enabled=bar_on) as bar,
        graceful(stopping) as stop,
    ):
        log.debug("redis: %s", s.url_masked)

        def progress(source: str, kind: str, records: int, done: float) -> None:
            log.debug("%s (%s): %s records, %.0f%% of the input", source, kind,
                      f"{records:,}", done * 100)  # fmt: skip
            bar.update(source, kind, records, done)

        summary = publish_files(
            s, paths, kind.value if kind else None, fmt.value if fmt else None, progress,
            stop=stop,
        )  # fmt: skip
    if json_out:
        print_json(summary.as_dict())
    else:
        for f in summary.files:
            rate = f.published / f.seconds if f.seconds else 0
            if logs.shows(level, LogLevel.info):
                err.print(
                    f"{f.source}: {f.published:,} {f.kind} → {f.stream} ({rate:,.0f} msgs/s)"
                    + (f", {f.skipped:,} skipped" if f.skipped else ""),
                    markup=False,
                )
            elif logs.shows(level, LogLevel.warning) and f.skipped:
                err.print(f"{f.source}: {f.skipped:,} {f.kind} skipped", markup=False)
            if logs.shows(level, LogLevel.warning):
                for p in f.problems:
                    err.print(f"  skipped {p}", markup=False)
    raise typer.Exit(1 if summary.skipped else 0)
