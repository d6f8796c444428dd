"""Work on a stream of items on a few threads, results handed back in input order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .interrupts import held

T = TypeVar("T")
R = TypeVar("R")


def in_order(
    work: Callable[[T, int], R],
    items: Iterator[tuple[T, int]],
    workers: int,
    late: list[tuple[T, R]] | None = None,
) -> Generator[tuple[T, R], None, None]:
    """(item, work(item, n)) for each (item, n), in input order, with up to `workers` items
    worked on side by side (threads: Arrow and the database drivers run without the GIL).
    Closed early, it waits for the work in flight; the results of what finished are
    appended to `late` (None: dropped).

    NOTE: a result is handed over inside `interrupts.held()`, until the caller asks for the
    next: a stop at once (Ctrl-C twice) must not fall between a batch's commit and the
    caller's count of it, or the run says one batch less than it committed. So it lands
    while a result is awaited (the item is still pending: `late` gets it) or after the
    caller's count. Done one at a time, the work itself is held: its commit is in it. So is
    a submission and its recording as pending (a stop between the two lost a batch that
    was committed meanwhile: 1 of 6 runs of the test under load)."""
    if workers < 2:
        for item, n in items:
            with held():
                yield item, work(item, n)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="tutormax-work")
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item, n in items:
            with held():  # submitted is pending: a stop in between lost a committed batch
                pending.append((item, pool.submit(work, item, n)))
            if len(pending) >= workers:
                yield from _first_result(pending)
        while pending:
            yield from _first_result(pending)
    finally:
        for _, left in pending:
            left.cancel()
        pool.shutdown(wait=True)
        if late is not None:
            late += [(i, f.result()) for i, f in pending if not f.cancelled() and not f.exception()]


def _first_result(pending: deque[tuple[T, Future[R]]]) -> Iterator[tuple[T, R]]:
    first, done = pending[0]
    result = done.result()  # a stop while it waits: the item stays pending, for `late`
    with held():
        pending.popleft()
        yield first, result
