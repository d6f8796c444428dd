"""`tutormax publish | worker | stats | dlq …`: the queue path's commands (SPEC §6, §7).

Redis, SQLAlchemy and the worker are imported inside the commands, so `--help` needs
neither a server nor those libraries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from ..streams import DEFAULT_GROUP as GROUP
from ..streams import DEFAULT_PREFIX as PREFIX
from .common import err, handle_errors, parse_timezone, print_json
from .options import DbUrl, JsonFlag, RedisUrl
from .progress import FileProgress

Prefix = Annotated[
    str,
    typer.Option(
        "--prefix",
        envvar="TUTORMAX_STREAM_PREFIX",
        show_envvar=True,
        help="Prefix of the stream keys (<prefix>tutors, …, <prefix>dead_letter).",
    ),
]
Group = Annotated[
    str,
    typer.Option("--group", envvar="TUTORMAX_GROUP", show_envvar=True, help="Consumer group name."),
]
KindOpt = Annotated[str | None, typer.Option("--kind", help="tutors, sessions or feedback.")]
ErrorOpt = Annotated[
    str | None,
    typer.Option(
        "--error", help="Dead-letter error code: validation, missing_parent, poison or database."
    ),
]

dlq_app = typer.Typer(help="Inspect, replay and export dead letters.", no_args_is_help=True)


def _streams(redis: str | None, prefix: str, block_ms: int = 0) -> Any:
    from ..streams import Streams

    return Streams(redis or DEFAULT_REDIS_URL, prefix, max(30.0, block_ms / 1000 + 10))


def _kind(kind: str | None) -> str | None:
    from ..schema import get_kind

    return get_kind(kind).name if kind else None


@handle_errors
def publish(
    paths: Annotated[list[Path], typer.Argument(help="Input files: .csv, .parquet or .jsonl.")],
    kind: KindOpt = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Input format for unknown extensions.")
    ] = None,
    redis: RedisUrl = None,
    prefix: Prefix = PREFIX,
    json_out: JsonFlag = False,
) -> None:
    """Put file records on the input streams, one envelope per record (the producer side).

    Example:

      tutormax publish tutors.csv sessions.parquet feedback.jsonl --redis redis://localhost:6379/0
    """
    from ..publish import publish_files

    with _streams(redis, prefix) as streams, FileProgress(enabled=not json_out) as progress:
        summary = publish_files(streams, paths, _kind(kind), fmt, progress.update)
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


@handle_errors
def worker(
    consumer: Annotated[
        str | None, typer.Option(help="Consumer name (default: <hostname>-<pid>).")
    ] = None,
    group: Group = GROUP,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Entries read per stream per batch.")
    ] = 5000,
    max_attempts: Annotated[
        int, typer.Option(min=1, help="Attempts for a record whose parent is missing.")
    ] = 5,
    reclaim_idle_ms: Annotated[
        int, typer.Option(min=1, help="Take over another consumer's entries idle this long.")
    ] = 60_000,
    block_ms: Annotated[int, typer.Option(min=1, help="Longest wait for new entries.")] = 2_000,
    retry_base_ms: Annotated[int, typer.Option(min=1, help="First retry delay.")] = 1_000,
    retry_max_ms: Annotated[int, typer.Option(min=1, help="Longest retry delay.")] = 30_000,
    burst: Annotated[
        bool,
        typer.Option(
            "--burst",
            help="Exit 0 once the group has nothing new, pending or "
            "waiting for a retry (a dead consumer's entries are reclaimed first).",
        ),
    ] = False,
    timezone: Annotated[
        str, typer.Option(envvar="TUTORMAX_TIMEZONE", help="Reporting timezone (IANA name).")
    ] = "UTC",
    db: DbUrl = None,
    redis: RedisUrl = None,
    prefix: Prefix = PREFIX,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Consume the input streams: enrich, persist, acknowledge, retry, dead-letter.

    SIGTERM or Ctrl-C finishes the current batch (commit, then ack) and exits 0; a second
    one exits at once, leaving that batch pending for a restart or another consumer.

    Example:

      tutormax worker --db postgresql://app@localhost/tutoring --redis redis://localhost:6379/0
    """
    import logging
    import time

    from ..store import Store
    from ..worker import Metrics, Worker, WorkerOptions, default_consumer, install_signal_handlers
    from ..worker_policy import RetryPolicy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    policy = RetryPolicy(max_attempts, retry_base_ms, retry_max_ms)
    opts = WorkerOptions(
        group,
        consumer or default_consumer(),
        batch_size,
        reclaim_idle_ms,
        block_ms,
        parse_timezone(timezone),
        policy,
    )
    with _streams(redis, prefix, block_ms) as streams:
        streams.ping()
        with Store.connect(db or DEFAULT_DATABASE_URL) as store:
            store.init_schema()
            metrics = Metrics(metrics_port) if metrics_port is not None else None
            if metrics is not None:
                logging.info("Prometheus metrics on http://0.0.0.0:%d/metrics", metrics.port)
            try:
                w = Worker(streams, store, opts, metrics)
                install_signal_handlers(w)
                started = time.monotonic()
                totals = w.run(burst=burst)
                seconds = round(time.monotonic() - started, 3)
            finally:
                if metrics is not None:
                    metrics.close()
    if json_out:
        rate = round((totals["persisted"] + totals["dead_lettered"]) / max(seconds, 1e-3), 1)
        print_json({"consumer": opts.consumer, "group": group, **totals, "seconds": seconds,
                    "msgs_per_s": rate})  # fmt: skip


