"""Duplicate keys (SPEC §4): the stored version is chosen among the versions that pass every
check, newest `updated_at` first, else the last; the choice, the counts and idempotence
hold at every batch size. Each test runs on SQLite and PostgreSQL, at batch sizes 1, 2
and the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dbfixtures import engine_for
from typer.testing import CliRunner

from tutormax_cli import held as held_module
from tutormax_cli.cli import app

AS_OF = "2024-11-09T12:00:00Z"
TUTOR_HEAD = "tutor_id,name,email,onboarding_date,status,subjects,updated_at\n"
SESSION_HEAD = "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject\n"
FEEDBACK_HEAD = "feedback_id,session_id,student_id,tutor_id,overall_rating,submitted_at\n"
BATCH_SIZES = ["1", "2", "50000"]


def write(path: Path, head: str, *rows: str) -> Path:
    path.write_text(head + "".join(r + "\n" for r in rows))
    return path


def run(db_url: str, *args: str | Path, as_of: str = AS_OF) -> tuple[int, dict]:
    result = CliRunner().invoke(
        app, ["enrich", *map(str, args), "--db", db_url, "--as-of", as_of, "--json"]
    )
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def query(db_url: str, sql: str) -> list[tuple]:
    engine = engine_for(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def tally(doc: dict, kind: str) -> dict[str, int]:
    """A kind's counts summed over its files; read = accepted + rejected + duplicates."""
    keys = ("read", "accepted", "rejected", "duplicates", "inserted", "updated", "unchanged")
    out = dict.fromkeys(keys, 0)
    for f in doc["files"]:
        if f["kind"] == kind:
            for k in keys:
                out[k] += f[k]
    assert out["read"] == out["accepted"] + out["rejected"] + out["duplicates"]
    assert out["accepted"] == out["inserted"] + out["updated"] + out["unchanged"]
    return out


