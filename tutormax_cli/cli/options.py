"""Options shared by several commands, defined once."""

from __future__ import annotations

from typing import Annotated

import typer

DbUrl = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="TUTORMAX_DATABASE_URL",
        show_envvar=True,
        help="Database URL (default: sqlite:///tutormax.db in the working folder).",
    ),
]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis",
        envvar="TUTORMAX_REDIS_URL",
        show_envvar=True,
        help="Redis URL (default: redis://localhost:6379/0).",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
