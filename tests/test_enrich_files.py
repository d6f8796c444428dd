"""`tutormax enrich` on files (--no-db): formats, output layout, rejects file, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tutormax_cli.cli import app
from tutormax_cli.fields import fields_for

AS_OF = "2024-11-09T12:00:00Z"
TUTORS_CSV = """tutor_id,name,email,onboarding_date,status,subjects,updated_at,team
T1,Ann,ann@x.org,2024-01-15,active,"[""Math"",""SAT Prep""]",2024-11-09T10:00:00Z,blue
T2,Bob,bob@x.org,2024-10-20 08:00:00+05:30,churned,math|MATH| Physics ,,red
"""
SESSIONS_CSV = """\
session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject,actual_start,no_show
S1,T1,st1,2024-11-09T02:00:00Z,60,Math,2024-11-09T02:05:30Z,false
S2,T2,st2,2024-11-09T15:00:00-05:00,45,Physics,,yes
"""
FEEDBACK_JSONL = (
    '{"feedback_id":"F1","session_id":"S1","student_id":"st1","tutor_id":"T1",'
    '"overall_rating":5,"submitted_at":"2024-11-09T02:01:30Z","patience_rating":4,'
    '"communication_rating":5,"free_text_feedback":" "}\n'
)


def cli(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "tutors": tmp_path / "tutors.csv",
        "sessions": tmp_path / "sessions.csv",
        "feedback": tmp_path / "feedback.jsonl",
    }
    paths["tutors"].write_text(TUTORS_CSV)
    paths["sessions"].write_text(SESSIONS_CSV)
    paths["feedback"].write_text(FEEDBACK_JSONL)
    return paths


def enrich(*args: str | Path) -> tuple[int, dict]:
    code, out, _ = cli("enrich", *args, "--no-db", "--as-of", AS_OF, "--json")
    return code, json.loads(out)


def test_several_kinds_in_one_run_join_feedback_to_sessions(inputs, tmp_path) -> None:
    # Given in reverse order: tutors go first, sessions before feedback.
    code, summary = enrich(
        inputs["feedback"], inputs["sessions"], inputs["tutors"], "--out", tmp_path / "out"
    )
    assert code == 0
    assert [f["kind"] for f in summary["files"]] == ["tutors", "sessions", "feedback"]
    rows = [json.loads(x) for x in (tmp_path / "out" / "feedback.jsonl").read_text().splitlines()]
    # S1 comes from this run; 90 s = exactly 0.025 h, half-even → 0.02.
    assert rows[0]["feedback_delay_hours"] == 0.02
    assert rows[0]["has_text_feedback"] is False


def test_output_columns_are_input_then_derived(inputs, tmp_path) -> None:
    out = tmp_path / "tutors.parquet"
    assert enrich(inputs["tutors"], "--out", out)[0] == 0
    table = pq.read_table(out)
    derived = [f.name for f in fields_for("tutors")]
    assert table.column_names == [
        "tutor_id",
        "name",
        "email",
        "onboarding_date",
        "status",
        "subjects",
        "updated_at",
        "team",
        *derived,
    ]
    assert table.schema.field("onboarding_date").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("subjects").type == pa.list_(pa.string())
    rows = table.to_pylist()
    assert [r["subject_count"] for r in rows] == [2, 2]
    assert [r["team"] for r in rows] == ["blue", "red"]
    assert rows[0]["is_active_today"] is True


def test_an_input_column_named_like_a_derived_field_is_replaced(tmp_path) -> None:
    src = tmp_path / "t.csv"
    src.write_text(TUTORS_CSV.replace(",team\n", ",tenure_days\n", 1))
    out = tmp_path / "t.jsonl"
    assert enrich(src, "--out", out)[0] == 0
    row = json.loads(out.read_text().splitlines()[0])
    assert row["tenure_days"] == 299
    assert list(row).index("tenure_days") > list(row).index("updated_at")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_round_trip_through_every_format(inputs, tmp_path, fmt: str) -> None:
    """Enriched output read back as input gives the same derived values."""
    first = tmp_path / f"first.{fmt}"
    second = tmp_path / f"second.{fmt}"
    assert enrich(inputs["sessions"], "--out", first)[0] == 0
    assert enrich(first, "--out", second, "--kind", "sessions")[0] == 0
    a = _read(first, fmt)
    b = _read(second, fmt)
    # JSON Lines read back has every field of its kind (a record may leave keys out).
    assert [{k: r[k] for k in a[0]} for r in b] == a
    assert all(v is None for r in b for k, v in r.items() if k not in a[0])
    assert [r["time_of_day"] for r in a] == ["night", "evening"]  # 15:00-05:00 = 20:00 UTC


def _read(path: Path, fmt: str) -> list[dict]:
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "jsonl":
        return [json.loads(x) for x in path.read_text().splitlines()]
    import csv

    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_jsonl_output_types(inputs, tmp_path) -> None:
    out = tmp_path / "s.jsonl"
    enrich(inputs["sessions"], "--out", out)
    row = json.loads(out.read_text().splitlines()[0])
    assert row["scheduled_start"] == "2024-11-09T02:00:00Z"
    assert row["duration_minutes"] == 60 and row["no_show"] is False
    assert row["is_late_start"] is True and row["actual_duration_minutes"] == 54


def test_rejects_file_holds_every_error_with_row_numbers(tmp_path) -> None:
    src = tmp_path / "s.csv"
    src.write_text(
        "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject\n"
        "S1,T1,st1,2024-11-09T02:00:00Z,60,Math\n"
        "S2,T1,st1,2024-13-09T02:00:00Z,481,Math\n"
        "S3,T1,st1,2024-11-09T02:00:00Z,60,Math,surplus\n"
        '"S4","T1","st1","2024-11-09T02:00:00Z",60,"multi\nline"\n'
        "S5,T1,st1,2024-11-09T02:00:00Z,60,\n"
    )
    code, summary = enrich(src, "--out", tmp_path / "o.csv")
    assert code == 1
    f = summary["files"][0]
    assert (f["read"], f["accepted"], f["rejected"]) == (5, 2, 3)
    rejects = [json.loads(x) for x in (tmp_path / "o.rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == [2, 3, 5]
    assert {r["source"] for r in rejects} == {str(src)}
    assert rejects[0]["values"]["duration_minutes"] == "481"
    assert [(e["field"], e["code"]) for e in rejects[0]["errors"]] == [
        ("scheduled_start", "invalid_timestamp"),
        ("duration_minutes", "out_of_range"),
    ]
    assert rejects[1]["errors"][0]["code"] == "malformed_row"
    assert rejects[2]["errors"] == [
        {"field": "subject", "code": "required", "message": "is required"}
    ]
    out_rows = (tmp_path / "o.csv").read_text().splitlines()
    assert len(out_rows) == 1 + 3  # header + S1 + S4 (two physical lines)


def test_malformed_last_rows_are_not_lost(tmp_path) -> None:
    src = tmp_path / "t.csv"
    src.write_text(
        "tutor_id,name,email,onboarding_date,status,subjects\n"
        "T1,Ann,a@x,2024-01-01,active,Math\nT2,too,few\nT3\n"
    )
    code, summary = enrich(src, "--out", tmp_path / "o.csv")
    assert code == 1
    f = summary["files"][0]
    assert (f["read"], f["accepted"], f["rejected"]) == (3, 1, 2)


def test_hostile_bytes_reject_their_row_and_keep_the_rest(tmp_path) -> None:
    src = tmp_path / "t.csv"
    big = b"x" * ((1 << 20) + 10)
    src.write_bytes(
        b"tutor_id,name,email,onboarding_date,status,subjects\n"
        b"T1,Ann,a@x,2024-01-01,active,Math\n"
        b"T2,B\x00b,b@x,2024-01-01,active,Math\n"
        b"T3,C\xffy,c@x,2024-01-01,active,Math\n"
        b"T4," + big + b",d@x,2024-01-01,active,Math\n"
        b"T5,Eve,e@x,2024-01-01,active,Math\n"
    )
    code, summary = enrich(src, "--out", tmp_path / "o.parquet")
    assert code == 1
    f = summary["files"][0]
    assert (f["read"], f["accepted"], f["rejected"]) == (5, 2, 3)
    assert pq.read_table(tmp_path / "o.parquet").column("tutor_id").to_pylist() == ["T1", "T5"]
    rejects = [json.loads(x) for x in (tmp_path / "o.rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["errors"][0]["code"]) for r in rejects] == [
        (2, "nul_byte"),
        (3, "invalid_utf8"),
        (4, "field_too_large"),
    ]


def test_jsonl_bad_lines_are_rejected_by_line(tmp_path) -> None:
    src = tmp_path / "f.jsonl"
    good = FEEDBACK_JSONL.strip()
    src.write_bytes(
        good.encode()
        + b"\n\nnot json\n[1]\n"
        + good.replace("F1", "F2").encode()
        + b'\n{"feedback_id": "\xff"}\n'
    )
    code, summary = enrich(src, "--out", tmp_path / "o.jsonl", "--kind", "feedback")
    assert code == 1
    assert summary["files"][0]["read"] == summary["files"][0]["accepted"] + 3
    rejects = [json.loads(x) for x in (tmp_path / "o.rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == [3, 4, 6]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv"], "missing.csv: no such file"),
        (["{tutors}", "--timezone", "Mars/Olympus"], "--timezone 'Mars/Olympus'"),
        (["{tutors}", "--as-of", "tomorrow"], "--as-of 'tomorrow'"),
        (["{tutors}", "--batch-size", "0"], "--batch-size 0"),
        (
            ["{tutors}", "--kind", "lessons"],
            "'lessons' is not one of 'tutors', 'sessions', 'feedback'",
        ),
        (["{tutors}", "--kind", "sessions"], "missing required sessions columns"),
        (["{odd}"], "cannot tell the format"),
        (["{corrupt}"], "not a readable Parquet file"),
        (["{nokind}"], "cannot tell the kind"),
        (["{blanks}"], "'tutor_id ' is not tutor_id: names match exactly"),
        (["{blanks}", "--kind", "tutors"], "the header's 'Email' is not email, 'tutor_id '"),
        (["{tutors}", "{sessions}", "--out", "{tutors}"], "must name a directory"),
    ],
)
def test_fatal_errors_exit_2_and_write_nothing(inputs, tmp_path, args, message) -> None:
    (tmp_path / "x.txt").write_text("a,b\n1,2\n")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "nokind.csv").write_text("session_id,name\n1,2\n")
    (tmp_path / "blanks.csv").write_text(  # names with a blank or a capital: not the fields'
        "tutor_id ,name,Email,onboarding_date,status,subjects\n"
        "T1,Ann,a@x.org,2024-01-15,active,Math\n"
    )
    names = {
        **{k: str(v) for k, v in inputs.items()},
        "odd": str(tmp_path / "x.txt"),
        "corrupt": str(tmp_path / "bad.parquet"),
        "nokind": str(tmp_path / "nokind.csv"),
        "blanks": str(tmp_path / "blanks.csv"),
    }
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out_dir = tmp_path / "never"
    argv = [a.format(**names) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(out_dir)]
    code, out, err = cli("enrich", *argv, "--no-db")
    assert code == 2
    assert message in err
    if "is not one of" in message:  # Typer's own usage error: usage, a hint, one error line
        assert "Traceback" not in err and err.count("Error:") == 1
    else:
        assert len(err.strip().splitlines()) == 1
    assert out == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_json_flag_prints_only_json(inputs) -> None:
    code, out, _ = cli("enrich", inputs["tutors"], "--no-db", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["files"][0]["read"] == 2 and doc["exit_code"] == 0


def test_without_out_nothing_but_the_database_is_written(inputs, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert cli("enrich", inputs["tutors"], "--no-db")[0] == 0
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_every_command_help_has_an_example() -> None:
    for argv in (["enrich"], ["generate"], ["db", "init"]):
        code, out, _ = cli(*argv, "--help")
        assert code == 0
        assert "Example" in out and "tutormax " in out


def _tutor(tid: str, **drop: bool) -> str:
    record = {"tutor_id": tid, "name": "A", "email": "a@b.c", "onboarding_date": "2024-01-01",
              "status": "active", "subjects": "x"}  # fmt: skip
    return json.dumps({k: v for k, v in record.items() if not drop.get(k)})


@pytest.mark.parametrize("kind", [["--kind", "tutors"], []])
@pytest.mark.parametrize("order", ["missing-first", "missing-last"])
def test_a_jsonl_record_lacking_a_required_key_is_its_own_reject(tmp_path, kind, order) -> None:
    """The first record's keys were the file's columns: one that left out `name` had the
    whole file refused (exit 2), while the same records the other way round gave row
    verdicts. A row's verdict depends on the row alone (SPEC §6a)."""
    lines = [_tutor("t1", name=True), _tutor("t2")]
    if order == "missing-last":
        lines.reverse()
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(lines) + "\n")
    code, summary = enrich(src, *kind, "--out", tmp_path / "o.jsonl",
                           "--rejects", tmp_path / "r.jsonl")  # fmt: skip
    assert code == 1 and summary["files"][0]["accepted"] == 1
    reject = json.loads((tmp_path / "r.jsonl").read_text())
    assert reject["values"]["tutor_id"] == "t1"
    assert [(e["field"], e["code"]) for e in reject["errors"]] == [("name", "required")]
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["tutor_id"] for r in out] == ["t2"]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_fields_of_the_kind_only_later_jsonl_records_carry_reach_the_output(
    tmp_path, fmt: str
) -> None:
    """They reached the database but not --out: the output's columns were the first
    record's keys."""
    first = {"feedback_id": "a", "session_id": "s", "student_id": "u", "tutor_id": "t",
             "overall_rating": 4, "submitted_at": "2024-01-01T00:00:00Z", "extra": 1}  # fmt: skip
    later = {**first, "feedback_id": "b", "free_text_feedback": "great",
             "would_recommend": True, "helpfulness_rating": 5, "improvement_areas": ["x"],
             "other": 2}  # fmt: skip
    src = tmp_path / "f.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in (first, later)) + "\n")
    out = tmp_path / f"o.{fmt}"
    assert enrich(src, "--out", out, "--batch-size", "1")[0] == 0
    rows = _read(out, fmt)
    names = list(rows[0])
    assert names[:7] == [*first]  # the first record's keys, in its order, then the kind's
    assert "other" not in names  # not a field of the kind, first seen later: not carried
    b = rows[1]
    if fmt == "csv":
        assert (b["free_text_feedback"], b["would_recommend"]) == ("great", "true")
        assert (b["helpfulness_rating"], b["improvement_areas"]) == ("5", '["x"]')
    else:
        assert (b["free_text_feedback"], b["would_recommend"]) == ("great", True)
        assert (b["helpfulness_rating"], b["improvement_areas"]) == (5, ["x"])
    assert rows[0]["free_text_feedback"] in (None, "")


