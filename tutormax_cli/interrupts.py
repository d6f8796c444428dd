"""The moments a stop at once (Ctrl-C, SIGTERM: cli.signals) must not cut.

A stop at once is a KeyboardInterrupt raised on the main thread wherever it happens to
be. Two kinds of moment must not be cut by one:
- `held()`: between making a temporary folder or file and recording where it is, so that
  the way out knows to remove it (a stop inside `mkdtemp`, right after its `mkdir`, left a
  spill folder nobody knew of);
- `uninterrupted(cleanup)`: the removal itself, which a burst of signals or a held key
  would cut half way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_held = [0]  # depth of `held()` on the main thread
_deferred = [False]  # a stop asked for while held


@contextmanager
def held() -> Iterator[None]:
    """A stop at once asked for inside (`defer()`) is raised when the block ends. Only the
    main thread, where signal handlers run, needs it; elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held[0] += 1
    try:
        yield
    finally:
        _held[0] -= 1
        if not _held[0] and _deferred[0]:
            _deferred[0] = False
            raise KeyboardInterrupt


def holding() -> bool:
    """Whether the main thread is inside `held()` (for the signal handler)."""
    return _held[0] > 0


def defer() -> None:
    """The signal handler's stop at once, put off to the end of `held()`."""
    _deferred[0] = True


def uninterrupted(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` to its end even if Ctrl-C comes meanwhile (it is begun again: each
    cleanup here may be, and what it removed stays removed). The run is stopping already
    when its temporary files go; a Ctrl-C in those milliseconds (a burst of them, a held
    key) left half-deleted spill folders. A cleanup here takes a few milliseconds, a held
    key repeats every ~30."""
    while True:
        try:
            cleanup()
            return
        except KeyboardInterrupt:
            continue
