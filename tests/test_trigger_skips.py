"""A row the database keeps out without an error: a DBA's BEFORE trigger that returns NULL
(PostgreSQL) or calls RAISE(IGNORE) (SQLite) skips the insert, and neither COPY nor the
upsert nor SQLite's change count says so. Such a row was counted as stored (the fresh
COPY) or as unchanged (the upsert), and was in no rejects file: lost. Now each such row is
refused with that reason (rejects file, exit 1; the worker's dead letter), and counted so.

Both backends, both PostgreSQL write paths (the COPY straight into an empty table, the
staged upsert), the worker, a duplicated key's held versions; a trigger that changes a
row (and stores it) refuses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_enrich_db import (
    SESSION_HEAD,
    by_kind,
    counts,
    engine_for,
    enrich,
    rows,
    tutors_csv,
    write,
)

SKIP = "Skip"  # the subject the trigger keeps out


def _ddl(db_url: str, postgresql: list[str], sqlite: list[str]) -> None:
    """Run the DBA's statements for the URL's database."""
    engine = engine_for(db_url)
    with engine.begin() as conn:
        for sql in postgresql if engine.dialect.name == "postgresql" else sqlite:
            conn.exec_driver_sql(sql)
    engine.dispose()


def _skip_trigger(db_url: str, *, on_update: bool = False) -> None:
    events = "INSERT OR UPDATE" if on_update else "INSERT"
    _ddl(
        db_url,
        [
            "CREATE FUNCTION skip_some() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.subject = '{SKIP}' THEN RETURN NULL; END IF; RETURN NEW; END $$ "
            "LANGUAGE plpgsql",
            f"CREATE TRIGGER skip_some BEFORE {events} ON sessions "
            "FOR EACH ROW EXECUTE FUNCTION skip_some()",
        ],
        [
            f"CREATE TRIGGER skip_some_{event} BEFORE {event} ON sessions "
            f"WHEN NEW.subject = '{SKIP}' BEGIN SELECT RAISE(IGNORE); END"
            for event in events.split(" OR ")
        ],
    )


def _lines(n: int, skipped: set[int], minutes: int = 60) -> list[str]:
    return [
        f"S{i},T1,st{i},2024-11-09T02:00:00Z,{minutes},{SKIP if i in skipped else 'Math'}"
        for i in range(n)
    ]


def _rejects(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("present", [False, True], ids=["fresh", "reload"])
def test_a_row_a_trigger_keeps_out_is_refused_not_counted_stored(
    db_url: str, tmp_path: Path, present: bool
) -> None:
    """Fresh: every key new (PostgreSQL: the COPY straight into the table, were it not for
    the trigger). Reload: half the keys stored (the upsert), S3 among them: its new version
    kept out leaves the stored one, which passes for unchanged (the one case not told)."""
    enrich(db_url, tutors_csv(tmp_path))
    skipped = {3, 150, 299}
    if present:
        first = write(tmp_path / "first.csv", SESSION_HEAD, *_lines(150, set(), minutes=45))
        code, _, err = enrich(db_url, first)
        assert code == 0, err
    _skip_trigger(db_url, on_update=present)
    src = write(tmp_path / "s.csv", SESSION_HEAD, *_lines(300, skipped))
    code, doc, err = enrich(db_url, src, "--rejects", tmp_path / "r.jsonl")
    assert code == 1, err
    f = by_kind(doc)["sessions"]
    got = _rejects(tmp_path / "r.jsonl")
    assert all(
        "its key is not in table sessions after the write" in r["errors"][0]["message"] for r in got
    )
    if not present:
        assert counts(f) == (297, 0, 0, 3)
        assert sorted(r["row"] for r in got) == [4, 151, 300]
    else:  # S150 and S299 were new: refused; S3's stored version stays (unchanged)
        assert counts(f) == (148, 149, 1, 2)
        assert sorted(r["row"] for r in got) == [151, 300]
        assert rows(db_url, "SELECT duration_minutes FROM sessions WHERE session_id = 'S3'") == [
            (45,)
        ]
    assert (f["accepted"], f["rejected"]) == (300 - len(got), len(got))
    stored = rows(db_url, "SELECT count(*) FROM sessions WHERE duration_minutes = 60")
    assert stored == [(297,)]


def test_a_trigger_that_changes_rows_refuses_nothing(db_url: str, tmp_path: Path) -> None:
    """The check is that the key is there after the write: a trigger that rewrites a row
    and stores it is not taken for one that kept it out."""
    enrich(db_url, tutors_csv(tmp_path))
    _ddl(
        db_url,
        [
            "CREATE FUNCTION upper_subject() RETURNS trigger AS $$ BEGIN "
            "NEW.subject = upper(NEW.subject); RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER upper_subject BEFORE INSERT OR UPDATE ON sessions "
            "FOR EACH ROW EXECUTE FUNCTION upper_subject()",
        ],
        [
            "CREATE TRIGGER upper_subject AFTER INSERT ON sessions BEGIN "
            "UPDATE sessions SET subject = upper(subject) WHERE session_id = NEW.session_id; END"
        ],
    )
    src = write(tmp_path / "s.csv", SESSION_HEAD, *_lines(50, set()))
    code, doc, err = enrich(db_url, src, "--rejects", tmp_path / "r.jsonl")
    assert code == 0, err
    assert counts(by_kind(doc)["sessions"]) == (50, 0, 0, 0)
    assert rows(db_url, "SELECT count(*) FROM sessions WHERE subject = 'MATH'") == [(50,)]


def test_a_duplicated_keys_version_kept_out_gives_way_to_the_next(
    db_url: str, tmp_path: Path
) -> None:
    """S1's last version is kept out when its key is settled: the version before it is
    written instead, and the one kept out is the rejected row (as for a refusal)."""
    enrich(db_url, tutors_csv(tmp_path))
    _skip_trigger(db_url)
    lines = ["S1,T1,st1,2024-11-09T02:00:00Z,30,Math", "S2,T1,st2,2024-11-09T02:00:00Z,30,Math",
             f"S1,T1,st1,2024-11-09T02:00:00Z,45,{SKIP}"]  # fmt: skip
    src = write(tmp_path / "s.csv", SESSION_HEAD, *lines)
    code, doc, err = enrich(db_url, src, "--rejects", tmp_path / "r.jsonl")
    assert code == 1, err
    f = by_kind(doc)["sessions"]
    assert f["read"] == f["accepted"] + f["rejected"] + f["duplicates"]
    (reject,) = _rejects(tmp_path / "r.jsonl")
    assert reject["row"] == 3 and "not in table" in reject["errors"][0]["message"]
    assert rows(db_url, "SELECT session_id, duration_minutes FROM sessions ORDER BY 1") == [
        ("S1", 30),
        ("S2", 30),
    ]


@pytest.mark.redis
def test_the_worker_dead_letters_a_row_a_trigger_keeps_out(streams, store) -> None:  # type: ignore[no-untyped-def]
    """Through the queue: the row kept out is a dead letter with the reason (it was counted
    persisted, acknowledged, and gone), the others are stored, every message accounted."""
    from dbfixtures import session, tutor
    from redisfixtures import dead_letters, publish
    from test_worker import assert_accounted, make_worker

    _skip_trigger(store.engine.url.render_as_string(hide_password=False))
    publish(streams, "tutors", [tutor(1)])
    sessions = [session(i, tutor_id="T1") for i in range(40)]
    sessions[7]["subject"] = SKIP
    publish(streams, "sessions", sessions)
    totals = make_worker(streams, store).run(burst=True)
    assert (totals["persisted"], totals["dead_lettered"]) == (40, 1)
    ((_, env),) = dead_letters(streams)
    assert env["metadata"]["error"] == "database"
    assert "not in table sessions" in json.dumps(env["metadata"]["detail"])
    assert env["data"]["session_id"] == sessions[7]["session_id"]
    assert_accounted(streams, store, 41)


def test_a_row_an_after_trigger_deletes_is_refused(db_url: str, tmp_path: Path) -> None:
    """The same loss another way: an AFTER INSERT trigger that deletes the row it was given
    (an 'archive elsewhere' trigger gone wrong). The key is not there after the write."""
    enrich(db_url, tutors_csv(tmp_path))
    _ddl(
        db_url,
        [
            "CREATE FUNCTION drop_some() RETURNS trigger AS $$ BEGIN "
            f"DELETE FROM sessions WHERE session_id = NEW.session_id AND subject = '{SKIP}';"
            " RETURN NULL; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER drop_some AFTER INSERT ON sessions "
            "FOR EACH ROW EXECUTE FUNCTION drop_some()",
        ],
        [
            f"CREATE TRIGGER drop_some AFTER INSERT ON sessions WHEN NEW.subject = '{SKIP}' "
            "BEGIN DELETE FROM sessions WHERE session_id = NEW.session_id; END"
        ],
    )
    src = write(tmp_path / "s.csv", SESSION_HEAD, *_lines(100, {10, 60}))
    code, doc, err = enrich(db_url, src, "--rejects", tmp_path / "r.jsonl")
    assert code == 1, err
    got = _rejects(tmp_path / "r.jsonl")
    assert sorted(r["row"] for r in got) == [11, 61]
    assert counts(by_kind(doc)["sessions"]) == (98, 0, 0, 2)
    assert rows(db_url, "SELECT count(*) FROM sessions") == [(98,)]


# -- the review's cases -----------------------------------------------------------------------


@pytest.mark.postgres
def test_a_stored_key_skipped_on_the_copy_path_is_unchanged_not_inserted(
    pg_url: str, tmp_path: Path
) -> None:
    """The trigger skips a stored key's new version; the other keys are new, so the batch
    goes by the COPY straight into the table, which meets no conflict and counts every row
    inserted. The counts are made from the keys: 5 inserted, 1 unchanged (the limit said)."""
    enrich(pg_url, tutors_csv(tmp_path))
    first = write(tmp_path / "first.csv", SESSION_HEAD, "S1,T1,st1,2024-11-09T02:00:00Z,45,Math")
    assert enrich(pg_url, first)[0] == 0
    _skip_trigger(pg_url, on_update=True)
    lines = [f"S{i},T1,st{i},2024-11-09T02:00:00Z,60,{SKIP if i == 1 else 'Math'}"
             for i in range(1, 7)]  # fmt: skip
    code, doc, err = enrich(pg_url, write(tmp_path / "s.csv", SESSION_HEAD, *lines))
    assert code == 0, err
    assert counts(by_kind(doc)["sessions"]) == (5, 0, 1, 0)


def test_no_count_goes_negative_when_a_trigger_deletes_another_row(
    db_url: str, tmp_path: Path
) -> None:
    """An AFTER trigger that deletes other rows (a dedupe by student): the stored S1, given
    unchanged, is deleted by S2's insert. S1 is refused (not there after the write); it was
    never counted updated, so nothing is taken off `updated` (it went to -1)."""
    enrich(db_url, tutors_csv(tmp_path))
    s1 = "S1,T1,st1,2024-11-09T02:00:00Z,45,Math"
    assert enrich(db_url, write(tmp_path / "first.csv", SESSION_HEAD, s1))[0] == 0
    _ddl(
        db_url,
        [
            "CREATE FUNCTION dedupe() RETURNS trigger AS $$ BEGIN DELETE FROM sessions WHERE "
            "student_id = NEW.student_id AND session_id <> NEW.session_id; RETURN NULL; END $$ "
            "LANGUAGE plpgsql",
            "CREATE TRIGGER dedupe AFTER INSERT ON sessions FOR EACH ROW EXECUTE FUNCTION dedupe()",
        ],
        [
            "CREATE TRIGGER dedupe AFTER INSERT ON sessions BEGIN DELETE FROM sessions WHERE "
            "student_id = NEW.student_id AND session_id <> NEW.session_id; END"
        ],
    )
    s2 = "S2,T1,st1,2024-11-09T03:00:00Z,45,Math"
    code, doc, err = enrich(db_url, write(tmp_path / "s.csv", SESSION_HEAD, s1, s2),
                            "--rejects", tmp_path / "r.jsonl")  # fmt: skip
    assert code == 1, err
    got = counts(by_kind(doc)["sessions"])
    assert min(got) >= 0 and sum(got) == 2 and got[3] == 1, got
    # PostgreSQL: S2's insert deletes S1. SQLite inserts S2 first, then the upsert of S1
    # (gone) inserts it again, which deletes S2. Either way: one there, the other refused.
    ((there,),) = rows(db_url, "SELECT session_id FROM sessions")
    (reject,) = _rejects(tmp_path / "r.jsonl")
    assert reject["values"]["session_id"] == {"S1": "S2", "S2": "S1"}[there]


@pytest.mark.postgres
def test_a_statement_trigger_that_deletes_rows_is_seen(pg_url: str, tmp_path: Path) -> None:
    """FOR EACH STATEMENT, AFTER INSERT: deletes the rows of one subject. Only row triggers
    were looked for; these rows were counted inserted and were in no rejects file."""
    enrich(pg_url, tutors_csv(tmp_path))
    _ddl(
        pg_url,
        [
            "CREATE FUNCTION purge() RETURNS trigger AS $$ BEGIN "
            f"DELETE FROM sessions WHERE subject = '{SKIP}'; RETURN NULL; END $$ "
            "LANGUAGE plpgsql",
            "CREATE TRIGGER purge AFTER INSERT OR UPDATE ON sessions FOR EACH STATEMENT "
            "EXECUTE FUNCTION purge()",
        ],
        [],
    )
    src = write(tmp_path / "s.csv", SESSION_HEAD, *_lines(20, {4, 9}))
    code, doc, err = enrich(pg_url, src, "--rejects", tmp_path / "r.jsonl")
    assert code == 1, err
    assert counts(by_kind(doc)["sessions"]) == (18, 0, 0, 2)
    assert sorted(r["row"] for r in _rejects(tmp_path / "r.jsonl")) == [5, 10]


@pytest.mark.postgres
def test_a_trigger_that_changes_the_key_is_said_so(pg_url: str, tmp_path: Path) -> None:
    """The row is stored under another key: its own key is not there, so it is refused (a
    re-run would store it again), and the message says the key may have been changed."""
    enrich(pg_url, tutors_csv(tmp_path))
    _ddl(
        pg_url,
        [
            "CREATE FUNCTION upper_key() RETURNS trigger AS $$ BEGIN "
            "NEW.session_id = upper(NEW.session_id); RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER upper_key BEFORE INSERT ON sessions FOR EACH ROW "
            "EXECUTE FUNCTION upper_key()",
        ],
        [],
    )
    src = write(tmp_path / "s.csv", SESSION_HEAD, "s1,T1,st1,2024-11-09T02:00:00Z,60,Math")
    code, _, err = enrich(pg_url, src, "--rejects", tmp_path / "r.jsonl")
    assert code == 1, err
    (reject,) = _rejects(tmp_path / "r.jsonl")
    assert "changed its key" in reject["errors"][0]["message"]


@pytest.mark.postgres
def test_a_table_with_rules_is_refused_by_name(pg_url: str, tmp_path: Path) -> None:
    """A rule made a row's fate depend on its batch's write path (COPY ignores rules; the
    upsert cannot RETURNING through them): exit 2 naming the rule, nothing written."""
    enrich(pg_url, tutors_csv(tmp_path))
    _ddl(pg_url, [f"CREATE RULE no_skip AS ON INSERT TO sessions WHERE NEW.subject = '{SKIP}' "
                  "DO INSTEAD NOTHING"], [])  # fmt: skip
    code, _, err = enrich(pg_url, write(tmp_path / "s.csv", SESSION_HEAD, *_lines(5, {2})))
    assert code == 2 and "no_skip" in err and "Traceback" not in err, err
    assert rows(pg_url, "SELECT count(*) FROM sessions") == [(0,)]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_trigger_on_a_partition_is_seen(db_url: str, tmp_path: Path, monkeypatch) -> None:
    """A partitioned table whose partitions, not the table, carry the trigger: the look
    for triggers saw the table alone, so the kept-out rows were counted stored (fresh)."""
    from tutormax_cli.store.postgres import BACKEND, _DirectOdds

    # the odds are the process's: start from none, so the fresh batch tries the COPY
    monkeypatch.setattr(BACKEND, "_odds", _DirectOdds())
    enrich(db_url, tutors_csv(tmp_path))
    _ddl(
        db_url,
        [
            "CREATE TABLE sessions_p (LIKE sessions INCLUDING DEFAULTS) "
            "PARTITION BY HASH (session_id)",
            "DROP TABLE sessions CASCADE",
            "ALTER TABLE sessions_p RENAME TO sessions",
            "ALTER TABLE sessions ADD PRIMARY KEY (session_id)",
            "ALTER TABLE sessions ADD FOREIGN KEY (tutor_id) REFERENCES tutors (tutor_id)",
            "CREATE FUNCTION skip_some() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.subject = '{SKIP}' THEN RETURN NULL; END IF; RETURN NEW; END $$ "
            "LANGUAGE plpgsql",
            *(
                f"CREATE TABLE sessions_{r} PARTITION OF sessions "
                f"FOR VALUES WITH (MODULUS 2, REMAINDER {r})"
                for r in (0, 1)
            ),
            *(
                f"CREATE TRIGGER skip_some BEFORE INSERT OR UPDATE ON sessions_{r} "
                "FOR EACH ROW EXECUTE FUNCTION skip_some()"
                for r in (0, 1)
            ),
        ],
        [],
    )
    src = write(tmp_path / "s.csv", SESSION_HEAD, *_lines(300, {3, 150, 299}))
    code, doc, err = enrich(db_url, src, "--rejects", tmp_path / "r.jsonl")
    assert code == 1, err
    assert counts(by_kind(doc)["sessions"]) == (297, 0, 0, 3)
    assert sorted(r["row"] for r in _rejects(tmp_path / "r.jsonl")) == [4, 151, 300]
    assert rows(db_url, "SELECT count(*) FROM sessions") == [(297,)]
