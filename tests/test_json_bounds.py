"""json_bounds.json_loads reads as json.loads does, orjson or not (issue 12: orjson may parse,
the checksum stays Python's `json.dumps(data, sort_keys=True)`)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tutormax_cli import json_bounds
from tutormax_cli.json_bounds import json_loads
from tutormax_cli.queue.envelope import checksum


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 is not 1.0; NaN is NaN; key order)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.integers(-(2**63) - 2, 2**64 + 2)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]))
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _json_text(draw: st.DrawFn) -> bytes | str:
    value = draw(_VALUES)
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
    assert _same(got[1], want[1]), (text, got, want)
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
    assert _same(json_loads(text), json.loads(text))


def test_orjson_is_used_when_installed() -> None:
    """The dev install has orjson (pyproject, dev): the fast reader is really in play."""
    pytest.importorskip("orjson")
    assert json_bounds._orjson_loads is not None
