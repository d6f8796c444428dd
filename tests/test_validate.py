"""Every SPEC §1 rule, on text input (CSV) and native input (JSON/Parquet)."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tutormax_cli import schema
from tutormax_cli.files import Source
from tutormax_cli.validate import validate

GOOD = {
    "tutors": {
        "tutor_id": "T1",
        "name": "Ann",
        "email": "ann@example.org",
        "onboarding_date": "2024-01-15",
        "status": "active",
        "subjects": '["Math"]',
    },
    "sessions": {
        "session_id": "S1",
        "tutor_id": "T1",
        "student_id": "st1",
        "scheduled_start": "2024-11-07T14:00:00Z",
        "duration_minutes": "60",
        "subject": "Math",
    },
    "feedback": {
        "feedback_id": "F1",
        "session_id": "S1",
        "student_id": "st1",
        "tutor_id": "T1",
        "overall_rating": "5",
        "submitted_at": "2024-11-07T16:00:00Z",
    },
}


def run(kind: str, **overrides: object) -> list[tuple[str, str]]:
    """Validate one text row (GOOD + overrides); return its (field, code) errors."""
    row = {**GOOD[kind], **overrides}
    table = pa.table({k: pa.array([v], pa.string()) for k, v in row.items()})
    result = validate(schema.KINDS[kind], table)
    if not result.rejected:
        return []
    return [(e.field, e.code) for e in result.rejected[0].errors]


@pytest.mark.parametrize("kind", list(GOOD))
def test_good_rows_pass(kind: str) -> None:
    assert run(kind) == []


@pytest.mark.parametrize(
    ("kind", "field", "value", "code"),
    [
        ("tutors", "tutor_id", None, "required"),
        ("tutors", "tutor_id", "x" * 51, "too_long"),
        ("tutors", "tutor_id", "", "too_short"),
        ("tutors", "name", "   ", "blank"),
        ("tutors", "name", None, "required"),
        ("tutors", "email", "a@@b", "invalid_email"),
        ("tutors", "email", "a@b@c", "invalid_email"),
        ("tutors", "email", "@b", "invalid_email"),
        ("tutors", "email", "a@", "invalid_email"),
        ("tutors", "email", "ab", "invalid_email"),
        ("tutors", "status", "retired", "invalid_choice"),
        ("tutors", "status", "Active", "invalid_choice"),
        ("tutors", "subjects", None, "required"),
        ("tutors", "subjects", "[broken", "invalid_list"),
        ("tutors", "onboarding_date", "2024-13-45", "invalid_timestamp"),
        ("tutors", "onboarding_date", "2024-02-30", "invalid_timestamp"),
        ("tutors", "onboarding_date", "07/11/2024", "invalid_timestamp"),
        ("tutors", "baseline_sessions_per_week", "-0.5", "out_of_range"),
        ("tutors", "baseline_sessions_per_week", "many", "invalid_float"),
        ("tutors", "updated_at", "yesterday", "invalid_timestamp"),
        ("sessions", "duration_minutes", "481", "out_of_range"),
        ("sessions", "duration_minutes", "-1", "out_of_range"),
        ("sessions", "duration_minutes", "1.5", "invalid_int"),
        ("sessions", "duration_minutes", None, "required"),
        ("sessions", "scheduled_start", None, "required"),
        ("sessions", "subject", " ", "blank"),
        ("sessions", "late_start_minutes", "-1", "out_of_range"),
        ("sessions", "session_number", "0", "out_of_range"),
        ("sessions", "no_show", "maybe", "invalid_bool"),
        ("sessions", "engagement_score", "1.01", "out_of_range"),
        ("sessions", "engagement_score", "-0.01", "out_of_range"),
        ("sessions", "student_id", "s" * 51, "too_long"),
        ("feedback", "overall_rating", "0", "out_of_range"),
        ("feedback", "overall_rating", "6", "out_of_range"),
        ("feedback", "overall_rating", None, "required"),
        ("feedback", "patience_rating", "6", "out_of_range"),
        ("feedback", "submitted_at", "2024-11-07T25:00:00Z", "invalid_timestamp"),
        ("feedback", "would_recommend", "2", "invalid_bool"),
        ("feedback", "session_scheduled_start", "soon", "invalid_timestamp"),
    ],
)
def test_rule_breaks_are_named(kind: str, field: str, value: object, code: str) -> None:
    assert (field, code) in run(kind, **{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("duration_minutes", "0"),
        ("duration_minutes", "480"),
        ("engagement_score", "0"),
        ("engagement_score", "1"),
        ("late_start_minutes", "0"),
        ("session_number", "1"),
        ("scheduled_start", "2024-11-07 14:00:00.250+05:30"),
        ("scheduled_start", "2024-11-07T14:00:00"),
        ("scheduled_start", "2024-11-07"),
        ("scheduled_start", "2024-11-07T14:00:00-05:00"),
        *[("no_show", v) for v in ("true", "FALSE", "1", "0", "yes", "No", "t", "F")],
    ],
)
def test_boundary_values_pass(field: str, value: str) -> None:
    assert run("sessions", **{field: value}) == []


def test_all_errors_of_a_row_are_collected() -> None:
    errors = run("sessions", duration_minutes="999", no_show="maybe", subject=" ", session_id="")
    assert set(errors) == {
        ("duration_minutes", "out_of_range"),
        ("no_show", "invalid_bool"),
        ("subject", "blank"),
        ("session_id", "too_short"),
    }


def test_timestamps_parse_to_utc_instants() -> None:
    values = [
        "2024-11-07T14:00:00Z",
        "2024-11-07 14:00:00.250+05:30",
        "2024-11-07T14:00:00",
        "2024-11-07",
    ]
    table = pa.table(
        {**{k: [v] * 4 for k, v in GOOD["sessions"].items()}, "scheduled_start": values}
    )
    got = validate(schema.SESSIONS, table).table.column("scheduled_start").to_pylist()
    assert [t.isoformat() for t in got] == [
        "2024-11-07T14:00:00+00:00",
        "2024-11-07T08:30:00.250000+00:00",
        "2024-11-07T14:00:00+00:00",
        "2024-11-07T00:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ('["Math","SAT Prep"]', ["Math", "SAT Prep"]),
        ('[ "Math" , "SAT Prep" ]', ["Math", "SAT Prep"]),
        ("[]", []),
        ("Math;SAT Prep", ["Math", "SAT Prep"]),
        ("Math | Physics|", ["Math", "Physics"]),
        ('["a \\"quoted\\" one", "b,c"]', ['a "quoted" one', "b,c"]),
        ("Math", ["Math"]),
    ],
)
def test_list_fields(text: str, items: list[str]) -> None:
    table = pa.table({k: [v] for k, v in {**GOOD["tutors"], "subjects": text}.items()})
    result = validate(schema.TUTORS, table)
    assert result.table.column("subjects").to_pylist() == [items]


def test_keys_are_trimmed() -> None:
    table = pa.table({k: [v] for k, v in {**GOOD["sessions"], "session_id": "  S1 "}.items()})
    assert validate(schema.SESSIONS, table).table.column("session_id").to_pylist() == ["S1"]


def test_native_types_are_accepted() -> None:
    """JSON and Parquet give numbers, booleans and lists natively."""
    table = pa.table(
        {
            **{k: [v] for k, v in GOOD["feedback"].items()},
            "overall_rating": pa.array([4]),
            "would_recommend": pa.array([True]),
            "improvement_areas": pa.array([["pace"]]),
            "patience_rating": pa.array([5.0]),
        }
    )
    result = validate(schema.FEEDBACK, table)
    assert not result.rejected
    row = result.table.to_pylist()[0]
    assert (row["overall_rating"], row["would_recommend"], row["patience_rating"]) == (4, True, 5)
    assert row["improvement_areas"] == ["pace"]


def test_native_non_integral_float_is_not_an_int() -> None:
    table = pa.table(
        {**{k: [v] for k, v in GOOD["feedback"].items()}, "overall_rating": pa.array([4.5])}
    )
    errors = validate(schema.FEEDBACK, table).rejected[0].errors
    assert [(e.field, e.code) for e in errors] == [("overall_rating", "invalid_int")]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"An\x00n", "nul_byte"),
        (b"\xff\xfeAnn", "invalid_utf8"),
        (b"A" * ((1 << 20) + 1), "field_too_large"),
    ],
)
def test_hostile_values_reject_only_their_row(raw: bytes, code: str) -> None:
    rows = {k: pa.array([v.encode()] * 3, pa.binary()) for k, v in GOOD["tutors"].items()}
    names = [b"Bea", raw, b"Cy"]
    table = pa.table({**rows, "name": pa.array(names, pa.binary())})
    result = validate(schema.TUTORS, table)
    assert result.accepted.to_pylist() == [0, 2]
    assert [(r.index, [(e.field, e.code) for e in r.errors]) for r in result.rejected] == [
        (1, [("name", code)])
    ]


def test_extra_columns_are_kept_as_text() -> None:
    table = pa.table({**{k: [v] for k, v in GOOD["tutors"].items()}, "team": ["blue"]})
    assert validate(schema.TUTORS, table).others["team"].to_pylist() == ["blue"]


def test_error_messages_name_the_value() -> None:
    table = pa.table({k: [v] for k, v in {**GOOD["sessions"], "duration_minutes": "481"}.items()})
    (err,) = validate(schema.SESSIONS, table).rejected[0].errors
    assert err.message == "must be between 0 and 480 (got '481')"


def test_nul_inside_a_native_list_item_rejects_the_row() -> None:
    rows = {k: [v, v] for k, v in GOOD["tutors"].items()}
    table = pa.table({**rows, "subjects": pa.array([["Math"], ["Ma\x00th", "Art"]])})
    result = validate(schema.TUTORS, table)
    assert result.accepted.to_pylist() == [0]
    assert [(e.field, e.code) for e in result.rejected[0].errors] == [("subjects", "nul_byte")]


def test_a_lone_surrogate_from_json_rejects_only_its_row() -> None:
    import json

    from tutormax_cli.records import records_to_table

    good = {**GOOD["tutors"], "subjects": ["Math"]}
    bad = json.loads(json.dumps({**good, "name": "A"}).replace('"A"', '"\\ud800"'))
    table = records_to_table([good, bad, good])
    result = validate(schema.TUTORS, table)
    assert result.accepted.to_pylist() == [0, 2]
    assert [(e.field, e.code) for e in result.rejected[0].errors] == [("name", "invalid_utf8")]


def test_text_where_a_list_is_given_is_invalid_string() -> None:
    """A nested value in a string field is `invalid_string` (it was `invalid_choice`)."""
    table = pa.table({**{k: [v] for k, v in GOOD["tutors"].items()}, "location": [["Paris"]]})
    errors = validate(schema.TUTORS, table).rejected[0].errors
    assert [(e.field, e.code) for e in errors] == [("location", "invalid_string")]


Verdicts = dict[int, tuple[str, Any]]


def _verdicts_by_record(path: Path, batch_size: int) -> Verdicts:
    """Record number → ("ok", typed row) or ("bad", [(field, code), ...]), read in batches."""
    src = Source(path)
    out: Verdicts = {}
    for rb in src.batches(batch_size):
        result = validate(src.kind, rb.table)
        typed = result.table.to_pylist()
        for pos, row in zip(result.accepted.to_pylist(), typed, strict=True):
            out[rb.row_number(pos)] = ("ok", row)
        for r in result.rejected:
            out[rb.row_number(r.index)] = ("bad", sorted((e.field, e.code) for e in r.errors))
    return out


def test_verdicts_do_not_depend_on_the_batch_size_csv(tmp_path: Path) -> None:
    """SPEC §6a on a CSV file, with values the old fast path and its fallback judged apart."""
    header = (
        "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject,"
        "late_start_minutes,engagement_score,actual_start\n"
    )
    rows = [
        ("S1", "2024-11-07T14:00:00Z", "60", "+7", "0.5", "2024-11-07 14:00"),
        ("S2", "0000-01-01", "60", "1234567890123456789", "1e309", ""),
        ("S3", "2024-11-07T14:00:00+05:30", "0x10", "5", "nan", "2024-11-07T14"),
        ("S4", "2024-11-07", "60", "", "", "2024-11-07T14:00:00.123456789"),
        ("S5", "not a time", "61", "9223372036854775807", "0.25", "2024-11-07T14:00:00+0530"),
    ]
    path = tmp_path / "sessions.csv"
    lines = [
        f"{s},T1,st1,{start},{d},Math,{late},{e},{act}\n" for s, start, d, late, e, act in rows
    ]
    path.write_text(header + "".join(lines))
    whole = _verdicts_by_record(path, 50)
    assert _verdicts_by_record(path, 1) == whole
    assert _verdicts_by_record(path, 2) == whole
    assert whole[1][1]["late_start_minutes"] == 7
    assert whole[2] == (
        "bad",
        [("engagement_score", "invalid_float"), ("scheduled_start", "invalid_timestamp")],
    )
    assert whole[3] == (
        "bad",
        [
            ("actual_start", "invalid_timestamp"),
            ("duration_minutes", "invalid_int"),
            ("engagement_score", "invalid_float"),
        ],
    )
    assert whole[4][0] == "ok"
    assert whole[5][0] == "bad"


def test_verdicts_do_not_depend_on_the_batch_size_parquet(tmp_path: Path) -> None:
    """Parquet columns of types the old code crashed on or misread, read batch by batch."""
    n = 6
    table = pa.table(
        {
            "tutor_id": pa.array([f"T{i}" for i in range(n)]).dictionary_encode(),
            "name": pa.array([b"Ann", b"B\x00b", b"Cy", b"\xff", b"Di", b"Ed"], pa.large_binary()),
            "email": pa.array(["a@b"] * n),
            "onboarding_date": pa.array([0, 2**62, 86_400_000, None, 1, 2]).view(
                pa.timestamp("ms")
            ),
            "status": pa.array(["active"] * 4 + ["x\x00", "active"]).dictionary_encode(),
            "subjects": pa.array([["Math"], ["a", None], ["b" * ((1 << 20) + 1)], [], None, ["c"]]),
            "age": pa.array([30, 2**64 - 1, 40, None, 7, 8], pa.uint64()),
            "baseline_sessions_per_week": pa.array(
                [decimal.Decimal(v) for v in ("1.50", "2", "0", "3.25", "1", "1e3")],
                pa.decimal128(8, 2),
            ),
        }
    )
    path = tmp_path / "tutors.parquet"
    pq.write_table(table, path)
    whole = _verdicts_by_record(path, 50)
    assert _verdicts_by_record(path, 1) == whole
    assert _verdicts_by_record(path, 4) == whole
    assert whole[1][1]["baseline_sessions_per_week"] == 1.5
    assert whole[2] == (
        "bad",
        [("age", "invalid_int"), ("name", "nul_byte"), ("onboarding_date", "invalid_timestamp")],
    )
    assert whole[3] == ("bad", [("subjects", "field_too_large")])
    assert whole[4] == (
        "bad",
        [("name", "invalid_utf8"), ("onboarding_date", "required")],
    )
    assert whole[5] == ("bad", [("status", "nul_byte"), ("subjects", "required")])
    assert whole[6][1]["baseline_sessions_per_week"] == 1000.0


def test_extra_columns_of_data_are_kept_and_text_ones_checked() -> None:
    """Extra columns: uuids and fixed-size binary are data, kept as they are; text in any
    layout (here dictionary-encoded) is checked like the schema's own columns."""
    uuids = pa.ExtensionArray.from_storage(pa.uuid(), pa.array([b"\xff" * 16] * 2, pa.binary(16)))
    table = pa.table(
        {
            **{k: [v, v] for k, v in GOOD["tutors"].items()},
            "device": uuids,
            "digest": pa.array([b"\xff\x00"] * 2, pa.binary(2)),
            "note": pa.array(["fine", "a\x00b"]).dictionary_encode(),
        }
    )
    result = validate(schema.TUTORS, table)
    assert result.accepted.to_pylist() == [0]
    assert [(e.field, e.code) for e in result.rejected[0].errors] == [("note", "nul_byte")]
    assert result.others["device"].type == pa.uuid()
    assert result.others["digest"].to_pylist() == [b"\xff\x00"]
    assert result.others["note"].to_pylist() == ["fine"]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("name", {"first": "Ann"}, "invalid_string"),
        ("name", ["Ann"], "invalid_string"),
        ("subjects", [1, {"x": 2}], "invalid_list"),
        ("subjects", 5, "invalid_list"),
        ("subjects", {"Math": True}, "invalid_list"),
    ],
    ids=["object-in-string", "array-in-string", "object-item", "number-as-list", "object-as-list"],
)
def test_a_json_value_of_the_wrong_shape_is_rejected_alone(
    field: str, value: Any, code: str
) -> None:
    """A JSON object or array where text belongs (or a scalar where a list belongs) is the
    field's parse error, next to good rows or alone, with no other error for that field."""
    from tutormax_cli.records import records_to_table

    good = dict(GOOD["tutors"], subjects=["Math"])
    bad = {**good, "tutor_id": "T9", field: value}
    for records in ([bad], [good, bad, good]):
        result = validate(schema.TUTORS, records_to_table(records, schema.TUTORS))
        rejected = {r.index: [(e.field, e.code) for e in r.errors] for r in result.rejected}
        assert list(rejected.values()) == [[(field, code)]]
        assert len(result.accepted) == len(records) - 1


