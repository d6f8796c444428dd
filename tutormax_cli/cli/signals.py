"""Ctrl-C and SIGTERM, alike for every command (the worker has its own: queue.runtime).

- In a command that stops between batches or refreshes (`enrich`, `stats --watch`, inside
  `graceful`), the first SIGINT or SIGTERM only raises a flag; the next one stops at once.
- Elsewhere the first one stops at once.
- "At once" is a KeyboardInterrupt (put off to the end of an `interrupts.held()` block):
  the way out removes temporary files and partial outputs, rolls back what is open and
  says what was committed. Signals that come during
  the first WAY_OUT_S seconds of that way out are ignored (a burst of them, a held key or a
  `kill` after a Ctrl-C would otherwise cut the cleanup); a later one cuts a way out that
  is stuck.
- The exit code is 128 + the first signal: 130 for Ctrl-C, 143 for SIGTERM, as for a
  process those signals end.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .. import interrupts

WAY_OUT_S = 2.0

_STOPS = (signal.SIGINT, signal.SIGTERM)
_first: list[int] = []  # the first stop signal this command received
_at_once: list[float] = []  # when the KeyboardInterrupt was raised (monotonic)
_notices: list[Callable[[int], None]] = []  # the innermost `graceful` block's flag


def exit_code() -> int:
    """128 + the first stop signal received (Ctrl-C's 130 when none was: a KeyboardInterrupt
    raised by a caller in-process)."""
    return 128 + (_first[0] if _first else signal.SIGINT)


def described() -> str:
    """What stopped the command, for its last line."""
    return "terminated by SIGTERM" if _first and _first[0] == signal.SIGTERM else "interrupted"


def _handler(signum: int, _frame: Any) -> None:
    if not _first:
        _first.append(signum)
        if _notices:  # inside `graceful`: the command stops at its next boundary
            _notices[-1](signum)
            return
    if _at_once and time.monotonic() - _at_once[0] < WAY_OUT_S:
        return  # on the way out already: let it finish
    _at_once[:] = [time.monotonic()]
    if interrupts.holding():  # a temporary file made and not yet recorded for cleanup
        interrupts.defer()
        return
    raise KeyboardInterrupt


@contextmanager
def installed() -> Iterator[None]:
    """The handler for SIGINT and SIGTERM while a command runs (main thread only; in-process
    callers on other threads keep Python's own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _first.clear()
    _at_once.clear()
    previous = {s: signal.signal(s, _handler) for s in _STOPS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def graceful(notice: str | None = None) -> Iterator[Callable[[], bool]]:
    """A flag that the first SIGINT or SIGTERM raises (the command looks at it between
    batches or refreshes; `notice`, after the signal's name, goes to stderr); the next one
    raises KeyboardInterrupt at once.

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
        if notice:
            from .common import err

            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            err.print(f"{name}: {notice}", markup=False)

    with installed() if signal.getsignal(signal.SIGINT) is not _handler else _nothing():
        _notices.append(flag)
        try:
            yield lambda: bool(asked)
        finally:
            _notices.remove(flag)


@contextmanager
def _nothing() -> Iterator[None]:
    yield