@pytest.fixture(name="tutors")
def tutors_fixture(db_url: str, tmp_path: Path) -> Path:
    path = write(
        tmp_path / "tutors.csv",
        TUTOR_HEAD,
        "T1,Ann,ann@x.org,2024-01-15,active,Math,",
        "T2,Bob,bob@x.org,2024-06-01,active,Art,",
    )
    assert run(db_url, path)[0] == 0
    return path


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_a_rejected_later_version_never_hides_a_valid_one(
    db_url: str, tmp_path: Path, tutors: Path, batch: str
) -> None:
    """S1 valid, then S1 naming an unknown tutor: the valid one is stored."""
    src = write(
        tmp_path / "s.csv",
        SESSION_HEAD,
        "S1,T1,st1,2024-11-09T02:00:00Z,60,Math",
        "S2,T2,st2,2024-11-09T02:00:00Z,60,Art",
        "S1,T9,st1,2024-11-09T02:00:00Z,90,Math",
    )
    code, doc = run(db_url, src, "--batch-size", batch, "--rejects", tmp_path / "r.jsonl")
    assert code == 1
    t = tally(doc, "sessions")
    assert (t["accepted"], t["rejected"], t["duplicates"], t["inserted"]) == (2, 1, 0, 2)
    assert query(db_url, "SELECT session_id, tutor_id, duration_minutes FROM sessions "
                 "ORDER BY session_id") == [("S1", "T1", 60), ("S2", "T2", 60)]  # fmt: skip
    reject = json.loads((tmp_path / "r.jsonl").read_text())
    assert reject["row"] == 3 and reject["errors"][0]["code"] == "missing_parent"


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_newest_updated_at_wins_whatever_the_order(db_url: str, tmp_path: Path, batch: str) -> None:
    src = write(
        tmp_path / "t.csv",
        TUTOR_HEAD,
        "T1,Ann,noon@x,2024-01-15,active,Math,2024-11-01T12:00:00Z",
        "T1,Ann,nine@x,2024-01-15,active,Math,2024-11-01T09:00:00Z",
        "T1,Ann,plain@x,2024-01-15,active,Math,",
        "T2,Bob,first@x,2024-01-15,active,Math,",
        "T2,Bob,last@x,2024-01-15,active,Math,",
    )
    code, doc = run(db_url, src, "--batch-size", batch)
    assert code == 0
    t = tally(doc, "tutors")
    assert (t["read"], t["accepted"], t["duplicates"], t["inserted"]) == (5, 2, 3, 2)
    assert query(db_url, "SELECT tutor_id, email FROM tutors ORDER BY tutor_id") == [
        ("T1", "noon@x"),  # the newest updated_at, though not the last row
        ("T2", "last@x"),  # no updated_at: the last
    ]


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_rerunning_input_with_duplicates_changes_nothing(
    db_url: str, tmp_path: Path, tutors: Path, batch: str
) -> None:
    """A second run (at another as-of, so a rewrite would show in enriched_at) is all
    unchanged, and counts the same duplicates."""
    src = write(
        tmp_path / "s.csv",
        SESSION_HEAD,
        "S1,T1,st1,2024-11-09T02:00:00Z,60,Math",
        "S2,T1,st2,2024-11-09T03:00:00Z,60,Math",
        "S1,T1,st1,2024-11-09T02:00:00Z,45,Math",
        "S3,T2,st3,2024-11-09T04:00:00Z,60,Art",
        "S2,T1,st2,2024-11-09T03:00:00Z,30,Math",
    )
    first = tally(run(db_url, src, "--batch-size", batch)[1], "sessions")
    assert (first["inserted"], first["duplicates"]) == (3, 2)
    before = query(db_url, "SELECT * FROM sessions ORDER BY session_id")
    second = tally(run(db_url, src, "--batch-size", batch, as_of="2025-01-01")[1], "sessions")
    assert (second["unchanged"], second["inserted"], second["updated"]) == (3, 0, 0)
    assert second["duplicates"] == 2
    assert query(db_url, "SELECT * FROM sessions ORDER BY session_id") == before
    assert query(db_url, "SELECT session_id, duration_minutes FROM sessions "
                 "ORDER BY session_id") == [("S1", 45), ("S2", 30), ("S3", 60)]  # fmt: skip


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_duplicates_across_files_of_one_kind(
    db_url: str, tmp_path: Path, tutors: Path, batch: str
) -> None:
    """The same key in two files of one run: the later file's version is the last one."""
    a = write(tmp_path / "a.csv", SESSION_HEAD, "S1,T1,st1,2024-11-09T02:00:00Z,60,Math")
    b = write(tmp_path / "b.csv", SESSION_HEAD, "S1,T1,st1,2024-11-09T02:00:00Z,15,Math",
              "S2,T2,st2,2024-11-09T02:00:00Z,60,Art")  # fmt: skip
    code, doc = run(db_url, a, b, "--batch-size", batch)
    assert code == 0
    files = {Path(f["source"]).name: f for f in doc["files"]}
    assert (files["a.csv"]["accepted"], files["a.csv"]["duplicates"]) == (0, 1)
    assert (files["b.csv"]["accepted"], files["b.csv"]["duplicates"]) == (2, 0)
    assert query(db_url, "SELECT duration_minutes FROM sessions WHERE session_id = 'S1'") == [(15,)]


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_a_version_the_database_refuses_does_not_hide_an_earlier_one(
    db_url: str, tmp_path: Path, tutors: Path, batch: str
) -> None:
    """The last version breaks a constraint the DBA added: it is rejected on its own, and
    the earlier valid version is the one stored."""
    engine = engine_for(db_url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE sessions ADD CONSTRAINT no_alchemy CHECK (subject <> 'Alchemy')"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER no_alchemy BEFORE INSERT ON sessions WHEN NEW.subject = "
                "'Alchemy' BEGIN SELECT RAISE(ABORT, 'no alchemy'); END"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER no_alchemy_up BEFORE UPDATE ON sessions WHEN NEW.subject = "
                "'Alchemy' BEGIN SELECT RAISE(ABORT, 'no alchemy'); END"
            )
    engine.dispose()
    src = write(
        tmp_path / "s.csv",
        SESSION_HEAD,
        "S1,T1,st1,2024-11-09T02:00:00Z,60,Math",
        "S2,T1,st2,2024-11-09T02:00:00Z,60,Math",
        "S1,T1,st1,2024-11-09T02:00:00Z,60,Alchemy",
    )
    code, doc = run(db_url, src, "--batch-size", batch, "--rejects", tmp_path / "r.jsonl")
    assert code == 1
    t = tally(doc, "sessions")
    assert (t["accepted"], t["rejected"], t["duplicates"]) == (2, 1, 0)
    assert query(db_url, "SELECT subject FROM sessions WHERE session_id = 'S1'") == [("Math",)]
    reject = json.loads((tmp_path / "r.jsonl").read_text())
    assert reject["row"] == 3 and reject["errors"][0]["code"] == "database"


