"""What every command shares: consoles, option parsing, and library errors → exit codes."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from datetime import UTC, datetime
from functools import wraps
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from .. import interrupts
from ..config import Settings, scrub
from ..errors import (
    EXIT_BROKEN_PIPE,
    EXIT_BUG,
    EXIT_FATAL,
    Interrupted,
    TutormaxError,
    UsageError,
)
from ..json_bounds import dumps_as_written, dumps_strict

# Results (a query's tables, a shown record, --json's one document) go to stdout; progress,
# logs and a run's summary to stderr (SPEC §7). Not a terminal (logs, CI): 120 columns
# rather than rich's 80 for the summaries on stderr. (No stderr at all, `2>&-`: sys.stderr
# is None; see cli.main.)
_WIDE = bool(sys.stderr and sys.stderr.isatty()) or bool(os.environ.get("COLUMNS"))


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader of our results went away (`tutormax dlq list | head`): stop quietly
        with 141, as a tool killed by SIGPIPE; never 1, which means rows were rejected. A
        reader of stderr that went away only silences stderr: the command goes on and keeps
        its own exit code."""
        if self.quiet:
            return
        if self.stderr:
            _quiet(sys.stderr)
            return
        _quiet(sys.stdout)
        raise SystemExit(EXIT_BROKEN_PIPE)


class _Messages(_Console):
    """stderr's console: every message printed is scrubbed of secrets (config.scrub), a
    file name or an option value echoed included, before rich wraps it into lines."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(scrub(o) if isinstance(o, str) else o for o in objects), **kwargs)


def _quiet(stream: Any) -> None:
    """Point a standard stream at /dev/null, so that nothing more, at exit included, meets
    the closed pipe."""
    with suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


# emoji=False: `:smile:` in a stream name, a file name or a record is text, never an emoji
# (rich's default turned a prefix `rev2:x:` into `rev2❌`); markup is escaped or off per print.
err = _Messages(
    stderr=True, highlight=False, emoji=False, width=None if _WIDE else 120, soft_wrap=True
)  # a message line (a path in it) is never broken; tables fit
out = _Console(highlight=False, emoji=False, soft_wrap=True)  # lines are never broken


def open_streams(redis: str | None, prefix: str, streams: str, block_ms: int = 0) -> Any:
    """A Streams for the queue commands (no connection yet: that happens on first use)."""
    from ..queue.streams import Streams

    timeout_s = max(30.0, block_ms / 1000 + 10)  # longer than any blocking read
    return Streams(settings().redis(redis), prefix, timeout_s, streams=streams)


_settings: list[Settings] = []  # what the root callback read for this command


def load_settings() -> Settings:
    """Read `.env` and the environment once (the root callback, before any option)."""
    _settings[:] = [Settings.load()]
    return _settings[0]


def settings() -> Settings:
    """The settings of this command (config.Settings)."""
    return _settings[0] if _settings else load_settings()


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """The one error boundary (SPEC §4 exit codes): a TutormaxError is one clear line and its
    code (2: fatal); an OS error (a full disk, a permission) is one line naming the file,
    exit 2; Ctrl-C exits 130 and SIGTERM 143 (tutormax_cli.interrupts); anything else is a bug: the
    traceback goes to stderr (the log), with secrets scrubbed, and the exit code is 3.
    Never exit 1 from here: 1 means "rows were rejected"."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):  # Typer's own ways out
            raise
        except Interrupted as exc:
            err.print(scrub(interrupts.described() + exc.committed), markup=False, soft_wrap=True)
            raise typer.Exit(interrupts.exit_code()) from None
        except TutormaxError as exc:
            fail(exc.message, exc.hint, exc.exit_code)
        except KeyboardInterrupt:
            err.print(interrupts.described(), markup=False)
            raise typer.Exit(interrupts.exit_code()) from None
        except BrokenPipeError:
            _quiet(sys.stdout)
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}", None, EXIT_FATAL)
        except MemoryError:
            fail("out of memory (lower --batch-size?)", None, EXIT_FATAL)
        except Exception as exc:
            text = scrub("".join(traceback.format_exception(exc)))
            if interrupts.stopped_at_once():  # what the stop left behind (an import it cut in
                logging.getLogger("tutormax").debug("after the stop: %s", text)  # half, say)
                err.print(interrupts.described(), markup=False)
                raise typer.Exit(interrupts.exit_code()) from None
            err.print(text.rstrip(), markup=False, highlight=False, soft_wrap=True)
            fail(
                f"internal error (a bug in tutormax): {scrub(_first_line(exc))}",
                "the traceback above says where; please report it",
                EXIT_BUG,
            )

    return wrapper  # type: ignore[return-value]


def fail(message: str, hint: str | None, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(scrub(message))}", markup=True, soft_wrap=True)
    if hint:
        err.print(f"hint: {scrub(hint)}", markup=False)
    raise typer.Exit(code) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def print_json(doc: Any, *, as_written: bool = False) -> None:
    """`doc` as one line of strict JSON (RFC 8259) on stdout: a non-finite float (NaN, inf,
    from data Python's json read, which accepts them) as the string "NaN", "Infinity" or
    "-Infinity" (json_bounds.dumps_strict). Anything else not JSON is written as its str().
    `as_written`: doc holds data read with its numbers as written (a dead letter's
    envelope), each written as it was read (json_bounds.dumps_as_written)."""
    if as_written:
        text = dumps_as_written(doc, sort_keys=False, strict=True)
    else:
        text = dumps_strict(doc, default=str, ensure_ascii=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def parse_timezone(name: str) -> str:
    """--timezone: a name both Python's zoneinfo and Arrow (which derives the fields) know.
    zoneinfo alone takes files of the tz database that are not zones ('Factory',
    'posixrules'), which Arrow refuses at the first batch; a name too long for a file
    name is an OSError. 'localtime' is this machine's /etc/localtime, which both read:
    not a zone name, its meaning changes with the host, and rows record their timezone
    for `refresh` to read on another one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if name.strip().lower() in _HOST_ZONES:
        raise UsageError(
            f"--timezone {name!r}: this machine's own zone, not a known IANA timezone name",
            hint="name the zone itself, as in Europe/Berlin (timedatectl shows it)",
        )
    try:
        ZoneInfo(name)
        pc.hour(pa.array([0], pa.timestamp("us", tz=name)))
    except (ZoneInfoNotFoundError, ValueError, OSError, pa.ArrowException):
        raise UsageError(f"--timezone {name!r}: not a known IANA timezone name") from None
    return name


_HOST_ZONES = {"localtime", "/etc/localtime"}


def parse_as_of(text: str | None) -> datetime:
    """--as-of: an ISO-8601 instant (no offset = UTC, a bare date = midnight UTC); default now."""
    if not text:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--as-of {text!r}: not an ISO-8601 timestamp") from None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:  # year 1 with a positive offset is year 0 in UTC, which nothing can store
        value.astimezone(UTC)
    except OverflowError:
        raise UsageError(
            f"--as-of {text!r}: out of range (in UTC it must fall in the years 1 to 9999)"
        ) from None
    return value


__all__ = [
    "EXIT_FATAL",
    "err",
    "handle_errors",
    "open_streams",
    "out",
    "parse_as_of",
    "parse_timezone",
    "print_json",
]


def graceful(notice: str | None = None) -> AbstractContextManager[Callable[[], bool]]:
    """interrupts.graceful, the first signal said on stderr (`Ctrl-C: <notice>`)."""

    def say(signum: int) -> None:
        if notice:
            err.print(f"{interrupts.name(signum)}: {notice}", markup=False)

    return interrupts.graceful(say)
