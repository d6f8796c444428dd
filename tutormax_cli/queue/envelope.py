"""The TutorMax envelope (SPEC §6) and what a delivered stream entry looks like.

An entry has one field, `message`: the JSON envelope
`{"id", "timestamp", "channel", "data", "metadata", "checksum"}`, where `checksum` is the
sha256 hex of Python's `json.dumps(data, sort_keys=True)`. Envelopes written by TutorMax
producers are read unchanged (their `metadata` may be missing). Pure functions, no Redis.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..json_bounds import (
    AsWritten,
    StructureError,
    check_depth,
    dumps_as_written,
    json_loads,
    orjson_loads,
)
from ..schema import JSON_MAX_DEPTH, MAX_COLUMNS

FIELD = "message"  # the one field of a stream entry
_FIELD_BYTES = FIELD.encode()
MESSAGE_MAX_BYTES = 1 << 20  # SPEC §6a: a bigger message is poison, not parsed
POISON_KEEP_BYTES = 64 << 10  # how much of an oversized message its dead letter keeps
# An entry of more fields is not read whole (queue/streams/bounded.py), and a poison dead
# letter keeps at most this many of an entry's fields: a TutorMax entry has one.
ENTRY_MAX_FIELDS = 1024
ENVELOPE_MAX_DEPTH = JSON_MAX_DEPTH + 1  # the data is a record; the envelope is one more level
ENVELOPE_KEYS = ("id", "timestamp", "channel", "data", "checksum")  # metadata is optional


class Poison(ValueError):
    """A stream entry that is not a readable TutorMax envelope."""


def checksum(data: Any) -> str:
    """sha256 hex of Python's `json.dumps(data, sort_keys=True)`, as TutorMax producers do."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _sorted_json_encoder() -> Callable[[Any], str]:
    """`json.dumps(data, sort_keys=True)` for acyclic data (parsed JSON, records), faster.

    NOTE: with sort_keys, json.dumps builds a JSONEncoder and a C encoder on every call and
    tracks containers for cycles, a good part of its cost on a record. This builds json's
    own C encoder once, without the cycle check, so the text is the same."""
    enc = json.JSONEncoder(sort_keys=True)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator
        return enc.encode
    try:
        c_encode = make(None, enc.default, json.encoder.encode_basestring_ascii, None,
                        enc.key_separator, enc.item_separator, True, False, True)  # fmt: skip
        probe = {"b": [1.5, None, True], "a": "é\u2028", "c": {"y": 1, "x": -0.0}}
        if "".join(c_encode(probe, 0)) != enc.encode(probe):
            return enc.encode
    except (TypeError, ValueError):  # another Python's private signature
        return enc.encode
    return lambda data: "".join(c_encode(data, 0))


_sorted_json = _sorted_json_encoder()
_ENVELOPE_KEYSET = frozenset(ENVELOPE_KEYS)


