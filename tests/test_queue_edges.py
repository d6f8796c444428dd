"""The queue path at its edges (SPEC §6), on real Redis, PostgreSQL and worker processes.

An in-order backfill through two workers on a tight retry budget dead-letters nothing; a
crashed consumer's parents do not doom their children; faults are told apart (a dropped
column is exit 2, a bug exit 3, SIGTERM during an outage exit 0 at once — each with the
batch left pending); replay keeps history and never doubles a dead letter; a Redis that
comes back empty is recovered from; TutorMax's own envelopes on the default streams are
stored; the dead-letter stream's TTL and trimming are reported.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import sqlalchemy as sa
from dbfixtures import feedback, pg_admin, session, tutor
from procfixtures import PrivateRedis, run, start, wait_for, worker_cmd
from redisfixtures import REDIS_URL, FlakyProxy, dead_letters, pending, publish, redis_client

from tutormax_cli.queue.streams import Streams
from tutormax_cli.store import Store

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
FIXTURES = Path(__file__).parent / "fixtures"


def counts(pg_url: str) -> dict[str, int]:
    with Store.connect(pg_url) as store:
        return store.row_counts()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([TUTORMAX, *args], capture_output=True, text=True, timeout=timeout)


def by_error(streams: Streams) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, env in dead_letters(streams):
        out[env["metadata"]["error"]] = out.get(env["metadata"]["error"], 0) + 1
    return out


# -- a parent still on its way is not a missing parent -------------------------------------------


def test_an_in_order_backfill_through_two_workers_dead_letters_nothing(
    tmp_path: Path, pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """Tutors, then sessions, then feedback, published in that order by `tutormax publish`;
    two workers with 3 attempts and 100–200 ms retries: nothing dead-lettered, every record
    stored once, and the entries read stay within 1.25× the records stored.

    NOTE: a record read while its parents are still in flight waits and is read once more
    when they are in. How many do depends on timing: 12,042 reads of 11,000 in most runs
    (two 500-entry batches, at the two kind boundaries) before and after 2026-12-06's
    changes, 12,084 and 11,542 in others; CI saw 12,191 and a local run 12,598, over the
    1.1× this test asserted. The bound is there to catch waiting records read again and
    again, not to time the workers."""
    data = tmp_path / "data"
    gen = cli("generate", "--out", str(data), "--tutors", "200", "--sessions", "6000",
              "--feedback", "4800", "--format", "csv")  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    pub = cli("publish", *(str(data / f"{k}.csv") for k in ("tutors", "sessions", "feedback")),
              "--redis", redis_url, "--prefix", prefix)  # fmt: skip
    assert pub.returncode == 0, pub.stderr
    cmd = worker_cmd(pg_url, redis_url, prefix, "--max-attempts", "3", "--retry-base-ms", "100",
                     "--retry-max-ms", "200", "--batch-size", "500")  # fmt: skip
    workers = [start([*cmd, "--consumer", f"w{i}"]) for i in range(2)]
    results = [w.communicate(timeout=300) for w in workers]
    for w, (_out, err) in zip(workers, results, strict=True):
        assert w.returncode == 0, err
    totals = [json.loads(out) for out, _ in results]
    assert dead_letters(streams) == []
    assert counts(pg_url) == {"tutors": 200, "sessions": 6000, "feedback": 4800}
    assert pending(streams) == 0
    read = sum(t["read"] for t in totals)
    assert read <= 1.25 * 11_000, totals


@pytest.mark.parametrize("batch", ["1", "5", "1000"])
def test_parents_in_the_same_millisecond_as_their_children_are_waited_for(
    pg_url: str, prefix: str, streams: Streams, batch: str
) -> None:
    """Ten tutors, a tutor, its session and that session's feedback, published in that order
    in one MULTI: one millisecond, ids tutors ms-0..ms-10, session ms-0, feedback ms-0. The
    sequence counts per stream, so the session's id was taken as older than its tutor's and
    the tutor stream as passed: dead-lettered as missing_parent at --max-attempts 1 with
    batches of 1 or 5, stored with batches of 1000. Across streams only the millisecond
    orders entries: nothing dead-lettered, no attempt spent, at any batch size."""
    from tutormax_cli.queue.envelope import envelope_text

    def text(record: dict[str, Any]) -> str:
        return envelope_text("t", json.loads(json.dumps(record, default=str)))

    # The ids a MULTI gets within one millisecond, given outright: a MULTI may straddle two.
    ms = int(time.time() * 1000)
    with streams.r.pipeline(transaction=True) as pipe:
        for i in range(10):
            record = {"message": text(tutor(f"filler{i}"))}
            pipe.xadd(streams.stream("tutors"), record, id=f"{ms}-{i}")
        pipe.xadd(streams.stream("tutors"), {"message": text(tutor("P"))}, id=f"{ms}-10")
        pipe.xadd(streams.stream("sessions"), {"message": text(session("P", tutor_id="TP"))},
                  id=f"{ms}-0")  # fmt: skip
        child = feedback("P", session_id="SP", tutor_id="TP")
        pipe.xadd(streams.stream("feedback"), {"message": text(child)}, id=f"{ms}-0")
        pipe.execute()
    done = run(worker_cmd(pg_url, REDIS_URL, prefix, "--max-attempts", "1",
                          "--batch-size", batch))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert dead_letters(streams) == []
    assert counts(pg_url) == {"tutors": 11, "sessions": 1, "feedback": 1}
    assert json.loads(done.stdout)["retried"] == 0


@pytest.mark.parametrize("batch", ["1", "1000"])
def test_which_version_of_a_key_is_stored_does_not_depend_on_the_batch_size(
    pg_url: str, prefix: str, streams: Streams, batch: str
) -> None:
    """A version with updated_at, then one without: in one batch the first is stored (one
    with updated_at beats one without), but one batch at a time the second overwrote it,
    the database's guard letting a version without updated_at replace any."""
    stamped = tutor("D", name="stamped", updated_at=datetime(2024, 1, 1, tzinfo=UTC))
    bare = tutor("D", name="bare")
    publish(streams, "tutors", [stamped, bare])
    done = run(worker_cmd(pg_url, REDIS_URL, prefix, "--batch-size", batch))
    assert done.returncode == 0, done.stderr
    with Store.connect(pg_url) as store, store.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT name, updated_at FROM tutors").one()
    assert row[0] == "stamped" and row[1] is not None


