"""The rejects file (SPEC §4): JSON Lines of {source, row, values, errors}."""

from __future__ import annotations

import json
import math
import os
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from ..schema import REJECT_ECHO_BYTES
from .write import _writing, output_target


class RejectsWriter:
    """SPEC §4 rejects file: JSON Lines of {source, row, values, errors}; created on first use.

    It survives any value: bytes, decimals, instants, NaN and lone surrogates become JSON
    text, and a value over REJECT_ECHO_BYTES is echoed as its first bytes and its length
    (`{"truncated": true, "bytes": N, "prefix": "…"}`), so a 300 MB field costs 1 KiB here."""

    def __init__(self, path: Path, *, dry_run: bool = False) -> None:
        self.path = path
        self.count = 0
        self.dry_run = dry_run  # count, write nothing
        self._fh: IO[bytes] | None = None

    def write(
        self, source: str, row: int | None, values: Any, errors: list[dict[str, Any]]
    ) -> None:
        if self.dry_run:
            self.count += 1
            return
        record = {"source": source, "row": row, "values": jsonable(values), "errors": errors}
        line = json.dumps(record, ensure_ascii=False, default=str)
        with _writing(self.path):
            if self._fh is None:
                self._fh = self._open()
            # NOTE: a lone surrogate (JSON can escape one) cannot be UTF-8; backslashreplace
            # writes it as the JSON escape \udXXX, which reads back as the same string.
            self._fh.write(line.encode("utf-8", "backslashreplace") + b"\n")
        self.count += 1

    def _open(self) -> IO[bytes]:
        """Written as the run goes (flushed each batch: a stopped run shows what it
        rejected), in place: a symlink writes through to its file, `-` is stdout."""
        target = output_target(self.path)
        if target.fd is not None:
            return open(os.dup(target.fd), "wb")  # noqa: SIM115 - closed in close()
        if target.mode == "replace":
            target.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("wb")

    def flush(self) -> None:
        if self._fh is not None:
            with _writing(self.path):
                self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with _writing(self.path):
                fh.close()


def jsonable(value: Any, depth: int = 0) -> Any:
    """Original values as read, made JSON-safe and bounded (see RejectsWriter)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, str):
        return _bounded(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": JSON has no such number
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Decimal | timedelta):
        return str(value)
    return _bounded(str(value))


def _bounded(text: str) -> Any:
    size = len(text)  # characters ≤ UTF-8 bytes: a cheap first test
    if size * 4 <= REJECT_ECHO_BYTES:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= REJECT_ECHO_BYTES:
        return text
    prefix = data[:REJECT_ECHO_BYTES].decode("utf-8", "ignore")  # not half a character
    return {"truncated": True, "bytes": len(data), "prefix": prefix}
