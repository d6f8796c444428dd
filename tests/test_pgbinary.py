"""PostgreSQL's binary COPY format (store/pgbinary.py), against a real server: every value
of every type tutormax stages reads back as itself, and a re-load of stored rows leaves
them untouched (no row lock, no new version)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import psycopg2.errors
import pyarrow as pa
import pytest
import sqlalchemy as sa
from dbfixtures import execute_sql, fresh_pg_database, make_table, session, tutor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutormax_cli.store import Store, arrow_schema
from tutormax_cli.store.pgbinary import encode, pg_type
from tutormax_cli.store.pgtext import array_literal, arrays_as_json

pytestmark = pytest.mark.postgres

TS = pa.timestamp("us", tz="UTC")
TYPES = {
    "text": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "ts": TS,
    "list": pa.list_(pa.string()),
}
# PostgreSQL's text holds no NUL; every other code point (surrogates are not UTF-8).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "text": TEXT,
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "bool": st.booleans(),
    "ts": st.datetimes(timezones=st.just(UTC)),  # years 1-9999, every microsecond
    "list": st.lists(st.none() | TEXT, max_size=5),
}


@pytest.fixture(name="conn", scope="module")
def conn_fixture() -> Iterator[Any]:
    with fresh_pg_database() as url:
        conn = psycopg2.connect(url)
        try:
            yield conn
        finally:
            conn.close()


def _copy_back(conn: Any, table: pa.Table, zone: str = "UTC") -> list[tuple]:
    """COPY the table in (binary, the session in `zone`), read it back in UTC."""
    with conn.cursor() as cur:
        cur.execute(f"SET TimeZone = '{zone}'")
        cols = ", ".join(f'"{f.name}" {pg_type(f.type)}' for f in table.schema)
        cur.execute(f"CREATE TEMP TABLE t (i serial, {cols})")
        try:
            names = ", ".join(f'"{n}"' for n in table.column_names)
            cur.copy_expert(f"COPY t ({names}) FROM STDIN WITH (FORMAT binary)", encode(table))
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute(f"SELECT {names} FROM t ORDER BY i")
            return cur.fetchall()
        finally:
            conn.rollback()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    return type(a) is type(b) and a == b if a is not None else b is None


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    names=st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=8),
    rows=st.integers(0, 12),
    zone=st.sampled_from(["UTC", "America/New_York", "Asia/Kathmandu", "Pacific/Kiritimati"]),
)
def test_every_value_reads_back_as_itself(
    conn: Any, data: st.DataObject, names: list[str], rows: int, zone: str
) -> None:
    columns = {}
    for i, kind in enumerate(names):
        values = data.draw(st.lists(st.none() | VALUES[kind], min_size=rows, max_size=rows))
        columns[f"c{i}"] = pa.array(values, TYPES[kind])
    table = pa.table(columns) if columns else pa.table({})
    back = _copy_back(conn, table, zone)
    expected = table.to_pylist()
    assert len(back) == len(expected)
    for got, want in zip(back, expected, strict=True):
        for g, w in zip(got, want.values(), strict=True):
            if isinstance(w, list):
                assert len(g) == len(w) and all(_same(x, y) for x, y in zip(g, w, strict=True))
            else:
                assert _same(g, w), (g, w)


EDGE_TEXT = ["", "NULL", "\\N", '"', "{}", "a,b", "\r\n", "é\U0001f600", None, "x" * 70_000]
EDGE_INT = [0, -1, 1, 2**63 - 1, -(2**63), None, 42, 7, 8, 9]
EDGE_FLOAT = [0.0, -0.0, math.inf, -math.inf, math.nan, None, 5e-324, 1.8e308, 0.1, -2.5]
EDGE_BOOL = [True, False, None, True, False, True, None, False, True, False]
EDGE_TS = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2000, 1, 1, tzinfo=UTC),  # PostgreSQL's zero
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    None,
    datetime(2024, 3, 10, 7, 0, 0, 1, tzinfo=UTC),
    datetime(1583, 1, 1, tzinfo=UTC),
    datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
    datetime(2024, 2, 29, tzinfo=UTC),
]
EDGE_LIST = [[], None, [None], ["NULL"], ['"', "\\"], ["{a}", ","], [""], ["é"] * 50, [None], []]


def test_the_edges_of_each_type(conn: Any) -> None:
    table = pa.table(
        {
            "text": pa.array(EDGE_TEXT),
            "int": pa.array(EDGE_INT),
            "float": pa.array(EDGE_FLOAT),
            "bool": pa.array(EDGE_BOOL),
            "ts": pa.array(EDGE_TS, TS),
            "list": pa.array(EDGE_LIST, pa.list_(pa.string())),
        }
    )
    back = _copy_back(conn, table, "America/New_York")
    for got, want in zip(back, table.to_pylist(), strict=True):
        for g, w in zip(got, want.values(), strict=True):
            assert _same(g, w) if not isinstance(w, list) else g == w, (g, w)


def test_no_rows_and_a_sliced_table(conn: Any) -> None:
    table = pa.table(
        {"a": pa.array(["x", "y", None, "z"]), "l": pa.array([["a"], ["b", "c"], None, []])}
    )
    assert _copy_back(conn, table.slice(0, 0)) == []
    assert _copy_back(conn, table.slice(1, 2)) == [("y", ["b", "c"]), (None, None)]


def test_a_nul_in_text_is_refused_as_in_csv(conn: Any) -> None:
    with pytest.raises(psycopg2.errors.CharacterNotInRepertoire, match="0x00"):
        _copy_back(conn, pa.table({"a": pa.array(["fine", "not\x00fine"])}))
    with pytest.raises(psycopg2.errors.CharacterNotInRepertoire, match="0x00"):
        _copy_back(conn, pa.table({"l": pa.array([["not\x00fine"]])}))


def test_every_column_type_tutormax_writes_has_an_encoding() -> None:
    for kind in ("tutors", "sessions", "feedback"):
        for f in arrow_schema(kind):
            assert pg_type(f.type)
    with pytest.raises(TypeError):
        pg_type(pa.int32())


# The store tests' `store` fixture, on PostgreSQL alone.
ON_POSTGRES = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _locked_or_rewritten(store: Store, kind: str) -> int:
    """Rows whose version a later transaction touched: a lock or an update sets xmax."""
    with store.engine.connect() as c:
        return int(c.exec_driver_sql(f"SELECT count(*) FROM {kind} WHERE xmax <> 0").scalar_one())


@ON_POSTGRES
def test_reloading_stored_rows_writes_nothing(store: Store) -> None:
    """Rows identical to the stored ones are left out of the upsert: before, ON CONFLICT
    locked each (a heap write and a WAL record a row) to find nothing to change."""
    tutors = make_table("tutors", [tutor(0)])
    sessions = make_table("sessions", [session(i) for i in range(50)])
    store.write("tutors", tutors)
    assert store.write("sessions", sessions).inserted == 50
    for _ in range(2):
        result = store.write("sessions", sessions)
        assert (result.inserted, result.updated, result.refused) == (0, 0, [])
        assert _locked_or_rewritten(store, "sessions") == 0
    # one row changed, one new, the rest identical: only those two are written
    later = datetime(2024, 11, 8, tzinfo=UTC)
    changed = [session(i) for i in range(50)] + [session(50)]
    changed[7] = session(7, subject="Physics", updated_at=later)
    result = store.write("sessions", make_table("sessions", changed))
    assert (result.inserted, result.updated) == (1, 1)
    assert _locked_or_rewritten(store, "sessions") == 1
    with store.engine.connect() as c:
        assert (
            c.exec_driver_sql("SELECT subject FROM sessions WHERE session_id = 'S7'").scalar_one()
            == "Physics"
        )


@ON_POSTGRES
def test_a_row_equal_but_for_its_derived_values_is_unchanged(store: Store) -> None:
    """The left-out rows are those the upsert's WHERE would keep: compared on the input
    columns and the provenance (not `enriched_at`), as before."""
    store.write("tutors", make_table("tutors", [tutor(0)]))
    store.write("sessions", make_table("sessions", [session(1)]))
    again = make_table(
        "sessions", [session(1)], enriched_at=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=1)
    )
    result = store.write("sessions", again)
    assert (result.inserted, result.updated) == (0, 0)


def test_integers_are_sent_at_the_width_of_their_column(conn: Any) -> None:
    values = pa.array([0, -1, 32767, -32768, None])
    table = pa.table({"a": values, "b": values, "c": values})
    types = ["bigint", "integer", "smallint"]
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE w (i serial, a bigint, b integer, c smallint)")
        try:
            cur.copy_expert(
                "COPY w (a, b, c) FROM STDIN WITH (FORMAT binary)",
                encode(table, types),
            )
            cur.execute("SELECT a, b, c FROM w ORDER BY i")
            assert [r[0] for r in cur.fetchall()] == values.to_pylist()
        finally:
            conn.rollback()
    with pytest.raises(TypeError, match="range"):
        encode(pa.table({"c": pa.array([32768])}), ["smallint"])
    with pytest.raises(TypeError, match="range"):
        encode(pa.table({"b": pa.array([-(2**31) - 1])}), ["integer"])
    with pytest.raises(TypeError):  # a type the values are not sent as
        encode(pa.table({"f": pa.array([0.5])}), ["real"])


def _sessions(n: int, **values: Any) -> pa.Table:
    return make_table("sessions", [session(i, **values) for i in range(n)])


@ON_POSTGRES
@pytest.mark.parametrize(
    "alter",
    [
        "ALTER TABLE sessions ALTER engagement_score TYPE real",
        "ALTER TABLE sessions ALTER engagement_score TYPE numeric(4, 2)",
        "ALTER TABLE sessions ALTER subject TYPE varchar(12)",
        "ALTER TABLE sessions ALTER duration_minutes TYPE integer",
        "ALTER TABLE sessions ALTER formula_version TYPE bigint",
        "ALTER TABLE sessions ADD COLUMN note text DEFAULT 'x'",
        # types with no `=` against the staged value's (the re-load's NOT EXISTS raised
        # "operator does not exist: text = boolean"; such a table gets the upsert alone)
        "ALTER TABLE sessions ALTER engagement_score TYPE text",
        "ALTER TABLE sessions ALTER no_show TYPE text",
        "ALTER TABLE sessions ALTER scheduled_start TYPE text",
        "ALTER TABLE sessions ALTER scheduled_start TYPE timestamp",
        "ALTER TABLE tutors ALTER subjects TYPE text",
    ],
)
def test_a_table_a_dba_changed_is_loaded_alike(store: Store, alter: str) -> None:
    """The COPY straight into a table goes binary only where every column is of a type its
    values are sent as; otherwise CSV, which any type that reads text reads. Either way
    the rows stored and the rows refused are those of the staged way."""
    with store.engine.begin() as c:
        c.exec_driver_sql(alter)
    tutors = make_table("tutors", [tutor(0, subjects=["Math", "{x}", None])])
    assert store.write("tutors", tutors).inserted == 1
    # (into a text column the direct COPY wrote tutormax's array literal, the staged way
    # writes PostgreSQL's: the first re-load may update once, as before binary COPY)
    results = [store.write("tutors", tutors) for _ in range(3)]
    assert [(r.inserted, len(r.refused)) for r in results] == [(0, 0)] * 3
    assert results[-1].unchanged == 1
    rows = [session(i, engagement_score=0.5, no_show=i % 2 == 0) for i in range(20)]
    rows[3] = session(
        3, subject="Mathematics and more", duration_minutes=2**31, engagement_score=0.5
    )
    fresh = store.write("sessions", make_table("sessions", rows))
    again = store.write("sessions", make_table("sessions", rows))
    with store.engine.connect() as c:
        stored = c.exec_driver_sql(
            "SELECT count(*), sum(CAST(engagement_score AS double precision)) FROM sessions"
        ).one()
    refused = "varchar(12)" in alter or "integer" in alter
    assert (fresh.inserted, len(fresh.refused)) == ((19, 1) if refused else (20, 0))
    assert (again.inserted, again.updated, len(again.refused)) == (0, 0, 1 if refused else 0)
    assert stored[0] == fresh.inserted and float(stored[1]) == pytest.approx(0.5 * fresh.inserted)


def _available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) / (1 << 20)
    except (OSError, KeyError, ValueError):
        return 0.0


@pytest.mark.skipif(_available_gib() < 12, reason="needs 12 GiB of free memory (7 used)")
def test_a_batch_over_2_gib_is_encoded() -> None:
    """A worker's batch can pass 2 GiB (5,000 messages of up to 1 MiB): a binary array's
    32-bit offsets ended there (ArrowCapacityError), so every array is large."""
    cell = "é" * (1 << 19)  # 1 MiB of UTF-8
    rows = 1_100  # 2 columns × 1,100 × 1 MiB: 2.2 GiB
    table = pa.table({"a": pa.repeat(pa.scalar(cell), rows), "b": pa.repeat(pa.scalar(cell), rows)})
    stream = encode(table)
    size = 1 << 20
    total, head = 0, b""
    while chunk := stream.read(size):
        head += chunk[: max(0, 25 - len(head))]
        total += len(chunk)
    assert total == 19 + rows * (2 + 2 * (4 + size)) + 2
    assert head[19:25] == b"\x00\x02" + size.to_bytes(4, "big")  # 2 fields, 1 MiB


PARTITIONED = """
CREATE TABLE sessions_p (LIKE sessions INCLUDING DEFAULTS) PARTITION BY HASH (session_id);
DROP TABLE sessions CASCADE;
ALTER TABLE sessions_p RENAME TO sessions;
ALTER TABLE sessions ADD PRIMARY KEY (session_id);
CREATE TABLE sessions_0 PARTITION OF sessions FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE sessions_1 PARTITION OF sessions FOR VALUES WITH (MODULUS 2, REMAINDER 1);
ALTER TABLE sessions ADD FOREIGN KEY (tutor_id) REFERENCES tutors (tutor_id);
"""


@ON_POSTGRES
def test_a_partitioned_table_takes_updates(store: Store) -> None:
    """A partitioned table returns no system column: the upsert's `RETURNING (t.xmax = 0)`
    refused every changed row of a re-load, one by one ("cannot retrieve a system column
    in this context"). Its inserts are now told from the keys held before."""
    with store.engine.begin() as c:
        c.exec_driver_sql(PARTITIONED)
    store.write("tutors", make_table("tutors", [tutor(0)]))
    rows = [session(i) for i in range(20)]
    assert store.write("sessions", make_table("sessions", rows)).inserted == 20
    again = store.write("sessions", make_table("sessions", rows))
    assert (again.inserted, again.updated, again.unchanged, again.refused) == (0, 0, 20, [])
    later = datetime(2024, 11, 8, tzinfo=UTC)
    for i in (2, 5, 11):
        rows[i] = session(i, subject="Physics", updated_at=later)
    rows += [session(20), session(21)]
    changed = store.write("sessions", make_table("sessions", rows))
    assert (changed.inserted, changed.updated, changed.unchanged, changed.refused) == (2, 3, 17, [])
    with store.engine.connect() as c:
        physics = c.exec_driver_sql("SELECT count(*) FROM sessions WHERE subject = 'Physics'")
        assert physics.scalar_one() == 3


@ON_POSTGRES
def test_a_char_column_takes_a_longer_value(store: Store) -> None:
    """`char(n)` is `character` to format_type without its modifier, and a cast to
    `character` is `char(1)`: a staged 'Advanced' compared as 'A' with a stored 'A' left
    the row out, the change lost. A column a DBA changed gets the upsert alone."""
    with store.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE sessions ALTER session_type TYPE char(8)")
    store.write("tutors", make_table("tutors", [tutor(0)]))
    assert (
        store.write("sessions", make_table("sessions", [session(1, session_type="A")])).inserted
        == 1
    )
    changed = make_table("sessions", [session(1, session_type="Advanced")])
    assert store.write("sessions", changed).updated == 1
    with store.engine.connect() as c:
        stored = c.exec_driver_sql("SELECT session_type FROM sessions").scalar_one()
    assert stored == "Advanced"


@pytest.mark.postgres
@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/St_Johns"])
def test_a_dbas_timestamp_column_holds_utc_whatever_the_sessions_time_zone(
    pg_url: str, zone: str
) -> None:
    """A column a DBA changed to `timestamp` (no zone) holds UTC, on every way in: the
    COPY straight into the table, and the staged upsert (whose timestamptz → timestamp
    cast took the session's TimeZone: 14:00 UTC was stored as 04:00 in Kiritimati)."""
    execute_sql(pg_url, f"ALTER DATABASE {sa.make_url(pg_url).database} SET TimeZone = '{zone}'")
    store = Store.connect(pg_url)
    try:
        store.init_schema()
        with store.engine.begin() as c:
            c.exec_driver_sql("ALTER TABLE sessions ALTER scheduled_start TYPE timestamp")
        store.write("tutors", make_table("tutors", [tutor(0)]))
        start = datetime(2024, 11, 7, 14, 0, tzinfo=UTC)
        fresh = store.write("sessions", _sessions(3))  # every key new: straight in
        changed = [session(i, scheduled_start=start + timedelta(hours=i)) for i in range(5)]
        staged = store.write("sessions", make_table("sessions", changed))  # stored keys
        with store.engine.connect() as c:
            stored = c.exec_driver_sql(
                "SELECT session_id, scheduled_start::text FROM sessions ORDER BY session_id"
            ).all()
    finally:
        store.close()
    assert (fresh.inserted, staged.inserted, staged.updated) == (3, 2, 2)
    assert stored == [(f"S{i}", f"2024-11-07 {14 + i}:00:00") for i in range(5)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lists=st.lists(st.none() | TEXT | st.sampled_from(["NULL", "", " a ", '{"x"}', "a,b"]),
                      max_size=5))  # fmt: skip
def test_array_literals_read_back_as_the_lists_they_hold(conn: Any, lists: list) -> None:
    """A list column a DBA made text holds array literals, PostgreSQL's (ALTER … TYPE text,
    the staged upsert's cast) or tutormax's (the straight COPY's CSV): the same text, which
    refresh reads back as the list itself."""
    ours = array_literal(pa.array([lists], pa.list_(pa.string())))[0].as_py()
    with conn.cursor() as cur:
        cur.execute("SELECT %s::text[]::text", (lists,))
        (theirs,) = cur.fetchone()
    conn.rollback()
    assert ours == theirs  # the same text whichever way a row came in: a re-load is unchanged
    for literal in (ours, theirs):
        (read,) = arrays_as_json(pa.chunked_array([[literal]])).to_pylist()
        assert json.loads(read) == lists, literal


def _bare(item: str | None) -> str:
    """An element as a DBA may write it by hand: bare, every special character escaped."""
    if item is None:
        return "NULL"
    if item == "" or item.upper() == "NULL":
        return '"' + item + '"'
    return "".join("\\" + c if c in '{}",\\ \t\n\r\v\f' else c for c in item)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lists=st.lists(st.none() | TEXT | st.sampled_from(["SAT Prep", "A,B", 'R"n"R', "x\\"]),
                      max_size=4))  # fmt: skip
def test_any_one_dimensional_literal_reads_as_postgresql_reads_it(conn: Any, lists: list) -> None:
    """Any text PostgreSQL takes as a one-dimensional text[] (bare elements with backslash
    escapes, as a DBA may write them) reads back as PostgreSQL reads it: `{SAT\\ Prep}` was
    unreadable."""
    literal = "{" + ",".join(map(_bare, lists)) + "}"
    with conn.cursor() as cur:
        cur.execute("SELECT %s::text[]", (literal,))
        (theirs,) = cur.fetchone()
    conn.rollback()
    (read,) = arrays_as_json(pa.chunked_array([[literal]])).to_pylist()
    assert json.loads(read) == theirs == lists, literal