def test_a_crashed_consumers_parents_do_not_doom_their_children(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """Worker a is killed holding every tutor; b (a new name) gets the sessions at once,
    but their tutors sit in a's pending list until they can be reclaimed: the sessions
    wait, spending no attempt, and are stored once b has reclaimed the tutors."""
    publish(streams, "tutors", [tutor(i) for i in range(20)])
    first = run(worker_cmd(pg_url, redis_url, prefix, "--consumer", "a"), fault="before_commit")
    assert first.returncode == -signal.SIGKILL
    publish(streams, "sessions", [session(i, tutor_id=f"T{i % 20}") for i in range(300)])
    # Idle long enough that b reads the sessions (and they wait) before it may reclaim.
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "b", "--reclaim-idle-ms", "5000")
    second = run(cmd)
    assert second.returncode == 0, second.stderr
    assert dead_letters(streams) == []
    assert counts(pg_url)["sessions"] == 300
    totals = json.loads(second.stdout)
    assert totals["waited"] > 0 and totals["reclaimed"] >= 20
    assert "to become reclaimable" in second.stderr  # --burst says what it waits for


def test_a_genuine_orphan_still_dead_letters_after_its_attempts(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    publish(streams, "tutors", [tutor(1)])
    publish(streams, "sessions", [session(1, tutor_id="T1"), session(2, tutor_id="GHOST")])
    done = run(worker_cmd(pg_url, redis_url, prefix, "--max-attempts", "3"))
    assert done.returncode == 0, done.stderr
    (_, env), = dead_letters(streams)  # fmt: skip
    assert (env["metadata"]["error"], env["metadata"]["attempts"]) == ("missing_parent", 3)
    assert pending(streams) == 0


# -- faults told apart -------------------------------------------------------------------------


def _drop_subject_count(pg_url: str) -> None:
    engine = sa.create_engine(sa.make_url(pg_url).set(drivername="postgresql+psycopg2"))
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE tutors DROP COLUMN subject_count")
    engine.dispose()


def test_a_dropped_column_stops_the_worker_with_exit_2_and_nothing_acked(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """Dropped before the worker starts: refused by the schema check, nothing read. Dropped
    while it runs: its batch fails on the table, exit 2, the batch left pending."""
    with Store.connect(pg_url) as store:
        store.init_schema()
    _drop_subject_count(pg_url)
    publish(streams, "tutors", [tutor(i) for i in range(5)])
    done = run(worker_cmd(pg_url, redis_url, prefix), timeout=30)
    assert done.returncode == 2, done.stderr
    assert "tutors lacks column subject_count" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert pending(streams) == 0 and dead_letters(streams) == []  # not even read

    engine = sa.create_engine(sa.make_url(pg_url).set(drivername="postgresql+psycopg2"))
    with engine.begin() as conn:  # a fresh schema, then the drop while the worker runs
        conn.exec_driver_sql("DROP TABLE feedback, sessions, tutors, tutormax_schema_version")
    engine.dispose()
    with Store.connect(pg_url) as store:
        store.init_schema()
    streams.r.delete(*(streams.stream(k) for k in ("tutors", "sessions", "feedback")))
    long_running = [c for c in worker_cmd(pg_url, redis_url, prefix) if c != "--burst"]
    proc = start(long_running)
    try:
        wait_for(lambda: streams.r.exists(streams.stream("tutors")), "the worker's group")
        _drop_subject_count(pg_url)
        publish(streams, "tutors", [tutor(i) for i in range(5)])
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 2, err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, err
    assert "subject_count" in errors[0] and "tutors" in errors[0]
    assert "Traceback" not in err
    assert pending(streams) == 5 and dead_letters(streams) == []


def test_a_bug_leaves_the_batch_pending_logs_its_traceback_and_exits_3(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    for n in (1, 40):  # a batch of one record (the canary decides) and a bigger one
        publish(streams, "tutors", [tutor(f"{n}-{i}") for i in range(n)])
        done = run(worker_cmd(pg_url, redis_url, prefix), fault="pipeline_bug", timeout=30)
        assert done.returncode == 3, done.stderr
        assert "Traceback" in done.stderr and "fault injection: pipeline_bug" in done.stderr
        assert dead_letters(streams) == [], "a bug was taken for poison"
    assert pending(streams) == 41
    fixed = run(worker_cmd(pg_url, redis_url, prefix, "--reclaim-idle-ms", "200"))  # restarted
    assert fixed.returncode == 0, fixed.stderr
    assert counts(pg_url)["tutors"] == 41 and pending(streams) == 0


def test_sigterm_during_a_database_outage_exits_0_within_seconds(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """The database refuses connections (ALLOW_CONNECTIONS false + the worker's backends
    terminated); the worker backs off with a batch in hand; SIGTERM ends it at once, the
    batch left pending; a later --burst stores everything."""
    db = sa.make_url(pg_url).database
    publish(streams, "tutors", [tutor(i) for i in range(10)])
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1")
    cmd.remove("--burst")
    proc = start(cmd)
    wait_for(lambda: counts(pg_url)["tutors"] == 10, "the first tutors to be stored")
    admin = pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (db,),
            )
        publish(streams, "tutors", [tutor(f"late{i}") for i in range(10)])
        wait_for(lambda: pending(streams) > 0, "the worker to hold a batch")
        time.sleep(1.5)  # well into its backoff
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
        took = time.monotonic() - asked
        assert proc.returncode == 0, err
        assert took < 5, f"SIGTERM took {took:.1f} s during an outage"
        assert "retrying in" in err and "stay pending" in err
        assert pending(streams) >= 1  # the batch it held was not acknowledged
    finally:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        admin.close()
    assert dead_letters(streams) == []
    later = run(worker_cmd(pg_url, redis_url, prefix, "--consumer", "w2", "--reclaim-idle-ms",
                           "200"))  # fmt: skip
    assert later.returncode == 0, later.stderr
    assert counts(pg_url)["tutors"] == 20 and pending(streams) == 0


# -- replay ------------------------------------------------------------------------------------


def test_replay_keeps_history(pg_url: str, redis_url: str, prefix: str, streams: Streams) -> None:
    """An orphan dead-lettered after 2 attempts, replayed, failing again: 4 attempts, and the
    chain of dead letters it came from."""
    publish(streams, "sessions", [session(1, tutor_id="GHOST")])
    cmd = worker_cmd(pg_url, redis_url, prefix, "--max-attempts", "2")
    assert run(cmd).returncode == 0
    (first, env), = dead_letters(streams)  # fmt: skip
    assert env["metadata"]["attempts"] == 2
    replayed = cli("dlq", "replay", "--all", "--redis", redis_url, "--prefix", prefix)
    assert replayed.returncode == 0, replayed.stderr
    assert run(cmd).returncode == 0
    (second, env), = dead_letters(streams)  # fmt: skip
    meta = env["metadata"]
    assert (meta["attempts"], meta["replayed_from"], meta["replay_chain"]) == (4, first, [first])
    shown = cli("dlq", "show", second, "--redis", redis_url, "--prefix", prefix)
    assert shown.returncode == 0 and '"replay_chain"' in shown.stdout
    assert cli("dlq", "replay", "--all", "--redis", redis_url, "--prefix", prefix).returncode == 0
    assert run(cmd).returncode == 0
    (_, env), = dead_letters(streams)  # fmt: skip
    assert env["metadata"]["attempts"] == 6 and env["metadata"]["replay_chain"] == [first, second]


def test_a_replay_and_its_pending_original_never_both_become_dead_letters(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """Killed after the dead-letter write and before its ack; `dlq replay --all`; restart:
    one dead letter per record."""
    bad = [session(i, duration_minutes=999) for i in range(3)]
    publish(streams, "tutors", [tutor(0)])
    publish(streams, "sessions", bad)
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1", "--reclaim-idle-ms", "200")
    killed = run(cmd, fault="after_deadletter_before_ack")
    assert killed.returncode == -signal.SIGKILL
    assert len(dead_letters(streams)) == 3 and pending(streams) == 4  # and the tutor
    replayed = cli("dlq", "replay", "--all", "--redis", redis_url, "--prefix", prefix)
    assert replayed.returncode == 0, replayed.stderr
    assert run(cmd).returncode == 0
    letters = dead_letters(streams)
    assert len(letters) == 3, [e["metadata"]["source_id"] for _, e in letters]
    assert all(e["metadata"].get("replayed_from") for _, e in letters)
    assert pending(streams) == 0


def test_a_recreated_group_does_not_dead_letter_a_replayed_or_drained_record_again(
    tmp_path: Path, pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """Four invalid tutors dead-lettered; two replayed (their replays dead-lettered too),
    then every dead letter drained. Then the group is destroyed: the recreated one reads the
    stream from its first entry, and the originals came back as dead letters (150 became
    300 in a review). Their marks stay until the entries are trimmed, and then go."""
    publish(streams, "tutors", [tutor(i, email="nope") for i in range(4)])
    cmd = worker_cmd(pg_url, redis_url, prefix)
    assert run(cmd).returncode == 0
    ids = [entry for entry, _ in dead_letters(streams)]
    assert len(ids) == 4
    args = ["--redis", redis_url, "--prefix", prefix]
    assert cli("dlq", "replay", *ids[:2], *args).returncode == 0
    assert run(cmd).returncode == 0  # the replays fail again
    assert len(dead_letters(streams)) == 4
    drained = cli("dlq", "drain", "--out", str(tmp_path / "d.jsonl"), *args)
    assert drained.returncode == 0, drained.stderr
    assert dead_letters(streams) == []
    streams.r.xgroup_destroy(streams.stream("tutors"), "enrichment-workers")
    again = run(cmd)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["read"] == 6  # every entry delivered again
    assert dead_letters(streams) == []  # and none dead-lettered twice
    assert streams.r.hlen(streams.index_key) == 6
    # Trimmed from the stream, the four originals cannot come again: their marks go.
    fifth = streams.r.xrange(streams.stream("tutors"), "-", "+")[4][0]
    streams.r.xtrim(streams.stream("tutors"), minid=fifth, approximate=False)
    assert streams.r.xlen(streams.stream("tutors")) == 2
    last = run(cmd)
    assert last.returncode == 0, last.stderr
    assert streams.r.hlen(streams.index_key) == 2, last.stderr


# -- Redis that comes back empty ---------------------------------------------------------------


def long_lived_worker(
    redis_url: str, pg_url: str, prefix: str, tutors: int, *extra: str
) -> tuple[Streams, subprocess.Popen]:
    """`tutors` tutors published, then a worker (no --burst) that has persisted them."""
    streams = Streams(redis_url, prefix)
    publish(streams, "tutors", [tutor(i) for i in range(tutors)])
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1", *extra)
    cmd.remove("--burst")
    proc = start(cmd)
    wait_for(lambda: counts(pg_url)["tutors"] == tutors, "the worker's first tutors")
    return streams, proc


def test_a_redis_that_comes_back_empty_is_recovered_from(
    tmp_path: Path, pg_url: str, prefix: str
) -> None:
    server = PrivateRedis(tmp_path)
    try:
        streams, proc = long_lived_worker(server.url, pg_url, prefix, 5)
        server.stop()
        time.sleep(0.5)
        server.start()  # empty: no streams, no group, no dead-letter index
        publish(streams, "tutors", [tutor(f"after{i}") for i in range(5)])
        wait_for(lambda: counts(pg_url)["tutors"] == 10, "tutors published after the restart",
                 timeout_s=40)  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "vanished" in err and " WARNING " in err
        assert json.loads(out)["recovered"] >= 1
        streams.close()
    finally:
        server.stop()


# -- a drop-in behind TutorMax's validation stage ----------------------------------------------


@pytest.fixture(name="default_names_redis")
def default_names_redis_fixture() -> Any:
    """Redis database 13 of the test server, where the default stream names themselves
    (`tutormax:{kind}:enrichment`, `tutormax:dead_letter`) can be used: their keys are
    deleted before and after, nothing else there is touched, and a lock in database 0
    keeps two test runs from using them at once."""
    url = REDIS_URL.rsplit("/", 1)[0] + "/13"
    lock = redis_client()
    wait_for(lambda: lock.set("tmtest:default-names-lock", os.getpid(), nx=True, ex=120),
             "another test run to release the default stream names", timeout_s=120)  # fmt: skip
    client = redis_lib.Redis.from_url(url)
    keys = ["tutormax:tutors:enrichment", "tutormax:sessions:enrichment",
            "tutormax:feedback:enrichment", "tutormax:dead_letter",
            "tutormax:dead_letter:sources"]  # fmt: skip

    def clean() -> None:
        client.delete(*keys)
        for k in client.scan_iter(match="tutormax:workers:*"):
            client.delete(k)

    clean()
    try:
        yield url, client
    finally:
        clean()
        client.close()
        lock.delete("tmtest:default-names-lock")
        lock.close()


def test_tutormax_validation_worker_envelopes_on_the_default_streams_are_stored(
    default_names_redis: Any, pg_url: str
) -> None:
    """The six entries exactly as TutorMax's validation worker writes them, on the default
    streams: five are stored; the sixth, a feedback whose session is not among them, is a
    genuine orphan (`missing_parent`). Once that session arrives, replaying it stores it."""
    url, client = default_names_redis
    lines = (FIXTURES / "tutormax-enrichment-envelopes.jsonl").read_text().splitlines()
    for line in lines:
        entry = json.loads(line)
        client.xadd(entry["stream"], entry["fields"])
    worker = [sys.executable, "-m", "tutormax_cli", "worker", "--burst", "--json", "--db",
              pg_url, "--redis", url, "--block-ms", "100", "--max-attempts", "2",
              "--retry-base-ms", "10"]  # fmt: skip
    done = subprocess.run(worker, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["persisted"] == 5
    assert counts(pg_url) == {"tutors": 2, "sessions": 2, "feedback": 1}
    ((_, fields),) = client.xrange("tutormax:dead_letter")
    letter = json.loads(fields[b"message"])
    assert letter["metadata"]["error"] == "missing_parent"
    assert letter["metadata"]["detail"][0]["field"] == "session_id"
    assert letter["metadata"]["source_metadata"]["validation_warnings"] == 0  # kept as sent
    orphan = letter["data"]
    missing = {**session("x", tutor_id=orphan["tutor_id"]), "session_id": orphan["session_id"]}
    streams = Streams(url)
    publish(streams, "sessions", [missing])
    streams.close()
    replayed = cli("dlq", "replay", "--all", "--redis", url)
    assert replayed.returncode == 0, replayed.stderr
    assert subprocess.run(worker, capture_output=True, timeout=60).returncode == 0
    assert counts(pg_url) == {"tutors": 2, "sessions": 3, "feedback": 2}
    assert client.xlen("tutormax:dead_letter") == 0


def test_a_dead_letter_stream_with_a_ttl_or_trimmed_is_reported(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    publish(streams, "sessions", [session(i, duration_minutes=999) for i in range(3)])
    publish(streams, "tutors", [tutor(0)])
    assert run(worker_cmd(pg_url, redis_url, prefix)).returncode == 0
    assert len(dead_letters(streams)) == 3
    client = redis_client()
    try:
        client.xtrim(streams.dead_letter_key, maxlen=1, approximate=False)  # as TutorMax does
        client.expire(streams.dead_letter_key, 86_400)
    finally:
        client.close()
    stats = cli("stats", "--json", "--db", pg_url, "--redis", redis_url, "--prefix", prefix)
    doc = json.loads(stats.stdout)["dead_letter"]
    assert doc["lost"] == 2 and 0 < doc["ttl_s"] <= 86_400 and len(doc["warnings"]) == 2
    # A record whose dead letter was trimmed away fails again: it is dead-lettered again
    # (a stale mark does not block it), and the worker's start-up says what it found.
    first = dead_letters(streams)
    publish(streams, "sessions", [session(0, duration_minutes=999)])
    done = run(worker_cmd(pg_url, redis_url, prefix))
    assert done.returncode == 0
    assert "has a TTL" in done.stderr and "were lost" in done.stderr
    assert len(dead_letters(streams)) == len(first) + 1
    doc = json.loads(cli("stats", "--json", "--db", pg_url, "--redis", redis_url, "--prefix",
                         prefix).stdout)["dead_letter"]  # fmt: skip
    assert doc["lost"] == 0  # the start-up swept the marks of the lost ones


# -- operable ----------------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_readiness_and_gauges(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    from tutormax_cli.queue.metrics import Metrics
    from tutormax_cli.queue.worker import Worker, WorkerOptions

    publish(streams, "tutors", [tutor(1)])
    publish(streams, "sessions", [session(1, tutor_id="T1"), session(2, duration_minutes=999)])
    proxy = FlakyProxy()
    through = Streams(proxy.url, prefix)
    store = Store.connect(pg_url)
    store.init_schema()

    def ready() -> tuple[bool, str]:
        through.ping()
        store.ping()
        return True, "ok"

    metrics = Metrics(0, "127.0.0.1", ready=ready, stale_after_s=0.5)
    base = f"http://127.0.0.1:{metrics.port}"
    try:
        opts = WorkerOptions(consumer="w1", block_ms=50)
        Worker(through, store, opts, metrics).run(burst=True)
        code, text = _get(f"{base}/metrics")
        assert code == 200
        stream = streams.stream("sessions")
        assert f'tutormax_stream_length{{stream="{stream}"}} 2.0' in text
        assert f'tutormax_stream_pending{{stream="{stream}"}}' in text
        assert 'tutormax_dead_letters{error="validation"} 1.0' in text
        assert "tutormax_worker_last_commit_timestamp_seconds" in text
        assert 'tutormax_build_info{version="' in text
        assert _get(f"{base}/readyz")[0] == 200
        proxy.cut()  # Redis unreachable: not ready
        time.sleep(1.1)  # readiness is cached for a second
        assert _get(f"{base}/readyz")[0] == 503
        time.sleep(0.6)  # no loop going round: not healthy
        assert _get(f"{base}/healthz")[0] == 503
        metrics.cycle()
        assert _get(f"{base}/healthz")[0] == 200
    finally:
        metrics.close()
        through.close()
        proxy.close()
        store.close()


@pytest.mark.parametrize(
    "args",
    [["--metrics-port", "70000"], ["--metrics-port", "0", "--metrics-addr", "256.1.1.1"]],
    ids=["port-out-of-range", "bad-address"],
)
def test_a_bad_metrics_port_or_address_is_one_line_exit_2(
    args: list[str], pg_url: str, redis_url: str, prefix: str
) -> None:
    done = run(worker_cmd(pg_url, redis_url, prefix, *args), timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "--metrics" in done.stderr


def test_a_metrics_port_in_use_is_exit_2(pg_url: str, redis_url: str, prefix: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        done = run(worker_cmd(pg_url, redis_url, prefix, "--metrics-port", port), timeout=30)
    assert done.returncode == 2 and "in use" in done.stderr, done.stderr


def test_json_logs_carry_the_batch_counters(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    publish(streams, "tutors", [tutor(1), tutor(2, status="?")])
    done = run(worker_cmd(pg_url, redis_url, prefix, "--log-format", "json"))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "message"} <= set(d) for d in lines)
    letters = [d for d in lines if "dead_lettered" in d]
    assert letters and letters[0]["dead_lettered"] == {"validation": 1}
    assert any(d.get("counters", {}).get("persisted") == 1 for d in lines)


@pytest.mark.parametrize(
    "url", ["redis://app:Pa/ss#Xq9z@127.0.0.1:6379/0", "redis://:we#Zr7k@localhost/0"]
)
def test_an_unparsable_redis_url_is_one_masked_line(url: str) -> None:
    done = cli("stats", "--redis", url, "--db", "sqlite://")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    secret = url.split("//", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]
    for piece in {secret[i : i + 4] for i in range(len(secret) - 3)}:
        assert piece not in done.stderr + done.stdout, (piece, done.stderr)
    assert len([ln for ln in done.stderr.splitlines() if ln.startswith("error:")]) == 1
    _ = os.environ  # the URL never reached the environment either


@pytest.mark.parametrize("query", ["client_name=me@box", "socket_timeout=9&client_name=/s@x"])
def test_an_at_sign_in_a_redis_urls_query_is_no_password(prefix: str, query: str) -> None:
    """A Redis URL whose user-info holds a raw / ? or # is refused (a parser would connect
    to a host named after the password); an @ in the query is not one, and such a URL was
    refused too ('the password holds a raw /, ? or #', the second re-review)."""
    url = f"{REDIS_URL.removesuffix('/0')}/0?{query}"
    done = cli("stats", "--redis", url, "--db", "sqlite://", "--prefix", prefix, "--json")
    assert done.returncode == 0, done.stderr
    assert "redis_error" not in json.loads(done.stdout), done.stdout


def test_a_redis_url_option_redis_py_does_not_know_is_one_line() -> None:
    """`?x=1` failed inside redis-py at the first command: exit 3 and a traceback."""
    done = cli("stats", "--redis", f"{REDIS_URL}?x=1", "--db", "sqlite://", "--json")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "an option of its query is not one redis-py knows" in done.stderr


# -- SIGTERM ends the worker within seconds (SPEC §6) ---------------------------------------------


def test_an_idle_worker_with_a_long_block_stops_within_seconds(pg_url: str, prefix: str) -> None:
    """An idle worker waited out its whole --block-ms (58 s of 60) before it saw SIGTERM:
    reads now block for BLOCK_SLICE_MS at a time."""
    streams, proc = long_lived_worker(REDIS_URL, pg_url, prefix, 3, "--block-ms", "60000")
    streams.close()
    time.sleep(0.5)  # idle, in a blocking read
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert time.monotonic() - sent < 5, err


@pytest.mark.parametrize("frozen", ["redis", "postgres"])
def test_the_first_sigterm_ends_the_worker_within_seconds_while_a_server_is_frozen(
    tmp_path: Path, pg_url: str, prefix: str, frozen: str
) -> None:
    """A server that stops answering without closing the connection (SIGSTOP: a frozen VM,
    a network that drops packets) held a worker 150-180 s after SIGTERM, in a call that
    waited for a socket timeout (a Python signal handler cannot run while the main thread
    waits in libpq). After STOP_GRACE_S it exits 0, its batch pending."""
    from tutormax_cli.queue.runtime import STOP_GRACE_S

    server = PrivateRedis(tmp_path)
    frozen_pids: list[int] = []
    try:
        streams, proc = long_lived_worker(server.url, pg_url, prefix, 3)
        if frozen == "redis":
            assert server.proc is not None
            frozen_pids = [server.proc.pid]
        else:  # the worker's own backend only: the shared server is never stopped
            db = pg_url.rsplit("/", 1)[1]
            admin = pg_admin()
            with admin.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = "
                            "'tutormax' AND datname = %s", (db,))  # fmt: skip
                frozen_pids = [r[0] for r in cur.fetchall()]
            admin.close()
            assert frozen_pids, "the worker's backend"
            publish(streams, "tutors", [tutor(f"more{i}") for i in range(3)])
        for pid in frozen_pids:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(1.0)  # the worker is now inside a call that does not return
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=STOP_GRACE_S + 60)
        took = time.monotonic() - sent
        assert proc.returncode == 0, err
        assert took < STOP_GRACE_S + 5, (took, err)
        assert "Traceback" not in err
    finally:
        for pid in frozen_pids:
            os.kill(pid, signal.SIGCONT)
        server.stop()
