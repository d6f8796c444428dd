"""No read of Redis entries takes an entry whole, whatever its size (SPEC §6a: hostile input
is bounded; a message over the cap is rejected unread).

Redis keeps entries of up to 512 MB, and XREADGROUP, XCLAIM, XAUTOCLAIM and XRANGE send them
whole: a worker given one entry of 300 MB peaked at 707 MiB before it found it poison, the
group's position was taken with an XRANGE of the next entry (whole) every batch, and the
dead-letter stream was read 1,000 entries a page. Every read now goes through a script that
cuts an entry over the cap in Redis to what its poison dead letter keeps (`Cut`), reads only
ids where ids are all it needs, and bounds a range read's reply in bytes. The property test
checks that the cut keeps exactly what `Message.raw_entry` keeps of the whole entry, on every
read path; the process tests count what a real worker and `dlq` do with such entries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from dbfixtures import read_rows, tutor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procfixtures import worker_cmd
from redisfixtures import dead_letters, jsonable, publish, redis_client, xadd_raw

from tutormax_cli.queue.envelope import POISON_KEEP_BYTES, Message
from tutormax_cli.queue.letters import DeadLetter
from tutormax_cli.queue.streams import Streams
from tutormax_cli.queue.streams.bounded import (
    ENTRY_MAX_BYTES,
    ENTRY_MAX_FIELDS,
    cut_reason,
    message_of,
)
from tutormax_cli.store import Store

pytestmark = pytest.mark.redis

GROUP = "enrichment-workers"
K = POISON_KEEP_BYTES

# Sizes around the places the cut's rule turns: the budget of values and of names (64 KiB).
_SIZES = st.sampled_from([0, 1, 7, K // 2, K - 1, K, K + 1, K + 3, 2 * K + 5])


@st.composite
def _entries(draw: Any) -> list[tuple[bytes, bytes]]:
    """An entry's fields in order: names and values of sizes near the cut's limits, values
    of two-byte characters cut anywhere. (A name given twice is kept as Redis holds it in
    a cut entry, and once, with its last value, in a whole one: not compared here.)"""
    fields = []
    for i in range(draw(st.integers(1, 5))):
        name_size, value_size = draw(_SIZES), draw(_SIZES)
        name = f"f{i}-".encode() + b"n" * name_size
        offset = draw(st.integers(0, 1))
        value = b"a" * offset + "é".encode() * (value_size // 2)
        fields.append((name, value))
    return fields


def _xadd(client: Any, key: str, fields: list[tuple[bytes, bytes]]) -> str:
    flat = [x for pair in fields for x in pair]
    return client.execute_command("XADD", key, "*", *flat).decode()


def _whole(client: Any, key: str, entry_id: str, kind: str) -> Message:
    ((_, fields),) = client.xrange(key, entry_id, entry_id)  # redis-py's dict: as Message's
    return Message(kind, entry_id, fields)


def _same_dead_letter(cut: Message, whole: Message, fields: list[tuple[bytes, bytes]]) -> None:
    assert cut.cut is not None, "entry_max 0 cuts every entry"
    assert cut.cut.size == sum(len(k) + len(v) for k, v in fields)
    assert cut.cut.fields == len(fields)
    assert cut.size == cut.cut.size
    assert cut.raw() is None  # nothing of a cut entry is parsed
    assert cut.raw_entry() == whole.raw_entry()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=_entries())
def test_every_read_path_cuts_an_entry_to_what_its_dead_letter_keeps(
    streams: Streams, fields: list[tuple[bytes, bytes]]
) -> None:
    client = redis_client()
    key = streams.stream("feedback")
    try:
        client.delete(key)
        streams.ensure_group(GROUP)
        entry_id = _xadd(client, key, fields)
        whole = _whole(client, key, entry_id, "feedback")

        ((stream, (entry,)),) = streams.read_group(GROUP, "a", 10, [key], entry_max=0)
        assert stream.decode() == key
        _same_dead_letter(message_of("feedback", entry), whole, fields)

        got, gone = streams.claim_entries(key, GROUP, "b", 0, [entry_id], entry_max=0)
        assert gone == 0
        _same_dead_letter(message_of("feedback", got[0]), whole, fields)

        reply = streams.autoclaim(key, GROUP, "c", 0, "0-0", 10, entry_max=0)
        _same_dead_letter(message_of("feedback", reply[1][0]), whole, fields)

        rows, more = streams.range_entries(key, "-", "+", 10, entry_max=0)
        assert more is None
        _same_dead_letter(message_of("feedback", rows[0]), whole, fields)

        # At its size exactly an entry is whole; a byte less and it is cut.
        size = sum(len(k) + len(v) for k, v in fields)
        (entry,), _ = streams.range_entries(key, "-", "+", 1, entry_max=size)
        assert message_of("feedback", entry) == whole
        rows, _ = streams.range_entries(key, "-", "+", 1, entry_max=size - 1)
        assert message_of("feedback", rows[0]).cut is not None
    finally:
        client.delete(key)
        client.close()


def test_an_entry_of_too_many_fields_is_cut_whatever_its_bytes(streams: Streams) -> None:
    """Review: 278k fields of 4 bytes are 1.1 MB, under the byte cap, and cost the worker
    25 MiB each once read (3.4 GB for a batch of them); each field also costs Redis a copy
    into Lua. An entry of more than ENTRY_MAX_FIELDS fields comes cut, and is poison."""
    client = redis_client()
    key = streams.stream("tutors")
    try:
        streams.ensure_group(GROUP)
        many = [(f"{i}".encode(), b"v") for i in range(ENTRY_MAX_FIELDS + 1)]
        ids = [_xadd(client, key, many[:-1]), _xadd(client, key, many)]
    finally:
        client.close()
    whole, cut = streams.read_new(GROUP, "c", 10, 0, ("tutors",))
    assert [whole.id, cut.id] == ids
    assert whole.cut is None and len(whole.fields) == ENTRY_MAX_FIELDS
    assert cut.cut is not None and cut.cut.fields == ENTRY_MAX_FIELDS + 1
    assert cut_reason(cut.cut) == (
        f"entry of {ENTRY_MAX_FIELDS + 1:,} fields is over the {ENTRY_MAX_FIELDS:,}-field cap: "
        "not read"
    )
    assert cut.raw_entry() == Message("tutors", cut.id, dict(many)).raw_entry()


def test_a_cut_entry_keeps_at_most_entry_max_fields_of_its_empty_fields(
    streams: Streams,
) -> None:
    """Review H: fields of empty values cost nothing against the 64 KiB budgets, so a cut
    entry of 2M of them kept them all (the worker 6.8 s and 149 MiB against 2.4 s and
    132). A dead letter keeps at most ENTRY_MAX_FIELDS fields, cut in Redis or not."""
    client = redis_client()
    try:
        streams.ensure_group(GROUP)
        many = [(b"%d" % i, b"") for i in range(5_000)]
        _xadd(client, streams.stream("tutors"), many)
    finally:
        client.close()
    (m,) = streams.read_new(GROUP, "c", 10, 0, ("tutors",))
    assert m.cut is not None and len(m.fields) == ENTRY_MAX_FIELDS
    omitted = sum(len(k) for k, _ in many[ENTRY_MAX_FIELDS:])
    assert m.raw_entry()["_omitted"] == f"{5_000 - ENTRY_MAX_FIELDS} field(s), {omitted:,} bytes"
    assert m.raw_entry() == Message("tutors", m.id, dict(many)).raw_entry()
    assert m.cut.too_big == "too big to read whole: 18,890 bytes in 5,000 field(s)"


def test_ids_only_reads_go_on_where_the_reply_bytes_ran_out(streams: Streams) -> None:
    """A read of ids stops once the entries behind them reach its reply bytes, and says
    where to go on: first_foreign pages through a stream of big entries a few at a time."""
    ids = [xadd_raw(streams, "tutors", {"payload": "x" * 300_000}) for _ in range(9)]
    key = streams.stream("tutors")
    got, start = [], "-"
    while True:
        page, more = streams.range_entries(key, start, "+", 100, ids_only=True, reply_max=700_000)
        assert len(page) <= 3  # 1, then 2 more: 900 KB ≥ 700 KB
        got += [i.decode() for i in page]
        if more is None:
            break
        start = more
    assert got == ids
    assert streams.first_foreign("tutors", "-", "+", set(ids[:5]), page=100) == ids[5]
    assert streams.first_foreign("tutors", "-", "+", set(ids), page=2) is None
    assert streams.first_id(key) == ids[0]
    assert streams.first_id(key, f"({ids[-1]}") is None


def test_a_claim_counts_the_entries_gone_from_the_stream(streams: Streams) -> None:
    streams.ensure_group(GROUP)
    ids = [xadd_raw(streams, "sessions", {"message": "m"}) for _ in range(3)]
    streams.read_new(GROUP, "a", 10, 0, ("sessions",))
    client = redis_client()
    try:
        client.xdel(streams.stream("sessions"), ids[1])
    finally:
        client.close()
    got, gone = streams.claim_entries(streams.stream("sessions"), GROUP, "b", 0, ids)
    assert [e[0].decode() for e in got] == [ids[0], ids[2]]
    assert gone == 1


def test_the_wait_for_new_entries_sees_one_published_meanwhile(streams: Streams) -> None:
    """A script cannot block: with nothing there the first read asks again until
    `block_ms` is over. An entry published during the wait is returned by it."""
    streams.ensure_group(GROUP)
    added: list[str] = []
    timer = threading.Timer(0.2, lambda: added.append(xadd_raw(streams, "tutors", {"m": "1"})))
    timer.start()
    try:
        got = streams.read_new(GROUP, "c", 10, 5_000, ("tutors",))
    finally:
        timer.join()
    assert [m.id for m in got] == added
    started = time.monotonic()
    assert streams.read_new(GROUP, "c", 10, 150, ("tutors",)) == []
    assert time.monotonic() - started >= 0.15  # it waited, and came back empty


def _peak_mib(cmd: list[str], timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """Run `cmd` in a child of a probe that prints the child's peak RSS (MiB)."""
    probe = (
        "import resource, subprocess, sys; "
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); sys.exit(p.returncode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, timeout=timeout
    )
    first, _, rest = proc.stdout.partition("\n")
    return subprocess.CompletedProcess(cmd, proc.returncode, rest, proc.stderr), int(first) / 1024