@pytest.mark.parametrize("held", ["memory", "spilled"])
@pytest.mark.parametrize("batch", ["1", "2", "3", "50000"])
def test_a_best_version_refused_when_settled_falls_back_to_the_next_best(
    db_url: str, tmp_path: Path, batch: str, held: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DBA's unique index on email: K1's newest version shares K2's email. Its trial in
    its own batch may pass (K2 not yet written) and its write at K1's last occurrence then
    be refused: K1's older, valid version was dropped when beaten, so K1 was not stored at
    all at --batch-size 1 (the review of 2026-12-07). Every batch size now stores the same
    rows, counts alike, and rejects K1's newest version as row 1; held in memory or spilled
    to disk (where only the best of each key used to be kept)."""
    if held == "spilled":
        monkeypatch.setattr(held_module, "HELD_BYTES", 0)
    assert run(db_url, write(tmp_path / "none.csv", TUTOR_HEAD), "--kind", "tutors")[0] == 0
    engine = engine_for(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE UNIQUE INDEX tutors_email_uq ON tutors (email)")
    engine.dispose()
    src = write(
        tmp_path / "t.csv",
        TUTOR_HEAD,
        "K1,newer,x@y.org,2024-01-01,active,Math,2024-06-01T00:00:00Z",
        "K2,only,x@y.org,2024-01-01,active,Math,",
        "K1,older,z@y.org,2024-01-01,active,Math,2024-01-01T00:00:00Z",
    )
    code, doc = run(db_url, src, "--batch-size", batch, "--rejects", tmp_path / "r.jsonl")
    assert code == 1
    t = tally(doc, "tutors")
    assert (t["accepted"], t["rejected"], t["duplicates"], t["inserted"]) == (2, 1, 0, 2)
    assert query(db_url, "SELECT tutor_id, name FROM tutors ORDER BY tutor_id") == [
        ("K1", "older"), ("K2", "only")
    ]  # fmt: skip
    reject = json.loads((tmp_path / "r.jsonl").read_text())
    assert reject["row"] == 1 and reject["errors"][0]["code"] == "database"
    assert reject["values"]["name"] == "newer" and "tenure_days" not in reject["values"]


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_output_keeps_every_accepted_version_in_input_order(
    db_url: str, tmp_path: Path, tutors: Path, batch: str
) -> None:
    """--out is a transform of the input: duplicates are in it (counted), rejects are not."""
    src = write(
        tmp_path / "s.csv",
        SESSION_HEAD,
        "S1,T1,st1,2024-11-09T02:00:00Z,60,Math",
        "S1,T9,st1,2024-11-09T02:00:00Z,90,Math",
        "S2,T2,st2,2024-11-09T02:00:00Z,60,Art",
        "S1,T1,st1,2024-11-09T02:00:00Z,45,Math",
    )
    out = tmp_path / "o.jsonl"
    run(db_url, src, "--batch-size", batch, "--out", out, "--rejects", tmp_path / "r.jsonl")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["session_id"], r["duration_minutes"]) for r in lines] == [
        ("S1", 60),
        ("S2", 60),
        ("S1", 45),
    ]


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_without_a_database_duplicates_are_counted_across_batches(
    tmp_path: Path, batch: str
) -> None:
    src = write(
        tmp_path / "s.csv",
        SESSION_HEAD,
        "S1,T1,st1,2024-11-09T02:00:00Z,60,Math",
        "S2,T1,st2,2024-11-09T02:00:00Z,60,Math",
        "S1,T1,st1,2024-11-09T02:00:00Z,45,Math",
        "S1,T1,st1,2024-11-09T02:00:00Z,bad,Math",
    )
    out = tmp_path / "o.csv"
    result = CliRunner().invoke(
        app,
        ["enrich", str(src), "--no-db", "--out", str(out), "--batch-size", batch,
         "--rejects", str(tmp_path / "r.jsonl"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 1
    f = json.loads(result.stdout)["files"][0]
    assert (f["read"], f["accepted"], f["rejected"], f["duplicates"]) == (4, 2, 1, 1)
    assert len(out.read_text().splitlines()) == 1 + 3  # header, every accepted version