def envelope_text(
    channel: str,
    data: Any,
    metadata: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> str:
    """A fresh envelope as JSON text. Built by hand because it is the publish hot path: the
    data is serialised once, for both checksum and body (a uuid and an ISO time need no
    escaping) — unless it holds text beyond ASCII, which the body carries as UTF-8 (the
    checksum's dump escapes each such character as `\\uXXXX`, six bytes or twelve for
    one of two to four: a 600 KB message of CJK text came back from a replay at 1.2 MB,
    over the cap).

    Data read with its numbers as written (json_bounds.AsWritten: a dead letter, its
    replay, a JSON Lines record published) keeps them in the body (an id `1e2` stays
    `1e2`, not the `100.0` of its double); the checksum is of the data as a consumer reads
    that body."""
    if isinstance(data, AsWritten):
        body = dumps_as_written(data)
        digest = hashlib.sha256(_sorted_json(json_loads(body)).encode()).hexdigest()
        return _envelope(channel, body, metadata, timestamp, digest)
    body = _sorted_json(data)
    digest = hashlib.sha256(body.encode()).hexdigest()
    if "\\u" in body:
        body = _utf8_body(data, body)
    return _envelope(channel, body, metadata, timestamp, digest)


def _envelope(
    channel: str, body: str, metadata: dict[str, Any] | None, timestamp: str | None, digest: str
) -> str:
    return (f'{{"id": "{_uuid4()}", "timestamp": "{timestamp or now_iso()}", '
            f'"channel": {json.dumps(channel)}, "data": {body}, '
            f'"metadata": {_metadata_text(metadata)}, "checksum": "{digest}"}}')  # fmt: skip


def _metadata_text(metadata: dict[str, Any] | None) -> str:
    """The metadata's JSON, its text beyond ASCII as UTF-8 as the data's (escaped, a dead
    letter of a message whose metadata held emoji was 3× the message); escaped where it
    cannot be UTF-8."""
    text = json.dumps(metadata or {})
    return _utf8_body(metadata or {}, text, sort_keys=False) if "\\u" in text else text


def _utf8_body(data: Any, ascii_body: str, sort_keys: bool = True) -> str:
    """The data's sorted JSON with its text as UTF-8; the escaped dump if the text cannot
    be UTF-8 (a lone surrogate, which JSON may escape)."""
    body = json.dumps(data, sort_keys=sort_keys, ensure_ascii=False)
    try:
        body.encode()
    except UnicodeEncodeError:
        return ascii_body
    return body


def wire_bytes(text: str) -> int:
    """The bytes of an envelope's text on the wire (UTF-8)."""
    return len(text) if text.isascii() else len(text.encode())


_UUID_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _uuid4() -> str:
    """`str(uuid.uuid4())` in a third of the time (no UUID object): 16 bytes of os.urandom
    with the version (4) and variant (RFC 4122) bits set."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def parse_envelope(raw: bytes | str, max_bytes: int = MESSAGE_MAX_BYTES) -> dict[str, Any]:
    """The envelope of one entry's `message`; Poison (with the reason) if it is not one.

    Bounded before anything is built (SPEC §6a): at most `max_bytes`, data nested at most
    JSON_MAX_DEPTH deep as in a JSON Lines record (the envelope adds one level), and data
    of at most MAX_COLUMNS keys.

    NOTE: the usual message is read by orjson directly, without json_loads' scan for long
    digit runs (a twelfth of a message's cost). orjson reads as json does except for an
    integer beyond 64 bits, which it makes a float of magnitude ≥ 2**63, whose repr is in
    exponent form: so a verdict is kept only when the checksum's dump of the data has no
    `e+` and nothing else of the envelope holds such a float. Anything else — any Poison
    included — is read again by json_loads, whose verdict and words stand
    (tests/test_envelope.py compares the two on generated envelopes)."""
    if len(raw) > max_bytes:
        raise Poison(f"message of {len(raw)} bytes is over the {max_bytes}-byte cap")
    try:
        check_depth(raw, ENVELOPE_MAX_DEPTH)
    except StructureError as exc:
        raise Poison(f"message {exc} (envelope included): not parsed") from None
    if isinstance(raw, bytes):
        try:
            env, body = _checked(orjson_loads(raw))
        except ValueError:  # refused by orjson, or Poison: json_loads has the last word
            pass
        else:
            if "e+" not in body and not _big_float_outside_data(env):
                return env
    try:
        env = json_loads(raw)
    except UnicodeDecodeError:
        raise Poison("message is not valid UTF-8") from None
    except ValueError as exc:
        raise Poison(f"message is not JSON: {exc}") from None
    return _checked(env)[0]


def _checked(env: Any) -> tuple[dict[str, Any], str]:
    """A parsed envelope and its data's sorted dump (the checksum's), or Poison saying what
    is wrong with it."""
    if not isinstance(env, dict):
        raise Poison("message is not a JSON object")
    if not env.keys() >= _ENVELOPE_KEYSET:
        missing = [k for k in ENVELOPE_KEYS if k not in env]
        raise Poison(f"envelope lacks {', '.join(missing)}")
    data = env["data"]
    if not isinstance(data, dict):
        raise Poison("envelope data is not a JSON object")
    if len(data) > MAX_COLUMNS:
        raise Poison(f"envelope data has {len(data):,} keys, over the limit of {MAX_COLUMNS:,}")
    # The one serialisation SPEC §6 requires (checksum = sha256 of the sorted dump).
    body = _sorted_json(data)
    if env["checksum"] != hashlib.sha256(body.encode()).hexdigest():
        raise Poison("checksum does not match the data")
    if not isinstance(env.get("metadata") or {}, dict):
        raise Poison("envelope metadata is not a JSON object")
    return env, body


def _big_float_outside_data(env: dict[str, Any]) -> bool:
    """Whether a float of magnitude ≥ 2**63 (an integer to json) is anywhere in the envelope
    but its data (which _checked looked at through its dump). Plain loops: this runs for
    every message, and a generator costs more than the usual envelope's whole look."""
    for k, v in env.items():
        if k != "data" and type(v) not in _SCALAR_TYPES and _big_float(v):
            return True
    return False


_SCALAR_TYPES = frozenset((str, int, bool, type(None)))


def _big_float(v: Any) -> bool:
    if isinstance(v, float):
        return not abs(v) < _BIG  # NaN or inf cannot come from orjson; be safe anyway
    if isinstance(v, dict):
        v = list(v.values())
    if isinstance(v, list):
        for x in v:
            if type(x) not in _SCALAR_TYPES and _big_float(x):
                return True
    return False


_BIG = float(2**63)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


class Cut(NamedTuple):
    """An entry too big to read whole, as Redis sent it (queue/streams/bounded.py): its
    size, and the fields left out of what a poison dead letter keeps."""

    size: int
    omitted: int
    omitted_bytes: int
    fields: int

    @property
    def too_big(self) -> str:
        """What dlq says of such an entry (over a byte cap, or ENTRY_MAX_FIELDS fields)."""
        return f"too big to read whole: {self.size:,} bytes in {self.fields:,} field(s)"


@dataclass
class Message:
    """One delivered stream entry; `deliveries` counts this delivery (Redis' delivery count).
    A `cut` entry holds only what its poison dead letter keeps."""

    kind: str
    id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1
    cut: Cut | None = None

    def raw(self) -> bytes | None:
        return None if self.cut else self.fields.get(_FIELD_BYTES)

    @property
    def size(self) -> int:
        """The entry's bytes in Redis (field names and values)."""
        return self.cut.size if self.cut else sum(len(k) + len(v) for k, v in self.fields.items())

    def raw_entry(self) -> dict[str, str]:
        """The entry as text, for a poison dead letter: at most POISON_KEEP_BYTES of its
        values and as much of its field names, fields in order, the value that passes the
        budget cut; the fields left out are counted under `_omitted` (an entry of 100
        fields of 200 KB made a 6.5 MB dead letter)."""
        out: dict[str, str] = {}
        values = names = POISON_KEEP_BYTES
        omitted, omitted_bytes = (self.cut.omitted, self.cut.omitted_bytes) if self.cut else (0, 0)
        for k, v in self.fields.items():
            if values <= 0 or len(k) > names or len(out) >= ENTRY_MAX_FIELDS:
                omitted, omitted_bytes = omitted + 1, omitted_bytes + len(k) + len(v)
                continue
            out[text(k)] = text(v[:values])
            values, names = values - len(v), names - len(k)
        if omitted:
            out["_omitted"] = f"{omitted} field(s), {omitted_bytes:,} bytes"
        return out


@dataclass
class Pending:
    kind: str
    id: str
    idle_ms: int
    deliveries: int