def _worker_beside(
    streams: Streams, pg_url: str, redis_url: str, prefix: str, what: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A worker run (--burst) within 300 MiB: its summary and the one dead letter."""
    proc, peak = _peak_mib(worker_cmd(pg_url, redis_url, prefix))
    assert proc.returncode == 0, proc.stderr
    print(f"worker peak beside {what}: {peak:.0f} MiB")
    assert peak < 300, peak
    ((_, letter),) = dead_letters(streams)
    return json.loads(proc.stdout), letter


BIG = 200_000_000  # one entry: the worker read it whole before (and peaked near 500 MiB)


@pytest.mark.postgres
def test_a_worker_dead_letters_a_huge_entry_without_reading_it(
    streams: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    publish(streams, "tutors", [jsonable(tutor(0))])
    huge = xadd_raw(streams, "sessions", {"message": b"{" * BIG, "trace": "t-1"})
    publish(streams, "tutors", [jsonable(tutor(1))])
    summary, letter = _worker_beside(streams, pg_url, redis_url, prefix, f"a {BIG:,}-byte entry")
    assert (summary["read"], summary["persisted"], summary["dead_lettered"]) == (3, 2, 1)
    meta = letter["metadata"]
    assert meta["source_id"] == huge and meta["error"] == "poison" and meta["raw_entry"]
    assert f"entry of {BIG + 7 + 5 + 3:,} bytes is over the {ENTRY_MAX_BYTES:,}" in json.dumps(
        meta["detail"]
    )
    assert letter["data"] == {"message": "{" * POISON_KEEP_BYTES, "_omitted": "1 field(s), 8 bytes"}
    store = Store.connect(pg_url)
    try:
        assert len(read_rows(store, "tutors")) == 2
    finally:
        store.close()


def test_dlq_reads_a_huge_foreign_dead_letter_cut_and_drain_leaves_it(
    streams: Streams, redis_url: str, prefix: str, tmp_path: Any
) -> None:
    """Someone else's entry of 100 MB in the dead-letter stream: `dlq list` shows it cut
    within a bounded memory, and `drain` (whose file is the only copy once it deletes)
    leaves it in the stream and says so; the dead letters around it are drained."""
    from tutormax_cli.queue.streams.bounded import DEAD_LETTER_ENTRY_MAX_BYTES

    letter = DeadLetter(Message("tutors", "1-0", {}), {"tutor_id": "t"}, "validation", [])
    streams.dead_letter([letter])
    foreign = xadd_raw(streams, "dead_letter", {"message": "q" * 100_000_000})
    base = [sys.executable, "-m", "tutormax_cli", "dlq"]
    opts = ["--redis", redis_url, "--prefix", prefix]
    proc, peak = _peak_mib([*base, "list", "--json", *opts])
    assert proc.returncode == 0, proc.stderr
    print(f"dlq list peak with a 100 MB dead letter: {peak:.0f} MiB")
    assert peak < 250, peak
    ours, shown = json.loads(proc.stdout)["dead_letters"]
    assert ours["envelope"]["data"] == {"tutor_id": "t"}
    assert shown["entry_id"] == foreign
    assert shown["envelope"]["data"]["_cut"] == "the entry is 100,000,007 bytes: shown cut"
    assert DEAD_LETTER_ENTRY_MAX_BYTES < 100_000_007
    wide = {**os.environ, "COLUMNS": "300"}
    listed = subprocess.run([*base, "list", *opts], capture_output=True, text=True, env=wide)
    assert "too big to read whole: 100,000,007 bytes in 1 field(s)" in listed.stdout, listed.stdout
    replayed = subprocess.run([*base, "replay", foreign, *opts], capture_output=True, text=True)
    assert replayed.returncode == 1
    assert "too big to read whole: 100,000,007 bytes in 1 field(s)" in replayed.stderr
    out = tmp_path / "drained.jsonl"
    proc = subprocess.run(
        [*base, "drain", "--out", str(out), *opts], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr  # a selected entry left in place, as replay
    assert f"too big to read whole (not written by tutormax): {foreign}" in proc.stderr
    assert [json.loads(x)["envelope"]["data"] for x in out.read_text().splitlines()] == [
        {"tutor_id": "t"}
    ]
    client = redis_client()
    try:
        assert client.xlen(streams.dead_letter_key) == 1  # still there, whole
        ((_, fields),) = client.xrange(streams.dead_letter_key)
        assert len(fields[b"message"]) == 100_000_000
    finally:
        client.close()


@pytest.mark.postgres
def test_a_worker_passes_an_entry_of_millions_of_fields_once(
    streams: Streams, pg_url: str, redis_url: str, prefix: str
) -> None:
    """Review: one entry of 6M fields (24 MB) held Redis in the read script for 50-68 s a
    call, past the worker's socket timeout; the worker took it for an outage and claimed it
    again, for ever, and every client of that Redis got BUSY. With the field cap the entry
    comes cut (its copy into Lua, once, costs Redis about what its XADD did), and the tutor
    published after it is stored."""
    client = redis_client()
    try:
        flat = [x for i in range(2_000_000) for x in (b"%d" % i, b"")]
        huge = client.execute_command("XADD", streams.stream("sessions"), "*", *flat).decode()
        del flat
    finally:
        client.close()
    publish(streams, "tutors", [jsonable(tutor(0))])
    summary, letter = _worker_beside(streams, pg_url, redis_url, prefix, "an entry of 2M fields")
    assert (summary["persisted"], summary["dead_lettered"]) == (1, 1)
    assert letter["metadata"]["source_id"] == huge
    size = sum(len(b"%d" % i) for i in range(2_000_000))  # bytes first, then fields
    assert f"entry of {size:,} bytes is over the {ENTRY_MAX_BYTES:,}-byte cap" in json.dumps(
        letter["metadata"]["detail"]
    )


def test_dead_letters_are_read_a_bounded_page_at_a_time(
    streams: Streams, redis_url: str, prefix: str, tmp_path: Any
) -> None:
    """Review: the range script checked its bytes only after each XRANGE, whose count had
    doubled to 512: after 511 small dead letters, one XRANGE took 489 entries of up to
    16 MiB. `stats` peaked at 720 MiB beside 60 dead letters of 10 MB after 511 small ones,
    206 MiB without the small ones."""
    letters = [
        DeadLetter(Message("tutors", f"1-{i}", {}), {"i": i}, "validation", []) for i in range(511)
    ]
    streams.dead_letter(letters)
    for i in range(40):
        xadd_raw(streams, "dead_letter", {"message": json.dumps({"data": "x" * 8_000_000, "n": i})})
    base = [sys.executable, "-m", "tutormax_cli", "stats", "--json"]
    db = f"sqlite:///{tmp_path / 'stats.db'}"
    proc, peak = _peak_mib([*base, "--redis", redis_url, "--prefix", prefix, "--db", db])
    assert proc.returncode == 0, proc.stderr
    print(f"stats peak beside 511 small and 40 dead letters of 8 MB: {peak:.0f} MiB")
    assert peak < 250, peak
    assert json.loads(proc.stdout)["dead_letter"]["total"] == 551


@pytest.mark.parametrize("entry_id", ["abc", "1-x", "99999999999999999999-0"])
def test_an_error_inside_a_read_script_reads_as_redis_words(
    streams: Streams, redis_url: str, prefix: str, entry_id: str
) -> None:
    """Review: Redis adds the script's sha and Lua line to an error raised inside it
    (`… argument script: eab5…, on @user_script:36.`): noise to an operator."""
    cmd = [sys.executable, "-m", "tutormax_cli", "dlq", "show", entry_id]
    proc = subprocess.run(
        [*cmd, "--redis", redis_url, "--prefix", prefix], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "script" not in proc.stderr and "user_script" not in proc.stderr, proc.stderr
