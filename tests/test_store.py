"""The persistence layer on real SQLite and real PostgreSQL (SPEC §5, §6 refused rows)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from dbfixtures import AS_OF, feedback, make_table, pg_admin, read_rows, session, tutor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutormax_cli.errors import DatabaseError
from tutormax_cli.fields import fields_for
from tutormax_cli.schema import KINDS
from tutormax_cli.store import Store, WriteResult, arrow_schema

LATER = AS_OF + timedelta(days=3)


def counts(r: WriteResult) -> tuple[int, int, int, int]:
    return r.inserted, r.updated, r.unchanged, len(r.refused)


def seed(store: Store, n_tutors: int = 1, n_sessions: int = 0) -> None:
    store.write("tutors", make_table("tutors", [tutor(i) for i in range(n_tutors)]))
    if n_sessions:
        store.write("sessions", make_table("sessions", [session(i) for i in range(n_sessions)]))


# -- schema -----------------------------------------------------------------------------------


def test_init_schema_is_idempotent_and_shaped_by_the_spec(store: Store) -> None:
    store.init_schema()  # second time: nothing to do, no error
    store.init_schema()
    inspector = sa.inspect(store.engine)
    assert set(inspector.get_table_names()) >= {"tutors", "sessions", "feedback"}
    for kind, k in KINDS.items():
        columns = [c["name"] for c in inspector.get_columns(kind)]
        provenance = ["enriched_at", "reporting_timezone", "formula_version"]
        expected = [*k.column_names, *(f.name for f in fields_for(kind)), *provenance]
        assert columns == expected == arrow_schema(kind).names
        assert len(fields_for(kind)) in (5, 6)
        assert inspector.get_pk_constraint(kind)["constrained_columns"] == [k.key]
    fks = {
        (kind, fk["constrained_columns"][0], fk["referred_table"], fk["referred_columns"][0])
        for kind in KINDS
        for fk in inspector.get_foreign_keys(kind)
    }
    assert fks == {
        ("sessions", "tutor_id", "tutors", "tutor_id"),
        ("feedback", "session_id", "sessions", "session_id"),
        ("feedback", "tutor_id", "tutors", "tutor_id"),
    }
    assert store.row_counts() == {"tutors": 0, "sessions": 0, "feedback": 0}


def test_row_counts_before_the_schema_exists(db_url: str) -> None:
    with Store.connect(db_url) as s:
        assert s.row_counts() == {"tutors": 0, "sessions": 0, "feedback": 0}


# -- typed round trip -------------------------------------------------------------------------

TRICKY = ["plain", 'with "quotes"', "back\\slash", "comma, brace {x}", "  spaced  ", "NULL", "é✓😀"]
NY = timezone(timedelta(hours=-5))


def full_tutor() -> dict[str, Any]:
    return tutor(
        "full",
        name='O\'Brien, "Pat"\nline two',
        onboarding_date=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        subjects=TRICKY,
        age=41,
        location="",  # empty string is not null
        education_level="PhD",
        subject_type="STEM",
        behavioral_archetype="steady",
        baseline_sessions_per_week=0.1,
        created_at=datetime(2024, 3, 10, 1, 30, tzinfo=NY),  # stored as the same instant
        updated_at=datetime(2024, 11, 7, 11, 0, 0, 123456, tzinfo=UTC),
    )


def full_session() -> dict[str, Any]:
    return session(
        "full",
        tutor_id="Tfull",
        scheduled_start=datetime(2024, 11, 9, 23, 30, tzinfo=UTC),
        duration_minutes=480,
        actual_start=datetime(2024, 11, 9, 23, 36, 1, tzinfo=UTC),
        actual_end=datetime(2024, 11, 10, 7, 0, tzinfo=UTC),
        late_start_minutes=6,
        session_number=2**40,
        no_show=False,
        is_first_session=True,
        tutor_initiated_reschedule=False,
        learning_objectives_met=True,
        technical_issues=False,
        engagement_score=1 / 3,
        session_type="trial",
        created_at=datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC),
        updated_at=datetime(2024, 11, 10, tzinfo=UTC),
    )


def full_feedback() -> dict[str, Any]:
    return feedback(
        "full",
        session_id="Sfull",
        tutor_id="Tfull",
        overall_rating=5,
        submitted_at=datetime(2024, 11, 10, 8, 1, 30, tzinfo=UTC),
        subject_knowledge_rating=5,
        communication_rating=4,
        patience_rating=1,
        engagement_rating=3,
        helpfulness_rating=2,
        free_text_feedback="Great!\r\nTab\there, \\N and \\.",
        would_recommend=True,
        is_first_session=False,
        improvement_areas=[],
        session_scheduled_start=datetime(2024, 11, 9, 23, 30, tzinfo=UTC),
        created_at=datetime(2024, 11, 10, 8, 2, tzinfo=UTC),
    )


def assert_same(stored: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(stored) == set(expected)
    for name, want in expected.items():
        got = stored[name]
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got), name
        else:
            assert got == want, name
            assert type(got) is type(want), name
        if isinstance(got, datetime):
            assert got.utcoffset() == timedelta(0), name


def test_typed_round_trip_of_every_column(store: Store) -> None:
    rows = {
        "tutors": [full_tutor(), tutor("bare")],
        "sessions": [full_session(), session("bare", tutor_id="Tbare")],
        "feedback": [full_feedback(), feedback("bare", session_id="Sbare", tutor_id="Tbare")],
    }
    for kind, batch in rows.items():
        table = make_table(kind, batch)
        assert counts(store.write(kind, table)) == (2, 0, 0, 0)
        stored = read_rows(store, kind)
        for expected in table.to_pylist():
            assert_same(stored[expected[KINDS[kind].key]], expected)
    got = read_rows(store, "tutors")["Tfull"]
    assert got["subjects"] == TRICKY
    assert got["location"] == "" and read_rows(store, "tutors")["Tbare"]["location"] is None
    assert got["created_at"] == datetime(2024, 3, 10, 6, 30, tzinfo=UTC)
    assert read_rows(store, "feedback")["Ffull"]["improvement_areas"] == []
    assert read_rows(store, "feedback")["Fbare"]["improvement_areas"] is None
    # the same rows again: nothing differs after the round trip, so nothing is rewritten
    for kind, batch in rows.items():
        assert counts(store.write(kind, make_table(kind, batch, as_of=LATER))) == (0, 0, 2, 0)


def test_write_ignores_extra_columns_and_casts_types(store: Store) -> None:
    table = make_table("tutors", [tutor(1)])
    table = table.append_column("unknown_extra", pa.array(["x"]))
    idx = table.schema.get_field_index("onboarding_date")
    table = table.set_column(
        idx, "onboarding_date", table.column(idx).cast(pa.timestamp("ms", tz="+00:00"))
    )
    assert counts(store.write("tutors", table)) == (1, 0, 0, 0)
    assert read_rows(store, "tutors")["T1"]["onboarding_date"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert counts(store.write("tutors", table.slice(0, 0))) == (0, 0, 0, 0)


# -- upsert semantics -------------------------------------------------------------------------


def test_same_input_again_changes_nothing_not_even_enriched_at(store: Store) -> None:
    batch = [tutor(i, updated_at=AS_OF) for i in range(20)]
    assert counts(store.write("tutors", make_table("tutors", batch))) == (20, 0, 0, 0)
    again = make_table("tutors", batch, as_of=LATER + timedelta(days=400))
    assert counts(store.write("tutors", again)) == (0, 0, 20, 0)
    stored = read_rows(store, "tutors")
    assert {r["enriched_at"] for r in stored.values()} == {AS_OF}
    assert {r["tenure_days"] for r in stored.values()} == {
        (AS_OF - tutor(0)["onboarding_date"]).days
    }


def test_changed_input_updates_and_counts_are_exact(store: Store) -> None:
    seed(store, n_tutors=1)
    first = [session(i) for i in range(10)]
    assert counts(store.write("sessions", make_table("sessions", first))) == (10, 0, 0, 0)
    second = [session(i) for i in range(10, 15)]  # 5 new
    second += [session(i, duration_minutes=30) for i in range(3)]  # 3 changed
    second += [session(i) for i in range(3, 10)]  # 7 same
    result = store.write("sessions", make_table("sessions", second, as_of=LATER))
    assert counts(result) == (5, 3, 7, 0)
    assert result.total == len(second)
    stored = read_rows(store, "sessions")
    assert stored["S0"]["duration_minutes"] == 30
    assert stored["S0"]["enriched_at"] == LATER  # rewritten rows carry the new as-of
    assert stored["S5"]["enriched_at"] == AS_OF
    assert store.row_counts()["sessions"] == 15


def test_older_updated_at_does_not_overwrite(store: Store) -> None:
    t0 = datetime(2024, 11, 1, 12, tzinfo=UTC)
    seed_rows = [tutor(i, name="stored", updated_at=t0 if i != 4 else None) for i in range(5)]
    store.write("tutors", make_table("tutors", seed_rows))
    incoming = [
        tutor(0, name="older", updated_at=t0 - timedelta(microseconds=1)),
        tutor(1, name="same time", updated_at=t0),
        tutor(2, name="newer", updated_at=t0 + timedelta(hours=1)),
        tutor(3, name="no timestamp", updated_at=None),
        tutor(4, name="stored has none", updated_at=t0 - timedelta(days=30)),
    ]
    result = store.write("tutors", make_table("tutors", incoming, as_of=LATER))
    assert counts(result) == (0, 3, 2, 0)
    names = {k: r["name"] for k, r in read_rows(store, "tutors").items()}
    assert names == {
        "T0": "stored",
        "T1": "same time",
        "T2": "newer",
        "T3": "stored",  # a version with updated_at beats one without, as within a run
        "T4": "stored has none",
    }
    assert read_rows(store, "tutors")["T0"]["enriched_at"] == AS_OF


def test_feedback_without_updated_at_upserts_on_any_change(store: Store) -> None:
    seed(store, n_tutors=1, n_sessions=1)
    store.write("feedback", make_table("feedback", [feedback(1), feedback(2)]))
    again = [feedback(1, overall_rating=2), feedback(2)]
    assert counts(store.write("feedback", make_table("feedback", again))) == (0, 1, 1, 0)
    stored = read_rows(store, "feedback")["F1"]
    assert (stored["overall_rating"], stored["is_poor"], stored["is_positive"]) == (2, True, False)


# -- look-ups ---------------------------------------------------------------------------------


def test_existing_keys_and_session_starts(store: Store) -> None:
    seed(store, n_tutors=2)
    starts = [
        datetime(2024, 11, 1, tzinfo=UTC) + timedelta(hours=i, microseconds=i) for i in range(4)
    ]
    store.write(
        "sessions",
        make_table("sessions", [session(i, scheduled_start=starts[i]) for i in range(4)]),
    )
    keys = pa.chunked_array([["T1", None, "nope"], ["T0", "T1"]])
    assert store.existing_keys("tutors", keys).to_pylist() == [True, False, False, True, True]
    assert store.existing_keys("sessions", pa.array([], pa.string())).to_pylist() == []
    assert store.existing_keys("sessions", pa.array([None, None], pa.string())).to_pylist() == [
        False,
        False,
    ]
    found = store.session_starts(pa.array(["S3", "S0", None, "S9", "S3"]))
    assert found.type == pa.timestamp("us", tz="UTC")
    assert found.to_pylist() == [starts[3], starts[0], None, None, starts[3]]
    assert store.session_starts(pa.array(["nope"])).to_pylist() == [None]
    assert store.session_starts(pa.array([], pa.string())).to_pylist() == []


# any text but NUL (rejected before any lookup, as `nul_byte`) and lone surrogates
_ID = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
              min_size=1, max_size=50)  # fmt: skip


def test_lookups_read_any_key_as_itself(store: Store) -> None:
    """Keys holding what a list syntax would trip on (quotes, backslashes, braces, commas,
    newlines, `NULL`, spaces) are found exactly when stored: the PostgreSQL look-ups send
    the keys as one text[] literal."""
    stored: set[str] = set()
    tricky = ['a"b', "c\\d", "e,f", "{g}", " h ", "i\nj", "NULL", "k'l", '\\"', "é🙂"]

    @settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(st.lists(st.one_of(_ID, st.sampled_from(tricky)), min_size=1, max_size=30, unique=True),
           st.data())  # fmt: skip
    def check(keys: list[str], data: st.DataObject) -> None:
        new = data.draw(st.lists(st.sampled_from(keys), unique=True), label="stored")
        store.write("tutors", make_table("tutors", [tutor(0, tutor_id=k) for k in new]))
        sessions = [session(0, tutor_id=new[0], session_id=k) for k in new]
        store.write("sessions", make_table("sessions", sessions))
        stored.update(new)
        asked = pa.array([*keys, None, *keys[:3]], pa.string())
        expected = [k in stored if k is not None else False for k in asked.to_pylist()]
        assert store.existing_keys("tutors", asked).to_pylist() == expected
        assert store.existing_keys("sessions", asked).to_pylist() == expected
        start = session(0)["scheduled_start"]
        found = store.session_starts(asked).to_pylist()
        assert found == [start if k else None for k in expected]

    check()


def test_lookups_inside_a_transaction_see_its_uncommitted_rows(store: Store) -> None:
    with store.transaction():
        seed(store, n_tutors=1, n_sessions=1)
        assert store.existing_keys("tutors", pa.array(["T0"])).to_pylist() == [True]
        assert store.session_starts(pa.array(["S0"])).to_pylist() == [session(0)["scheduled_start"]]
        assert store.row_counts()["sessions"] == 1


# -- refused rows -----------------------------------------------------------------------------


def test_foreign_key_is_enforced_by_the_database(store: Store) -> None:
    seed(store, n_tutors=1)
    batch = [session(0), session(1, tutor_id="GHOST"), session(2)]
    result = store.write("sessions", make_table("sessions", batch))
    assert counts(result) == (2, 0, 0, 1)
    ((index, message),) = result.refused
    assert index == 1
    assert "foreign key" in message.lower()
    assert "\n" not in message and len(message) <= 300
    assert set(read_rows(store, "sessions")) == {"S0", "S2"}


def test_one_bad_row_in_500_is_isolated(store: Store) -> None:
    seed(store, n_tutors=1)
    batch = [session(i) for i in range(500)]
    batch[137]["tutor_id"] = "GHOST"
    result = store.write("sessions", make_table("sessions", batch))
    assert counts(result) == (499, 0, 0, 1)
    assert [i for i, _ in result.refused] == [137]
    assert store.row_counts()["sessions"] == 499
    # several bad rows, some of them updates
    batch = [session(i, subject="Physics") for i in range(0, 600, 2)]
    for i in (0, 7, 8, 299):
        batch[i]["tutor_id"] = "GHOST"
    result = store.write("sessions", make_table("sessions", batch))
    assert [i for i, _ in result.refused] == [0, 7, 8, 299]
    assert result.total == 300
    assert counts(result) == (49, 247, 0, 4)  # S598 (new) and S0,S14,S16 refused


@pytest.mark.postgres
def test_postgres_refuses_nul_and_overlong_ids_per_row(pg_url: str) -> None:
    with Store.connect(pg_url) as s:
        s.init_schema()
        seed(s, n_tutors=1)
        batch = [session(i) for i in range(500)]
        batch[250]["subject"] = "Math\x00"
        batch[499]["student_id"] = "x" * 51
        result = s.write("sessions", make_table("sessions", batch))
        assert counts(result) == (498, 0, 0, 2)
        assert [i for i, _ in result.refused] == [250, 499]
        assert "0x00" in result.refused[0][1]
        assert "too long" in result.refused[1][1]
        assert s.row_counts()["sessions"] == 498


# -- transactions -----------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_rollback_on_exception_leaves_nothing(store: Store) -> None:
    with pytest.raises(Boom), store.transaction():
        seed(store, n_tutors=3, n_sessions=2)
        raise Boom
    assert store.row_counts() == {"tutors": 0, "sessions": 0, "feedback": 0}


def test_nested_transaction_is_a_savepoint(store: Store) -> None:
    with store.transaction():
        seed(store, n_tutors=1)
        with pytest.raises(Boom), store.transaction():
            store.write("sessions", make_table("sessions", [session(1)]))
            raise Boom
        with store.transaction():
            store.write("sessions", make_table("sessions", [session(2)]))
        # refused rows inside the transaction do not poison it
        result = store.write("sessions", make_table("sessions", [session(3, tutor_id="GHOST")]))
        assert counts(result) == (0, 0, 0, 1)
    assert set(read_rows(store, "sessions")) == {"S2"}
    assert store.row_counts()["tutors"] == 1


def test_writes_in_one_transaction_commit_together(store: Store) -> None:
    with store.transaction():
        seed(store, n_tutors=2)
        # a second batch in the same transaction may update a row written by the first
        result = store.write("tutors", make_table("tutors", [tutor(1, name="renamed")]))
        assert counts(result) == (0, 1, 0, 0)
    assert read_rows(store, "tutors")["T1"]["name"] == "renamed"


# -- connection failures ----------------------------------------------------------------------


def test_connect_to_unreachable_postgres_masks_the_password() -> None:
    with pytest.raises(DatabaseError) as info:
        Store.connect("postgresql://u:sekret@127.0.0.1:1/x")
    message = str(info.value)
    assert "***" in message and "sekret" not in message
    assert message.startswith("cannot connect to postgresql://u:***@127.0.0.1:1/x: ")
    assert "sekret" not in repr(info.value.__cause__) + repr(info.value.__context__)


@pytest.mark.parametrize(
    "url",
    ["not a url", "mysql://u:sekret@localhost/db", "sqlite:////dev/null/sub/t.db"],
)
def test_connect_rejects_bad_urls(url: str) -> None:
    with pytest.raises(DatabaseError) as info:
        Store.connect(url)
    assert str(info.value).startswith("cannot connect to ")
    assert "sekret" not in str(info.value)


@pytest.mark.postgres
def test_connect_to_unknown_postgres_database(pg_url: str) -> None:
    url = sa.make_url(pg_url).set(database="tutormax_test_does_not_exist")
    with pytest.raises(DatabaseError, match="does not exist"):
        Store.connect(url.render_as_string(hide_password=False))


def test_sqlite_relative_path_is_the_working_folder(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with Store.connect("sqlite:///tutormax.db") as s:
        s.init_schema()
        assert s.url_masked == "sqlite:///tutormax.db"
        with s.engine.connect() as conn:
            pragmas = [
                conn.exec_driver_sql(f"PRAGMA {p}").scalar()
                for p in ("foreign_keys", "journal_mode", "synchronous")
            ]
    assert pragmas == [1, "wal", 1]
    assert (tmp_path / "tutormax.db").exists()


@pytest.mark.postgres
def test_lost_connection_is_an_error_not_a_refused_row(pg_url: str) -> None:
    with Store.connect(pg_url) as s:
        s.init_schema()
        seed(s, n_tutors=1)
        with pytest.raises(DatabaseError) as info, s.transaction():
            s.write("sessions", make_table("sessions", [session(1)]))
            admin = pg_admin()
            try:
                with admin.cursor() as cur:
                    cur.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (sa.make_url(pg_url).database,),
                    )
            finally:
                admin.close()
            s.write("sessions", make_table("sessions", [session(2)]))
        assert "writing sessions failed on postgresql://" in str(info.value)
        # the pool replaces the dead connection; nothing of the failed transaction stayed
        assert s.row_counts()["sessions"] == 0
        assert counts(s.write("sessions", make_table("sessions", [session(3)]))) == (1, 0, 0, 0)


@pytest.mark.postgres
def test_postgres_session_timezone_does_not_matter(pg_url: str) -> None:
    admin = pg_admin()
    try:
        with admin.cursor() as cur:
            database = sa.make_url(pg_url).database
            cur.execute(f"ALTER DATABASE \"{database}\" SET timezone = 'America/New_York'")
    finally:
        admin.close()
    with Store.connect(pg_url) as s:
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW timezone").scalar() == "America/New_York"
        s.init_schema()
        batch = [full_tutor(), tutor("bare", updated_at=datetime(9999, 12, 31, 23, tzinfo=UTC))]
        table = make_table("tutors", batch)
        assert counts(s.write("tutors", table)) == (2, 0, 0, 0)
        stored = read_rows(s, "tutors")
        for expected in table.to_pylist():
            assert_same(stored[expected["tutor_id"]], expected)
        assert counts(s.write("tutors", table)) == (0, 0, 2, 0)
        s.write("sessions", make_table("sessions", [full_session()]))
        starts = s.session_starts(pa.array(["Sfull"])).to_pylist()
        assert starts == [full_session()["scheduled_start"]]


# -- PostgreSQL: new rows COPYed straight into the table -------------------------------------


@pytest.mark.postgres
def test_postgres_direct_copy_then_the_staged_upsert(pg_url: str, monkeypatch) -> None:
    """A batch of new keys goes in by one COPY (the session's TimeZone untouched after it);
    a batch holding a stored key, or a refused row, is rolled back and upserted instead,
    with the same counts and rows as the staged way alone gives."""
    from tutormax_cli.store.postgres import BACKEND, _DirectOdds

    # the odds are the process's: start from none (earlier tests met stored keys)
    monkeypatch.setattr(BACKEND, "_odds", _DirectOdds())

    with Store.connect(pg_url) as s:
        s.init_schema()
        seed(s, n_tutors=1)
        with s.transaction():
            s._conn.exec_driver_sql("SET TimeZone TO 'Asia/Kolkata'")  # type: ignore[union-attr]
            result = s.write("sessions", make_table("sessions", [full_session_for("T0")]))
            assert counts(result) == (1, 0, 0, 0)
            assert not BACKEND._odds._skip.get("sessions")  # the COPY took it
            shown = s._conn.exec_driver_sql("SHOW TimeZone").scalar()  # type: ignore[union-attr]
            assert shown == "Asia/Kolkata"
        stored = read_rows(s, "sessions")["Sfull"]
        assert stored["scheduled_start"] == datetime(2024, 11, 9, 23, 30, tzinfo=UTC)
        # one stored key among new ones: the COPY is refused, the upsert writes the rest
        batch = [full_session_for("T0")] + [session(i) for i in range(3)]
        assert counts(s.write("sessions", make_table("sessions", batch))) == (3, 0, 1, 0)
        assert BACKEND._odds._skip.get("sessions") == 1  # the next batch goes staged at once
        # a refused row among new ones: isolated by the staged way
        batch = [session(i) for i in range(10, 20)]
        batch[4]["tutor_id"] = "GHOST"
        result = s.write("sessions", make_table("sessions", batch))
        assert counts(result) == (9, 0, 0, 1) and [i for i, _ in result.refused] == [4]
        assert s.row_counts()["sessions"] == 13


def full_session_for(tutor_id: str) -> dict[str, Any]:
    row = full_session()
    row["tutor_id"] = tutor_id
    return row


def test_direct_copy_odds_back_off_and_recover() -> None:
    from tutormax_cli.store.postgres import _DirectOdds

    odds = _DirectOdds()
    tried = []
    for worked in [False] * 8 + [True, True]:
        while not odds.worth_trying("sessions"):
            tried.append(".")
        tried.append("x" if not worked else "o")
        odds.record("sessions", worked)
    # after each failure it waits 1, 2, 4, … (at most 64) batches; a success resets that
    assert "".join(tried) == "x.x..x....x" + "." * 8 + "x" + "." * 16 + "x" + "." * 32 + "x" + (
        "." * 64 + "x" + "." * 64 + "o" + "o"
    )
    odds.record("sessions", False)
    assert [odds.worth_trying("sessions") for _ in range(2)] == [False, True]
