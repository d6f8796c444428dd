"""`tutormax enrich` persisting to SQLite and PostgreSQL (each test runs on both)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbfixtures import engine_for
from typer.testing import CliRunner

from tutormax_cli.cli import app

AS_OF = "2024-11-09T12:00:00Z"
TUTOR_HEAD = "tutor_id,name,email,onboarding_date,status,subjects,updated_at\n"
SESSION_HEAD = "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject\n"
FEEDBACK_HEAD = "feedback_id,session_id,student_id,tutor_id,overall_rating,submitted_at\n"


def write(path: Path, head: str, *rows: str) -> Path:
    path.write_text(head + "".join(r + "\n" for r in rows))
    return path


def tutors_csv(
    tmp: Path,
    name: str = "tutors.csv",
    updated: str = "2024-11-01T00:00:00Z",
    email: str = "ann@x.org",
) -> Path:
    return write(
        tmp / name,
        TUTOR_HEAD,
        f"T1,Ann,{email},2024-01-15,active,Math,{updated}",
        f"T2,Bob,bob@x.org,2024-06-01,inactive,Math;Art,{updated}",
    )


def sessions_csv(tmp: Path, *extra: str) -> Path:
    return write(
        tmp / "sessions.csv",
        SESSION_HEAD,
        "S1,T1,st1,2024-11-09T02:00:00Z,60,Math",
        "S2,T2,st2,2024-11-09T15:00:00Z,45,Art",
        *extra,
    )


def enrich(db_url: str, *args: str | Path) -> tuple[int, dict, str]:
    result = CliRunner().invoke(
        app, ["enrich", *map(str, args), "--db", db_url, "--as-of", AS_OF, "--json"]
    )
    doc = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, doc, result.stderr


def by_kind(doc: dict) -> dict[str, dict]:
    return {f["kind"]: f for f in doc["files"]}


def counts(f: dict) -> tuple[int, int, int, int]:
    return f["inserted"], f["updated"], f["unchanged"], f["rejected"]


def rows(db_url: str, sql: str) -> list[tuple]:
    engine = engine_for(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def test_load_then_rerun_changes_nothing(db_url: str, tmp_path: Path) -> None:
    paths = (tutors_csv(tmp_path), sessions_csv(tmp_path))
    code, doc, _ = enrich(db_url, *paths)
    assert code == 0
    assert [counts(f) for f in doc["files"]] == [(2, 0, 0, 0), (2, 0, 0, 0)]
    stamp = rows(db_url, "SELECT enriched_at FROM sessions ORDER BY session_id")
    code, doc, _ = enrich(db_url, *paths)
    assert code == 0
    assert [counts(f) for f in doc["files"]] == [(0, 0, 2, 0), (0, 0, 2, 0)]
    assert rows(db_url, "SELECT enriched_at FROM sessions ORDER BY session_id") == stamp
    assert rows(db_url, "SELECT count(*) FROM sessions") == [(2,)]


def test_changed_rows_are_updated_and_stale_ones_are_not(db_url: str, tmp_path: Path) -> None:
    enrich(db_url, tutors_csv(tmp_path))
    newer = tutors_csv(tmp_path, "newer.csv", "2024-11-05T00:00:00Z", email="ann@new.org")
    assert counts(by_kind(enrich(db_url, newer)[1])["tutors"]) == (0, 2, 0, 0)
    older = tutors_csv(tmp_path, "older.csv", "2024-10-01T00:00:00Z", email="ann@old.org")
    assert counts(by_kind(enrich(db_url, older)[1])["tutors"]) == (0, 0, 2, 0)
    assert rows(db_url, "SELECT email FROM tutors WHERE tutor_id = 'T1'") == [("ann@new.org",)]


def test_unknown_parents_are_rejected_and_same_run_parents_count(
    db_url: str, tmp_path: Path
) -> None:
    sessions = sessions_csv(tmp_path, "S3,T9,st3,2024-11-09T15:00:00Z,45,Art")
    code, doc, _ = enrich(
        db_url, sessions, tutors_csv(tmp_path), "--rejects", tmp_path / "rejects.jsonl"
    )
    assert code == 1
    assert counts(by_kind(doc)["sessions"]) == (2, 0, 0, 1)
    (reject,) = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert reject["row"] == 3
    assert reject["errors"] == [
        {
            "field": "tutor_id",
            "code": "missing_parent",
            "message": "'T9' is not a known tutor (not in tutors)",
        }
    ]


def test_feedback_delay_falls_back_to_the_sessions_table(db_url: str, tmp_path: Path) -> None:
    enrich(db_url, tutors_csv(tmp_path), sessions_csv(tmp_path))
    fb = write(
        tmp_path / "feedback.csv",
        FEEDBACK_HEAD,
        "F1,S1,st1,T1,5,2024-11-09T03:30:00Z",
        "F2,S9,st1,T1,5,2024-11-09T03:30:00Z",
    )
    code, doc, _ = enrich(db_url, fb, "--rejects", tmp_path / "r.jsonl")
    assert code == 1  # F2 names an unknown session
    assert counts(by_kind(doc)["feedback"]) == (1, 0, 0, 1)
    assert rows(db_url, "SELECT feedback_delay_hours FROM feedback") == [(1.5,)]


def test_duplicate_keys_keep_the_last_row(db_url: str, tmp_path: Path) -> None:
    src = write(
        tmp_path / "t.csv",
        TUTOR_HEAD,
        "T1,Ann,a@x,2024-01-15,active,Math,",
        "T1 ,Ann,last@x,2024-01-15,active,Math,",
    )
    code, doc, _ = enrich(db_url, src)
    assert code == 0
    f = by_kind(doc)["tutors"]
    # read = accepted + rejected + duplicates; the last version is the one stored, once
    assert (f["read"], f["accepted"], f["duplicates"]) == (2, 1, 1)
    assert counts(f) == (1, 0, 0, 0)
    assert rows(db_url, "SELECT tutor_id, email FROM tutors") == [("T1", "last@x")]


def test_a_row_the_database_refuses_is_isolated(db_url: str, tmp_path: Path) -> None:
    """One row in a batch of 500 breaks a constraint the DBA added: the other 499 land."""
    enrich(db_url, tutors_csv(tmp_path))
    engine = engine_for(db_url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE sessions ADD CONSTRAINT no_alchemy CHECK (subject <> 'Alchemy')"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER no_alchemy BEFORE INSERT ON sessions WHEN NEW.subject = 'Alchemy' "
                "BEGIN SELECT RAISE(ABORT, 'no alchemy'); END"
            )
    engine.dispose()
    lines = [
        f"S{i},T1,st{i},2024-11-09T02:00:00Z,60,{'Alchemy' if i == 250 else 'Math'}"
        for i in range(500)
    ]
    src = write(tmp_path / "s.csv", SESSION_HEAD, *lines)
    code, doc, _ = enrich(db_url, src, "--batch-size", "500", "--rejects", tmp_path / "r.jsonl")
    assert code == 1
    assert counts(by_kind(doc)["sessions"]) == (499, 0, 0, 1)
    (reject,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert reject["row"] == 251 and reject["errors"][0]["code"] == "database"
    assert "alchemy" in reject["errors"][0]["message"].lower()
    assert rows(db_url, "SELECT count(*) FROM sessions") == [(499,)]


def test_atomic_run_stopped_by_max_errors_leaves_the_database_as_it_was(
    db_url: str, tmp_path: Path
) -> None:
    enrich(db_url, tutors_csv(tmp_path))
    lines = [f"S{i},{'T1' if i % 10 else 'T9'},st,2024-11-09T02:00:00Z,60,Math" for i in range(50)]
    src = write(tmp_path / "s.csv", SESSION_HEAD, *lines)
    code, doc, _ = enrich(
        db_url,
        src,
        "--batch-size",
        "10",
        "--max-errors",
        "2",
        "--atomic",
        "--rejects",
        tmp_path / "r.jsonl",
    )
    assert code == 2  # stopped: the rest not done
    assert "more than 2 rows rejected" in doc["stopped"]
    assert rows(db_url, "SELECT count(*) FROM sessions") == [(0,)]
    # Keys held until a later occurrence (each of S0-S19 comes again 20 rows on) get their
    # verdicts too: every row read is accepted, rejected or a duplicate (18 of 30 rows
    # were counted nowhere), though nothing was written.
    dup = write(tmp_path / "dup.csv", SESSION_HEAD, *(line.replace(f"S{i},", f"S{i % 20},", 1)
                                                    for i, line in enumerate(lines)))  # fmt: skip
    code, doc, _ = enrich(db_url, dup, "--batch-size", "10", "--max-errors", "2", "--atomic",
                          "--rejects", tmp_path / "r2.jsonl")  # fmt: skip
    assert code == 2 and "nothing was written" in doc["stopped"]
    f = doc["files"][0]
    assert f["read"] == 30 and f["read"] == f["accepted"] + f["rejected"] + f["duplicates"]
    assert rows(db_url, "SELECT count(*) FROM sessions") == [(0,)]
    # Without --atomic the batches before the stop stay committed (on PostgreSQL, batches
    # are written side by side: the one in flight at the stop is committed too), and the
    # summary counts exactly what the database holds.
    code, doc, _ = enrich(
        db_url, src, "--batch-size", "10", "--max-errors", "2", "--rejects", tmp_path / "r.jsonl"
    )
    assert code == 2 and f"{doc['files'][0]['inserted']} rows were committed" in doc["stopped"]
    ((stored,),) = rows(db_url, "SELECT count(*) FROM sessions")
    assert stored == doc["files"][0]["inserted"]
    assert stored in (27, 36)


def test_dry_run_writes_nothing(db_url: str, tmp_path: Path) -> None:
    code, doc, _ = enrich(db_url, tutors_csv(tmp_path), sessions_csv(tmp_path), "--dry-run")
    assert code == 0
    assert [counts(f) for f in doc["files"]] == [(2, 0, 0, 0), (2, 0, 0, 0)]
    engine = engine_for(db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_unreachable_database_exits_2_with_masked_url(tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    code, doc, err = enrich(
        "postgresql://app:sekret@127.0.0.1:1/tutoring", tutors_csv(tmp_path), "--out", out
    )
    assert code == 2 and doc == {}
    assert "postgresql://app:***@127.0.0.1:1/tutoring" in err
    assert "sekret" not in err
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_default_database_is_sqlite_in_the_working_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUTORMAX_DATABASE_URL", raising=False)
    result = CliRunner().invoke(app, ["enrich", str(tutors_csv(tmp_path)), "--as-of", AS_OF])
    assert result.exit_code == 0
    assert rows("sqlite:///tutormax.db", "SELECT count(*) FROM tutors") == [(2,)]


def test_dotenv_supplies_the_database_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUTORMAX_DATABASE_URL", raising=False)
    (tmp_path / ".env").write_text("TUTORMAX_DATABASE_URL=sqlite:///from-dotenv.db\n")
    from tutormax_cli.cli import run

    monkeypatch.setattr("sys.argv", ["tutormax", "enrich", str(tutors_csv(tmp_path)), "--json"])
    try:
        code = run()
    finally:  # load_dotenv wrote it into os.environ; other tests must not see it
        os.environ.pop("TUTORMAX_DATABASE_URL", None)
    assert code == 0
    assert (tmp_path / "from-dotenv.db").exists()


def test_a_failure_mid_run_says_how_many_rows_were_committed(db_url: str, tmp_path: Path) -> None:
    """The database loses the table after the first batch: exit 2, committed rows counted."""
    from datetime import UTC, datetime

    from tutormax_cli.errors import DatabaseError
    from tutormax_cli.files import EnrichOptions, run_enrich
    from tutormax_cli.store import Store

    enrich(db_url, tutors_csv(tmp_path))
    lines = [f"S{i},T1,st{i},2024-11-09T02:00:00Z,60,Math" for i in range(30)]
    src = write(tmp_path / "s.csv", SESSION_HEAD, *lines)
    out = tmp_path / "o.parquet"

    def sabotage(source: str, kind: str, rows_done: int, done: float) -> None:
        engine = engine_for(db_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS feedback")
            conn.exec_driver_sql("DROP TABLE IF EXISTS sessions")
        engine.dispose()

    opts = EnrichOptions(paths=[src], as_of=datetime(2024, 11, 9, tzinfo=UTC), batch_size=10,
                         out=out)  # fmt: skip
    with pytest.raises(DatabaseError) as failure:
        run_enrich(opts, lambda: Store.connect(db_url), progress=sabotage)
    # On PostgreSQL the second batch is written beside the first: it may commit before the
    # tables go, and is then counted too.
    committed = re.search(r"(\d+) rows were committed before it", failure.value.message)
    assert committed and int(committed[1]) in (10, 20), failure.value.message
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_sqlite_file_in_a_new_folder_is_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'folder' / 'x.db'}"
    code, doc, _ = enrich(url, tutors_csv(tmp_path))
    assert code == 0 and rows(url, "SELECT count(*) FROM tutors") == [(2,)]


def test_dotenv_is_read_as_python_dotenv_reads_it_from_a_parent_folder(
    tmp_path: Path, monkeypatch
) -> None:
    """`export`, quotes and inline comments; the file is found from the working folder
    upwards; a real environment variable wins; other keys are not put in the environment."""
    from tutormax_cli.config import load_dotenv

    (tmp_path / ".env").write_text(
        "export TUTORMAX_DATABASE_URL='sqlite:///quoted.db'  # the database\n"
        'TUTORMAX_TIMEZONE="Europe/Paris" # inline comment\n'
        "TUTORMAX_GROUP=from-dotenv\n"
        "OTHER_TOOL_SECRET=not-ours\n"
    )
    below = tmp_path / "a" / "b"
    below.mkdir(parents=True)
    monkeypatch.chdir(below)
    for key in ("TUTORMAX_DATABASE_URL", "TUTORMAX_TIMEZONE", "OTHER_TOOL_SECRET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TUTORMAX_GROUP", "from-the-environment")
    try:
        assert load_dotenv() == tmp_path / ".env"
        assert os.environ["TUTORMAX_DATABASE_URL"] == "sqlite:///quoted.db"
        assert os.environ["TUTORMAX_TIMEZONE"] == "Europe/Paris"
        assert os.environ["TUTORMAX_GROUP"] == "from-the-environment"
        assert "OTHER_TOOL_SECRET" not in os.environ
    finally:
        os.environ.pop("TUTORMAX_DATABASE_URL", None)
        os.environ.pop("TUTORMAX_TIMEZONE", None)


@pytest.mark.postgres
def test_a_held_version_the_database_refuses_when_settled_is_counted_once(
    pg_url: str, tmp_path: Path
) -> None:
    """A duplicated key's best version passes its trial write, then the database refuses it
    when the key is settled (a trigger refuses S5 on every attempt after its first: a
    sequence is not rolled back with the trial). It is one rejected row, in the rejects
    file, and read = accepted + rejected + duplicates still holds (accepted was lowered
    twice: once for a row it never counted)."""
    enrich(pg_url, tutors_csv(tmp_path))
    engine = engine_for(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SEQUENCE s5_attempts")
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse_s5() RETURNS trigger AS $$ BEGIN "
            "IF NEW.session_id = 'S5' AND nextval('s5_attempts') > 1 THEN "
            "RAISE EXCEPTION 'S5 refused again'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_s5 BEFORE INSERT OR UPDATE ON sessions "
            "FOR EACH ROW EXECUTE FUNCTION refuse_s5()"
        )
    engine.dispose()
    lines = [f"S{i},T1,st{i},2024-11-09T02:00:00Z,{30 + p},Math" for p in (0, 1) for i in range(10)]
    src = write(tmp_path / "s.csv", SESSION_HEAD, *lines)
    code, doc, _ = enrich(pg_url, src, "--batch-size", "10", "--rejects", tmp_path / "r.jsonl")
    assert code == 1
    f = by_kind(doc)["sessions"]
    assert (f["read"], f["accepted"], f["rejected"], f["duplicates"]) == (20, 9, 2, 9)
    assert f["read"] == f["accepted"] + f["rejected"] + f["duplicates"]
    assert counts(f) == (9, 0, 0, 2)
    rejects = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(rejects) == 2 and all("refused again" in r["errors"][0]["message"] for r in rejects)
    assert rows(pg_url, "SELECT count(*) FROM sessions WHERE session_id = 'S5'") == [(0,)]


@pytest.mark.postgres
@pytest.mark.parametrize("present", [False, True], ids=["fresh-copy", "upsert"])
@pytest.mark.parametrize("errcode", ["P0001", "XX000", "0A000"])
def test_a_row_a_trigger_refuses_is_isolated(
    pg_url: str, tmp_path: Path, present: bool, errcode: str
) -> None:
    """A DBA's trigger RAISEs for one row, with any SQLSTATE (PL/pgSQL's own P0001, or one
    the DBA chose: an internal error, a feature not supported): the row is rejected with
    the trigger's words and the others land, on the COPY straight into an empty table and
    on the upsert alike. It was an internal error (exit 3) with a traceback."""
    enrich(pg_url, tutors_csv(tmp_path))
    lines = [f"S{i},T1,st{i},2024-11-09T02:00:00Z,60,Math" for i in range(300)]
    if present:  # every key stored already: the batch goes through the upsert
        enrich(pg_url, write(tmp_path / "first.csv", SESSION_HEAD, *lines))
        lines = [line.replace(",60,", ",45,") for line in lines]
    engine = engine_for(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse_s7() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.session_id = 'S7' THEN RAISE EXCEPTION 'S7 is on hold' USING ERRCODE = "
            f"'{errcode}'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_s7 BEFORE INSERT OR UPDATE ON sessions "
            "FOR EACH ROW EXECUTE FUNCTION refuse_s7()"
        )
    engine.dispose()
    src = write(tmp_path / "s.csv", SESSION_HEAD, *lines)
    code, doc, err = enrich(pg_url, src, "--rejects", tmp_path / "r.jsonl")
    assert code == 1, err
    f = by_kind(doc)["sessions"]
    assert (f["accepted"], f["rejected"]) == (299, 1)
    (reject,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert reject["row"] == 8 and "S7 is on hold" in reject["errors"][0]["message"]
    want = 45 if present else 60
    assert rows(pg_url, f"SELECT count(*) FROM sessions WHERE duration_minutes = {want}") == [
        (299,)
    ]
