"""The rejects file (SPEC §4): JSON Lines of {source, row, values, errors}."""

from __future__ import annotations

import json
import math
import os
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from .. import errors as E
from ..json_bounds import nonfinite_name
from ..pipeline import BatchResult
from ..schema import REJECT_ECHO_BYTES, REJECT_ROW_ECHO_BYTES
from .batch import RawBatch
from .write import _writing, output_target


class RejectsWriter:
    """SPEC §4 rejects file: JSON Lines of {source, row, values, errors}; created on first use.

    It survives any value: bytes, decimals, instants, NaN and lone surrogates become JSON
    text, and a value over REJECT_ECHO_BYTES (a list: its JSON text) is echoed as its first
    bytes and its length (`{"truncated": true, "bytes": N, "prefix": "…"}`), so a 300 MB
    field costs 1 KiB here. A row's values together are echoed up to REJECT_ROW_ECHO_BYTES,
    the fields named by its errors first; the values left out are counted in
    `"_omitted": {"columns": n, "bytes": m}`, so a line stays a few KiB, whatever the row."""

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
        shown = echo_values(values, {e.get("field") for e in errors})
        errors = [{**e, "message": _bounded_message(e.get("message"))} for e in errors]
        record = {"source": source, "row": row, "values": shown, "errors": errors}
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
        rejected), in place: a symlink writes through to its file, `-` is stdout; a name
        ending in .gz, .zst or .bz2 is compressed as it says."""
        target = output_target(self.path)
        if target.fd is not None:
            fh: Any = open(os.dup(target.fd), "wb")  # noqa: SIM115 - closed in close()
        else:
            if target.mode == "replace":
                target.path.parent.mkdir(parents=True, exist_ok=True)
            fh = self.path.open("wb")
        if target.codec is None:
            return fh
        return pa.CompressedOutputStream(fh, target.codec)

    def flush(self) -> None:
        if self._fh is not None:
            with _writing(self.path):
                self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with _writing(self.path):
                fh.close()


def echo_values(values: Any, error_fields: set[Any]) -> Any:
    """A row's values as the rejects file shows them (see RejectsWriter)."""
    if not isinstance(values, dict):
        return jsonable(values)
    echoed = {str(k): jsonable(v) for k, v in values.items()}
    sizes = {k: _json_bytes(v) for k, v in echoed.items()}
    if sum(sizes.values()) <= REJECT_ROW_ECHO_BYTES:
        return echoed
    keep: set[str] = set()
    budget = REJECT_ROW_ECHO_BYTES
    for k in sorted(echoed, key=lambda k: k not in error_fields):  # stable: errors first
        if sizes[k] <= budget:
            keep.add(k)
            budget -= sizes[k]
    shown: dict[str, Any] = {k: v for k, v in echoed.items() if k in keep}
    left = [k for k in echoed if k not in keep]
    shown["_omitted"] = {"columns": len(left), "bytes": sum(sizes[k] for k in left)}
    return shown


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "replace"))


def jsonable(value: Any, depth: int = 0) -> Any:
    """Original values as read, made JSON-safe and bounded (see RejectsWriter)."""
    if isinstance(value, dict | list | tuple):
        inner = (
            {str(k): jsonable(v, depth + 1) for k, v in value.items()}
            if isinstance(value, dict)
            else [jsonable(v, depth + 1) for v in value]
        )
        text = json.dumps(inner, ensure_ascii=False, default=str)
        if len(text) * 4 <= REJECT_ECHO_BYTES or _utf8_len(text) <= REJECT_ECHO_BYTES:
            return inner
        return _truncated(text)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, str):
        return _bounded(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return nonfinite_name(value)  # "NaN", "Infinity": JSON has no such number
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, Decimal | timedelta):
        return str(value)
    return _bounded(str(value))


def _bounded(text: str) -> Any:
    size = len(text)  # characters ≤ UTF-8 bytes: a cheap first test
    if size * 4 <= REJECT_ECHO_BYTES or _utf8_len(text) <= REJECT_ECHO_BYTES:
        return text
    return _truncated(text)


def _bounded_message(message: Any) -> Any:
    """An error message over REJECT_ECHO_BYTES is cut there, marked with its length."""
    if not isinstance(message, str) or _utf8_len(message) <= REJECT_ECHO_BYTES:
        return message
    return f"{_truncated(message)['prefix']}… ({_utf8_len(message):,} bytes)"


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _truncated(text: str) -> dict[str, Any]:
    data = text.encode("utf-8", "surrogatepass")
    prefix = data[:REJECT_ECHO_BYTES].decode("utf-8", "ignore")  # not half a character
    size = text.file_bytes if isinstance(text, _CutText) else len(data)
    return {"truncated": True, "bytes": size, "prefix": prefix}


def rejected_rows(
    rb: RawBatch, res: BatchResult
) -> list[tuple[int | None, Any, list[dict[str, Any]]]]:
    return [
        (rb.row_number(r.index), _values(rb, r.index), [e.as_dict() for e in r.errors])
        for r in res.rejected
    ]


def _values(rb: RawBatch, i: int) -> Any:
    """Row i's values as read; a CSV field the reader cut (csv_bounds) echoed with the size
    it has in the file, not the size read."""
    values = rb.values(i)
    cut = rb.cut.get(rb.row_number(i)) if rb.cut else None
    names = rb.table.column_names
    for place, size in (cut or {}).items():
        value = values.get(names[place]) if place < len(names) else None
        if isinstance(value, bytes):
            value = value.decode("utf-8", "backslashreplace")
        if isinstance(value, str):
            values[names[place]] = _CutText(value, size)
    return values


class _CutText(str):
    """The part of a value a reader kept, and the value's size in the file."""

    file_bytes: int

    def __new__(cls, text: str, file_bytes: int) -> _CutText:
        self = super().__new__(cls, text)
        self.file_bytes = file_bytes
        return self


def malformed_rows(rb: RawBatch) -> list[tuple[int | None, Any, list[dict[str, Any]]]]:
    """Rows that could not be split into fields, as rejects: the raw text is the value."""
    return [
        (
            m.row if m.row > 0 else None,
            {"_raw": _CutText(m.text, m.size) if m.size else m.text},
            [{"field": "_row", "code": E.MALFORMED_ROW, "message": m.message}],
        )
        for m in rb.malformed
    ]
