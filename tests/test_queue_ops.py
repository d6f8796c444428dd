"""The queue path's remaining edges (SPEC §6, issue 8), on real Redis, PostgreSQL and processes.

A parent acknowledged by another worker while a child's batch runs never makes the child
spend an attempt; a record that crashes the pipeline alone is poison, a batch where every
record crashes is a bug; `stats --watch` ends on Ctrl-C, `stats` tells live consumers from
gone ones; the worker's own `/readyz` answers 503 while the database is away, and its
gauges show the backlog; a deleted stream or a destroyed group is recovered from, said and
counted.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dbfixtures import feedback, pg_admin, session, tutor
from procfixtures import run, start, wait_for, worker_cmd
from redisfixtures import dead_letters, pending, publish, redis_client
from typer.testing import CliRunner

from tutormax_cli.cli import app
from tutormax_cli.queue.policy import RetryPolicy
from tutormax_cli.queue.streams import DEFAULT_GROUP, StreamMark, Streams, entry_key
from tutormax_cli.queue.worker import Worker, WorkerOptions
from tutormax_cli.store import Store

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
TUTORMAX = str(Path(sys.executable).with_name("tutormax"))


def counts(pg_url: str) -> dict[str, int]:
    with Store.connect(pg_url) as store:
        return store.row_counts()


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([TUTORMAX, *args], capture_output=True, text=True, timeout=timeout)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def gauge(text: str, name: str, stream: str) -> float | None:
    m = re.search(rf'^{name}{{stream="{re.escape(stream)}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


class Lines:
    """A process's output, read line by line as it comes (a thread per pipe)."""

    def __init__(self, proc: subprocess.Popen, pipe: Any) -> None:
        self.proc, self.lines = proc, []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: Any) -> None:
        with pipe:
            for line in pipe:
                self.lines.append(line)

    def wait(self, pattern: str, what: str, timeout_s: float = 30) -> re.Match:
        def found() -> re.Match | None:
            for line in self.lines:
                if m := re.search(pattern, line):
                    return m
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.text}"
            return None

        return wait_for(found, what, timeout_s)

    def join(self) -> None:
        self._thread.join(timeout=10)

    @property
    def text(self) -> str:
        return "".join(self.lines)


@contextmanager
def watched(proc: subprocess.Popen) -> Iterator[tuple[Lines, Lines]]:
    """A running process's stdout and stderr as Lines; killed if the test leaves it running,
    and its output read to the end."""
    out, err = Lines(proc, proc.stdout), Lines(proc, proc.stderr)
    try:
        yield out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.join()
        err.join()


# -- a parent acknowledged meanwhile never makes a child spend an attempt ----------------------


def one_attempt(consumer: str) -> WorkerOptions:
    """--max-attempts 1: the first attempt a child spends dead-letters it."""
    return WorkerOptions(
        consumer=consumer, block_ms=50, retry=RetryPolicy(max_attempts=1, base_ms=1, max_ms=1)
    )


