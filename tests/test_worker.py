"""The worker in-process (`Worker.run(burst=True)`) on a real Redis, on SQLite and PostgreSQL.

Every test ends by counting: records published = rows in tables + dead letters, and
nothing is left pending.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from contextlib import closing
from typing import Any

import pytest
from dbfixtures import feedback, read_rows, session, tutor
from redisfixtures import (
    FlakyProxy,
    dead_letters,
    jsonable,
    pending,
    publish,
    redis_client,
    xadd_raw,
)
from typer.testing import CliRunner

from tutormax_cli.cli import app
from tutormax_cli.queue.envelope import envelope_text
from tutormax_cli.queue.metrics import Metrics
from tutormax_cli.queue.policy import RetryPolicy
from tutormax_cli.queue.streams import Streams
from tutormax_cli.queue.worker import Worker, WorkerOptions
from tutormax_cli.store import Store

pytestmark = pytest.mark.redis


def make_worker(streams: Streams, store: Store, max_attempts: int = 5, **kw: Any) -> Worker:
    metrics = kw.pop("metrics", None)
    retry = RetryPolicy(max_attempts=max_attempts, base_ms=10, max_ms=40)
    opts = WorkerOptions(consumer="w1", block_ms=50, retry=retry, **kw)
    return Worker(streams, store, opts, metrics)


def by_error(streams: Streams) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, env in dead_letters(streams):
        counts[env["metadata"]["error"]] = counts.get(env["metadata"]["error"], 0) + 1
    return counts


def assert_accounted(streams: Streams, store: Store, published: int) -> None:
    letters = dead_letters(streams)
    sources = {(e["metadata"]["source_stream"], e["metadata"]["source_id"]) for _, e in letters}
    assert len(sources) == len(letters), "a record was dead-lettered twice"
    assert sum(store.row_counts().values()) + len(letters) == published
    assert pending(streams) == 0


def test_happy_path_persists_everything(streams: Streams, store: Store) -> None:
    publish(
        streams, "feedback", [feedback(i, session_id=f"S{i}", tutor_id="T0") for i in range(60)]
    )
    publish(streams, "sessions", [session(i, tutor_id=f"T{i % 10}") for i in range(120)])
    publish(streams, "tutors", [tutor(i) for i in range(10)])
    totals = make_worker(streams, store).run(burst=True)
    assert store.row_counts() == {"tutors": 10, "sessions": 120, "feedback": 60}
    assert (totals["read"], totals["persisted"], totals["dead_lettered"]) == (190, 190, 0)
    assert totals["retried"] == 0  # tutors go first, then sessions, then feedback
    # the feedback join found its session in the same batch: 19 h after 14:00
    assert read_rows(store, "feedback")["F1"]["feedback_delay_hours"] == 19.0
    assert_accounted(streams, store, 190)


def test_sessions_before_their_tutors_are_retried_then_persisted(
    streams: Streams, store: Store
) -> None:
    publish(streams, "sessions", [session(i, tutor_id="T1") for i in range(30)])
    worker = make_worker(streams, store)
    first = worker.run(max_batches=1)
    assert (first["retried"], first["persisted"], first["dead_lettered"]) == (30, 0, 0)
    assert pending(streams) == 30  # waiting in the PEL, not acknowledged
    publish(streams, "tutors", [tutor(1)])
    totals = make_worker(streams, store).run(burst=True)  # a new worker, same consumer name
    assert store.row_counts()["sessions"] == 30
    assert totals["dead_lettered"] == 0
    assert_accounted(streams, store, 31)


def test_missing_parent_beyond_max_attempts_is_dead_lettered(
    streams: Streams, store: Store
) -> None:
    publish(streams, "tutors", [tutor(1)])
    publish(streams, "sessions", [session(1, tutor_id="T1"), session(2, tutor_id="GHOST")])
    totals = make_worker(streams, store, max_attempts=3).run(burst=True)
    assert (totals["persisted"], totals["retried"], totals["dead_lettered"]) == (2, 2, 1)
    ((_, env),) = dead_letters(streams)
    meta = env["metadata"]
    assert (meta["error"], meta["attempts"]) == ("missing_parent", 3)
    assert meta["detail"][0]["field"] == "tutor_id"
    assert env["data"]["session_id"] == "S2"
    assert meta["source_metadata"] == {"test": True}
    assert_accounted(streams, store, 3)


def test_validation_errors_are_dead_lettered_at_once(streams: Streams, store: Store) -> None:
    publish(streams, "tutors", [tutor(1), tutor(2, email="no-at-sign", status="retired")])
    totals = make_worker(streams, store).run(burst=True)
    assert (totals["persisted"], totals["retried"], totals["dead_lettered"]) == (1, 0, 1)
    ((_, env),) = dead_letters(streams)
    assert (env["metadata"]["error"], env["metadata"]["attempts"]) == ("validation", 1)
    assert {d["code"] for d in env["metadata"]["detail"]} == {"invalid_email", "invalid_choice"}
    assert_accounted(streams, store, 2)


def test_poison_messages_are_dead_lettered(streams: Streams, store: Store) -> None:
    publish(streams, "tutors", [tutor(1)])
    good = json.loads(envelope_text(streams.stream("tutors"), {"tutor_id": "T2"}))
    xadd_raw(streams, "tutors", {"message": json.dumps({**good, "checksum": "0" * 64})})
    xadd_raw(streams, "tutors", {"message": b"\xff not json"})
    xadd_raw(streams, "sessions", {"message": "x" * (1 << 20 | 1)})  # over the 1 MiB cap
    xadd_raw(streams, "sessions", {"other": "field"})
    lone = envelope_text(streams.stream("tutors"), {**jsonable(tutor(3)), "location": "\ud800"})
    xadd_raw(streams, "tutors", {"message": lone})  # a lone surrogate: that row, invalid UTF-8
    totals = make_worker(streams, store).run(burst=True)
    assert (totals["persisted"], totals["dead_lettered"]) == (1, 5)
    assert by_error(streams) == {"poison": 4, "validation": 1}
    reasons = sorted(e["metadata"]["detail"][0]["message"][:24] for _, e in dead_letters(streams))
    assert reasons == ["checksum does not match ", "entry has no 'message' f",
                       "message is not valid UTF", "message of 1048577 bytes",
                       "value is not valid UTF-8"]  # fmt: skip
    oversized = next(e for _, e in dead_letters(streams) if "bytes" in str(e["metadata"]))
    assert len(oversized["data"]["message"]) == 64 << 10  # kept a slice, not the megabyte
    assert_accounted(streams, store, 6)


@pytest.mark.parametrize("refusal", ["check", "trigger"])
def test_one_bad_row_in_a_batch_of_500(streams: Streams, store: Store, refusal: str) -> None:
    """A row that passes validation but breaks a constraint the DBA added, or that the
    DBA's trigger RAISEs for (PostgreSQL: SQLSTATE P0001, which was an internal error), is
    isolated."""
    with store.engine.begin() as conn:
        if store.dialect == "postgresql" and refusal == "check":
            conn.exec_driver_sql(
                "ALTER TABLE tutors ADD CONSTRAINT no_mallory CHECK (name <> 'Mallory')"
            )
        elif store.dialect == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION no_mallory() RETURNS trigger AS $$ BEGIN "
                "IF NEW.name = 'Mallory' THEN RAISE EXCEPTION 'no mallory'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER no_mallory BEFORE INSERT ON tutors "
                "FOR EACH ROW EXECUTE FUNCTION no_mallory()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER no_mallory BEFORE INSERT ON tutors WHEN NEW.name = 'Mallory' "
                "BEGIN SELECT RAISE(ABORT, 'no mallory'); END"
            )
    rows = [tutor(i) for i in range(500)]
    rows[321]["name"] = "Mallory"
    publish(streams, "tutors", rows)
    totals = make_worker(streams, store).run(burst=True)
    assert store.row_counts()["tutors"] == 499
    assert (totals["persisted"], totals["dead_lettered"]) == (499, 1)
    ((_, env),) = dead_letters(streams)
    assert env["metadata"]["error"] == "database"
    assert "mallory" in json.dumps(env["metadata"]["detail"]).lower()
    assert env["data"]["tutor_id"] == "T321"
    assert_accounted(streams, store, 500)


def test_stats_json_shape_and_metrics(
    streams: Streams, store: Store, db_url: str, redis_url: str, prefix: str
) -> None:
    publish(streams, "tutors", [tutor(1), tutor(2, status="?")])
    publish(streams, "sessions", [session(1, tutor_id="T1")])
    metrics = Metrics(0, "127.0.0.1")
    try:
        make_worker(streams, store, metrics=metrics).run(burst=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics") as resp:
            text = resp.read().decode()
    finally:
        metrics.close()
    assert 'tutormax_worker_messages_total{kind="tutors",outcome="persisted"} 1.0' in text
    assert 'tutormax_worker_messages_total{kind="sessions",outcome="persisted"} 1.0' in text
    assert 'tutormax_worker_messages_total{kind="tutors",outcome="dead_lettered"} 1.0' in text
    assert "tutormax_worker_batch_seconds_count 1.0" in text
    result = CliRunner().invoke(app, ["stats", "--json", "--db", db_url, "--redis", redis_url,
                                      "--prefix", prefix])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"streams", "dead_letter", "tables", "workers"} <= set(doc)
    s = doc["streams"][f"{prefix}sessions:enrichment"]
    assert (s["length"], s["pending"], s["lag"]) == (1, 0, 0)
    assert s["consumers"] == {"live": ["w1"], "gone": []}
    assert doc["dead_letter"]["total"] == 1
    assert doc["dead_letter"]["by_error"] == {"validation": 1}
    assert doc["tables"] == {"tutors": 1, "sessions": 1, "feedback": 0}
    w = doc["workers"]["w1"]
    assert (w["read"], w["persisted"], w["dead_lettered"], w["retried"]) == (3, 2, 1, 0)
    assert {"started_at", "last_heartbeat", "msgs_per_s", "reclaimed"} <= set(w)


def outage_once_batch_is_held(proxy: FlakyProxy, streams: Streams, seconds: float) -> Any:
    """A thread that cuts the proxy for `seconds` once the worker holds a batch (pending)."""

    def outage() -> None:
        while pending(streams) == 0:
            time.sleep(0.01)
        proxy.cut()
        time.sleep(seconds)
        proxy.restore()

    cutter = threading.Thread(target=outage)
    cutter.start()
    return cutter


def test_redis_outage_mid_batch_is_waited_out_not_dead_lettered(
    streams: Streams, store: Store, redis_url: str, prefix: str, monkeypatch: Any
) -> None:
    publish(streams, "tutors", [tutor(i) for i in range(5)])
    publish(streams, "sessions", [session(1, tutor_id="T1"), session(2, duration_minutes=999)])
    # Committed, about to dead-letter: the worker pauses there while Redis is cut.
    fault = {"fault": "after_commit_before_ack", "fault_pause_s": "0.5"}
    proxy = FlakyProxy(redis_url)
    cutter = outage_once_batch_is_held(proxy, streams, seconds=1.5)
    try:
        with Streams(proxy.url, prefix) as through_proxy:
            totals = make_worker(through_proxy, store, **fault).run(burst=True)
    finally:
        cutter.join()
        proxy.close()
    assert totals["outages"] >= 1
    assert (totals["persisted"], totals["dead_lettered"]) == (6, 1)  # once each, after all
    assert by_error(streams) == {"validation": 1}
    assert_accounted(streams, store, 7)


def test_a_batch_tried_again_after_an_outage_at_its_ack_keeps_its_dead_letters_dead(
    streams: Streams, store: Store, db_url: str, redis_url: str, prefix: str
) -> None:
    """The outage path of a dead letter written before its ack (the kill path is in
    test_faults): a session missing its tutor is dead-lettered (one attempt), Redis goes
    away before the ack, and meanwhile another worker stores the tutor. The batch, tried
    again after the outage, must not process the session again: its dead-letter mark is
    live, so it is acknowledged, not stored as well as dead-lettered."""
    publish(streams, "sessions", [session(1, tutor_id="T1")])
    fault = {"fault": "after_deadletter_before_ack", "fault_pause_s": "1.0"}
    proxy = FlakyProxy(redis_url)
    errors: list[BaseException] = []

    def outage() -> None:
        try:
            wait_until(lambda: len(dead_letters(streams)) == 1)
            proxy.cut()
            publish(streams, "tutors", [tutor(1)])
            with closing(Store.connect(db_url)) as other_store:
                other = Worker(streams, other_store, WorkerOptions(consumer="w2", block_ms=50))
                assert other.run(max_batches=1)["persisted"] == 1
            time.sleep(1.5)  # past the pause: the ack meets the outage
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            proxy.restore()

    cutter = threading.Thread(target=outage)
    cutter.start()
    try:
        with Streams(proxy.url, prefix) as through_proxy:
            totals = make_worker(through_proxy, store, max_attempts=1, **fault).run(burst=True)
    finally:
        cutter.join()
        proxy.close()
    assert not errors, errors
    assert totals["outages"] >= 1, totals
    assert store.row_counts() == {"tutors": 1, "sessions": 0, "feedback": 0}
    assert [e["metadata"]["error"] for _, e in dead_letters(streams)] == ["missing_parent"]
    assert totals.get("dead_lettered_before") == 1 and totals["persisted"] == 0, totals
    assert_accounted(streams, store, 2)


def wait_until(condition: Any, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_pending_entry_deleted_by_someone_else_is_counted(streams: Streams, store: Store) -> None:
    publish(streams, "sessions", [session(1, tutor_id="T1"), session(2, tutor_id="T1")])
    make_worker(streams, store).run(max_batches=1)  # both wait for their tutor
    client = redis_client()
    try:
        first = client.xrange(streams.stream("sessions"), count=1)[0][0]
        client.xdel(streams.stream("sessions"), first)
    finally:
        client.close()
    publish(streams, "tutors", [tutor(1)])
    totals = make_worker(streams, store).run(burst=True)
    assert totals["trimmed"] == 1
    assert store.row_counts()["sessions"] == 1
    assert_accounted(streams, store, 2)  # 3 published, 1 deleted before it was done


@pytest.mark.postgres
def test_postgresql_unreachable_for_seconds_is_waited_out(
    streams: Streams, pg_url: str, monkeypatch: Any
) -> None:
    """PostgreSQL goes away for 3 s while a batch is about to commit: the worker backs off,
    retries, and every record lands once; nothing is dead-lettered."""
    import sqlalchemy as sa

    proxy = FlakyProxy(pg_url)
    through = sa.make_url(pg_url).set(host="127.0.0.1", port=proxy.port)
    store = Store.connect(through.render_as_string(hide_password=False))
    try:
        store.init_schema()
        publish(streams, "tutors", [tutor(i) for i in range(20)])
        publish(streams, "sessions", [session(i, tutor_id=f"T{i % 20}") for i in range(200)])
        fault = {"fault": "before_commit", "fault_pause_s": "0.5"}  # the batch waits to commit
        cutter = outage_once_batch_is_held(proxy, streams, seconds=3)
        try:
            totals = make_worker(streams, store, **fault).run(burst=True)
        finally:
            cutter.join()
        assert totals["outages"] >= 1
        assert (totals["persisted"], totals["dead_lettered"]) == (220, 0)
        assert store.row_counts() == {"tutors": 20, "sessions": 200, "feedback": 0}
        assert_accounted(streams, store, 220)
    finally:
        store.close()
        proxy.close()


def test_duplicates_in_a_batch_a_rejected_version_never_hides_a_valid_one(
    streams: Streams, store: Store
) -> None:
    """S1 valid, then S1 naming an unknown tutor, then S2 twice with the older updated_at
    last: the valid S1 is stored; the orphan is dead-lettered (after its retries); the
    newer S2 is stored; every message is accounted for."""
    from datetime import UTC, datetime

    publish(streams, "tutors", [tutor(0)])
    publish(
        streams,
        "sessions",
        [
            session(1, tutor_id="T0", duration_minutes=60),
            session(1, tutor_id="T9", duration_minutes=90),
            session(2, updated_at=datetime(2024, 11, 8, 12, tzinfo=UTC), subject="Newer"),
            session(2, updated_at=datetime(2024, 11, 8, 9, tzinfo=UTC), subject="Older"),
        ],
    )
    totals = make_worker(streams, store, max_attempts=2).run(burst=True)
    stored = read_rows(store, "sessions")
    assert (stored["S1"]["tutor_id"], stored["S1"]["duration_minutes"]) == ("T0", 60)
    assert stored["S2"]["subject"] == "Newer"
    assert by_error(streams) == {"missing_parent": 1}
    assert (totals["read"] - totals["retried"], totals["persisted"]) == (5, 4)
    assert pending(streams) == 0
