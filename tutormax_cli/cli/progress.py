"""The progress bar of commands that read or write files (`enrich`, `publish`, `generate`):
people's output, on stderr, only when stderr is a terminal."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import err

SMOOTHING = 0.3  # weight of the newest interval in the smoothed rate


class Estimate:
    """Rows/s and the time left of one file, from its updates (rows done, fraction done).

    The first update only starts the clock: what came before it (opening the file, the
    header probe, a duplicate-key pre-pass, the first batch's parse) is not a rate, and a
    rate over it is nonsense (20 million rows/s). From the second update on, the rate is the
    rows since the previous update over the time since, smoothed exponentially (SMOOTHING);
    the time left is the rows still to come, estimated from the fraction done
    (rows × (1 − done) / done), at that rate. Updates that arrive at the same instant are
    merged into the next interval."""

    def __init__(self) -> None:
        self.rows = 0
        self.done = 0.0
        self.rate: float | None = None  # rows/s; None until the second update
        self.eta: float | None = None  # seconds left; None until there is a rate
        self._at: float | None = None  # time of the last measured update
        self._rows_at = 0  # rows at that time

    def update(self, rows: int, done: float, now: float) -> None:
        self.rows, self.done = rows, min(max(done, 0.0), 1.0)
        if self._at is None:
            self._at, self._rows_at = now, rows
            return
        dt = now - self._at
        if dt > 0:
            speed = (rows - self._rows_at) / dt
            self.rate = speed if self.rate is None else self.rate + SMOOTHING * (speed - self.rate)
            self._at, self._rows_at = now, rows
        if self.done >= 1.0:
            self.eta = 0.0
        elif self.rate and self.done > 0:
            self.eta = rows * (1.0 - self.done) / self.done / self.rate
        else:
            self.eta = None


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class FileProgress:
    """One bar a file on stderr: fraction done, rows, rows/s and time left (see Estimate).

    The estimates are kept whether or not a bar is shown (`estimates`, by source)."""

    def __init__(self, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled and err.is_terminal
        self.clock = clock
        self.estimates: dict[str, Estimate] = {}
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> FileProgress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}", markup=False),  # a file name, as it is
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[rows]:>12,} rows  {task.fields[rate]:>9} rows/s"),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                console=err,
                transient=True,
            )
            self._bar.__enter__()
        return self

    def update(self, source: str, kind: str, rows: int, done: float) -> None:
        est = self.estimates.get(source)
        if est is None:
            est = self.estimates[source] = Estimate()
        est.update(rows, done, self.clock())
        if self._bar is None:
            return
        rate = "-" if est.rate is None else f"{est.rate:,.0f}"
        fields = {"rows": rows, "rate": rate, "eta": _clock_text(est.eta)}
        completed = int(est.done * 1000)
        task = self._tasks.get(source)
        if task is None:
            name = f"{kind} {Path(source).name}"
            self._tasks[source] = self._bar.add_task(
                name, total=1000, completed=completed, **fields
            )
        else:
            self._bar.update(task, completed=completed, **fields)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
