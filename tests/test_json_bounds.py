"""json_bounds.json_loads reads as json.loads does, orjson or not (issue 12: orjson may parse,
the checksum stays Python's `json.dumps(data, sort_keys=True)`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsoncases import JSON_VALUES, same_typed

from tutormax_cli import json_bounds
from tutormax_cli.json_bounds import json_loads
from tutormax_cli.queue.envelope import checksum


@st.composite
def _json_text(draw: st.DrawFn) -> bytes | str:
    value = draw(JSON_VALUES)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        sort_keys=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )
    text = draw(st.sampled_from(["", " ", "\n"])) + text + draw(st.sampled_from(["", " \n"]))
    as_bytes = draw(st.booleans())
    if not as_bytes:
        return text
    try:
        raw = text.encode()
    except UnicodeEncodeError:  # a lone surrogate: surrogatepass, as some producers write
        raw = text.encode("utf-8", "surrogatepass")
    return draw(st.sampled_from([raw, b"\xef\xbb\xbf" + raw, raw + b"\xff"]))


def _outcome(loads: Any, text: bytes | str) -> tuple[str, Any]:
    try:
        return "value", loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        return "error", type(exc).__name__


@settings(max_examples=600, deadline=None)
@given(text=_json_text())
def test_json_loads_reads_as_json_does(text: bytes | str) -> None:
    got, want = _outcome(json_loads, text), _outcome(json.loads, text)
    assert got[0] == want[0], (text, got, want)
    assert same_typed(got[1], want[1]), (text, got, want)
    if got[0] == "value":
        assert checksum(got[1]) == checksum(want[1])


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',
        "18446744073709551616",
        "[-9223372036854775809, 9223372036854775808]",
        '{"n": 1e400}',
        "NaN",
        '"\\ud800"',
        b"\xef\xbb\xbf[1]",
        '{"t": "2024-11-09T02:00:00Z", "x": 0.1, "y": -0.0, "z": 1E5}',
    ],
)
def test_the_places_orjson_and_json_differ(text: bytes | str) -> None:
    assert same_typed(json_loads(text), json.loads(text))


def test_orjson_is_used_when_installed() -> None:
    """The dev install has orjson (pyproject, dev): the fast reader is really in play."""
    pytest.importorskip("orjson")
    assert json_bounds._orjson_loads is not None
