"""What every command shares: consoles, option parsing, and library errors → exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console

from ..errors import EXIT_FATAL, TutormaxError, UsageError

# People read stderr; stdout carries data only (one JSON document with --json).
# Not a terminal (logs, CI): 120 columns rather than rich's 80, so tables are not cut.
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn a TutormaxError into one clear line on stderr and its exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TutormaxError as exc:
            err.print(f"[bold red]error:[/] {exc.message}", markup=True, soft_wrap=True)
            if exc.hint:
                err.print(f"hint: {exc.hint}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted", markup=False)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parse_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--timezone {name!r}: not a known IANA timezone name") from None
    return name


def parse_as_of(text: str | None) -> datetime:
    """--as-of: an ISO-8601 instant (no offset = UTC, a bare date = midnight UTC); default now."""
    if not text:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of {text!r}: not an ISO-8601 timestamp") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


__all__ = ["EXIT_FATAL", "err", "handle_errors", "parse_as_of", "parse_timezone", "print_json"]
