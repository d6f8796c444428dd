"""Logging for the long-running commands: text for people or JSON Lines for log shippers,
on stderr, with every registered secret scrubbed from every line."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from ..config import scrub
from ..json_bounds import dumps_strict
from .options import LogFormat, LogLevel

# Attributes every LogRecord has; anything else came in `extra=` and is a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class _Scrub(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the `extra=` fields (e.g. a
    batch's counters) and, for an error, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            doc["traceback"] = scrub(self.formatException(record.exc_info))
        return dumps_strict(doc, default=str, ensure_ascii=False)


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a line is written: under a progress bar
    (rich redirects sys.stderr) a log line is printed above the bar, not through it."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _TextFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return scrub(super().formatException(ei))


def setup(
    level: LogLevel = LogLevel.info,
    fmt: LogFormat = LogFormat.text,
    *,
    verbose: bool = False,
    quiet: bool = False,
) -> LogLevel:
    """Configure the `tutormax` loggers (idempotent); the level in effect (-v: debug, -q:
    warning, else --log-level), by which a command also decides what else it says."""
    if verbose:
        level = LogLevel.debug
    elif quiet:
        level = LogLevel.warning
    handler = _Stderr()
    handler.addFilter(_Scrub())
    if fmt is LogFormat.json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("tutormax")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.value.upper())
    root.propagate = False
    return level


_ORDER = tuple(LogLevel)  # debug, info, warning, error


def shows(level: LogLevel, at: LogLevel) -> bool:
    """Whether output of severity `at` is shown at `level`: a run's summary and its progress
    are `info`, what went wrong with some rows is `warning` (-q keeps only those)."""
    return _ORDER.index(at) >= _ORDER.index(level)
