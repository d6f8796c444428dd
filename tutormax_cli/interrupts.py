"""Ctrl-C and SIGTERM, alike for every command (the worker has its own: queue.runtime), and
the moments a stop must not cut.

- The handler is installed before anything heavy is imported (`tutormax_cli.__main__`).
- In a command that stops between batches or pages (`enrich`, `publish`, `refresh`,
  `stats --watch`, `dlq replay|drain`: inside `graceful`), the first SIGINT or SIGTERM only
  raises a flag; the next one, before the command has looked at the flag, stops at once.
  Elsewhere the first one stops at once.
- Once the command has seen the flag, or has left its `graceful` block (its work is done:
  what follows is its report), it is on its way out (saying what it did, closing its
  connections), as after a stop at once: a signal there replaced the count with a bare
  line, or a traceback from a client's `__del__`. So is every command once it has
  returned (`way_out`, from cli.run).
- "At once" is a KeyboardInterrupt: the way out removes temporary files and partial
  outputs, rolls back what is open and says what was committed. It is put off to the end
  of a `held()` block: between making a temporary folder and recording where it is (a
  stop inside `mkdtemp`, right after its `mkdir`, left a spill folder nobody knew of), and
  between a batch's commit and its count.
- Signals in the first WAY_OUT_S seconds of that way out are ignored: a burst, a held key
  or a `kill` after a Ctrl-C would cut its cleanup. A later one cuts the way out, however
  far it got, `held()` and `uninterrupted()` included, and the process ends CUT_S seconds
  later whatever it waits on: a way out can be stuck (an output pipe nobody reads), and
  the operator must always be able to end the command.
- The exit code is 128 + the first signal: 130 for Ctrl-C, 143 for SIGTERM, as for a
  process those signals end.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

WAY_OUT_S = 2.0
CUT_S = 1.0  # what a cut way out is given before the process ends regardless

_STOPS = (signal.SIGINT, signal.SIGTERM)
_first: list[int] = []  # the first stop signal this command received
_at_once: list[float] = []  # when the first KeyboardInterrupt was asked for (monotonic)
_cut = [False]  # a signal after the way out's grace: nothing holds the stop any more
_flags: list[Callable[[int], None]] = []  # the innermost `graceful` block's flag
_held = [0]  # depth of `held()` on the main thread
_deferred = [False]  # a stop at once asked for while held
_raised = [False]  # the handler (or held's end) raised KeyboardInterrupt: a stop at once
_timers: list[threading.Timer] = []  # the end of a cut way out, pending


def exit_code() -> int:
    """128 + the first stop signal received (Ctrl-C's 130 when none was: a KeyboardInterrupt
    raised by a caller in-process)."""
    return 128 + (_first[0] if _first else signal.SIGINT)


def say_stopped() -> None:
    """The stop's one line on stderr, where no command's own boundary said it (a stop while
    the command starts up, parses its options or leaves)."""
    with suppress(Exception):  # stderr closed or gone: the exit code still says it
        sys.stderr.write(described() + "\n")
        sys.stderr.flush()


def stopped_at_once() -> bool:
    """A stop at once was raised (the handler's KeyboardInterrupt, not a graceful flag):
    an error after it may be its doing — a C extension's import it cut in half cannot be
    loaded again ("cannot load module more than once per process")."""
    return _raised[0]


def described() -> str:
    """What stopped the command, for its last line."""
    return "terminated by SIGTERM" if _first and _first[0] == signal.SIGTERM else "interrupted"


def name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _handler(signum: int, _frame: Any) -> None:
    if not _first:
        _first.append(signum)
        if _flags:  # inside `graceful`: the command stops at its next boundary
            _flags[-1](signum)
            return
    now = time.monotonic()
    if _at_once:
        if now - _at_once[0] < WAY_OUT_S:
            return  # on the way out already: let it finish
        if not _cut[0]:  # the way out is stuck: end it, whatever it holds or waits on
            _cut[0] = True
            _end_after(CUT_S)
        _raised[0] = True
        raise KeyboardInterrupt
    _at_once.append(now)
    if _held[0]:  # e.g. a temporary file made and not yet recorded for cleanup
        _deferred[0] = True
        return
    _raised[0] = True
    raise KeyboardInterrupt


def way_out() -> None:
    """The command is on its way out (it stops at a boundary, or has returned): signals in
    the next WAY_OUT_S are ignored, a later one cuts (see _handler). Only where this
    module's handler is in place."""
    if not _at_once and _installed_here():
        _at_once.append(time.monotonic())


def _end_after(seconds: float) -> None:
    """End the process `seconds` from now unless it has ended by then: a cut way out may
    wait again (on a writer thread stuck on a full pipe, say), and no signal may come."""

    def end() -> None:
        with suppress(OSError):
            os.write(2, f"{described()}: its way out was cut short\n".encode())
        os._exit(exit_code())

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
    _timers.append(timer)


def _installed_here() -> bool:
    return signal.getsignal(signal.SIGINT) is _handler


def install() -> None:
    """The handler for SIGINT and SIGTERM, from now on (main thread only)."""
    if threading.current_thread() is threading.main_thread() and not _installed_here():
        _forget()
        for s in _STOPS:
            signal.signal(s, _handler)


def _forget() -> None:
    while _timers:  # (in-process callers: their process is not to be ended)
        _timers.pop().cancel()
    _first.clear()
    _at_once.clear()
    _cut[0] = _deferred[0] = _raised[0] = False


@contextmanager
def installed() -> Iterator[None]:
    """The handler while the block runs, the previous ones after it (in-process callers)."""
    if threading.current_thread() is not threading.main_thread() or _installed_here():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _STOPS}
    install()
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _forget()  # the next in-process caller starts afresh


