"""Every JSON document tutormax writes for people and programs is strict JSON (RFC 8259):
JSON has no NaN or infinity, which Python's json reads and writes as bare tokens.

One rule, one helper (json_bounds.dumps_strict): a non-finite float is written as the string
"NaN", "Infinity" or "-Infinity" — in `--json` reports, the rejects file's echo, `dlq show`,
`dlq drain`'s file and JSON log lines — except in an output file's rows, where it is null
(the value has no place in a typed column), a JSON input's extra values' text included.
The queue's envelopes are Python's own json
(their checksum is, SPEC §6) and are not written by it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from tutormax_cli.cli import app
from tutormax_cli.cli.logs import JsonFormatter
from tutormax_cli.json_bounds import as_null, dumps_strict, finite

NAMES = {"NaN", "Infinity", "-Infinity"}


class NonFinite(ValueError):
    pass


def _refuse(token: str) -> Any:
    raise NonFinite(token)


def strict(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity, as RFC 8259 does."""
    return json.loads(text, parse_constant=_refuse)


FLOATS = st.floats(allow_nan=True, allow_infinity=True)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | FLOATS | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=3) | FLOATS, inner, max_size=4)
    ),
    max_leaves=20,
)


def _key_text(k: Any) -> str:
    if isinstance(k, float) and not math.isfinite(k):
        return "NaN" if math.isnan(k) else ("Infinity" if k > 0 else "-Infinity")
    return next(iter(json.loads(json.dumps({k: 0}))))


@given(VALUES)
def test_dumps_strict_is_strict_and_keeps_every_value(value: Any) -> None:
    text = dumps_strict(value)
    got = strict(text)
    assert json.dumps(got, sort_keys=True) == json.dumps(_expected(value), sort_keys=True)
    if not _has_nonfinite(value):  # nothing to name: json's own text
        assert text == json.dumps(value)


@given(VALUES)
def test_output_rows_write_null_for_a_non_finite_number(value: Any) -> None:
    got = strict(dumps_strict(value, as_null))
    assert json.dumps(got, sort_keys=True) == json.dumps(
        _expected(value, null=True), sort_keys=True
    )


def _expected(value: Any, null: bool = False) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return (
            None if null else ("NaN" if math.isnan(value) else ("Infinity", "-Infinity")[value < 0])
        )
    if isinstance(value, dict):
        return {_key_text(k): _expected(v, null) for k, v in value.items()}
    if isinstance(value, list):
        return [_expected(v, null) for v in value]
    return value


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(k) or _has_nonfinite(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nonfinite(v) for v in value)
    return False


def test_finite_copies_only_what_it_must() -> None:
    assert finite({"a": [1.5, float("nan")], float("inf"): -0.0}) == {
        "a": [1.5, "NaN"],
        "Infinity": -0.0,
    }


# -- the writers ------------------------------------------------------------------------------

RECORD = (
    '{"session_id": "s1", "tutor_id": "t1", "student_id": "u", '
    '"scheduled_start": "2024-01-01T00:00:00Z", "duration_minutes": NaN, "subject": "m", '
    '"engagement_score": Infinity, "notes": [NaN, -Infinity, {"x": Infinity}]}\n'
    '{"session_id": "s2", "tutor_id": "t1", "student_id": "u", '
    '"scheduled_start": "2024-01-01T00:00:00Z", "duration_minutes": 30, "subject": "m", '
    '"notes": [NaN, -Infinity, 0.5]}\n'
)


def test_the_rejects_file_report_and_output_are_strict(tmp_path: Path) -> None:
    src = tmp_path / "s.jsonl"
    src.write_text(RECORD)
    out, rejects = tmp_path / "out.jsonl", tmp_path / "r.jsonl"
    args = ["--no-db", "--out", str(out), "--rejects", str(rejects), "--json"]
    result = CliRunner().invoke(app, ["enrich", str(src), "--kind", "sessions", *args])
    assert result.exit_code == 1, result.output
    strict(result.stdout)
    (line,) = rejects.read_text().splitlines()
    echoed = strict(line)["values"]
    assert (echoed["duration_minutes"], echoed["engagement_score"]) == ("NaN", "Infinity")
    assert echoed["notes"] == ["NaN", "-Infinity", {"x": "Infinity"}]
    (row,) = [strict(x) for x in out.read_text().splitlines()]
    assert strict(row["notes"]) == [None, None, 0.5]  # an output row's: null


def test_a_json_log_line_is_strict() -> None:
    record = logging.LogRecord("tutormax", logging.INFO, __file__, 1, "m %s", ("x",), None)
    record.rate = float("nan")
    record.counters = {"a": float("inf")}
    doc = strict(JsonFormatter().format(record))
    assert (doc["rate"], doc["counters"], doc["message"]) == ("NaN", {"a": "Infinity"}, "m x")
