"""A batch's reads are bounded in bytes, not only in entries (SPEC §6a: hostile input is
bounded). Redis' COUNT bounds entries: 5,000 entries of up to 1 MiB each were up to 5 GB a
stream in one reply, about three times that in the worker once parsed, and a worker killed
for its memory read the same entries again after a restart (a crash loop). Every read of a
batch (new entries, due retries, reclaimed entries) now asks for as many entries as the
bytes left in its budget could hold at the message cap, and stops once they are spent."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dbfixtures import feedback, read_rows, session, tutor
from procfixtures import worker_cmd
from redisfixtures import dead_letters, jsonable, publish, xadd_raw

from tutormax_cli.queue.envelope import MESSAGE_MAX_BYTES
from tutormax_cli.queue.streams import ReadBudget, Streams
from tutormax_cli.queue.worker import Worker, WorkerOptions
from tutormax_cli.schema import KIND_ORDER
from tutormax_cli.store import Store

pytestmark = pytest.mark.redis

GROUP = "enrichment-workers"
BIG = 600_000  # bytes of one entry's value: a batch's budget of 4 MiB holds 6 of them


def _size(messages) -> int:
    return sum(len(k) + len(v) for m in messages for k, v in m.fields.items())


def test_new_entries_are_read_within_the_budget_and_none_is_lost(streams: Streams) -> None:
    streams.ensure_group(GROUP)
    ids = [xadd_raw(streams, "tutors", {"payload": f"{i:04d}" + "x" * BIG}) for i in range(30)]
    seen: list[str] = []
    while True:
        budget = ReadBudget(4 * MESSAGE_MAX_BYTES)
        got = streams.read_new(GROUP, "c", 5_000, 0, ("tutors",), budget)
        if not got:
            break
        # At most the budget and one entry past it (an entry may exceed what is left).
        assert 0 < _size(got) <= 4 * MESSAGE_MAX_BYTES + BIG + 100
        assert len(got) <= 7
        seen += [m.id for m in got]
    assert seen == ids


def test_small_entries_fill_the_batch_over_several_reads(streams: Streams) -> None:
    streams.ensure_group(GROUP)
    for kind in KIND_ORDER:
        for i in range(40 if kind == "sessions" else 700):
            xadd_raw(streams, kind, {"payload": f"{kind}-{i}"})
    # 3 streams and a budget of 30 caps: 10 entries a stream a read.
    got = streams.read_new(GROUP, "c", 500, 0, KIND_ORDER, ReadBudget(30 * MESSAGE_MAX_BYTES))
    counts = {k: sum(m.kind == k for m in got) for k in KIND_ORDER}
    assert counts == {"tutors": 500, "sessions": 40, "feedback": 500}
    # Without a budget: one read of the batch size, as before.
    got = streams.read_new(GROUP, "c", 100, 0, KIND_ORDER)
    assert {k: sum(m.kind == k for m in got) for k in KIND_ORDER} == {
        "tutors": 100,
        "sessions": 0,
        "feedback": 100,
    }


def test_a_spent_budget_reads_nothing_more(streams: Streams) -> None:
    streams.ensure_group(GROUP)
    xadd_raw(streams, "tutors", {"payload": "x"})
    budget = ReadBudget(MESSAGE_MAX_BYTES)
    budget.left = 0
    assert streams.read_new(GROUP, "c", 10, 0, ("tutors",), budget) == []
    # A budget smaller than one cap still reads one entry a stream.
    got = streams.read_new(GROUP, "c", 10, 0, ("tutors",), ReadBudget(10))
    assert [m.fields for m in got] == [{b"payload": b"x"}]


def test_reclaimed_and_claimed_entries_are_read_within_the_budget(streams: Streams) -> None:
    streams.ensure_group(GROUP)
    ids = [xadd_raw(streams, "tutors", {"payload": f"{i:04d}" + "x" * BIG}) for i in range(20)]
    assert len(streams.read_new(GROUP, "dead", 100, 0, ("tutors",))) == 20  # a crashed one's
    taken: list[str] = []
    for _ in range(20):
        budget = ReadBudget(3 * MESSAGE_MAX_BYTES)
        got, _trimmed = streams.reclaim(GROUP, "alive", 0, 100, budget)
        assert _size(got) <= 3 * MESSAGE_MAX_BYTES + BIG + 100
        taken += [m.id for m in got]
        if len(taken) == len(ids):
            break
    assert taken == ids
    # Our own due entries, claimed again: a chunk at a time, the rest left for later.
    due = streams.own_pending(GROUP, "alive", 100)
    assert len(due) == 20
    budget = ReadBudget(3 * MESSAGE_MAX_BYTES)
    got, _trimmed = streams.claim(GROUP, "alive", due, 0, budget)
    assert 3 <= len(got) <= 6 and [m.id for m in got] == ids[: len(got)]
    assert budget.left <= 0


def test_a_gone_consumers_small_entries_are_taken_over_a_batch_at_a_time(
    streams: Streams,
) -> None:
    """Review: reclaim asked Redis once a stream for what the budget held at the cap (128
    entries), so a crashed worker's 5,000 small entries a stream took 240 s to take over
    at one reclaim every 5 s. It asks again while the scan has not gone round, up to
    the batch size, as one ask of it would."""
    streams.ensure_group(GROUP)
    for i in range(3_000):
        xadd_raw(streams, "sessions", {"payload": f"s{i}"})
    assert len(streams.read_new(GROUP, "ghost", 5_000, 0, ("sessions",))) == 3_000
    got, _ = streams.reclaim(GROUP, "alive", 0, 5_000, ReadBudget(128 * MESSAGE_MAX_BYTES))
    assert len(got) == 3_000
    assert len({m.id for m in got}) == 3_000


def test_entries_over_the_cap_are_read_a_few_at_a_time(streams: Streams) -> None:
    """Review: the asks took every entry as at most the cap, so 45 poison entries of 24 MiB
    came back 42 in one reply (1 GB against a budget of 128 MiB). Asks start at one and
    at most double, sized by the biggest entry met: at most one entry a stream past the
    budget."""
    streams.ensure_group(GROUP)
    big = 8 * MESSAGE_MAX_BYTES
    for i in range(12):
        xadd_raw(streams, "feedback", {"payload": f"{i:03d}" + "x" * big})
        xadd_raw(streams, "tutors", {"payload": f"{i:03d}"})
    budget = ReadBudget(32 * MESSAGE_MAX_BYTES)
    got = streams.read_new(GROUP, "c", 5_000, 0, ("tutors", "feedback"), budget)
    assert _size(got) <= 32 * MESSAGE_MAX_BYTES + big + 100
    assert sum(m.kind == "feedback" for m in got) <= 5


@pytest.mark.postgres
def test_a_worker_reading_entries_at_the_cap_stays_within_its_memory(
    streams: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    """800 feedback messages of ~900 KB each (valid: a free text up to the field cap), one
    batch of 5,000 entries a stream: the worker read 720 MB in one reply and peaked at
    4.3 GB; within the default budget (128 MiB) it peaked at 932 MiB; every message is stored."""
    n = 800
    publish(streams, "tutors", [jsonable(tutor(0))])
    publish(streams, "sessions", [jsonable(session(0))])
    text = "a lot to say. " * (900_000 // 14)
    publish(streams, "feedback", [jsonable(feedback(i, free_text_feedback=text)) for i in range(n)])
    cmd = worker_cmd(pg_url, redis_url, prefix)
    cmd[cmd.index("--batch-size") + 1] = "5000"
    probe = (
        "import resource, subprocess, sys; "
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.stderr.write(p.stdout + p.stderr); sys.exit(p.returncode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    peak_mib = int(proc.stdout.strip()) / 1024
    print(f"worker peak: {peak_mib:.0f} MiB")
    assert peak_mib < 1536, peak_mib
    assert dead_letters(streams) == []
    store = Store.connect(pg_url)
    try:
        assert len(read_rows(store, "feedback")) == n
    finally:
        store.close()


@pytest.mark.postgres
def test_the_worker_reads_a_batch_within_batch_mib(
    streams: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    """`--batch-mib 2`: one batch reads a few of nine 600 KB messages (one a stream a read
    while any byte is left: 2 MiB is less than three streams at the cap), the next batches
    the rest; `--batch-mib 0` is refused."""
    publish(streams, "tutors", [jsonable(tutor(0))])
    publish(streams, "sessions", [jsonable(session(0))])
    text = "x" * 600_000
    publish(streams, "feedback", [jsonable(feedback(i, free_text_feedback=text)) for i in range(9)])
    store = Store.connect(pg_url)
    try:
        store.init_schema()
        opts = WorkerOptions(batch_size=5_000, batch_bytes=2 << 20, block_ms=100)
        Worker(streams, store, opts).run(max_batches=1)
        first = len(read_rows(store, "feedback"))
        assert 2 <= first <= 5, first
    finally:
        store.close()
    cmd = worker_cmd(pg_url, redis_url, prefix, "--batch-mib", "2")
    cmd[cmd.index("--batch-size") + 1] = "5000"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    store = Store.connect(pg_url)
    try:
        assert len(read_rows(store, "feedback")) == 9
    finally:
        store.close()
    refused = subprocess.run(
        worker_cmd(pg_url, redis_url, prefix, "--batch-mib", "0"), capture_output=True, text=True
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
