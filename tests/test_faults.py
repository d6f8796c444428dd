"""Real faults on real worker processes (`tutormax worker --burst`), PostgreSQL and Redis.

SIGKILL at each fault point then a restart, SIGTERM in the middle of a batch, the database
connection killed mid-transaction, a second consumer taking over a killed one's entries.
Each test ends by counting: published = rows in tables + dead letters, every record once,
nothing pending.
"""

from __future__ import annotations

import json
import signal

import pytest
import sqlalchemy as sa
from dbfixtures import pg_admin, session, tutor
from procfixtures import run, start, wait_for, worker_cmd
from redisfixtures import dead_letters, pending, publish, xadd_raw

from tutormax_cli.queue.streams import Streams
from tutormax_cli.store import Store

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

N_TUTORS, N_SESSIONS = 20, 400
BAD_EVERY = 50  # every 50th session breaks a rule → validation
GHOSTS = 3  # sessions of an unknown tutor → missing_parent after the attempts
POISON = 2
PUBLISHED = N_TUTORS + N_SESSIONS + GHOSTS + POISON
INVALID = N_SESSIONS // BAD_EVERY
DEAD = INVALID + GHOSTS + POISON


@pytest.fixture
def loaded(streams: Streams) -> Streams:
    """Tutors, sessions (some invalid, some orphans) and poison on the streams."""
    rows = [session(i, tutor_id=f"T{i % N_TUTORS}") for i in range(N_SESSIONS)]
    for i in range(0, N_SESSIONS, BAD_EVERY):
        rows[i]["duration_minutes"] = 999
    publish(streams, "tutors", [tutor(i) for i in range(N_TUTORS)])
    publish(streams, "sessions", rows + [session(f"G{i}", tutor_id="GHOST") for i in range(GHOSTS)])
    for i in range(POISON):
        xadd_raw(streams, "sessions", {"message": f"not an envelope {i}"})
    return streams


def assert_accounted(streams: Streams, pg_url: str, big: int = 0, over_cap: int = 0) -> None:
    """Every record persisted or dead-lettered exactly once; nothing pending. `big`, `over_cap`:
    the valid big sessions and the over-cap entries a test added to `loaded`."""
    letters = dead_letters(streams)
    sources = [(e["metadata"]["source_stream"], e["metadata"]["source_id"]) for _, e in letters]
    assert len(set(sources)) == len(sources), "a record was dead-lettered twice"
    with Store.connect(pg_url) as store:
        counts = store.row_counts()
    assert counts == {"tutors": N_TUTORS, "sessions": N_SESSIONS - INVALID + big, "feedback": 0}
    errors = sorted(e["metadata"]["error"] for _, e in letters)
    assert errors == sorted(["validation"] * INVALID + ["missing_parent"] * GHOSTS
                            + ["poison"] * (POISON + over_cap))  # fmt: skip
    assert sum(counts.values()) + len(letters) == PUBLISHED + big + over_cap
    assert pending(streams) == 0


@pytest.mark.parametrize("point", ["before_commit", "after_commit_before_ack",
                                   "after_deadletter_before_ack"])  # fmt: skip