@handle_errors
def stats(
    group: Group = GROUP,
    db: DbUrl = None,
    redis: RedisUrl = None,
    prefix: Prefix = PREFIX,
    json_out: JsonFlag = False,
) -> None:
    """Streams, dead letters, table row counts and worker counters.

    Example:

      tutormax stats --json --db postgresql://app@localhost/tutoring
    """
    from ..errors import DatabaseError
    from ..schema import KIND_ORDER
    from ..stats import gather
    from ..store import Store

    url = db or DEFAULT_DATABASE_URL
    with _streams(redis, prefix) as streams:
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
            doc = gather(streams, group)  # no database file: nothing stored, and create none
            doc["tables"] = dict.fromkeys(KIND_ORDER, 0)
        else:
            try:
                with Store.connect(url) as store:
                    doc = gather(streams, group, store)
            except DatabaseError as exc:
                doc = gather(streams, group)
                doc["database_error"] = exc.message
    if json_out:
        print_json(doc)
    else:
        _render_stats(doc)


@dlq_app.command("list")
@handle_errors
def dlq_list(
    kind: KindOpt = None,
    error: ErrorOpt = None,
    limit: Annotated[int, typer.Option(min=0, help="Show at most N (0: all).")] = 50,
    redis: RedisUrl = None,
    prefix: Prefix = PREFIX,
    json_out: JsonFlag = False,
) -> None:
    """List dead letters, oldest first.

    Example:

      tutormax dlq list --kind sessions --error missing_parent
    """
    from ..dlq import Selection, select

    with _streams(redis, prefix) as streams:
        entries = list(select(streams, Selection(kind=_kind(kind), error=error)))
    shown = entries[:limit] if limit else entries
    if json_out:
        print_json(
            {
                "total": len(entries),
                "dead_letters": [{"entry_id": i, "envelope": env} for i, env in shown],
            }
        )
        return
    from rich.table import Table

    from ..schema import KINDS

    table = Table(title=f"dead letters ({len(shown):,} of {len(entries):,})")
    for col in ("id", "kind", "key", "error", "tries", "reason"):
        table.add_column(col, no_wrap=col in ("id", "error"), overflow="fold")
    for i, env in shown:
        m = env.get("metadata") or {}
        kind = str(m.get("source_stream", "?")).removeprefix(prefix)
        data = env.get("data")
        key = data.get(KINDS[kind].key) if kind in KINDS and isinstance(data, dict) else None
        first = (m.get("detail") or [{}])[0]
        reason = f"{first.get('field')}: {first.get('message')}" if first else ""
        table.add_row(i, kind, str(key or "-")[:24], str(m.get("error")),
                      str(m.get("attempts")), reason[:160])  # fmt: skip
    err.print(table)


@dlq_app.command("show")
@handle_errors
def dlq_show(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="Dead-letter entry id.")],
    redis: RedisUrl = None,
    prefix: Prefix = PREFIX,
    json_out: JsonFlag = False,
) -> None:
    """Show one dead letter: the record, and why and when it failed.

    Example:

      tutormax dlq show 1731000000000-0
    """
    import json

    from ..errors import UsageError

    with _streams(redis, prefix) as streams:
        env = streams.dead_letter_by_id(entry_id)
    if env is None:
        raise UsageError(f"no dead letter {entry_id} in {prefix}dead_letter")
    if json_out:
        print_json({"entry_id": entry_id, "envelope": env})
    else:
        err.print(
            json.dumps({"entry_id": entry_id, **env}, indent=2, ensure_ascii=False),
            markup=False,
            highlight=False,
        )