@contextmanager
def graceful(on_signal: Callable[[int], None] | None = None) -> Iterator[Callable[[], bool]]:
    """A flag that the first SIGINT or SIGTERM raises (the command looks at it between
    batches or pages; `on_signal(signum)` may say so); the next one stops at once.

    NOTE: a KeyboardInterrupt raised mid-batch lands inside Arrow's, the database's or
    Redis's client code, which can leave a lock held or a reply half read for the way out
    to wait on: CI once saw `stats --watch` still running 15 s after a Ctrl-C. Off the main
    thread (tests calling in-process) no handler can be set: the flag stays down."""
    asked: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def flag(signum: int) -> None:
        asked.append(signum)
        if on_signal is not None:
            on_signal(signum)

    def seen() -> bool:
        if asked:
            way_out()  # the command stops here: its way out begins
        return bool(asked)

    with installed():
        _flags.append(flag)
        try:
            yield seen
        finally:
            way_out()  # the work is done or stopped: what follows is the command's report
            _flags.remove(flag)  # (after: a signal between the two is still a flag)


@contextmanager
def held() -> Iterator[None]:
    """A stop at once asked for inside is raised when the block ends (unless the way out's
    grace has passed: see the module doc). A block that ends by an exception lets it go on
    alone: the command is on its way out already (and a generator closed inside one must
    not raise from `close()`). Only the main thread, where signal handlers run, needs it;
    elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held[0] += 1
    try:
        yield
    except BaseException:
        _held[0] -= 1
        _deferred[0] = _deferred[0] and _held[0] > 0
        raise
    _held[0] -= 1
    if not _held[0] and _deferred[0]:
        _deferred[0] = False
        _raised[0] = True
        raise KeyboardInterrupt


def uninterrupted(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` to its end even if a stop comes meanwhile (it is begun again: each
    cleanup here may be, and what it removed stays removed); only a stop that cuts a stuck
    way out (see the module doc) ends it. The run is stopping already when its temporary
    files go; a Ctrl-C in those milliseconds (a burst of them, a held key) left half-deleted
    spill folders."""
    while True:
        try:
            cleanup()
            return
        except KeyboardInterrupt:
            if _cut[0]:
                raise
            continue
        except OSError as exc:
            # A stop that lands in the standard library's own cleanup can turn into another
            # error there: shutil.rmtree, cut between closing a folder's descriptor and
            # noting it, closes it again in its `finally` (EBADF), and that replaces the
            # KeyboardInterrupt (CI, once: a half-deleted spill). Such an error, raised
            # while a stop was being handled, is the stop: begin again.
            if _cut[0] or not isinstance(exc.__context__, KeyboardInterrupt):
                raise
            continue
