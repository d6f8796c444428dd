"""The TutorMax envelope (SPEC §6) and what a delivered stream entry looks like.

An entry has one field, `message`: the JSON envelope
`{"id", "timestamp", "channel", "data", "metadata", "checksum"}`, where `checksum` is the
sha256 hex of Python's `json.dumps(data, sort_keys=True)`. Envelopes written by TutorMax
producers are read unchanged (their `metadata` may be missing). Pure functions, no Redis.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FIELD = "message"  # the one field of a stream entry
MESSAGE_MAX_BYTES = 1 << 20  # SPEC §6a: a bigger message is poison, not parsed
POISON_KEEP_BYTES = 64 << 10  # how much of an oversized message its dead letter keeps
ENVELOPE_KEYS = ("id", "timestamp", "channel", "data", "checksum")  # metadata is optional


class Poison(ValueError):
    """A stream entry that is not a readable TutorMax envelope."""


def checksum(data: Any) -> str:
    """sha256 hex of Python's `json.dumps(data, sort_keys=True)`, as TutorMax producers do."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def envelope_text(
    channel: str, data: Any, metadata: dict[str, Any] | None = None, timestamp: str | None = None
) -> str:
    """A fresh envelope as JSON text. Built by hand because it is the publish hot path: the
    data is serialised once, for both checksum and body (a uuid and an ISO time need no
    escaping)."""
    body = json.dumps(data, sort_keys=True)
    digest = hashlib.sha256(body.encode()).hexdigest()
    return (f'{{"id": "{uuid.uuid4()}", "timestamp": "{timestamp or now_iso()}", '
            f'"channel": {json.dumps(channel)}, "data": {body}, '
            f'"metadata": {json.dumps(metadata or {})}, "checksum": "{digest}"}}')  # fmt: skip


def parse_envelope(raw: bytes | str, max_bytes: int = MESSAGE_MAX_BYTES) -> dict[str, Any]:
    """The envelope of one entry's `message`; Poison (with the reason) if it is not one."""
    if len(raw) > max_bytes:
        raise Poison(f"message of {len(raw)} bytes is over the {max_bytes}-byte cap")
    try:
        env = json.loads(raw)
    except UnicodeDecodeError:
        raise Poison("message is not valid UTF-8") from None
    except ValueError as exc:
        raise Poison(f"message is not JSON: {exc}") from None
    if not isinstance(env, dict):
        raise Poison("message is not a JSON object")
    missing = [k for k in ENVELOPE_KEYS if k not in env]
    if missing:
        raise Poison(f"envelope lacks {', '.join(missing)}")
    if not isinstance(env["data"], dict):
        raise Poison("envelope data is not a JSON object")
    if env["checksum"] != checksum(env["data"]):
        raise Poison("checksum does not match the data")
    if not isinstance(env.get("metadata") or {}, dict):
        raise Poison("envelope metadata is not a JSON object")
    return env


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


@dataclass
class Message:
    """One delivered stream entry; `deliveries` counts this delivery (Redis' delivery count)."""

    kind: str
    id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1

    def raw(self) -> bytes | None:
        return self.fields.get(FIELD.encode())

    def raw_entry(self) -> dict[str, str]:
        """The entry as text, for a poison dead letter (an oversized value is cut)."""
        return {text(k): text(v[:POISON_KEEP_BYTES]) for k, v in self.fields.items()}


@dataclass
class Pending:
    kind: str
    id: str
    idle_ms: int
    deliveries: int


@dataclass
class DeadLetter:
    """What the worker hands to `Streams.dead_letter` for one message."""

    message: Message
    data: Any  # the record, or the raw entry of a poison message
    error: str  # errors.DLQ_*
    detail: list[dict[str, str]]  # every error, each {field, code, message}
    source_metadata: dict[str, Any] | None = None
    raw_entry: bool = False  # data is the raw stream entry, not a record: nothing to replay
