"""The progress bar of commands that read files (`enrich`, `publish`): people's output, stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import err


class FileProgress:
    """A rich progress bar on stderr (rows/s, ETA) when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and err.is_terminal
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> FileProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[rows]:>12,} rows  {task.fields[rate]:>9,.0f} rows/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self._bar.__enter__()
        return self

    def update(self, source: str, kind: str, rows: int, done: float) -> None:
        if self._bar is None:
            return
        task = self._tasks.get(source)
        if task is None:
            task = self._tasks[source] = self._bar.add_task(
                f"{kind} {Path(source).name}", total=1000, rows=0, rate=0.0
            )
        elapsed = self._bar.tasks[task].elapsed or 0
        rate = rows / elapsed if elapsed else 0.0
        self._bar.update(task, completed=int(done * 1000), rows=rows, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
