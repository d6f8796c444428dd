"""tutormax_cli.generate: seeded, key-consistent, SPEC-valid synthetic data in three formats."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tutormax_cli import schema
from tutormax_cli.generate import generate
from tutormax_cli.schema import Type

COUNTS = {"tutors": 20, "sessions": 200, "feedback": 150}
FORMATS = ("csv", "jsonl", "parquet")

# SPEC §2, strictly: what every generated timestamp string must look like.
TIMESTAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})?)?$"
)
TRUE = {"true", "1", "yes", "t"}
FALSE = {"false", "0", "no", "f"}


# --------------------------------------------------------------------------- reading


def parse_timestamp(text: str) -> datetime:
    assert TIMESTAMP.match(text), f"not a SPEC timestamp: {text!r}"
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_bool(text: str) -> bool:
    folded = text.strip().lower()
    assert folded in TRUE | FALSE, f"not a SPEC boolean: {text!r}"
    return folded in TRUE


def parse_list(text: str) -> list[str]:
    if text.startswith("["):
        items = json.loads(text)
        assert isinstance(items, list) and all(isinstance(i, str) for i in items)
        return items
    return re.split(r"[;|]", text)


def typed(col: schema.Column, value: Any, *, csv_text: bool) -> Any:
    """A raw value as read from the file -> its SPEC type (None for null)."""
    if value is None or (csv_text and value == ""):
        return None
    if col.type is Type.TIMESTAMP:
        return value if isinstance(value, datetime) else parse_timestamp(value)
    if col.type is Type.BOOL:
        return value if isinstance(value, bool) else parse_bool(value)
    if col.type is Type.LIST:
        return value if isinstance(value, list) else parse_list(value)
    if col.type is Type.INT:
        assert isinstance(value, int) or re.fullmatch(r"-?\d+", value), value
        return int(value)
    if col.type is Type.FLOAT:
        return float(value)
    assert isinstance(value, str)
    return value


def read(path: Path, kind: str) -> list[dict[str, Any]]:
    """Rows of a generated file, typed per schema.py (and checked to be parseable)."""
    k = schema.KINDS[kind]
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert tuple(reader.fieldnames or ()) == k.column_names
            raw = list(reader)
        return [{c.name: typed(c, r[c.name], csv_text=True) for c in k.columns} for r in raw]
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        raw = [json.loads(line) for line in lines]
        for r in raw:
            assert set(r) <= set(k.column_names)
        return [{c.name: typed(c, r.get(c.name), csv_text=False) for c in k.columns} for r in raw]
    table = pq.read_table(path)
    expected = pa.schema([pa.field(c.name, c.type.arrow) for c in k.columns])
    assert table.schema.equals(expected), table.schema
    return table.to_pylist()


def rule_errors(kind: str, row: dict[str, Any]) -> list[str]:
    """Every SPEC §1 rule a typed row breaks, checked from schema.py's column rules."""
    errors = []
    for col in schema.KINDS[kind].columns:
        v = row[col.name]
        if v is None:
            if col.required:
                errors.append(f"{col.name}: required")
            continue
        if isinstance(v, str):
            if col.min_chars is not None and len(v) < col.min_chars:
                errors.append(f"{col.name}: too short")
            if col.max_chars is not None and len(v) > col.max_chars:
                errors.append(f"{col.name}: too long")
            if col.non_blank and not v.strip():
                errors.append(f"{col.name}: blank")
            if col.email:
                local, at, domain = v.partition("@")
                if v.count("@") != 1 or not local or not domain:
                    errors.append(f"{col.name}: email")
            if col.choices is not None and v not in col.choices:
                errors.append(f"{col.name}: choice")
        if col.min_value is not None and v < col.min_value:
            errors.append(f"{col.name}: below {col.min_value}")
        if col.max_value is not None and v > col.max_value:
            errors.append(f"{col.name}: above {col.max_value}")
        if col.type is Type.LIST and col.required and not v:
            errors.append(f"{col.name}: empty")
    return errors


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("generated")
    return {fmt: generate(root / fmt, **COUNTS, seed=11, fmt=fmt, batch_rows=64) for fmt in FORMATS}