def test_a_lone_surrogate_inside_a_json_list_cell_is_invalid_list() -> None:
    raw = pa.table({k: pa.array([str(v)] * 2) for k, v in GOOD["tutors"].items()})
    raw = raw.set_column(
        raw.column_names.index("subjects"), "subjects", pa.array(['["\\ud800"]', "Math"])
    )
    result = validate(schema.TUTORS, raw)
    assert [(r.index, [e.code for e in r.errors]) for r in result.rejected] == [
        (0, ["invalid_list"])
    ]


def test_a_rejected_parquet_row_with_an_out_of_range_instant_is_echoed(tmp_path: Path) -> None:
    """A timestamp Python cannot hold (past year 9999) is rejected and its row shown with
    Arrow's text for the value, not a crash while writing the rejects file."""
    path = tmp_path / "t.parquet"
    row = {k: v for k, v in GOOD["tutors"].items() if k != "onboarding_date"}
    table = pa.table({k: [v, v] for k, v in row.items()}).append_column(
        "onboarding_date", pa.array([2**60, 0], pa.timestamp("ms"))
    )
    pq.write_table(table, path)
    (rb,) = Source(path).batches(10)
    result = validate(schema.TUTORS, rb.table)
    (rejected,) = result.rejected
    assert [e.code for e in rejected.errors] == ["invalid_timestamp"]
    assert "out of range" in str(rb.values(rejected.index)["onboarding_date"])
