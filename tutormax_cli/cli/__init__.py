"""The `tutormax` command: a thin Typer layer over the library.

Heavy imports (database, Redis) stay inside the commands, so `--help` needs neither.
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
from contextlib import suppress
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from .. import interrupts
from ..errors import EXIT_BROKEN_PIPE, EXIT_BUG, EXIT_FATAL, TutormaxError
from . import db, dlq, enrich, generate, publish, refresh, stats, worker
from .common import fail, load_settings


class ScrubbingGroup(TyperGroup):
    """The root command: its arguments' URL-shaped secrets are registered before Click
    parses them, and every error Click or Typer shows (`Got unexpected extra argument(s)
    (postgresql://app:…@…)`, `Invalid value for '--batch-size': …`) is scrubbed
    (config.scrub), as tutormax's own messages are. Each command's parsing and its run
    happen inside the root's `make_context` and `invoke`, so one class covers them all."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        from ..config import register_arguments

        if parent is None:
            register_arguments(args)
        try:
            return super().make_context(info_name, args, parent, **extra)
        except TyperException as exc:
            _scrub_when_shown(exc)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TyperException as exc:
            _scrub_when_shown(exc)
            raise


def _scrub_when_shown(exc: TyperException) -> None:
    """Scrub `exc`'s message as Typer shows it (`format_message`, which each kind of
    Click error builds its own way: `Invalid value for '--x': …` quotes the value)."""
    from ..config import scrub

    formatted = exc.format_message
    exc.format_message = lambda: scrub(formatted())  # type: ignore[method-assign]


