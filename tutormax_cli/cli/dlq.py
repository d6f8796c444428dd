"""`tutormax dlq list | show | replay | drain`: the dead-letter stream. Results on stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import DEFAULT_DLQ_LIMIT
from .common import err, graceful, handle_errors, open_streams, out, print_json
from .options import (
    PREFIX_DEFAULT,
    STREAMS_DEFAULT,
    ErrorCode,
    JsonFlag,
    Kind,
    Prefix,
    RedisUrl,
    Streams,
)

app = typer.Typer(help="Inspect, replay and export dead letters.", no_args_is_help=True)


def _sel(kind: Any = None, error: Any = None, ids: Any = (), all_: bool = False) -> Any:
    from ..queue.dlq import Selection

    return Selection(
        tuple(ids or ()), kind.value if kind else None, error.value if error else None, all_
    )


@app.command("list")
@handle_errors
def dlq_list(
    kind: Kind = None,
    error: ErrorCode = None,
    limit: Annotated[
        int, typer.Option(min=0, metavar="N", help="Show at most N (0: all).")
    ] = DEFAULT_DLQ_LIMIT,
    redis: RedisUrl = None,
    streams: Streams = STREAMS_DEFAULT,
    prefix: Prefix = PREFIX_DEFAULT,
    json_out: JsonFlag = False,
) -> None:
    """List dead letters, oldest first.

    Example:

      tutormax dlq list --kind sessions --error missing_parent
    """
    from ..queue.dlq import select

    with open_streams(redis, prefix, streams) as s:
        records = list(select(s, _sel(kind, error)))
        shown = records[:limit] if limit else records
        if json_out:
            doc = {"total": len(records), "dead_letters": [r.written() for r in shown]}
            print_json(doc, as_written=True)
            return
        _table(s, shown, len(records))


def _table(streams: Any, shown: list[Any], total: int) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..schema import KINDS

    title = Text(f"dead letters ({len(shown):,} of {total:,})")
    table = Table(title=title, title_justify="left")
    for col in ("id", "kind", "key", "error", "tries", "reason"):
        no_wrap = col in ("id", "tries")
        table.add_column(
            col, no_wrap=no_wrap, overflow="fold", justify="right" if col == "tries" else "left"
        )
    for r in shown:
        kind = streams.kind_of(r.source_stream or "") or "?"
        key = r.data.get(KINDS[kind].key) if kind in KINDS and not r.raw_entry else None
        first = r.detail[0] if r.detail else {}
        reason = f"{first.get('field')}: {first.get('message')}" if first else ""
        if r.cut:  # someone else's entry (queue/streams/bounded.py)
            reason = r.cut.too_big
        cells = (r.entry_id, kind, str(key or "-")[:24], r.error, str(r.attempts), reason[:160])
        table.add_row(*map(Text, cells))  # stored text: never read as markup or emoji codes
    out.print(table)


@app.command("show")
@handle_errors
def dlq_show(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="Dead-letter entry id.")],
    redis: RedisUrl = None,
    streams: Streams = STREAMS_DEFAULT,
    prefix: Prefix = PREFIX_DEFAULT,
    json_out: JsonFlag = False,
) -> None:
    """Show one dead letter: the record, why and when it failed, its attempts (of every
    life) and the chain of dead letters it was replayed from.

    Example:

      tutormax dlq show 1731000000000-0
    """
    from ..errors import UsageError
    from ..json_bounds import dumps_as_written

    with open_streams(redis, prefix, streams) as s:
        record = s.dead_letter_by_id(entry_id)
        where = s.dead_letter_key
    if record is None:
        raise UsageError(f"no dead letter {entry_id} in {where}")
    if json_out:
        print_json(record.written(), as_written=True)
    else:
        # the envelope as the stream holds it (Python's JSON: a NaN bare, the checksum holds;
        # each number as written: `1e2`, not the 100.0 of its double)
        doc = {"entry_id": entry_id, **record.written()["envelope"]}
        text = dumps_as_written(doc, sort_keys=False, indent=2)
        out.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command("replay")
@handle_errors
def dlq_replay(
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID...]", help="Dead-letter entry ids.")
    ] = None,
    kind: Kind = None,
    error: ErrorCode = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be replayed, by reason.")
    ] = False,
    redis: RedisUrl = None,
    streams: Streams = STREAMS_DEFAULT,
    prefix: Prefix = PREFIX_DEFAULT,
    json_out: JsonFlag = False,
) -> None:
    """Put dead letters back on their source streams with fresh envelopes (and remove them).

    Exit code 1 when some selected dead letters were left in place or not found. Ctrl-C
    or SIGTERM stops after the dead letter in hand and says how many were replayed.

    Example:

      tutormax dlq replay --kind sessions --error missing_parent --dry-run
    """
    from ..queue.dlq import replay

    stopping = "stopping after this dead letter (again: at once)"
    with open_streams(redis, prefix, streams) as s, graceful(stopping) as stop:
        result = replay(s, _sel(kind, error, ids, all_), dry_run, stop=stop)
    if json_out:
        print_json(result.as_dict())
    else:
        verb = "would replay" if dry_run else "replayed"
        left = sum(map(len, result.left.values()))
        done = result.selected - left if dry_run else len(result.replayed)
        err.print(f"{verb} {done:,} of {result.selected:,} selected dead letters", markup=False)
        for name, counts in result.histogram.items():
            err.print(
                f"  {name}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), markup=False
            )
        for reason, left_ids in result.left.items():
            err.print(f"left in place ({reason}): {', '.join(left_ids[:10])}", markup=False)
        if result.not_found:
            err.print(f"not found: {', '.join(result.not_found[:10])}", markup=False)
    raise typer.Exit(0 if result.complete else 1)


@app.command("drain")
@handle_errors
def dlq_drain(
    out_path: Annotated[
        Path, typer.Option("--out", "-o", metavar="FILE", help="JSON Lines file to write (new).")
    ],
    kind: Kind = None,
    error: ErrorCode = None,
    redis: RedisUrl = None,
    streams: Streams = STREAMS_DEFAULT,
    prefix: Prefix = PREFIX_DEFAULT,
    json_out: JsonFlag = False,
) -> None:
    """Export dead letters to a file, then delete exactly those from the stream.

    Ctrl-C or SIGTERM during the export leaves no file and deletes nothing; once the file
    is in place, the deletion is finished first (again: at once, saying how far it got).
    Exit code 1 when an entry too big to read whole (not written by tutormax) was left.

    Example:

      tutormax dlq drain --out dead-letters-2024-11-07.jsonl
    """
    from ..queue.dlq import drain

    stopping = "stopping (again: at once)"
    with open_streams(redis, prefix, streams) as s, graceful(stopping) as stop:
        summary = drain(s, _sel(kind, error), out_path, stop=stop)
    if json_out:
        print_json(summary)
    else:
        err.print(
            f"wrote {summary['written']:,} dead letters to {out_path}; "
            f"deleted {summary['deleted']:,} from {summary['dead_letter_stream']}",
            markup=False,
        )
        if summary["gone"]:
            err.print(
                f"{len(summary['gone']):,} dead letters left the stream while they were "
                "exported (replayed or drained by another command) and are not in the "
                f"file: {', '.join(summary['gone'][:10])}",
                markup=False,
            )
        if summary["too_big"]:
            err.print(
                f"left in the stream, too big to read whole (not written by tutormax): "
                f"{', '.join(summary['too_big'][:10])}",
                markup=False,
            )
    if summary["too_big"]:  # selected and left in place, as replay does: exit 1
        raise typer.Exit(1)