def test_a_parent_acked_by_another_worker_during_the_batch_never_spends_an_attempt(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """Worker a holds the tutor (delivered to it, not yet committed); worker b reads the
    session, whose parent check misses the tutor. Between that check and b's decision about
    the orphan, a commits and acknowledges the tutor. With --max-attempts 1 a decision made
    on the group's position read *after* that ack would dead-letter this valid session; it
    must wait instead, then be stored."""
    publish(streams, "tutors", [tutor(1)])
    publish(streams, "sessions", [session(1, tutor_id="T1")])
    streams.ensure_group(DEFAULT_GROUP)
    (held,) = streams.read_new(DEFAULT_GROUP, "a", 10, 0, ("tutors",))  # a's batch, in flight
    assert held.kind == "tutors"
    with (
        Streams(redis_url, prefix) as streams_a,
        Store.connect(pg_url) as store_a,
        Store.connect(pg_url) as store_b,
    ):
        store_a.init_schema()
        a = Worker(streams_a, store_a, one_attempt("a"))
        b = Worker(streams, store_b, one_attempt("b"))
        ran: list[dict[str, int]] = []
        hit = b._faults.hit

        def a_commits_and_acks_meanwhile(point: str) -> None:
            # b has checked the session's parent (missing) and committed its batch; its
            # decision about the orphan is still to come.
            if point == "after_commit_before_ack" and not ran:
                ran.append(a.run(max_batches=1))
            hit(point)

        b._faults.hit = a_commits_and_acks_meanwhile  # type: ignore[method-assign]
        first = b.run(max_batches=1)
        assert ran and ran[0]["persisted"] == 1, ran  # a stored and acknowledged the tutor
        assert dead_letters(streams) == [], "a valid child spent its only attempt"
        assert pending(streams) == 1  # the session, waiting
        assert (first["waited"], first["retried"], first["dead_lettered"]) == (1, 0, 0)
        later = b.run(burst=True)
        assert later["persisted"] == 1 and later["dead_lettered"] == 0
    assert counts(pg_url) == {"tutors": 1, "sessions": 1, "feedback": 0}
    assert pending(streams) == 0 and dead_letters(streams) == []


def test_a_child_waits_with_a_parent_of_its_batch_that_waits_for_its_own_parent(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """The tutor sits in worker a's pending list; b's batch holds its session and the
    session's feedback. The session waits for its tutor; the feedback, whose parent is in
    b's own batch but not finished, waits with it (at --max-attempts 1, spending would
    dead-letter it). A genuine orphan among them still ends as `missing_parent`."""
    publish(streams, "tutors", [tutor(1)])
    publish(streams, "sessions", [session(1, tutor_id="T1"), session(2, tutor_id="T1")])
    publish(streams, "feedback", [feedback(1, session_id="S1", tutor_id="T1"),
                                  feedback(2, session_id="GHOST", tutor_id="T1")])  # fmt: skip
    streams.ensure_group(DEFAULT_GROUP)
    streams.read_new(DEFAULT_GROUP, "a", 10, 0, ("tutors",))  # a's batch, in flight
    with Store.connect(pg_url) as store:
        store.init_schema()
        b = Worker(streams, store, one_attempt("b"))
        first = b.run(max_batches=1)
        assert (first["waited"], first["dead_lettered"]) == (4, 0), first
        Worker(streams, store, one_attempt("a")).run(max_batches=1)  # a commits the tutor
        b.run(burst=True)
    assert counts(pg_url) == {"tutors": 1, "sessions": 2, "feedback": 1}
    ((_, env),) = dead_letters(streams)  # only the genuine orphan, after its one attempt
    assert (env["data"]["feedback_id"], env["metadata"]["error"]) == ("F2", "missing_parent")
    assert pending(streams) == 0


def test_a_look_at_the_group_never_vouches_for_entries_published_after_it(
    streams: Streams,
) -> None:
    """The watermark is capped by the server's clock at the look: a parent stream with
    nothing pending and nothing undelivered has passed every entry older than the look,
    and none published after it (whose parent may be published after the look too)."""

    def newest(kind: str) -> str:
        return str(streams.r.xrevrange(streams.stream(kind), count=1)[0][0].decode())

    publish(streams, "tutors", [tutor(1)])
    streams.ensure_group(DEFAULT_GROUP)
    (t,) = streams.read_new(DEFAULT_GROUP, "a", 10, 0, ("tutors",))
    streams.ack(DEFAULT_GROUP, [t])
    publish(streams, "sessions", [session(1)])
    before = newest("sessions")
    time.sleep(0.005)  # ids and the clock are milliseconds
    marks = streams.marks(DEFAULT_GROUP)
    time.sleep(0.005)
    publish(streams, "sessions", [session(2)])
    after = newest("sessions")
    tutors = marks["tutors"]
    assert (tutors.pending, tutors.next_undelivered) == (0, None)
    assert tutors.passed(before) and not tutors.passed(after)
    # a pending (or undelivered) entry holds the watermark at itself
    held = StreamMark(1, t.id, None, 0, clock=after)
    ms, _seq = entry_key(t.id)
    assert not held.passed(before) and held.passed(f"{ms - 1}-0")


# -- a record that crashes the pipeline alone is poison; a batch that all crashes is a bug -----


def test_a_record_that_crashes_the_pipeline_alone_is_poison_and_a_batch_that_all_crashes_is_a_bug(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """TUTORMAX_FAULT=record_bug: the pipeline raises TypeError on any batch holding a record
    whose key contains `record_bug`, the way a bug triggered by one record's content would."""
    cmd = worker_cmd(pg_url, redis_url, prefix)
    good = [tutor(i) for i in range(12)]
    publish(streams, "tutors", [*good[:5], tutor("-record_bug"), *good[5:]])
    done = run(cmd, fault="record_bug")
    assert done.returncode == 0, done.stderr
    ((_, env),) = dead_letters(streams)
    meta = env["metadata"]
    assert meta["error"] == "poison" and env["data"]["tutor_id"] == "T-record_bug"
    assert meta["detail"][0]["message"] == (
        "processing failed: TypeError: fault injection: record_bug on record T-record_bug"
    )
    assert counts(pg_url)["tutors"] == 12 and pending(streams) == 0
    assert json.loads(done.stdout)["persisted"] == 12
    # Alone in its batch there is no split: a known-good canary passes, so the record is poison.
    publish(streams, "tutors", [tutor("-record_bug-alone")])
    done = run(cmd, fault="record_bug")
    assert done.returncode == 0, done.stderr
    assert [e["metadata"]["error"] for _, e in dead_letters(streams)] == ["poison", "poison"]
    # Every record crashes: both halves of the first split fail, so it is the code, not a
    # record: exit 3, the traceback logged, nothing dead-lettered, the batch left pending.
    publish(streams, "tutors", [tutor(f"-record_bug-{i}") for i in range(6)])
    done = run(cmd, fault="record_bug")
    assert done.returncode == 3, done.stderr
    assert "Traceback" in done.stderr and "TypeError: fault injection: record_bug" in done.stderr
    assert len(dead_letters(streams)) == 2 and pending(streams) == 6
    assert counts(pg_url)["tutors"] == 12


# -- operable: stats --watch, live and gone consumers, the worker's own /readyz ----------------


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stats_watch_refreshes_until_ctrl_c_then_exits_0(
    pg_url: str, redis_url: str, prefix: str, streams: Streams, stop: signal.Signals
) -> None:
    publish(streams, "tutors", [tutor(1)])
    proc = subprocess.Popen(
        [TUTORMAX, "stats", "--watch", "0.2", "--json", "--db", pg_url, "--redis", redis_url,
         "--prefix", prefix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with watched(proc) as (out, err):
        out.wait(r'"length": 1\b', "the first refresh")
        publish(streams, "tutors", [tutor(2)])
        out.wait(r'"length": 2\b', "a refresh that sees the new entry")
        time.sleep(0.3)  # somewhere in a refresh or the sleep between two: both end alike
        proc.send_signal(stop)
        assert proc.wait(timeout=15) == 0, err.text
    docs = [json.loads(line) for line in out.lines]  # one JSON object a refresh
    assert len(docs) >= 2 and all(streams.stream("tutors") in d["streams"] for d in docs)
    assert "Traceback" not in err.text


def test_stats_watch_ctrl_c_during_a_stalled_refresh_ends_it_after_that_refresh(
    redis_url: str, prefix: str, streams: Streams
) -> None:
    """Ctrl-C while a refresh waits on a database that never answers (a socket that
    accepts and stays silent): it is not raised inside the driver's code; the refresh ends
    (the connect timeout: a database error in its document) and the watch with it, exit 0,
    no traceback."""
    publish(streams, "tutors", [tutor(1)])
    held: list[socket.socket] = []  # accepted, kept open and silent
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        proc = subprocess.Popen(
            [TUTORMAX, "stats", "--watch", "0.2", "--json", "--redis", redis_url, "--prefix",
             prefix, "--db", f"postgresql://nobody@127.0.0.1:{port}/none"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with watched(proc) as (out, err):
            wait_for(lambda: _accept(silent, held), "stats connecting to the silent server")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0, err.text
    for conn in held:
        conn.close()
    (doc,) = [json.loads(line) for line in out.lines]  # the refresh in hand, then no other
    assert "database_error" in doc and doc["streams"]
    assert "Traceback" not in err.text


def _accept(server: socket.socket, held: list[socket.socket]) -> bool:
    server.settimeout(0.05)
    try:
        held.append(server.accept()[0])
    except TimeoutError:
        return False
    return True


def test_stats_tells_live_consumers_from_gone_ones(
    pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    """A consumer idle longer than --reclaim-idle-ms is gone (with its pending entries).
    In-process (CliRunner): a new process would take a good part of the idle budget."""
    publish(streams, "tutors", [tutor(1), tutor(2), tutor(3)])
    streams.ensure_group(DEFAULT_GROUP)
    streams.read_new(DEFAULT_GROUP, "old", 2, 0, ("tutors",))
    time.sleep(2.0)
    args = ["--db", pg_url, "--redis", redis_url, "--prefix", prefix, "--reclaim-idle-ms", "1500"]
    runner = CliRunner()
    (fresh,) = streams.read_new(DEFAULT_GROUP, "new", 1, 0, ("tutors",))
    for json_out in (True, False):
        streams.touch(DEFAULT_GROUP, "new", [fresh])  # "new" has just been seen
        done = runner.invoke(app, ["stats", *(["--json"] if json_out else []), *args])
        assert done.exit_code == 0, done.stderr
        if json_out:
            info = json.loads(done.stdout)["streams"][streams.stream("tutors")]
            assert info["consumers"] == {"live": ["new"], "gone": ["old"]}
            assert (info["pending"], info["gone_pending"]) == (3, 2)
        else:
            lines = done.stdout.splitlines()
            row = lines[[ln.startswith("┡") for ln in lines].index(True) + 1]  # tutors first
            assert [c.strip() for c in row.split("│")[-3:-1]] == ["1", "1 (2)"], row


@pytest.fixture(name="no_connections")
def no_connections_fixture(pg_url: str) -> Any:
    """A function that makes the test database refuse connections (and cuts the open
    ones); they are allowed again afterwards, whatever happens."""
    db = sa.make_url(pg_url).database
    admin = pg_admin()

    def refuse(refused: bool = True) -> None:
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS {str(not refused).lower()}')
            if refused:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (db,),
                )

    try:
        yield refuse
    finally:
        refuse(False)
        admin.close()


def test_the_worker_cli_readyz_is_503_while_the_database_is_away_and_gauges_show_the_backlog(
    pg_url: str, redis_url: str, prefix: str, streams: Streams, no_connections: Any
) -> None:
    publish(streams, "tutors", [tutor(i) for i in range(5)])
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1", "--batch-size", "10",
                     "--metrics-port", "0")  # fmt: skip
    cmd.remove("--burst")
    with watched(start(cmd)) as (out, err):
        proc = out.proc
        port = err.wait(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", "the metrics line")[1]
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: counts(pg_url)["tutors"] == 5, "the first tutors to be stored")
        assert get(f"{base}/readyz")[0] == 200 and get(f"{base}/healthz")[0] == 200
        no_connections()
        publish(streams, "tutors", [tutor(f"late{i}") for i in range(30)])
        code, why = wait_for(
            lambda: (r := get(f"{base}/readyz"))[0] == 503 and r, "/readyz to say 503"
        )
        assert why.startswith("database:"), why
        assert get(f"{base}/healthz")[0] == 200  # waiting out an outage is not being stuck
        stream = streams.stream("tutors")

        def backlog() -> tuple[float, float, float, float] | None:
            text = get(f"{base}/metrics")[1]
            values = [gauge(text, f"tutormax_stream_{g}", stream)
                      for g in ("length", "pending", "lag", "oldest_pending_seconds")]  # fmt: skip
            return tuple(values) if values[1] and values[3] else None  # type: ignore[return-value]

        length, held, lag, age = wait_for(backlog, "the gauges of the held batch")
        assert length == 35 and 1 <= held <= 10 and held + lag == 30, (length, held, lag)
        assert 0 < age < 120, age  # the held batch's oldest entry, published just now
        assert "retrying in" in err.text  # the outage, said
        no_connections(False)
        wait_for(lambda: counts(pg_url)["tutors"] == 35, "the backlog to be stored", 60)
        wait_for(lambda: get(f"{base}/readyz")[0] == 200, "/readyz to say 200 again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, err.text
    assert "Traceback" not in err.text and dead_letters(streams) == []
    assert json.loads(out.text)["persisted"] == 35


# -- a stream deleted, a group destroyed: recovered from, said and counted ---------------------


@pytest.mark.parametrize("vanish", ["stream-deleted", "group-destroyed"])
def test_a_deleted_stream_or_destroyed_group_is_recovered_from_said_and_counted(
    vanish: str, pg_url: str, redis_url: str, prefix: str, streams: Streams
) -> None:
    publish(streams, "tutors", [tutor(i) for i in range(5)])
    publish(streams, "tutors", [tutor("bad", status="?")])  # one dead letter, indexed
    cmd = worker_cmd(pg_url, redis_url, prefix, "--consumer", "w1", "--metrics-port", "0")
    cmd.remove("--burst")
    stream = streams.stream("tutors")
    with watched(start(cmd)) as (out, err):
        proc = out.proc
        port = err.wait(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", "the metrics line")[1]
        wait_for(lambda: counts(pg_url)["tutors"] == 5, "the first tutors to be stored")
        wait_for(lambda: pending(streams) == 0 and dead_letters(streams), "the dead letter")
        client = redis_client()
        try:
            if vanish == "stream-deleted":  # and the dead-letter index with it
                client.delete(stream, streams.index_key)
            else:
                assert client.xgroup_destroy(stream, DEFAULT_GROUP) == 1
        finally:
            client.close()
        recoveries = re.compile(r"^tutormax_worker_recoveries_total 1\.0$", re.M)
        wait_for(lambda: recoveries.search(get(f"http://127.0.0.1:{port}/metrics")[1]),
                 "the recovery in /metrics")  # fmt: skip
        publish(streams, "tutors", [tutor(f"after{i}") for i in range(5)])
        wait_for(lambda: counts(pg_url)["tutors"] == 10, "tutors published after it")

        def recovered() -> int:
            done = cli("stats", "--json", "--db", pg_url, "--redis", redis_url, "--prefix", prefix)
            return int(json.loads(done.stdout)["workers"]["w1"]["recovered"])

        assert wait_for(recovered, "the recovery in stats --json") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, err.text
    assert json.loads(out.text)["recovered"] == 1
    (warning,) = [ln for ln in err.lines if " WARNING " in ln and "What vanished" in ln]
    if vanish == "stream-deleted":
        assert f"stream {stream} with all its entries" in warning
        assert f"the dead-letter index {streams.index_key}" in warning
        assert "rebuilt from 1 dead letter(s)" in warning
    else:  # the stream and the dead-letter index are still there: not said to be gone
        assert f"consumer group {DEFAULT_GROUP} on {stream} with its pending list" in warning
        assert "delivered again" in warning and "dead-letter" not in warning
    assert f"stream {streams.stream('sessions')}" not in warning  # only what vanished
    assert len(dead_letters(streams)) == 1  # a group re-reading its stream doubles nothing
    assert "Traceback" not in err.text
