"""Every JSON document tutormax writes for people and programs is strict JSON (RFC 8259):
JSON has no NaN or infinity, which Python's json reads and writes as bare tokens.

One rule, one helper (json_bounds.dumps_strict): a non-finite float is written as the string
"NaN", "Infinity" or "-Infinity" — in `--json` reports, the rejects file's echo and JSON log
lines — except in an output file's rows, where it is null (the value has no place in a
typed column), a JSON input's extra values included. What holds a queue envelope as the
stream holds it (`dlq show`, `dlq drain`'s file) is Python's own JSON, like the stream: its
checksum is of Python's json.dumps (SPEC §6), and a drained file is the only copy left.
And a NaN is no list item: a JSON list holding one is refused, as a list that is not JSON.
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


def test_an_extra_columns_nan_is_null_in_the_output(tmp_path: Path) -> None:
    """A JSON Lines input's extra values go to the output as text; a NaN or an infinity
    among them is null, as in a Parquet input's (it was the text "nan", "inf")."""
    src = tmp_path / "t.jsonl"
    src.write_text(
        '{"tutor_id": "t1", "name": "A", "email": "a@b.co", "onboarding_date": "2024-01-01", '
        '"status": "active", "subjects": ["Math"], "score": NaN, "hi": Infinity, '
        '"lo": -Infinity, "ok": 0.5, "word": "NaN"}\n'
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["enrich", str(src), "--no-db", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = [strict(x) for x in out.read_text().splitlines()]
    assert (row["score"], row["hi"], row["lo"], row["ok"], row["word"]) == (
        None, None, None, "0.5", "NaN"
    )  # fmt: skip


def test_a_nan_in_a_list_is_refused_as_not_json(tmp_path: Path) -> None:
    """`subjects` as a JSON list with NaN, Infinity or 1e999 in it (Python's json reads all
    three as floats) is not a list of subjects: invalid_list, from a CSV cell and from a
    JSON Lines array alike. NaN was the subject "nan"."""
    head = "tutor_id,name,email,onboarding_date,status,subjects\n"
    cells = ['"[NaN, ""Math""]"', '"[Infinity]"', '"[1e999, ""Art""]"', '"[1.5, ""Math""]"']
    csv = tmp_path / "t.csv"
    csv.write_text(head + "".join(f"t{i},A,a@b.co,2024-01-01,active,{c}\n"
                                  for i, c in enumerate(cells)))  # fmt: skip
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(
        f'{{"tutor_id": "t{i}", "name": "A", "email": "a@b.co", "onboarding_date": '
        f'"2024-01-01", "status": "active", "subjects": {items}}}\n'
        for i, items in enumerate(['[NaN, "Math"]', "[Infinity]", '[1e999, "Art"]',
                                   '[1.5, "Math"]'])))  # fmt: skip
    for src in (csv, jsonl):
        rejects = tmp_path / f"{src.suffix}.rej"
        out = tmp_path / f"o{src.suffix}"
        args = ["--no-db", "--rejects", str(rejects), "--out", str(out)]
        result = CliRunner().invoke(app, ["enrich", str(src), *args])
        assert result.exit_code == 1, result.output
        got = [strict(x) for x in rejects.read_text().splitlines()]
        assert [(r["row"], r["errors"][0]["code"]) for r in got] == [
            (1, "invalid_list"), (2, "invalid_list"), (3, "invalid_list")
        ], src  # fmt: skip