@dlq_app.command("replay")
@handle_errors
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Argument(metavar="[ID]...", help="Entry ids.")] = None,
    kind: KindOpt = None,
    error: ErrorOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be replayed, by reason.")
    ] = False,
    redis: RedisUrl = None,
    prefix: Prefix = PREFIX,
    json_out: JsonFlag = False,
) -> None:
    """Put dead letters back on their source streams with fresh envelopes (and remove them).

    Exit code 1 when some selected dead letters were left in place or not found.

    Example:

      tutormax dlq replay --kind sessions --error missing_parent --dry-run
    """
    from ..dlq import Selection, replay

    sel = Selection(tuple(ids or ()), _kind(kind), error, all_)
    with _streams(redis, prefix) as streams:
        result = replay(streams, sel, dry_run)
    if json_out:
        print_json(result.as_dict())
    else:
        verb = "would replay" if dry_run else "replayed"
        done = (
            result.selected - sum(map(len, result.left.values()))
            if dry_run
            else len(result.replayed)
        )
        err.print(f"{verb} {done:,} of {result.selected:,} selected dead letters", markup=False)
        for name, counts in result.histogram.items():
            err.print(
                f"  {name}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), markup=False
            )
        for reason, left in result.left.items():
            err.print(f"left in place ({reason}): {', '.join(left[:10])}", markup=False)
        if result.not_found:
            err.print(f"not found: {', '.join(result.not_found[:10])}", markup=False)
    raise typer.Exit(0 if result.complete else 1)


@dlq_app.command("drain")
@handle_errors
def dlq_drain(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON Lines file to write (new).")],
    kind: KindOpt = None,
    error: ErrorOpt = None,
    redis: RedisUrl = None,
    prefix: Prefix = PREFIX,
    json_out: JsonFlag = False,
) -> None:
    """Export dead letters to a file, then delete exactly those from the stream.

    Example:

      tutormax dlq drain --out dead-letters-2024-11-07.jsonl
    """
    from ..dlq import Selection, drain

    with _streams(redis, prefix) as streams:
        summary = drain(streams, Selection(kind=_kind(kind), error=error), out)
    if json_out:
        print_json(summary)
    else:
        err.print(
            f"wrote {summary['written']:,} dead letters to {out}; "
            f"deleted {summary['deleted']:,} from {summary['dead_letter_stream']}",
            markup=False,
        )


def _render_stats(doc: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"streams {doc['prefix']}* on {doc['redis']}, group {doc['group']}")
    keys = ("length", "pending", "consumers", "lag", "oldest_pending_ms", "max_deliveries")
    for c in ("kind", "length", "pending", "consumers", "lag", "oldest pending ms", "deliveries"):
        t.add_column(c, justify="left" if c == "kind" else "right")
    for s in doc["streams"].values():
        t.add_row(str(s["kind"]), *(_n(s.get(k)) for k in keys))
    err.print(t)
    dl = doc["dead_letter"]
    err.print(
        f"dead letters in {dl['stream']}: {dl['total']:,}"
        + "".join(f", {k} {v:,}" for k, v in dl["by_error"].items()),
        markup=False,
    )
    if doc.get("database_error"):
        err.print(f"tables: {doc['database_error']}", markup=False)
    elif doc["tables"]:
        err.print(
            f"tables ({doc['database']}): "
            + ", ".join(f"{k} {v:,}" for k, v in doc["tables"].items()),
            markup=False,
        )
    if doc["workers"]:
        w = Table(title="workers")
        keys = ("read", "persisted", "retried", "dead_lettered", "msgs_per_s", "last_heartbeat")
        for c in ("consumer", *keys):
            w.add_column(c, justify="left" if c in ("consumer", "last_heartbeat") else "right")
        for name, row in doc["workers"].items():
            beat = str(row.get("last_heartbeat", "-"))[11:19]  # the time of day is enough
            w.add_row(name, *(_n(row.get(k)) for k in keys[:-1]), beat)
        err.print(w)


def _n(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,}" if isinstance(v, int | float) else str(v)
