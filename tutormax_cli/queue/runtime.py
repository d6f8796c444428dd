"""The worker as a process: fault injection for the tests, signals, garbage collection."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import UsageError

log = logging.getLogger("tutormax.worker")

GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections while the worker runs


FAULT_POINTS = (
    "before_commit",
    "after_commit_before_ack",
    "after_deadletter_before_ack",
    "pipeline_bug",  # not a kill: the pipeline raises TypeError, as a bug in the code would
    "record_bug",  # not a kill: it raises so only on a batch holding a RECORD_BUG record
)
RAISING = ("pipeline_bug", "record_bug")
RECORD_BUG = "record_bug"  # under record_bug, a record whose key contains this crashes alone


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class Faults:
    """`TUTORMAX_FAULT=<point>[:<n>]` SIGKILLs the worker the n-th time (default: first) it
    reaches <point>; with `TUTORMAX_FAULT_PAUSE_S=<s>` it pauses there instead (for tests
    that signal or disconnect a worker in the middle of a batch). The RAISING points raise
    instead, every time (see raise_if)."""

    point: str | None = None
    nth: int = 1
    pause_s: float | None = None
    seen: int = 0

    @classmethod
    def parse(cls, spec: str, pause: str = "") -> Faults:
        """From the settings' `fault` and `fault_pause_s` (config.Settings)."""
        spec = spec.strip()
        if not spec:
            return cls()
        point, _, nth = spec.partition(":")
        if point not in FAULT_POINTS or (nth and not nth.isdigit()):
            raise UsageError(
                f"TUTORMAX_FAULT={spec!r}: expected <point>[:<n>], point one of "
                f"{', '.join(FAULT_POINTS)}"
            )
        try:
            pause_s = float(pause) if pause.strip() else None
        except ValueError:
            raise UsageError(f"TUTORMAX_FAULT_PAUSE_S={pause!r}: not a number of seconds") from None
        return cls(point, int(nth or 1), pause_s)

    def raise_if(self, point: str, keys: list[str] | None = None) -> None:
        """Raise the way a bug in the code would: at `pipeline_bug`, on every batch; at
        `record_bug`, on a batch whose record `keys` hold one containing RECORD_BUG — a
        record that crashes the pipeline on its own (isolate.py tells the two apart)."""
        if point != self.point:
            return
        if keys is None:
            raise TypeError(f"fault injection: {point}")
        crashing = [k for k in keys if RECORD_BUG in k]
        if crashing:
            raise TypeError(f"fault injection: {point} on record {crashing[0]}")

    def hit(self, point: str) -> None:
        if point != self.point or point in RAISING:
            return
        self.seen += 1
        if self.seen != self.nth:
            return
        if self.pause_s is not None:
            log.warning("fault injection: pausing %.1f s at %s", self.pause_s, point)
            time.sleep(self.pause_s)
            return
        os.kill(os.getpid(), signal.SIGKILL)


class Stoppable(Protocol):
    """What the signal handlers need of a worker."""

    @property
    def stopping(self) -> bool: ...
    def request_stop(self, reason: str) -> None: ...


# After the first SIGTERM/SIGINT the batch in hand may finish this long; past it, a call to
# Redis or the database that does not return (a frozen server, a network that drops
# packets: no error, only silence until a socket timeout minutes later) is given up on.
STOP_GRACE_S = 10.0


def install_signal_handlers(worker: Stoppable) -> Callable[[], None]:
    """First SIGTERM/SIGINT: finish the batch (or, during an outage, leave it pending), then
    exit 0 — within STOP_GRACE_S even when a call hangs: the process then exits 0 at once,
    the batch pending (at-least-once delivery makes that safe). Second: exit at once.
    Returns what disarms that deadline (for a worker that ended on its own).

    NOTE: a Python signal handler runs in the main thread, between two bytecodes: never
    while that thread waits inside libpq or a socket read that retries on EINTR — which is
    exactly when a frozen server holds it. So the deadline is kept by a thread of its own,
    told of each signal through signal.set_wakeup_fd (written by the C-level handler, in
    whichever thread the signal lands)."""
    timers: list[threading.Timer] = []

    def overdue(name: str, code: int, why: str) -> None:
        log.warning("%s: %s; exiting now, the batch stays pending", name, why)
        for h in logging.getLogger().handlers + log.handlers:
            with suppress(Exception):
                h.flush()
        os._exit(code)

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if worker.stopping:
            log.warning("%s again: exiting at once; the batch stays pending", name)
            raise SystemExit(128 + signum)
        worker.request_stop(f"received {name}")

    def arm(seconds: float, *args: Any) -> None:
        timer = threading.Timer(seconds, overdue, args=args)
        timer.daemon = True
        timer.start()
        timers.append(timer)

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def watch() -> None:
        seen = 0
        with suppress(OSError):
            while data := os.read(read_end, 64):
                for signum in data:
                    if signum not in (signal.SIGTERM, signal.SIGINT):
                        continue
                    seen += 1
                    name = signal.Signals(signum).name
                    if seen == 1:
                        why = (f"{STOP_GRACE_S:.0f} s and the batch in hand has not finished:"
                               " a call to Redis or the database is not returning")  # fmt: skip
                        arm(STOP_GRACE_S, name, 0, why)
                    else:  # the handler exits at once, unless the main thread is held
                        arm(1.0, name, 128 + signum, "again, and the worker is held in a call")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    threading.Thread(target=watch, name="tutormax-stop", daemon=True).start()

    def disarm() -> None:
        for t in timers:
            t.cancel()
        signal.set_wakeup_fd(previous)
        os.close(write_end)  # the watcher's read ends
        os.close(read_end)

    return disarm


@contextmanager
def batch_gc() -> Iterator[None]:
    """Cheaper garbage collection for the batch loop.

    A batch allocates tens of thousands of dicts and lists (parsed envelopes, records) that
    refcounting frees; the cyclic collector only re-walks them while they live, and every
    full collection re-walks every object of pyarrow, SQLAlchemy and redis too. So: freeze
    what exists at start (imports, connections) out of the collector's sight, and let young
    collections wait for GC_YOUNG_THRESHOLD allocations instead of 700. The loop collects
    once after each batch instead, when the batch is gone (without that, the few garbage
    cycles a batch leaves — holding lists of ids — were never collected)."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()
