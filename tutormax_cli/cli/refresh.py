"""`tutormax refresh`: re-derive stored rows in place (SPEC §5); the work is store/refresh.py."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

from ..config import DEFAULT_BATCH_ROWS, DEFAULT_TIMEZONE
from .common import err, graceful, handle_errors, parse_as_of, parse_timezone, print_json, settings
from .options import (
    BatchRows,
    DbUrl,
    JsonFlag,
    Kind,
    Level,
    LogLevel,
    Quiet,
    Timezone,
    Verbose,
)

log = logging.getLogger("tutormax.refresh")


@handle_errors
def refresh(
    db: DbUrl = None,
    as_of: Annotated[
        str | None,
        typer.Option(metavar="TIMESTAMP", help="The as-of of tutors' tenure (default: now)."),
    ] = None,
    timezone: Timezone = DEFAULT_TIMEZONE,
    kind: Kind = None,
    batch_size: BatchRows = DEFAULT_BATCH_ROWS,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would change; write nothing.")
    ] = False,
    log_level: Level = LogLevel.info,
    verbose: Verbose = False,
    quiet: Quiet = False,
    json_out: JsonFlag = False,
) -> None:
    """Re-derive stored rows from their stored input columns: tutors' tenure at --as-of (every
    tutor's enriched_at becomes it), rows written in another timezone or by older formulas,
    feedback whose session was rescheduled. Only rows whose values change are written; a row
    someone updated meanwhile is left as it is.

    On stderr: a progress bar (on a terminal) and a table of what changed; -q (--log-level
    warning) only the rows left as they were, --log-level error nothing but errors; -v
    (--log-level debug) adds a log line per batch. --json puts the counts on stdout.

    Example:

      tutormax refresh --db postgresql://app@localhost/tutoring --as-of 2025-01-15 --json
    """
    from ..errors import UsageError
    from ..schema import KIND_ORDER
    from ..store import Store, sqlite_file
    from ..store.migrate import check
    from ..store.refresh import RefreshOptions
    from ..store.refresh import refresh as run
    from . import logs
    from .progress import FileProgress

    level = logs.setup(log_level, verbose=verbose, quiet=quiet)
    opts = RefreshOptions(
        as_of=parse_as_of(as_of),
        timezone=parse_timezone(timezone),
        kinds=(kind.value,) if kind else KIND_ORDER,
        batch_size=batch_size,
        dry_run=dry_run,
    )
    url = settings().database(db)
    file = sqlite_file(url)
    if file is not None and not file.exists():  # refresh creates no database
        raise UsageError(f"{file}: no such database: nothing to refresh (--db?)")
    with Store.connect(url) as store:
        log.debug("database: %s", store.url_masked)
        check(store)  # behind or ahead of this version: exit 2, nothing written
        log.debug("as-of %s, timezone %s, kinds %s, batch size %s%s", opts.as_of.isoformat(),
                  opts.timezone, ", ".join(opts.kinds), f"{batch_size:,}",
                  ", dry run" if dry_run else "")  # fmt: skip

        def progress(kind: str, done: int, total: int) -> None:
            log.debug("%s: %s of %s rows scanned", kind, f"{done:,}", f"{total:,}")
            bar.update(kind, kind, done, done / max(total, 1))

        stopping = "stopping after the pages in hand (again: at once)"
        with (
            FileProgress(enabled=not json_out and logs.shows(level, LogLevel.info)) as bar,
            graceful(stopping) as stop,
        ):
            counts = run(store, opts, progress, stop=stop)
        where = store.url_masked
    doc = {
        "database": where,
        "as_of": opts.as_of.isoformat(),
        "timezone": opts.timezone,
        "dry_run": dry_run,
        "kinds": [c.as_dict() for c in counts],
    }
    if json_out:
        print_json(doc)
    elif logs.shows(level, LogLevel.info):
        _summary(doc)
    elif logs.shows(level, LogLevel.warning):
        _skipped(doc)
    if not json_out:
        _unreadable(doc)
    if any(c.unreadable for c in counts):
        raise typer.Exit(1)  # rows left as they were: "some rows rejected, the rest done"


def _summary(doc: dict[str, Any]) -> None:
    from rich.table import Table

    title = "tutormax refresh" + (" (dry run: nothing was written)" if doc["dry_run"] else "")
    t = Table(title=title, title_justify="left", box=None, padding=(0, 1), pad_edge=False)
    t.add_column("kind")
    for c in ("scanned", "changed", "unchanged", "skipped", "rows/s"):
        t.add_column(c, justify="right", no_wrap=True)
    for k in doc["kinds"]:
        rate = k["scanned"] / k["seconds"] if k["seconds"] else 0
        t.add_row(k["kind"], *(f"{k[c]:,}" for c in ("scanned", "changed", "unchanged",
                  "skipped")), f"{rate:,.0f}")  # fmt: skip
    err.print(t)
    err.print(f"database: {doc['database']}, as-of {doc['as_of']}, timezone {doc['timezone']}",
              markup=False)  # fmt: skip
    _skipped(doc)


def _skipped(doc: dict[str, Any]) -> None:
    """The one thing `-q` keeps: rows left as they were, to refresh again."""
    skipped = sum(k["skipped"] for k in doc["kinds"])
    if skipped:
        err.print(f"{skipped:,} rows changed while refresh ran and were left as they are; run "
                  "it again to refresh them too", markup=False)  # fmt: skip


def _unreadable(doc: dict[str, Any]) -> None:
    """Rows whose stored values are not of their columns' types (changed by hand): named,
    so that they can be fixed; every other row was refreshed."""
    for k in doc["kinds"]:
        if not k["unreadable"]:
            continue
        err.print(f"{k['kind']}: {k['unreadable']:,} rows hold a value that is not of its "
                  "column's type and were left as they are; fix or delete them, then refresh "
                  "again:", markup=False, soft_wrap=True)  # fmt: skip
        for r in k["unreadable_rows"]:
            err.print(f"  {k['kind']} {r['key']}: {r['column']} = {r['value']}", markup=False,
                      soft_wrap=True)  # fmt: skip
        if k["unreadable"] > len(k["unreadable_rows"]):
            err.print(f"  … and {k['unreadable'] - len(k['unreadable_rows']):,} more",
                      markup=False)  # fmt: skip
