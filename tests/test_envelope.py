"""parse_envelope reads with orjson where it can, and its verdict is json's every time.

The oracle is the plain reading SPEC §6 describes: json.loads, then the checks, with the
checksum = sha256 of `json.dumps(data, sort_keys=True)`. The generated envelopes aim at
where orjson and json differ: integers beyond 64 bits (orjson: a float) in the data, in
the metadata and in the other fields, checksums computed over the float a producer's
integer would become, `e+` inside strings, NaN, lone surrogates, invalid UTF-8."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jsoncases import JSON_VALUES, same_typed

from tutormax_cli.queue import envelope
from tutormax_cli.queue.envelope import Poison, parse_envelope
from tutormax_cli.schema import MAX_COLUMNS


def _oracle(raw: bytes | str) -> dict[str, Any]:
    """SPEC §6's reading, with json.loads alone (the bounds are checked before either)."""
    try:
        env = json.loads(raw)
    except UnicodeDecodeError:
        raise Poison("message is not valid UTF-8") from None
    except ValueError as exc:
        raise Poison(f"message is not JSON: {exc}") from None
    if not isinstance(env, dict):
        raise Poison("message is not a JSON object")
    missing = [k for k in envelope.ENVELOPE_KEYS if k not in env]
    if missing:
        raise Poison(f"envelope lacks {', '.join(missing)}")
    data = env["data"]
    if not isinstance(data, dict):
        raise Poison("envelope data is not a JSON object")
    if len(data) > MAX_COLUMNS:
        raise Poison(f"envelope data has {len(data):,} keys, over the limit of {MAX_COLUMNS:,}")
    if env["checksum"] != envelope.checksum(data):
        raise Poison("checksum does not match the data")
    if not isinstance(env.get("metadata") or {}, dict):
        raise Poison("envelope metadata is not a JSON object")
    return env


def _outcome(parse: Any, raw: bytes | str) -> tuple[str, Any]:
    try:
        return "ok", parse(raw)
    except Poison as exc:
        return "poison", str(exc)


def _as_floats(value: Any) -> Any:
    """What a reader that turns big integers into floats would make of `value`."""
    if isinstance(value, bool) or not isinstance(value, int | dict | list):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else float(value)
    if isinstance(value, dict):
        return {k: _as_floats(v) for k, v in value.items()}
    return [_as_floats(v) for v in value]


_BIG_INTS = st.integers(2**63 - 2, 2**66) | st.integers(-(2**66), -(2**63) + 2)
_LEAVES = JSON_VALUES | _BIG_INTS | st.sampled_from(["e+", "1e+19", "x e+ y"])
_DATA = st.dictionaries(st.text(max_size=4), _LEAVES, max_size=5)


@st.composite
def _envelopes(draw: st.DrawFn) -> bytes | str:
    data = draw(_DATA)
    # The checksum of the data as sent, of the data as a float-reading parser sees it, or junk.
    summed = draw(st.sampled_from(["data", "floats", "junk"]))
    if summed == "junk":
        digest = "0" * 64
    else:
        body = json.dumps(data if summed == "data" else _as_floats(data), sort_keys=True)
        digest = hashlib.sha256(body.encode()).hexdigest()
    env: dict[str, Any] = {
        "id": draw(st.text(max_size=3) | _BIG_INTS),
        "timestamp": "2024-11-07T14:00:00Z",
        "channel": "tutormax:sessions",
        "data": data,
        "checksum": digest,
    }
    if draw(st.booleans()):
        env["metadata"] = draw(st.none() | _DATA | _BIG_INTS)
    text = json.dumps(
        env,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )
    if not draw(st.booleans()):
        return text
    raw = text.encode("utf-8", "surrogatepass")
    return draw(st.sampled_from([raw, raw, raw + b"\xff"]))


BIG = 2**64 + 5
BIG_SUM_AS_FLOAT = hashlib.sha256(json.dumps({"n": float(BIG)}).encode()).hexdigest()


@settings(max_examples=800, deadline=None)
@given(raw=_envelopes())
@example(  # an integer beyond 64 bits, checksummed as the float orjson would read
    raw=json.dumps(
        {
            "id": "1",
            "timestamp": "t",
            "channel": "c",
            "data": {"n": BIG},
            "checksum": BIG_SUM_AS_FLOAT,
        }
    ).encode()
)
@example(  # the same integer in the metadata, next to valid data
    raw=json.dumps(
        {
            "id": "1",
            "timestamp": "t",
            "channel": "c",
            "data": {},
            "metadata": {"n": BIG},
            "checksum": envelope.checksum({}),
        }
    ).encode()
)
def test_parse_envelope_judges_as_json_does(raw: bytes | str) -> None:
    got, want = _outcome(parse_envelope, raw), _outcome(_oracle, raw)
    assert got[0] == want[0], (raw, got, want)
    if got[0] == "ok":
        assert same_typed(got[1], want[1]), (raw, got, want)
    else:
        assert got[1] == want[1]


def test_the_fast_reading_is_really_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain envelope never reaches json_loads when orjson is installed."""
    pytest.importorskip("orjson")
    calls: list[bytes | str] = []

    def counted(text: bytes | str) -> Any:
        calls.append(text)
        return json.loads(text)

    monkeypatch.setattr(envelope, "json_loads", counted)
    raw = envelope.envelope_text("tutormax:sessions", {"session_id": "S1", "n": 2.5}).encode()
    assert parse_envelope(raw)["data"] == {"session_id": "S1", "n": 2.5}
    assert calls == []
    big = envelope.envelope_text("tutormax:sessions", {"n": BIG}).encode()
    assert parse_envelope(big)["data"] == {"n": BIG}
    assert calls == [big]  # orjson's float broke the checksum: json read it again


def test_a_poison_entrys_dead_letter_keeps_at_most_the_poison_budget() -> None:
    """Each field was cut to 64 KiB, but not the entry: 100 fields of 200 KB made a 6.5 MB
    dead letter. Now the entry as a whole keeps POISON_KEEP_BYTES, the rest counted."""
    from tutormax_cli.queue.envelope import POISON_KEEP_BYTES, Message

    small = Message("tutors", "1-0", {b"a": b"x", b"b": b"\xff"})
    assert small.raw_entry() == {"a": "x", "b": "\\xff"}
    wide = Message("tutors", "1-0", {f"f{i}".encode(): b"v" * 200_000 for i in range(100)})
    kept = wide.raw_entry()
    assert sum(len(v) for k, v in kept.items() if k != "_omitted") == POISON_KEEP_BYTES
    assert kept["f0"] == "v" * POISON_KEEP_BYTES  # one field: cut to the budget, as before
    left_out = sum(len(f"f{i}") + 200_000 for i in range(1, 100))
    assert kept["_omitted"] == f"99 field(s), {left_out:,} bytes"
    many = Message("tutors", "1-0", {f"k{i:06}".encode(): b"" for i in range(100_000)})
    assert sum(len(k) for k in many.raw_entry()) <= POISON_KEEP_BYTES + len("_omitted")
