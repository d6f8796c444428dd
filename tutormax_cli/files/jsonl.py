"""JSON Lines input: each line parsed with bounded structure (json_bounds.loads_record); a
line that is not a record is a malformed row; row numbers are line numbers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import InputError
from ..json_bounds import StructureError, TooManyKeys, loads_number_texts, loads_record
from ..records import NumberTexts, records_to_table
from ..schema import MAX_COLUMNS, RECORD_MAX_BYTES, Kind
from .batch import BATCH_MAX_BYTES, MALFORMED_ECHO_BYTES, Malformed, RawBatch
from .csv import CSV_BLOCK_BYTES
from .inputs import _Input

JSONL_MAX_LINE_BYTES = RECORD_MAX_BYTES


class _JsonLines:
    @staticmethod
    def header(path: _Input) -> list[str]:
        """Keys of the first record that has any: the first non-blank line that is a JSON
        object within the depth limit, `{}` passed over (lines before it are rejected as rows
        by `batches`; `{}` lacks every required field); more keys than
        MAX_COLUMNS is an error. Keys first seen in later records are not carried to the
        output (see records.records_to_table). No record at all (an empty export, or only
        malformed lines): none, and the Source takes its kind's fields."""
        try:
            with path.open() as fh:
                for number, line in _lines(fh, [0]):
                    if isinstance(line, _Oversized) or not line.strip():
                        continue
                    try:
                        keys = list(loads_record(line))
                        if keys:  # `{}` tells nothing: the next record may
                            return keys
                        continue
                    except TooManyKeys as exc:
                        raise InputError(
                            f"{path}: line {number}: the first record has {exc.keys:,} keys, "
                            f"over the limit of {MAX_COLUMNS:,} columns"
                        ) from None
                    except ValueError:  # not JSON, too deep, not an object: a row to reject
                        continue
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{path}: not a readable JSON Lines file: {exc}") from None
        return []

    @staticmethod
    def batches(
        path: _Input, batch_size: int, kind: Kind | None = None, columns: list[str] | None = None
    ) -> Iterator[RawBatch]:
        # Row numbers are line numbers; blank and malformed lines are the gaps.
        records: list[dict[str, Any]] = []
        lines: list[bytes] = []  # each record's line, for the token text of its numbers
        malformed: list[Malformed] = []
        gaps: list[int] = []
        seen = 0  # records read so far
        parsed = [0]  # bytes of the lines read so far (their ends included), for progress
        batch_bytes = 0
        try:
            with path.open() as fh:
                for number, line in _lines(fh, parsed):
                    obj = _json_record(number, line, malformed)
                    if obj is None:
                        gaps.append(number)
                        continue
                    records.append(obj)
                    lines.append(line)  # type: ignore[arg-type]  # a record's line is bytes
                    seen += 1
                    batch_bytes += len(line) if isinstance(line, bytes) else 0
                    # Half the byte budget: parsed records (Python objects) weigh more than the
                    # Arrow columns the other readers hold.
                    if len(records) >= batch_size or batch_bytes >= BATCH_MAX_BYTES // 2:
                        batch_bytes = 0
                        base = seen - len(records) + 1
                        texts = _texts(lines)
                        table = records_to_table(records, kind, columns, texts)
                        done = path.fraction(parsed[0], fh)
                        yield RawBatch(table, base, tuple(gaps), malformed, done, records, texts)
                        records, lines, malformed = [], [], []
        except OSError as exc:
            raise InputError(f"{path}: read error: {exc}") from None
        if records or malformed:
            base = seen - len(records) + 1
            texts = _texts(lines)
            table = records_to_table(records, kind, columns, texts)
            yield RawBatch(table, base, tuple(gaps), malformed, 1.0, records, texts)


def _texts(lines: list[bytes]) -> NumberTexts:
    """Record i's line parsed again with its numbers' token texts (records.records_to_table)."""
    return lambda i: loads_number_texts(lines[i])


@dataclass
class _Oversized:
    """A JSON Lines line over JSONL_MAX_LINE_BYTES: its length and first bytes, no more."""

    size: int
    head: bytes


def _lines(fh: Any, parsed: list[int]) -> Iterator[tuple[int, bytes | _Oversized]]:
    """(line number, line without its end) for each line; a line over JSONL_MAX_LINE_BYTES
    is skipped unread (its length instead), so no line costs more than the cap. `parsed[0]`
    counts the bytes consumed, line ends included (the parser's position, not the reader's)."""
    number = 0
    while line := fh.readline(JSONL_MAX_LINE_BYTES + 2):
        number += 1
        parsed[0] += len(line)
        text = line.rstrip(b"\r\n")
        if len(text) <= JSONL_MAX_LINE_BYTES:
            yield number, text
            continue
        size = len(text)
        while not line.endswith(b"\n") and (line := fh.readline(CSV_BLOCK_BYTES)):
            parsed[0] += len(line)
            size += len(line.rstrip(b"\r\n"))
        yield number, _Oversized(size, text[:MALFORMED_ECHO_BYTES])


def _json_record(
    number: int, line: bytes | _Oversized, malformed: list[Malformed]
) -> dict[str, Any] | None:
    if isinstance(line, _Oversized):
        cap = JSONL_MAX_LINE_BYTES
        reason = f"line of {line.size:,} bytes, over the {cap:,}-byte cap: rejected unread"
        malformed.append(Malformed(number, line.head.decode("utf-8", "replace"), reason))
        return None
    if not line.strip():
        return None
    try:
        return loads_record(line)
    except UnicodeDecodeError:
        reason = "line is not valid UTF-8"
    except StructureError as exc:
        reason = f"{exc}, rejected unread"
    except json.JSONDecodeError as exc:
        reason = f"not JSON: {exc}"
    except ValueError as exc:  # not an object, a bad key, an int of over 4,300 digits
        reason = str(exc)
    malformed.append(Malformed(number, line.decode("utf-8", "backslashreplace"), reason))
    return None
