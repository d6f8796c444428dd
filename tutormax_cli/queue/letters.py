"""Dead letters (SPEC §6): what the worker hands to the dead-letter stream (`DeadLetter`)
and an entry of that stream as `dlq` reads it back (`DeadLetterRecord`). Pure, no Redis."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from ..json_bounds import (
    StructureError,
    check_depth,
    loads_bounded,
    loads_number_texts,
    loses_text,
    record_as_written,
)
from .envelope import ENVELOPE_MAX_DEPTH, FIELD, Cut, Message, text

# A dead letter's metadata holds its source envelope's metadata (`source_metadata`), one
# level deeper than in that envelope: deeper text was not written by tutormax.
DEAD_LETTER_MAX_DEPTH = ENVELOPE_MAX_DEPTH + 1
_FIELD_BYTES = FIELD.encode()


@dataclass
class DeadLetter:
    """What the worker hands to `Streams.dead_letter` for one message."""

    message: Message
    data: Any  # the record, or the raw entry of a poison message
    error: str  # errors.DLQ_*
    detail: list[dict[str, str]]  # every error, each {field, code, message}
    source_metadata: dict[str, Any] | None = None
    raw_entry: bool = False  # data is the raw stream entry, not a record: nothing to replay


def count_of(value: Any) -> int:
    """A count (attempts) from metadata of any JSON type: a whole number (an int, a finite
    float, digits as text) as it is; anything else (inf, NaN, lists, objects, other text) 0."""
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value) if isinstance(value, int | float | str) else 0
    except (ValueError, OverflowError):  # NaN, inf, not digits, over int's text limit
        return 0


def mark_of(stream: str, entry_id: str) -> str:
    """The dead-letter index's key for a source entry (`<stream> <id>`), built here alone."""
    return f"{stream} {entry_id}"


@dataclass(frozen=True)
class DeadLetterRecord:
    """One entry of the dead-letter stream as read back: its id and envelope, and what its
    metadata says, by attribute (an entry not written by tutormax reads as it is)."""

    entry_id: str
    envelope: dict[str, Any]
    raw: bytes = b""  # the entry's message, as stored
    cut: Cut | None = None  # too big to read whole: what a poison dead letter keeps of it

    @classmethod
    def from_message(cls, m: Message) -> DeadLetterRecord:
        if m.cut is None:
            return cls.from_entry(m.id, m.fields)
        data = {**m.raw_entry(), "_cut": f"the entry is {m.cut.size:,} bytes: shown cut"}
        return cls(m.id, {"data": data, "metadata": {}}, b"", m.cut)

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[bytes, bytes]) -> DeadLetterRecord:
        raw = fields.get(_FIELD_BYTES, b"")
        try:  # bounded: text nested too deep is refused before anything is built
            env = loads_bounded(raw, DEAD_LETTER_MAX_DEPTH)
        except (ValueError, RecursionError):  # not written by tutormax: show it as it is
            env = {"data": {text(k): text(v) for k, v in fields.items()}, "metadata": {}}
        if not isinstance(env, dict):
            env = {"data": env, "metadata": {}}
        return cls(entry_id, env, raw)

    def written(self) -> dict[str, Any]:
        """`as_dict()` with the envelope's numbers as the stream holds them (AsWritten),
        for `dlq drain`'s file and `--json` output: read again only where a value may write
        back otherwise (loses_text), and only an envelope read within the depth limit (one
        that was not is shown by its raw fields, as `from_entry` made it)."""
        env = None
        if self.raw and loses_text(self.envelope):
            with suppress(StructureError, ValueError, RecursionError):
                check_depth(self.raw, DEAD_LETTER_MAX_DEPTH)
                value = loads_number_texts(self.raw)  # JSON: from_entry read it
                env = value if isinstance(value, dict) else {"data": value, "metadata": {}}
        return {"entry_id": self.entry_id, "envelope": env if env is not None else self.envelope}

    def replay_data(self) -> Any:
        """The record to put back on its stream, with its numbers as the dead letter wrote
        them (json_bounds.AsWritten) where Python's values may write back otherwise."""
        return record_as_written(self.data, self.raw, "data")

    def metadata(self) -> dict[str, Any]:
        meta = self.envelope.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def data(self) -> Any:
        return self.envelope.get("data")

    @property
    def source_stream(self) -> str | None:
        value = self.metadata().get("source_stream")
        return value if isinstance(value, str) else None

    @property
    def source_id(self) -> str | None:
        value = self.metadata().get("source_id")
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value if isinstance(value, str) else None

    @property
    def error(self) -> str:
        value = self.metadata().get("error")
        return value if isinstance(value, str) else "unknown"

    @property
    def attempts(self) -> int:
        return count_of(self.metadata().get("attempts"))

    @property
    def source_metadata(self) -> dict[str, Any]:
        """The metadata of the envelope that failed ({} if none, or not an object)."""
        value = self.metadata().get("source_metadata")
        return value if isinstance(value, dict) else {}

    @property
    def replay_chain(self) -> list[Any]:
        """Every dead letter this record has been before ([] if none, or not a list)."""
        value = self.metadata().get("replay_chain")
        return value if isinstance(value, list) else []

    @property
    def detail(self) -> list[dict[str, Any]]:
        detail = self.metadata().get("detail")
        return [d for d in detail if isinstance(d, dict)] if isinstance(detail, list) else []

    @property
    def raw_entry(self) -> bool:
        """Its data is the raw entry of a poison message, not a record."""
        return bool(self.metadata().get("raw_entry")) or not isinstance(self.data, dict)

    @property
    def mark(self) -> str | None:
        if self.source_stream is None or self.source_id is None:
            return None
        return mark_of(self.source_stream, self.source_id)

    def as_dict(self) -> dict[str, Any]:
        return {"entry_id": self.entry_id, "envelope": self.envelope}
