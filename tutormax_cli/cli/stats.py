"""`tutormax stats`: streams, consumers, dead letters, tables and workers, on stdout."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from ..errors import DatabaseError
from .common import graceful, handle_errors, open_streams, out, print_json, settings
from .options import (
    GROUP_DEFAULT,
    PREFIX_DEFAULT,
    STREAMS_DEFAULT,
    DbUrl,
    Group,
    JsonFlag,
    Prefix,
    ReclaimIdleMs,
    RedisUrl,
    Streams,
)


@handle_errors
def stats(
    group: Group = GROUP_DEFAULT,
    db: DbUrl = None,
    redis: RedisUrl = None,
    streams: Streams = STREAMS_DEFAULT,
    prefix: Prefix = PREFIX_DEFAULT,
    reclaim_idle_ms: ReclaimIdleMs = 60_000,
    watch: Annotated[
        float | None,
        typer.Option("--watch", min=0.1, metavar="SECONDS", help="Refresh every N s until Ctrl-C."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Streams (length, pending, lag, live and gone consumers), dead letters by error code,
    table row counts and the workers' counters.

    --watch N refreshes every N seconds (with --json: one object a line) until Ctrl-C or
    SIGTERM, which ends it with exit 0 (without --watch, Ctrl-C is exit 130 and SIGTERM
    143, as everywhere).

    Example:

      tutormax stats --json --db postgresql://app@localhost/tutoring
    """
    with open_streams(redis, prefix, streams) as s:

        def show() -> None:
            doc, refused = _gather(s, group, db, reclaim_idle_ms)
            if json_out:
                print_json(doc)
            else:
                if watch is not None and out.is_terminal:
                    out.clear()
                render(doc)
            if refused is not None:  # another schema version: shown, then exit 2 (SPEC §5)
                raise refused

        if watch is None:
            show()  # Ctrl-C: exit 130, SIGTERM 143 (common.handle_errors)
            return
        with graceful() as asked:  # the refresh in hand is finished and shown
            try:
                while not asked():
                    show()
                    deadline = time.monotonic() + watch
                    while not asked() and (left := deadline - time.monotonic()) > 0:
                        time.sleep(min(left, SLEEP_STEP_S))
            except KeyboardInterrupt:  # a second signal, or in-process callers' only one
                pass
        raise typer.Exit(0)  # Ctrl-C or SIGTERM is how a watch ends


SLEEP_STEP_S = 0.05  # a watch notices Ctrl-C within this while it sleeps


def _gather(
    streams: Any, group: str, db: str | None, reclaim_idle_ms: int
) -> tuple[dict[str, Any], DatabaseError | None]:
    """The report, and the error that makes it exit 2: a database of another schema version
    (an unreachable one is reported, and the streams still shown)."""
    from ..queue.stats import gather
    from ..schema import KIND_ORDER
    from ..store import Store, sqlite_file
    from ..store.migrate import SchemaOther, check

    url = settings().database(db)
    file = sqlite_file(url)
    if file is not None and not file.exists():
        doc = gather(streams, group, reclaim_idle_ms=reclaim_idle_ms)  # create no database file
        doc["tables"] = dict.fromkeys(KIND_ORDER, 0)
        return doc, None
    try:
        with Store.connect(url) as store:
            check(store, empty_ok=True)  # behind, ahead or unknown: reported, then exit 2
            return gather(streams, group, store, reclaim_idle_ms), None
    except DatabaseError as exc:
        doc = gather(streams, group, reclaim_idle_ms=reclaim_idle_ms)
        doc["database_error"] = exc.message + (f"; {exc.hint}" if exc.hint else "")
        return doc, exc if isinstance(exc, SchemaOther) else None


def render(doc: dict[str, Any]) -> None:
    """Stored names (streams, consumers, the URL) go to rich as Text: never read as markup
    (and the consoles read no emoji codes: a prefix `rev2:x:` stays as it is)."""
    from rich.table import Table
    from rich.text import Text

    if doc.get("redis_error"):
        out.print(f"streams: {doc['redis_error']}", markup=False)
        _tables(doc)
        return
    title = Text(f"streams on {doc['redis']}, group {doc['group']}")
    t = Table(title=title, title_justify="left")
    t.add_column("stream", overflow="fold")
    for c in ("length", "pending", "lag", "oldest\npending s", "max\ntries", "live", "gone"):
        t.add_column(c, justify="right", no_wrap=True)
    for name, s in doc["streams"].items():
        oldest = s.get("oldest_pending_ms")
        consumers = s["consumers"]
        gone = f"{len(consumers['gone'])} ({_n(s['gone_pending'])})" if consumers["gone"] else "0"
        t.add_row(
            Text(name),
            _n(s["length"]),
            _n(s["pending"]),
            _n(s["lag"]),
            "-" if oldest is None else f"{oldest / 1000:,.0f}",
            _n(s["max_deliveries"]),
            str(len(consumers["live"])),
            Text(gone),
        )
    out.print(t)
    dl = doc["dead_letter"]
    out.print(
        f"dead letters in {dl['stream']}: {dl['total']:,}"
        + "".join(f", {k} {v:,}" for k, v in dl["by_error"].items()),
        markup=False,
    )
    for warning in dl.get("warnings", []):
        out.print(f"warning: {warning}", markup=False)
    _tables(doc)
    if doc["workers"]:
        w = Table(title="workers", title_justify="left")
        w.add_column("consumer", overflow="fold")
        keys = ("read", "persisted", "retried", "dead_lettered", "msgs_per_s")
        for c in ("read", "persisted", "retried", "dead-\nlettered", "msgs/s", "heartbeat"):
            w.add_column(c, justify="right", no_wrap=True)
        for name, row in doc["workers"].items():
            beat = str(row.get("last_heartbeat", "-"))[11:19]  # the time of day is enough
            w.add_row(Text(name), *(Text(_n(row.get(k))) for k in keys), Text(beat))
        out.print(w)


def _tables(doc: dict[str, Any]) -> None:
    if doc.get("database_error"):
        out.print(f"tables: {doc['database_error']}", markup=False)
    elif doc["tables"]:
        out.print(
            f"tables ({doc['database']}): "
            + ", ".join(f"{k} {v:,}" for k, v in doc["tables"].items()),
            markup=False,
        )


def _n(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,}" if isinstance(v, int | float) else str(v)