app = typer.Typer(
    cls=ScrubbingGroup,
    name="tutormax",
    help="Enrich tutoring-platform records (tutors, sessions, feedback) and persist them.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, …)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("tutormax")
        except PackageNotFoundError:  # run from a checkout that was never installed
            from .. import __version__ as v
        typer.echo(f"tutormax {v}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Enrich tutoring-platform records (tutors, sessions, feedback) and persist them."""
    sys.excepthook = _printed_by_an_extension  # here: Typer sets its own as the app starts
    try:  # `.env`, then the environment: once, before the command reads its options
        load_settings()
    except TutormaxError as exc:  # a `.env` that cannot be read
        fail(exc.message, exc.hint, exc.exit_code)


def _readable_argument_help() -> None:
    """Arguments as people write them in a usage line: `PATH...` and `ID`, not Typer's
    `{PATH...}` and `{ID}` for a required one. A small, guarded override of
    TyperArgument.make_metavar (tests/test_cli.py checks the result); on a Typer whose
    method takes no `usage`, its own rendering stays."""
    import inspect

    from typer.core import TyperArgument

    made = TyperArgument.make_metavar
    if "usage" not in inspect.signature(made).parameters:
        return

    def metavar(self: TyperArgument, ctx: Any, *, usage: bool = False) -> str:
        text = made(self, ctx, usage=usage)
        if usage and text.startswith("{") and "}" in text:
            inner, _, rest = text[1:].partition("}")
            return inner + rest
        return text

    TyperArgument.make_metavar = metavar  # type: ignore[method-assign]


_readable_argument_help()
app.command("enrich", no_args_is_help=True)(enrich.enrich)
app.command("generate")(generate.generate)
app.add_typer(db.app, name="db")
app.command("refresh")(refresh.refresh)
app.command("publish", no_args_is_help=True)(publish.publish)
app.command("worker")(worker.worker)
app.command("stats")(stats.stats)
app.add_typer(dlq.app, name="dlq")


def main() -> NoReturn:
    """The `tutormax` script: run the command line, then leave with its code (see _exit).
    A stop at once anywhere in it, the set-up before the command included, ends it with
    its one line (it got Python's traceback and a death by SIGINT: once, under load)."""
    try:
        _stderr_or_devnull()
        _never_unencodable()
        _tune_malloc()
        interrupts.install()  # (tutormax_cli.__main__ did, before the imports)
        _exit(run())
    except KeyboardInterrupt:  # the set-up, the exit handlers, or output being flushed
        interrupts.say_stopped()
        os._exit(interrupts.exit_code())


def _printed_by_an_extension(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    """sys.excepthook, which two things reach: an exception no boundary caught (run() lets
    none through), and a C extension's PyErr_Print. psycopg2 prints so when the server ends
    a connection mid-COPY (its AdminShutdown chained to a SystemError from a decoder),
    right before the error goes up and is said in one line: a traceback a user must not
    see. It goes to the log at debug level, secrets scrubbed."""
    import logging

    from ..config import scrub

    text = scrub("".join(traceback.format_exception(kind, exc, tb)))
    logging.getLogger("tutormax").debug("an exception printed by an extension:\n%s", text)


def _never_unencodable() -> None:
    """A lone surrogate (valid in JSON, `"\\ud800"`, and so in a record, a dead letter or
    a log line) cannot be UTF-8: printing one raised UnicodeEncodeError, and `dlq list`
    and `dlq show` died with exit 3 on any dead letter that held one. It is written as
    its escape instead (`\\ud800`), which in a JSON document is the same string."""
    for stream in (sys.stdout, sys.stderr):
        with suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


def _stderr_or_devnull() -> None:
    """With stderr closed outright (`2>&-`, not a pipe), Python starts with sys.stderr None
    and file descriptor 2 free. Then the next file opened takes descriptor 2, and whatever
    writes to stderr below Python (Arrow, jemalloc, SQLite) writes into that file. So stderr
    becomes /dev/null: what would go there goes nowhere, as the caller asked, and the exit
    code is the one the outcome deserves (it was 1, "rows rejected", for any error: the
    import failed on sys.stderr.isatty())."""
    if sys.stderr is not None:
        return
    with suppress(OSError):
        try:
            os.fstat(2)
        except OSError:  # free: take it
            fd = os.open(os.devnull, os.O_WRONLY)
            if fd != 2:
                os.dup2(fd, 2)
                os.close(fd)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115


def run() -> int:
    """The command line (sys.argv) as a function returning its exit code, for tests that
    run it in-process."""
    try:
        _tune_arrow()  # (inside: a stop while it imports Arrow is a stop like any other)
        app()
    except SystemExit as exc:  # (Typer always leaves by it)
        interrupts.way_out()  # (its clients' finalizers run as the command's frames go)
        if _from_a_stop(exc):  # Typer's Exit(130) for a stop while it parsed options (before
            interrupts.say_stopped()  # the command's own boundary): nothing was said
            return interrupts.exit_code()
        return _exit_code(exc)
    except KeyboardInterrupt:  # before a command's own boundary (the root callback, say)
        interrupts.say_stopped()
        return interrupts.exit_code()
    except BaseException as exc:  # the boundary itself failed (stderr on a full disk, say)
        if isinstance(exc, OSError):
            return EXIT_FATAL
        with suppress(Exception):
            from ..config import scrub

            sys.stderr.write(scrub("".join(traceback.format_exception(exc))))
        return EXIT_BUG
    return 0


def _from_a_stop(exc: BaseException) -> bool:
    """Whether `exc` was raised in handling a KeyboardInterrupt, as Python would show the
    chain (`raise … from None`, as common.handle_errors does, hides what came before)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return False


def _exit_code(exc: SystemExit) -> int:
    # Click's way out of a broken pipe (its own output, --help): exit 1 with stdout wrapped.
    if type(sys.stdout).__name__ == "PacifyFlushWrapper":
        return EXIT_BROKEN_PIPE
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    from ..config import scrub

    print(scrub(str(exc.code)), file=sys.stderr)
    return EXIT_FATAL


def _exit(code: int) -> NoReturn:
    """End the process without finalizing the interpreter.

    NOTE: Arrow's I/O threads hold Python objects a reader was given (a file, a buffer read
    from it, an invalid-row callback) and drop them when a pending read completes, which
    takes the GIL. A thread that does so while the interpreter finalizes is ended inside
    C++ code and the process aborts ("terminate called without an active exception", exit
    134; apache/arrow#34314): CI saw it after a refusal. So the exit handlers run and the
    standard streams are flushed here, and then the process exits at once."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BrokenPipeError:
            code = code or EXIT_BROKEN_PIPE
        except (OSError, ValueError):
            pass
    os._exit(code)


MALLOC_ARENAS = 2  # glibc malloc arenas the process's threads share


def _tune_malloc() -> None:
    """Let the threads share MALLOC_ARENAS glibc arenas instead of one each (up to 8 a
    core), unless MALLOC_ARENA_MAX says otherwise.

    NOTE: what a batch's thread frees (numpy arrays, Python objects) stays in that
    thread's arena for the next batch of the same thread; with an arena a thread, the
    peak held each thread's own high-water mark. 1M sessions + 1M feedback CSV: 362-379
    MiB by default, 332-342 with 2 arenas, no slower (README, Performance)."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    with suppress(OSError, AttributeError):  # the process's own symbols: libc's, no search
        ctypes.CDLL(None).mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX (glibc's malloc.h)


ARROW_DECAY_MS = 50


def _tune_arrow() -> None:
    """Use jemalloc, returning freed pages to the system after ARROW_DECAY_MS, when Arrow
    ships it. (The command sets ARROW_DEFAULT_MEMORY_POOL before Arrow is imported, which
    is better still: tutormax_cli.__main__; this is for the command line run in-process.)

    NOTE: with 0 (pages returned at once) every temporary array of a batch was faulted in
    afresh, a third of a run's time in the kernel; with a short decay the peak is a little
    higher, which the smaller batches (config.DEFAULT_BATCH_ROWS) more than win back. The
    default mimalloc holds more still (README, Performance)."""
    import pyarrow as pa

    try:
        if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:  # (the user's choice wins)
            pa.set_memory_pool(pa.jemalloc_memory_pool())  # (the command sets it first)
        if pa.default_memory_pool().backend_name == "jemalloc":
            pa.jemalloc_set_decay_ms(ARROW_DECAY_MS)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        pass


__all__ = ["app", "main", "run"]