def test_sigkill_at_each_point_then_restart(
    point: str, loaded: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1")
    killed = run(cmd, fault=f"{point}:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert pending(loaded) > 0  # the killed batch was never acknowledged
    restarted = run(cmd)
    assert restarted.returncode == 0, restarted.stderr
    assert_accounted(loaded, pg_url)


BIG_EVERY, BIG_BYTES = 8, 300_000  # every 8th session again, with 300 KB of extra text
OVER_CAP = 2 << 20  # an entry of 2 MiB, over the 1 MiB message cap: poison, kept whole


@pytest.mark.parametrize("point", ["before_commit:3", "after_commit_before_ack:2",
                                   "after_deadletter_before_ack:2"])  # fmt: skip
def test_sigkill_with_big_messages_under_a_small_read_budget(
    point: str, loaded: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    """The same counts when batches are cut by bytes (`--batch-mib 1`) rather than by
    entries: sessions of ~300 KB (valid: extra keys are not stored) and an entry over the
    cap among them, a worker killed at a fault point twice, then run to the end."""
    big = [session(f"B{i}", tutor_id=f"T{i % N_TUTORS}") for i in range(0, N_SESSIONS, BIG_EVERY)]
    for row in big:
        row["notes"] = "n" * BIG_BYTES
    publish(loaded, "sessions", big[: len(big) // 2])
    xadd_raw(loaded, "sessions", {"message": "x" * OVER_CAP})
    publish(loaded, "sessions", big[len(big) // 2 :])
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1", "--batch-mib", "1")
    for _ in range(2):
        killed = run(cmd, fault=point)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert pending(loaded) > 0  # the killed batch was never acknowledged
    restarted = run(cmd)
    assert restarted.returncode == 0, restarted.stderr
    assert json.loads(restarted.stdout)["read"] > 0
    assert_accounted(loaded, pg_url, big=len(big), over_cap=1)


@pytest.mark.parametrize("then", ["same consumer", "another consumer"])
def test_a_dead_letter_written_before_a_kill_is_not_also_persisted(
    then: str, streams: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    """A session missing its tutor is dead-lettered (--max-attempts 1), the worker is killed
    before its ack, then the tutor arrives. The entry, delivered again, was processed again
    and persisted: stored and a dead letter at once (the review of 2026-12-07). It is
    acknowledged as dead-lettered now, and the tutor stored."""
    publish(streams, "sessions", [session(1, tutor_id="T1")])
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1", "--max-attempts", "1")
    killed = run(cmd, fault="after_deadletter_before_ack")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert pending(streams) == 1 and len(dead_letters(streams)) == 1
    publish(streams, "tutors", [tutor(1)])
    consumer = "w1" if then == "same consumer" else "w2"
    again = worker_cmd(pg_url, redis_url, prefix, "--consumer", consumer, "--max-attempts", "1",
                       "--reclaim-idle-ms", "100")  # fmt: skip
    restarted = run(again)
    assert restarted.returncode == 0, restarted.stderr
    with Store.connect(pg_url) as store:
        assert store.row_counts() == {"tutors": 1, "sessions": 0, "feedback": 0}
    letters = dead_letters(streams)
    assert [e["metadata"]["error"] for _, e in letters] == ["missing_parent"]
    assert pending(streams) == 0
    totals = json.loads(restarted.stdout)
    assert totals.get("dead_lettered_before") == 1 and totals["persisted"] == 1, totals


def test_sigterm_mid_batch_finishes_the_batch_and_exits_0(
    loaded: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1")
    proc = start(cmd, TUTORMAX_FAULT="before_commit", TUTORMAX_FAULT_PAUSE_S="2")
    wait_for(lambda: pending(loaded) > 0, "the worker to read its first batch")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    totals = json.loads(out)
    assert totals["read"] == N_TUTORS + 100  # one batch: every tutor, 100 sessions
    assert pending(loaded) == 0  # committed and acknowledged
    with Store.connect(pg_url) as store:
        assert store.row_counts()["sessions"] == 100 - 2  # two of them broke a rule
    assert run(cmd).returncode == 0
    assert_accounted(loaded, pg_url)


def test_database_connection_killed_mid_transaction(
    loaded: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    db = sa.make_url(pg_url).database
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1")
    proc = start(cmd, TUTORMAX_FAULT="before_commit", TUTORMAX_FAULT_PAUSE_S="1.5")
    admin = pg_admin()
    try:
        query = ("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                 "AND state = 'idle in transaction'")  # fmt: skip

        def in_transaction() -> list[int]:
            with admin.cursor() as cur:
                cur.execute(query, (db,))
                return [r[0] for r in cur.fetchall()]

        wait_for(lambda: pending(loaded) > 0, "the worker to read its first batch")
        pids = wait_for(in_transaction, "the worker's open transaction")
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s) AS pid", (pids,))
    finally:
        admin.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["outages"] >= 1
    assert "retrying in" in err  # backed off, did not dead-letter
    assert_accounted(loaded, pg_url)


def test_second_consumer_reclaims_a_killed_ones_entries(
    loaded: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    first = run(worker_cmd(pg_url, redis_url, prefix, "--consumer", "a"), fault="before_commit:2")
    assert first.returncode == -signal.SIGKILL
    orphaned = pending(loaded)
    assert orphaned > 0
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "b", "--reclaim-idle-ms", "300")
    second = run(cmd)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["reclaimed"] >= orphaned
    assert_accounted(loaded, pg_url)
