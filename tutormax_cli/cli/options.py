"""Options shared by several commands, defined once; choices are enums so `--help` lists them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from ..config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from ..queue.streams import DEFAULT_GROUP, DEFAULT_PREFIX, DEFAULT_STREAMS


class KindName(StrEnum):
    tutors = "tutors"
    sessions = "sessions"
    feedback = "feedback"


class FormatName(StrEnum):
    csv = "csv"
    parquet = "parquet"
    jsonl = "jsonl"


class DeadLetterError(StrEnum):
    validation = "validation"
    missing_parent = "missing_parent"
    poison = "poison"
    database = "database"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


DbUrl = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TUTORMAX_DATABASE_URL",
        show_envvar=True,
        metavar="URL",
        help=f"Database URL (default: {DEFAULT_DATABASE_URL}, in the working folder).",
    ),
]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis",
        envvar="TUTORMAX_REDIS_URL",
        show_envvar=True,
        metavar="URL",
        help=f"Redis URL (default: {DEFAULT_REDIS_URL}).",
    ),
]
Streams = Annotated[
    str,
    typer.Option(
        "--streams",
        envvar="TUTORMAX_STREAMS",
        show_envvar=True,
        metavar="TEMPLATE",
        help="Input stream names, {kind} = tutors|sessions|feedback: TutorMax's enrichment "
        "queues by default; 'tutormax:{kind}' reads its ingestion streams directly.",
    ),
]
STREAMS_DEFAULT = DEFAULT_STREAMS
Prefix = Annotated[
    str,
    typer.Option(
        "--prefix",
        envvar="TUTORMAX_STREAM_PREFIX",
        show_envvar=True,
        metavar="PREFIX",
        help="Prefix of tutormax's own keys (<prefix>dead_letter, <prefix>workers:…) and the "
        "{prefix} of --streams.",
    ),
]
PREFIX_DEFAULT = DEFAULT_PREFIX


def _group_name(value: str) -> str:
    """A consumer group's name: not blank (Redis takes '' and makes a group nobody can name
    again on a command line), no control characters (they do not survive a log line)."""
    if not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise typer.BadParameter(f"{value!r}: a group name must not be blank or hold "
                                 "control characters")  # fmt: skip
    return value


Group = Annotated[
    str,
    typer.Option(
        "--group",
        envvar="TUTORMAX_GROUP",
        show_envvar=True,
        metavar="NAME",
        help="Consumer group name.",
        callback=_group_name,
    ),
]
GROUP_DEFAULT = DEFAULT_GROUP
Kind = Annotated[KindName | None, typer.Option("--kind", help="Only this kind.")]
Timezone = Annotated[
    str,
    typer.Option(
        "--timezone",
        envvar="TUTORMAX_TIMEZONE",
        show_envvar=True,
        metavar="ZONE",
        help="Reporting timezone (IANA).",
    ),
]
BatchRows = Annotated[
    int,
    typer.Option("--batch-size", metavar="N", help="Rows per batch (and per transaction)."),
]
ErrorCode = Annotated[
    DeadLetterError | None, typer.Option("--error", help="Only dead letters with this error.")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
Level = Annotated[
    LogLevel,
    typer.Option("--log-level", envvar="TUTORMAX_LOG_LEVEL", help="Least severe log level shown."),
]
Format = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar="TUTORMAX_LOG_FORMAT",
        help="text for people, json for log shippers (one object a line).",
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Same as --log-level debug.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Same as --log-level warning.")]
ReclaimIdleMs = Annotated[
    int,
    typer.Option(
        "--reclaim-idle-ms",
        min=1,
        metavar="MS",
        help="A consumer idle this long is gone; its entries are taken over.",
    ),
]
