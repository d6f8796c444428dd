"""`tutormax enrich`: options, progress and the run summary; the work is `enrich.run_enrich`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import DEFAULT_DATABASE_URL
from .common import err, handle_errors, parse_as_of, parse_timezone, print_json
from .options import DbUrl
from .progress import FileProgress

EXAMPLE = """
Examples:

  tutormax enrich sample_data/tutors.csv sample_data/sessions.csv --out out/

  tutormax enrich sessions.parquet --out enriched.parquet --timezone America/New_York --no-db

  tutormax enrich feedback.jsonl --db postgresql://app@db/tutoring --json
"""


@handle_errors
def enrich(
    paths: Annotated[list[Path], typer.Argument(help="Input files: .csv, .parquet or .jsonl.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output file (one input) or directory (several)."),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="tutors, sessions or feedback (default: from columns).")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv, parquet or jsonl: output format, and the input "
            "format of files without a known extension.",
        ),
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="Reference instant, ISO-8601 (default: now).")
    ] = None,
    timezone: Annotated[
        str, typer.Option(envvar="TUTORMAX_TIMEZONE", help="Reporting timezone (IANA name).")
    ] = "UTC",
    rejects: Annotated[
        Path | None, typer.Option(help="Rejects file (JSON Lines; default: next to --out).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per batch (and per transaction).")] = 50_000,
    db: DbUrl = None,
    no_db: Annotated[bool, typer.Option("--no-db", help="Open no database.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate, derive and count; write nothing.")
    ] = False,
    atomic: Annotated[
        bool, typer.Option("--atomic", help="The whole run is one transaction.")
    ] = False,
    max_errors: Annotated[
        int | None, typer.Option(help="Stop once more than N rows are rejected.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Enrich tutor, session and feedback files with the 17 derived fields."""
    from ..config import mask_url
    from ..enrich import EnrichOptions, run_enrich

    opts = EnrichOptions(
        paths=paths,
        as_of=parse_as_of(as_of),
        timezone=parse_timezone(timezone),
        out=out,
        kind=kind,
        format=fmt,
        rejects=rejects,
        batch_size=batch_size,
        dry_run=dry_run,
        atomic=atomic,
        max_errors=max_errors,
    )
    url = None if no_db else (db or DEFAULT_DATABASE_URL)
    connect = (lambda: _open_store(url, dry_run)) if url else None
    with FileProgress(enabled=not json_out) as progress:
        summary = run_enrich(opts, connect, progress.update)
    summary.database = mask_url(url) if url else None
    if json_out:
        print_json(summary.as_dict())
    else:
        _print_summary(summary)
    raise typer.Exit(summary.exit_code)


enrich.__doc__ = (enrich.__doc__ or "") + "\n" + EXAMPLE


def _open_store(url: str, dry_run: bool) -> Any:
    """Connect and create the schema (run before the first batch: a bad URL writes nothing)."""
    from ..store import Store

    if dry_run and url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        url = "sqlite://"  # a dry run creates no database file: an empty in-memory one
    store = Store.connect(url)
    if not dry_run:  # a dry run creates the schema inside its rolled-back transaction
        store.init_schema()
    return store


def _print_summary(summary: Any) -> None:
    from rich.table import Table

    persisted = summary.database is not None
    table = Table(title="tutormax enrich" + (" (dry run)" if summary.dry_run else ""))
    cols = ["file", "kind", "read", "accepted", "rejected"]
    if persisted:
        cols += ["inserted", "updated", "unchanged"]
    cols += ["seconds"]
    for c in cols:
        left = c in ("file", "kind")
        table.add_column(c, justify="left" if left else "right", no_wrap=True, min_width=len(c))
    for f in summary.files:
        row = [Path(f.source).name, f.kind, f.read, f.accepted, f.rejected]
        if persisted:
            row += [f.inserted, f.updated, f.unchanged]
        row += [f"{f.seconds:.2f}"]
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    err.print(table)
    if summary.database:
        err.print(f"database: {summary.database}", markup=False)
    for f in summary.files:
        if f.output:
            err.print(f"wrote {f.output}", markup=False)
    if summary.rejects_file:
        err.print(f"rejected rows: {summary.rejected:,} → {summary.rejects_file}", markup=False)
    if summary.stopped:
        err.print(summary.stopped, markup=False)
