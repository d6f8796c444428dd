"""A statement the database cancels (SQLSTATE 57014: a statement timeout) is not an outage.

Retried as it is, such a write is cancelled again. Taken for an outage, one slow row
stalled its worker's stream for good (backing off forever, the batch never finished), and
`enrich` stopped saying the database was unavailable. Now a cancelled write is split like
a refused one: a row slow on its own is refused with the database's words and the rest
written; a batch too big for the timeout (its halves cancelled too) stops with the settings
to change (exit 2), never a row at a time. Each test sets statement_timeout on its own
database (new connections take it) and slows chosen rows with a trigger."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from dbfixtures import execute_sql, session, tutor
from hypothesis import given, settings
from hypothesis import strategies as st
from redisfixtures import dead_letters, pending, publish
from test_enrich_db import SESSION_HEAD, by_kind, enrich, rows, tutors_csv, write

from tutormax_cli.errors import StatementCancelled
from tutormax_cli.queue.policy import RetryPolicy
from tutormax_cli.queue.streams import Streams
from tutormax_cli.queue.worker import Worker, WorkerOptions
from tutormax_cli.store import Store
from tutormax_cli.store.backend import bisect
from tutormax_cli.store.tables import RowRefused

TIMEOUT_MS = 400


def slow_down(url: str, table: str, condition: str, seconds: float) -> None:
    """Every row of `table` matching `condition` (on NEW) sleeps `seconds` when written, and
    every new connection to the database gets statement_timeout = TIMEOUT_MS."""
    execute_sql(
        url,
        f"CREATE FUNCTION slow_{table}() RETURNS trigger AS $$ BEGIN "
        f"IF {condition} THEN PERFORM pg_sleep({seconds}); END IF; RETURN NEW; END $$ "
        "LANGUAGE plpgsql",
        f"CREATE TRIGGER slow_{table} BEFORE INSERT OR UPDATE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION slow_{table}()",
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %%I SET statement_timeout = "
        f"{TIMEOUT_MS}', current_database()); END $$",
    )


def _sessions(n: int, minutes: int = 60) -> list[str]:
    return [f"S{i},T1,st{i},2024-11-09T02:00:00Z,{minutes},Math" for i in range(n)]


@pytest.mark.postgres
@pytest.mark.parametrize("present", [False, True], ids=["fresh-copy", "upsert"])
def test_a_row_whose_write_times_out_alone_is_refused_and_the_rest_written(
    pg_url: str, tmp_path: Path, present: bool
) -> None:
    enrich(pg_url, tutors_csv(tmp_path))
    if present:  # every key stored already: the batch goes through the upsert
        enrich(pg_url, write(tmp_path / "first.csv", SESSION_HEAD, *_sessions(64)))
    slow_down(pg_url, "sessions", "NEW.session_id = 'S7'", 3)
    src = write(tmp_path / "s.csv", SESSION_HEAD, *_sessions(64, minutes=45))
    code, doc, err = enrich(pg_url, src, "--rejects", tmp_path / "r.jsonl")
    assert code == 1, err
    assert "Traceback" not in err
    f = by_kind(doc)["sessions"]
    assert (f["read"], f["accepted"], f["rejected"]) == (64, 63, 1)
    (reject,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    message = reject["errors"][0]["message"]
    assert reject["row"] == 8 and reject["errors"][0]["code"] == "database"
    assert "cancelled this row's write" in message and "statement timeout" in message
    assert rows(pg_url, "SELECT count(*) FROM sessions WHERE duration_minutes = 45") == [(63,)]
    left = 1 if present else 0  # S7 keeps its old version, or is not there
    assert rows(pg_url, "SELECT count(*) FROM sessions WHERE session_id = 'S7'") == [(left,)]


@pytest.mark.postgres
def test_a_batch_too_big_for_the_timeout_stops_and_names_the_settings(
    pg_url: str, tmp_path: Path
) -> None:
    """Every row is a little slow: the batch of 200 and both its halves run past the
    timeout. That is the batch's size, not a row: exit 2 naming both settings, nothing
    rejected row by row; the same file in batches of 10 goes in whole."""
    enrich(pg_url, tutors_csv(tmp_path))
    slow_down(pg_url, "sessions", "true", 0.005)
    src = write(tmp_path / "s.csv", SESSION_HEAD, *_sessions(200))
    rejects = tmp_path / "r.jsonl"
    code, _, err = enrich(pg_url, src, "--rejects", rejects)
    assert code == 2, err
    assert "Traceback" not in err
    assert "statement timeout" in err and "--batch-size" in err and "statement_timeout" in err
    assert not rejects.exists() or rejects.read_text() == ""
    assert rows(pg_url, "SELECT count(*) FROM sessions") == [(0,)]
    code, doc, err = enrich(pg_url, src, "--batch-size", "10", "--rejects", rejects)
    assert code == 0, err
    assert by_kind(doc)["sessions"]["accepted"] == 200
    assert rows(pg_url, "SELECT count(*) FROM sessions") == [(200,)]


def _worker(streams: Streams, store: Store) -> Worker:
    retry = RetryPolicy(max_attempts=3, base_ms=10, max_ms=40)
    return Worker(streams, store, WorkerOptions(consumer="w1", block_ms=50, retry=retry))


def _run_bounded(worker: Worker, seconds: float) -> dict[str, int]:
    """Run the worker in burst mode; a worker still busy after `seconds` is stopped, and
    the test fails: it was stalled."""
    totals: dict[str, int] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            totals.update(worker.run(burst=True))
        except BaseException as exc:  # handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(seconds)
    stalled = thread.is_alive()
    if stalled:
        worker.request_stop("the test's time is up")
        thread.join(30)
    if failure:
        raise failure[0]
    assert not stalled, "the worker was still at its batch: its stream stalled"
    return totals


@pytest.mark.postgres
@pytest.mark.redis
def test_one_slow_row_does_not_stall_the_worker(streams: Streams, pg_url: str) -> None:
    with Store.connect(pg_url) as store:
        store.init_schema()
    slow_down(pg_url, "sessions", "NEW.session_id = 'S13'", 3)
    publish(streams, "tutors", [tutor(1)])
    publish(streams, "sessions", [session(i, tutor_id="T1") for i in range(40)])
    with Store.connect(pg_url) as store:
        totals = _run_bounded(_worker(streams, store), 60)
        assert store.row_counts()["sessions"] == 39
    assert (totals["persisted"], totals["dead_lettered"]) == (40, 1)
    ((_, env),) = dead_letters(streams)
    detail = json.dumps(env["metadata"]["detail"])
    assert env["metadata"]["error"] == "database" and env["data"]["session_id"] == "S13"
    assert "statement timeout" in detail
    assert pending(streams) == 0


@pytest.mark.postgres
@pytest.mark.redis
def test_a_batch_the_database_keeps_cancelling_stops_the_worker_with_it_pending(
    streams: Streams, pg_url: str
) -> None:
    """Not an outage to wait out for ever, and not a reason to dead-letter 100 valid
    records one by one: after a few tries the worker stops (exit 2 from the command), its
    batch pending for a worker with a longer timeout or smaller batches."""
    with Store.connect(pg_url) as store:
        store.init_schema()
        publish(streams, "tutors", [tutor(1)])
        _run_bounded(_worker(streams, store), 60)
    slow_down(pg_url, "sessions", "true", 0.01)
    publish(streams, "sessions", [session(i, tutor_id="T1") for i in range(100)])
    with Store.connect(pg_url) as store:
        with pytest.raises(StatementCancelled, match="statement timeout"):
            _run_bounded(_worker(streams, store), 60)
        assert store.row_counts()["sessions"] == 0
    assert dead_letters(streams) == []
    assert pending(streams) == 100


# ---------------------------------------------------------------- the bisection, by itself


class _Cancel(Exception):
    """What the fake write below raises for a cancellation (RowRefused's cause)."""


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(1, 80),
    data=st.data(),
    capacity=st.integers(1, 100),
)
def test_bisect_refuses_rows_alone_and_raises_only_for_a_batch_cancelled_in_halves(
    n: int, data: st.DataObject, capacity: int
) -> None:
    """Against a plain statement of the rule: a write of rows [lo, hi) is cancelled when it
    holds a slow row or more than `capacity` rows, refused when it holds a bad row. Each
    row is written once or refused alone (bad or slow), and the cancellation goes up
    exactly when the whole batch and both its halves are cancelled."""
    rows_ = st.sets(st.integers(0, n - 1), max_size=4)
    bad, slow = data.draw(rows_), data.draw(rows_)
    written: list[int] = []

    def cancelled(lo: int, hi: int) -> bool:
        return hi - lo > capacity or any(lo <= r < hi for r in slow)

    def attempt(lo: int, hi: int) -> tuple[int, int]:
        if cancelled(lo, hi):
            try:
                raise _Cancel
            except _Cancel as cause:
                raise RowRefused("cancelled", cancelled=True) from cause
        if any(lo <= r < hi for r in bad):
            raise RowRefused("bad")
        written.extend(range(lo, hi))
        return hi - lo, 0

    mid = n // 2
    if n > 1 and cancelled(0, n) and cancelled(0, mid) and cancelled(mid, n):
        with pytest.raises(_Cancel):
            bisect(attempt, n)
        return
    inserted, updated, refused = bisect(attempt, n)
    alone = sorted(bad | slow)
    assert [i for i, _ in refused] == alone
    assert all(m == ("cancelled" if i in slow else "bad") for i, m in refused)
    assert sorted(written) == [i for i in range(n) if i not in bad | slow]
    assert (inserted, updated) == (n - len(alone), 0)