def test_a_jsonl_file_whose_first_record_is_empty_takes_its_columns_from_the_next(
    tmp_path,
) -> None:
    """`{}` first gave 'no JSON object on any line: pass --kind' (exit 2), false: it is a
    record (rejected, it lacks every required field), and the next one tells the kind."""
    src = tmp_path / "t.jsonl"
    src.write_text("{}\n" + _tutor("t2") + "\n")
    code, summary = enrich(src, "--out", tmp_path / "o.jsonl", "--rejects", tmp_path / "r.jsonl")
    assert code == 1 and summary["files"][0]["kind"] == "tutors"
    assert (summary["files"][0]["accepted"], summary["files"][0]["rejected"]) == (1, 1)
    reject = json.loads((tmp_path / "r.jsonl").read_text())
    assert reject["row"] == 1 and {e["code"] for e in reject["errors"]} == {"required"}


# -- the rejects file keeps input order at every batch size ---------------------------------

ROW_KINDS = st.lists(st.sampled_from(["ok", "ok", "invalid", "malformed"]), min_size=1,
                     max_size=14)  # fmt: skip
_CSV_ROWS = {
    "ok": "T{i},Ann,a{i}@x.org,2024-01-15,active,Math",
    "invalid": "T{i},Ann,a{i}@x.org,2024-01-15,bogus,Math",
    "malformed": "T{i},Ann,a{i}@x.org,2024-01-15,active,Math,extra,fields",
}
_JSONL_ROWS = {
    "ok": '{{"tutor_id": "T{i}", "name": "A", "email": "a{i}@x.org", "onboarding_date": '
    '"2024-01-15", "status": "active", "subjects": ["Math"]}}',
    "invalid": '{{"tutor_id": "T{i}", "name": "A", "email": "a{i}@x.org", "onboarding_date": '
    '"2024-01-15", "status": "bogus", "subjects": ["Math"]}}',
    "malformed": '{{"tutor_id": "T{i}", not json',
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kinds=ROW_KINDS, fmt=st.sampled_from(["csv", "jsonl"]))
def test_rejects_keep_input_order_at_every_batch_size(
    tmp_path: Path, kinds: list[str], fmt: str
) -> None:
    """Malformed rows (which Arrow reports a block at a time) and rows that break a rule,
    anywhere: the rejects file names them in input order, the same at every batch size.
    At --batch-size 1 a CSV's malformed row came before the rule-breaking row above it."""
    kinds = ["ok", *kinds]  # the header's keys (JSON Lines: the first record's)
    rows = _CSV_ROWS if fmt == "csv" else _JSONL_ROWS
    head = "tutor_id,name,email,onboarding_date,status,subjects\n" if fmt == "csv" else ""
    src = tmp_path / f"t.{fmt}"
    src.write_text(head + "\n".join(rows[k].format(i=i) for i, k in enumerate(kinds)) + "\n")
    want = [i + 1 for i, k in enumerate(kinds) if k != "ok"]
    for batch in ("1", "2", "3", "16000"):
        rejects = tmp_path / f"r{batch}.jsonl"
        code, _, err = cli("enrich", src, "--no-db", "--kind", "tutors", "--batch-size", batch,
                           "--rejects", rejects, "--as-of", "2025-01-01")  # fmt: skip
        assert code == (1 if want else 0), err
        got = [json.loads(line)["row"] for line in rejects.read_text().splitlines()] if want else []
        assert got == want, (batch, kinds)
