"""`tutormax enrich`: options, progress and the run summary; the work is `enrich.run_enrich`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import DEFAULT_BATCH_ROWS, DEFAULT_TIMEZONE
from .common import err, graceful, handle_errors, parse_as_of, parse_timezone, print_json, settings
from .options import (
    BatchRows,
    DbUrl,
    FormatName,
    JsonFlag,
    KindName,
    Level,
    LogLevel,
    Quiet,
    Timezone,
    Verbose,
)
from .progress import FileProgress

log = logging.getLogger("tutormax.enrich")

EXAMPLE = """
Examples:

  tutormax enrich sample_data/tutors.csv sample_data/sessions.csv --out out/

  tutormax enrich sessions.parquet --out enriched.parquet --timezone America/New_York --no-db

  tutormax enrich feedback.jsonl --db postgresql://app@db/tutoring --json

  zcat sessions.csv.gz | tutormax enrich - --kind sessions --format csv --no-db --out -
"""


@handle_errors
def enrich(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH...",
            help="Input files: .csv, .parquet, .jsonl (also .gz, .zst, .bz2); - reads stdin.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="PATH",
            help="Output file (one input; - is stdout) or directory (several).",
        ),
    ] = None,
    kind: Annotated[
        KindName | None, typer.Option(help="The inputs' kind (default: from their columns).")
    ] = None,
    fmt: Annotated[
        FormatName | None,
        typer.Option(
            "--format",
            help="Output format, and the input format of files without a known extension.",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(metavar="TIMESTAMP", help="Reference instant, ISO-8601 (default: now)."),
    ] = None,
    timezone: Timezone = DEFAULT_TIMEZONE,
    rejects: Annotated[
        Path | None,
        typer.Option(metavar="PATH", help="Rejects file (JSON Lines; default: next to --out)."),
    ] = None,
    batch_size: BatchRows = DEFAULT_BATCH_ROWS,
    db: DbUrl = None,
    no_db: Annotated[bool, typer.Option("--no-db", help="Open no database.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate, derive and count; write nothing.")
    ] = False,
    atomic: Annotated[
        bool, typer.Option("--atomic", help="The whole run is one transaction.")
    ] = False,
    max_errors: Annotated[
        int | None, typer.Option(metavar="N", help="Stop once more than N rows are rejected.")
    ] = None,
    log_level: Level = LogLevel.info,
    verbose: Verbose = False,
    quiet: Quiet = False,
    json_out: JsonFlag = False,
) -> None:
    """Enrich tutor, session and feedback files with the 17 derived fields.

    On stderr: a progress bar (on a terminal) and the run summary; -q (--log-level
    warning) only what went wrong with some rows, and --log-level error nothing but
    errors; -v (--log-level debug) adds a log line per batch. --json puts the summary on
    stdout instead.
    """
    from .. import interrupts
    from ..config import mask_url
    from ..errors import Interrupted, TutormaxError, UsageError
    from ..files import EnrichOptions, run_enrich, writes_stdout
    from . import logs

    level = logs.setup(log_level, verbose=verbose, quiet=quiet)

    opts = EnrichOptions(
        paths=paths,
        as_of=parse_as_of(as_of),
        timezone=parse_timezone(timezone),
        out=out,
        kind=kind.value if kind else None,
        format=fmt.value if fmt else None,
        rejects=rejects,
        batch_size=batch_size,
        dry_run=dry_run,
        atomic=atomic,
        max_errors=max_errors,
    )
    if json_out and (writes_stdout(out) or writes_stdout(rejects)):
        raise UsageError(
            "--json and --out - (or --rejects -) both want stdout",
            hint="without --json the summary goes to stderr, beside the streamed rows",
        )
    env = settings()
    url = None if no_db else env.database(db)
    log.debug("settings: %s", f"read {env.dotenv}" if env.dotenv else "no .env file found")
    log.debug("database: %s", mask_url(url) if url else "none (--no-db)")
    log.debug("as-of %s, timezone %s, batch size %s%s", opts.as_of.isoformat(), opts.timezone,
              f"{batch_size:,}", ", dry run" if dry_run else "")  # fmt: skip
    connect = (lambda: _open_store(url, dry_run)) if url else None
    bar_on = not json_out and logs.shows(level, LogLevel.info)
    stopping = "stopping after this batch (again: at once)"
    try:
        with FileProgress(enabled=bar_on) as progress, graceful(stopping) as stop:
            summary = run_enrich(opts, connect, _logged(progress.update), stop)
    except TutormaxError as exc:  # stopped mid-run: --json still tells what was done
        if json_out and exc.summary is not None:
            exc.summary.database = mask_url(url) if url else None
            doc = exc.summary.as_dict()
            doc["exit_code"] = (
                interrupts.exit_code() if isinstance(exc, Interrupted) else (exc.exit_code)
            )
            print_json(doc)
        raise
    summary.database = mask_url(url) if url else None
    if json_out:
        print_json(summary.as_dict())
    elif logs.shows(level, LogLevel.info):
        print_summary(summary, opts)
    elif logs.shows(level, LogLevel.warning):
        _problems(summary)
    raise typer.Exit(summary.exit_code)


def _logged(update: Callable[[str, str, int, float], None]) -> Callable[..., None]:
    """The progress callback, with a debug line per batch (`-v`)."""

    def progress(source: str, kind: str, rows: int, done: float) -> None:
        log.debug("%s (%s): %s rows read, %.0f%% of the input", source, kind, f"{rows:,}",
                  done * 100)  # fmt: skip
        update(source, kind, rows, done)

    return progress


def _problems(summary: Any) -> None:
    """What `-q` keeps of the summary: the rows that were rejected, where they went, and a
    run that stopped early; nothing when every row was accepted."""
    if summary.rejected:
        by_code = ", ".join(f"{c} {n:,}" for c, n in summary.rejected_by_code.items())
        where = f" → {summary.rejects_file}" if summary.rejects_file else ""
        err.print(f"rejected {summary.rejected:,} rows ({by_code}){where}", markup=False,
                  soft_wrap=True)  # fmt: skip
    if summary.stopped:
        err.print(summary.stopped, markup=False, soft_wrap=True)


enrich.__doc__ = (enrich.__doc__ or "") + "\n" + EXAMPLE


def _open_store(url: str, dry_run: bool) -> Any:
    """Connect and check the schema version (before the first batch: a bad URL, or a
    database of another version, writes nothing)."""
    from ..store import Store, sqlite_file

    file = sqlite_file(url)
    if dry_run and file is not None and not file.exists():
        url = "sqlite://"  # a dry run creates no database file: an empty in-memory one
    from ..store.migrate import check

    store = Store.connect(url)
    try:  # an empty database is created (the quick start is one command); a dry run creates
        # it inside its rolled-back transaction. Behind or ahead: exit 2, nothing written.
        check(store, create=not dry_run, empty_ok=dry_run)
    except BaseException:
        store.close()
        raise
    return store


# (header, short header for a narrow terminal, FileSummary attribute)
_NUMBERS = (
    ("read", "read", "read"),
    ("accepted", "ok", "accepted"),
    ("rejected", "rej", "rejected"),
    ("duplicates", "dups", "duplicates"),
)
_WRITES = (
    ("inserted", "ins", "inserted"),
    ("updated", "upd", "updated"),
    ("unchanged", "same", "unchanged"),
)


def print_summary(summary: Any, opts: Any) -> None:
    """The run summary on stderr: one row per file and a total, rows/s, the rejects by
    error code; numbers are never cut (a terminal too narrow for the table gets one block
    per file instead)."""
    from rich.table import Table
    from rich.text import Text

    persisted = summary.database is not None
    columns = [*_NUMBERS, *(_WRITES if persisted else ())]
    rows = [
        [Path(f.source).name, f.kind, *(getattr(f, a) for *_, a in columns), f.rows_per_s]
        for f in summary.files
    ]
    if len(summary.files) > 1:
        seconds = sum(f.seconds for f in summary.files)
        total = [sum(getattr(f, a) for f in summary.files) for *_, a in columns]
        rows.append(["total", "", *total, round(total[0] / seconds, 1) if seconds else 0.0])
    width = err.width
    short = width < 100
    title = "tutormax enrich" + (" (dry run)" if summary.dry_run else "")
    table = Table(title=title, title_justify="left", box=None, padding=(0, 1), pad_edge=False)
    longest = max((len(str(r[0])) for r in rows), default=4)
    table.add_column("file", overflow="fold", min_width=min(longest, 16))
    table.add_column("kind", no_wrap=True, min_width=8)
    for long, abbrev, _attr in columns:
        table.add_column(abbrev if short else long, justify="right", no_wrap=True)
    table.add_column("rows/s", justify="right", no_wrap=True)
    cells = [[f"{v:,.0f}" if isinstance(v, int | float) else str(v) for v in r] for r in rows]
    for r in cells:  # file names as Text: never read as markup or emoji codes
        table.add_row(*map(Text, r))
    # Every number whole: the headers and cells as they are, the file name folded to 16.
    headers = ["file", "kind", *((a if short else h) for h, a, _ in columns), "rows/s"]
    needed = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    needed[0] = min(needed[0], 16)
    if sum(needed) + 2 * (len(needed) - 1) > width:
        _blocks(rows, columns)
    else:
        err.print(table)
    if summary.rejected:
        by_code = ", ".join(f"{c} {n:,}" for c, n in summary.rejected_by_code.items())
        err.print(f"rejected rows by error: {by_code}", markup=False)
    _where(summary, opts)


def _blocks(rows: list[list[Any]], columns: Any) -> None:
    for r in rows:
        err.print(f"{r[0]} ({r[1]})" if r[1] else str(r[0]), markup=False)
        for (long, _short, _attr), v in zip(columns, r[2:-1], strict=True):
            err.print(f"  {long:<11}{v:>16,}", markup=False)
        err.print(f"  {'rows/s':<11}{r[-1]:>16,.0f}", markup=False)


def _where(summary: Any, opts: Any) -> None:
    """Where things went — or, for a dry run, where they would have gone."""
    if summary.dry_run:
        err.print("dry run: nothing was written.", markup=False)
        if summary.database:
            err.print(f"  the database would have been {summary.database}", markup=False)
        for f in summary.files:
            target = _planned(opts, f)
            if target:
                err.print(f"  {Path(f.source).name} → {target}", markup=False)
        if summary.rejected:
            from ..files import default_rejects_path

            err.print(f"  rejected rows → {default_rejects_path(opts)}", markup=False)
        return
    if summary.database:
        err.print(f"database: {summary.database}", markup=False)
    for f in summary.files:
        if f.output:
            err.print(f"wrote {'stdout' if f.output == '-' else f.output}", markup=False)
    if summary.rejects_file:
        err.print(f"rejected rows: {summary.rejected:,} → {summary.rejects_file}", markup=False)
    if summary.stopped:
        err.print(summary.stopped, markup=False)


def _planned(opts: Any, f: Any) -> str | None:
    if opts.out is None:
        return None
    if len(opts.paths) == 1 and not opts.out.is_dir() and not str(opts.out).endswith("/"):
        return str(opts.out)
    return str(opts.out / Path(f.source).name)