@pytest.fixture(scope="module")
def rows(generated: dict[str, dict[str, Path]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    return {
        fmt: {kind: read(path, kind) for kind, path in paths.items()}
        for fmt, paths in generated.items()
    }


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_and_row_counts(generated: dict[str, dict[str, Path]], rows: Any, fmt: str) -> None:
    paths = generated[fmt]
    assert set(paths) == {"tutors", "sessions", "feedback"}
    for kind, path in paths.items():
        assert path.name == f"{kind}.{fmt}" and path.is_file()
        assert len(rows[fmt][kind]) == COUNTS[kind]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_row_is_valid(rows: Any, fmt: str) -> None:
    for kind, kind_rows in rows[fmt].items():
        for i, row in enumerate(kind_rows, 1):
            assert rule_errors(kind, row) == [], f"{fmt} {kind} row {i}: {row}"


def assert_consistent(
    tutors: list[dict[str, Any]], sessions: list[dict[str, Any]], feedback: list[dict[str, Any]]
) -> None:
    """Unique keys; sessions name known tutors; feedback names known sessions, with their tutor."""
    tutor_ids = {r["tutor_id"] for r in tutors}
    by_session = {r["session_id"]: r for r in sessions}
    assert len(tutor_ids) == len(tutors)
    assert len(by_session) == len(sessions)
    assert len({r["feedback_id"] for r in feedback}) == len(feedback)
    for s in sessions:
        assert s["tutor_id"] in tutor_ids
    for f in feedback:
        session = by_session[f["session_id"]]
        assert f["tutor_id"] == session["tutor_id"]
        assert f["student_id"] == session["student_id"]
        end = session["scheduled_start"] + timedelta(minutes=session["duration_minutes"])
        assert end < f["submitted_at"] <= end + timedelta(days=15)
        if f["session_scheduled_start"] is not None:
            assert f["session_scheduled_start"] == session["scheduled_start"]
    carried = sum(f["session_scheduled_start"] is not None for f in feedback)
    assert 0.3 < carried / len(feedback) < 0.7


@pytest.mark.parametrize("fmt", FORMATS)
def test_keys_are_unique_and_consistent(rows: Any, fmt: str) -> None:
    assert_consistent(*(rows[fmt][k] for k in ("tutors", "sessions", "feedback")))


def test_sample_data_is_valid_and_consistent() -> None:
    sample = Path(__file__).resolve().parent.parent / "sample_data"
    files = {"tutors": "tutors.csv", "sessions": "sessions.csv", "feedback": "feedback.jsonl"}
    data = {kind: read(sample / name, kind) for kind, name in files.items()}
    for kind, kind_rows in data.items():
        for i, row in enumerate(kind_rows, 1):
            assert rule_errors(kind, row) == [], f"sample_data/{files[kind]} row {i}"
    assert_consistent(data["tutors"], data["sessions"], data["feedback"])


def test_formats_hold_the_same_values(rows: Any) -> None:
    for kind in COUNTS:
        assert rows["csv"][kind] == rows["parquet"][kind], kind
        assert rows["jsonl"][kind] == rows["parquet"][kind], kind


def test_sessions_start_after_their_tutor_onboards(rows: Any) -> None:
    onboarded = {t["tutor_id"]: t["onboarding_date"] for t in rows["parquet"]["tutors"]}
    for s in rows["parquet"]["sessions"]:
        assert s["scheduled_start"] > onboarded[s["tutor_id"]]
        if s["actual_start"] is not None and s["actual_end"] is not None:
            assert s["actual_end"] > s["actual_start"]
        if s["no_show"]:
            assert s["actual_start"] is None


def test_csv_looks_like_producer_output(generated: dict[str, dict[str, Path]]) -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in generated["csv"].values())
    for offset in ('Z"', '+05:30"', '-05:00"'):
        assert offset in text, offset
    assert re.search(r'"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"', text)  # no offset
    assert re.search(r'"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}', text)  # space separator
    assert re.search(r":\d{2}\.\d{3}(?:\d{3})?[Z+\-\"]", text)  # fractional seconds
    assert re.search(r'(?m)^"tut_\d+","[^"]+","[^"]+","\d{4}-\d{2}-\d{2}"', text)  # bare date
    for spelling in ('"true"', '"1"', '"yes"', '"no"', '"0"', '"false"'):
        assert spelling in text, spelling
    assert '"[""' in text and re.search(r'"[A-Za-z ]+;[A-Za-z ]+', text)  # JSON and ; lists
    assert ",," in text  # nulls in optional columns


def test_optional_columns_have_nulls_and_values(rows: Any) -> None:
    for kind, kind_rows in rows["parquet"].items():
        for col in schema.KINDS[kind].columns:
            values = [r[col.name] for r in kind_rows]
            assert any(v is not None for v in values), f"{kind}.{col.name} never set"
            if col.required:
                continue
            if kind == "feedback" and col.name == "is_first_session":
                continue  # copied from the session, may happen to be all set
            assert any(v is None for v in values), f"{kind}.{col.name} never null"


def test_value_variety(rows: Any) -> None:
    sessions, feedback = rows["parquet"]["sessions"], rows["parquet"]["feedback"]
    tutors = rows["parquet"]["tutors"]
    assert {t["status"] for t in tutors} == {"active", "inactive", "churned"}
    assert {f["overall_rating"] for f in feedback} == {1, 2, 3, 4, 5}
    assert any(s["no_show"] for s in sessions)
    assert any(s["late_start_minutes"] is not None for s in sessions)
    assert any(
        f["free_text_feedback"] is not None and not f["free_text_feedback"].strip()
        for f in feedback
    )  # whitespace-only text
    assert any(f["improvement_areas"] == [] for f in feedback)
    assert any(f["subject_knowledge_rating"] is None for f in feedback)
    texts = [f["free_text_feedback"] or "" for f in feedback]
    assert any('"' in t for t in texts) and "\t" in texts  # JSON/CSV escaping is exercised
    # subject lists that subject_count must dedupe: another case, padding or a blank item
    assert any(
        len({x.strip().casefold() for x in t["subjects"] if x.strip()}) < len(t["subjects"])
        for t in tutors
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_seed_same_bytes(tmp_path: Path, generated: Any, fmt: str) -> None:
    again = generate(tmp_path, **COUNTS, seed=11, fmt=fmt, batch_rows=64)
    for kind, path in again.items():
        assert path.read_bytes() == generated[fmt][kind].read_bytes(), kind


def test_batch_size_does_not_change_the_data(tmp_path: Path, generated: Any) -> None:
    for batch_rows in (13, 10_000):
        again = generate(tmp_path / str(batch_rows), **COUNTS, seed=11, batch_rows=batch_rows)
        for kind, path in again.items():
            assert path.read_bytes() == generated["csv"][kind].read_bytes(), (batch_rows, kind)


def test_other_seed_other_data(tmp_path: Path, generated: Any) -> None:
    other = generate(tmp_path, **COUNTS, seed=12, batch_rows=64)
    for kind, path in other.items():
        assert path.read_bytes() != generated["csv"][kind].read_bytes(), kind


def test_progress_reports_rows_per_kind(tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []
    generate(
        tmp_path,
        tutors=5,
        sessions=25,
        feedback=10,
        batch_rows=10,
        progress=lambda kind, n: calls.append((kind, n)),
    )
    assert calls == [
        ("tutors", 5),
        ("sessions", 10),
        ("sessions", 20),
        ("sessions", 25),
        ("feedback", 10),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_rows_still_writes_files(tmp_path: Path, fmt: str) -> None:
    paths = generate(tmp_path, tutors=0, sessions=0, feedback=0, fmt=fmt)
    for kind, path in paths.items():
        assert path.is_file()
        if fmt == "csv":
            header = path.read_text(encoding="utf-8").splitlines()
            assert header == [",".join(f'"{c}"' for c in schema.KINDS[kind].column_names)]
        elif fmt == "parquet":
            assert pq.read_table(path).num_rows == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "xlsx"}, "unknown format"),
        ({"tutors": -1}, "tutors must be >= 0"),
        ({"tutors": 0}, "sessions need at least one tutor"),
        ({"sessions": 0, "feedback": 5}, "feedback needs at least one session"),
        ({"batch_rows": 0}, "batch_rows"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"tutors": 2, "sessions": 3, "feedback": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, **args)
