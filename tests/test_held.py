"""held.Held: the best version of each duplicated key until its last occurrence, in memory
and spilled to disk by `_last` range, against a per-record oracle; its memory, which must
not grow with what a run holds; a full disk under its spill; and a whole run through the
spill giving the database the same rows as one held in memory."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dbfixtures import read_rows
from hypothesis import given, settings
from hypothesis import strategies as st
from procfixtures import full_temp_disk

from tutormax_cli import held as held_module
from tutormax_cli import spill
from tutormax_cli.duplicates import GROUP, LAST, SEQ, Settled, best_of_each_key
from tutormax_cli.held import Held
from tutormax_cli.store import Store

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
VERSIONS = st.lists(
    st.tuples(st.sampled_from("abcdefg"), st.none() | st.integers(0, 3)), min_size=1, max_size=40
)


def _due(held: Held, upto: int | None, settled: Settled) -> pa.Table | None:
    """What is due, settled as the pipeline settles it when the database takes every best
    version: the best of each key, the others superseded (Held yields every version of a
    key, held in memory or spilled, every version of a key in one table)."""
    parts = list(held.take_due(upto))
    keys = [set(t["k"].to_pylist()) for t in parts]
    assert all(not (a & b) for i, a in enumerate(keys) for b in keys[i + 1 :])  # one table a key
    if not parts:
        return None
    best, rest = best_of_each_key(pa.concat_tables(parts), "k")
    settled.superseded += list(zip(rest[GROUP].to_pylist(), rest[SEQ].to_pylist(), strict=True))
    return best


def _pairs(due: pa.Table | None) -> set[tuple[str, int]]:
    if due is None:
        return set()
    return set(zip(due["k"].to_pylist(), due[SEQ].to_pylist(), strict=True))


def _best(versions: list[tuple[str, int | None]], repeated: set[str]) -> dict[str, int]:
    def rank(i: int) -> tuple[bool, int, int]:
        stamp = versions[i][1]
        return (stamp is not None, -1 if stamp is None else stamp, i)

    return {k: max((i for i, (v, _) in enumerate(versions) if v == k), key=rank) for k in repeated}


def _run(
    held: Held, versions: list[tuple[str, int | None]], cuts: list[int]
) -> tuple[list[int], list[set[tuple[str, int]]], Settled, dict[str, int]]:
    """Offer the repeated keys' versions batch by batch, taking what is due after each;
    (the batch ends, what came out after each batch and then at the end, settled, last)."""
    last = {k: i for i, (k, _) in enumerate(versions)}
    repeated = {k for k in last if sum(1 for v, _ in versions if v == k) > 1}
    bounds = sorted({c for c in cuts if c < len(versions)} | {len(versions)})
    settled = Settled()
    got: list[set[tuple[str, int]]] = []
    start = 0
    for end in bounds:
        at = [i for i in range(start, end) if versions[i][0] in repeated]
        held.offer(_versions(versions, at, last))
        got.append(_pairs(_due(held, end - 1, settled)))
        start = end
    got.append(_pairs(_due(held, None, settled)))
    assert len(held) == 0
    return bounds, got, settled, {k: last[k] for k in repeated}


def _superseded_exactly_the_losers(
    versions: list[tuple[str, int | None]], best: dict[str, int], settled: Settled
) -> None:
    losers = {i for i, (k, _) in enumerate(versions) if k in best} - set(best.values())
    assert {seq for _, seq in settled.superseded} == losers
    assert len(settled.superseded) == len(losers)


@pytest.mark.parametrize("max_chunks", [1, 3, Held.MAX_CHUNKS])
@settings(max_examples=200, deadline=None)
@given(versions=VERSIONS, cuts=st.lists(st.integers(1, 40), max_size=8))
def test_held_gives_each_key_its_best_version_at_its_last_occurrence(
    max_chunks: int, versions: list[tuple[str, int | None]], cuts: list[int]
) -> None:
    """Against a per-record oracle, however the run is cut into batches: each duplicated
    key comes out once, in the batch of its last occurrence, as its best version (an
    updated_at beats none, the newest beats older, then the later position); every other
    version is superseded."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Held, "MAX_CHUNKS", max_chunks)
        bounds, got, settled, last = _run(Held("k"), versions, cuts)
    best = _best(versions, set(last))
    want = [{(k, i) for k, i in best.items() if start_ <= last[k] < end}
            for start_, end in zip([0, *bounds[:-1]], bounds, strict=True)]  # fmt: skip
    assert got == [*want, set()]
    _superseded_exactly_the_losers(versions, best, settled)


@pytest.mark.parametrize("held_bytes", [0, 200], ids=["spill-at-once", "spill-later"])
@pytest.mark.parametrize("width", [1, 3, 8])
@pytest.mark.parametrize("max_ranges", [128, 2], ids=["ranges", "wide-ranges-split"])
@settings(max_examples=100, deadline=None)
@given(versions=VERSIONS, cuts=st.lists(st.integers(1, 40), max_size=8))
def test_spilled_held_versions_come_out_once_as_the_best_never_early(
    held_bytes: int,
    width: int,
    max_ranges: int,
    versions: list[tuple[str, int | None]],
    cuts: list[int],
) -> None:
    """Spilled by `_last` range (every version of a key in one partition): each duplicated
    key still comes out once, as its best version, never before its last occurrence, and
    no later than the batch that reads past the end of its partition's range; every other
    version is superseded once. With at most 2 ranges a range is wider than RANGE_ROWS,
    and its versions are split by key into pieces before they are settled."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(held_module, "HELD_BYTES", held_bytes)
        mp.setattr(spill, "RANGE_ROWS", width)
        mp.setattr(spill, "MAX_RANGES", max_ranges)
        mp.setattr(held_module, "SPILL_BUFFER_ROWS", 2)
        bounds, got, settled, last = _run(Held("k", span=len(versions)), versions, cuts)
        range_width, _ = spill.ranges(len(versions))
    best = _best(versions, set(last))

    def batch_of(position: int) -> int:  # the first batch that reads `position`
        return next((b for b, end in enumerate(bounds) if position < end), len(bounds))

    came = {k: b for b, out in enumerate(got) for k, _ in out}
    assert sum(len(out) for out in got) == len(best)  # each once
    assert {pair for out in got for pair in out} == set(best.items())  # as the best
    for k, b in came.items():
        range_end = (last[k] // range_width + 1) * range_width - 1
        assert batch_of(last[k]) <= b <= batch_of(range_end), (k, b)
    _superseded_exactly_the_losers(versions, best, settled)


def test_a_spilled_run_holds_its_keys_on_disk_and_leaves_nothing_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past HELD_BYTES what is held is on disk: the chunks in memory are gone, the spill's
    partition files exist, a partition comes out once its range is read, and the end
    removes the rest."""
    monkeypatch.setattr(held_module, "HELD_BYTES", 1000)
    monkeypatch.setattr(spill, "RANGE_ROWS", 100)
    monkeypatch.setattr(held_module, "SPILL_BUFFER_ROWS", 1)
    held, settled = Held("k", span=1000), Settled()
    keys = [f"k{i}" for i in range(200)]
    held.offer(_held_rows(keys, list(range(200)), [300 + i for i in range(200)]))
    assert held._chunks == [] and held._disk is not None and len(held) == 200
    folder = Path(held._disk._dir.name)  # type: ignore[union-attr]
    assert sorted(p.name for p in folder.iterdir()) == ["3.arrows", "4.arrows"]
    # a later version of a spilled key goes to disk too, and beats the first at the end
    held.offer(_held_rows(["k5"], [250], [305]))
    assert held._chunks == [] and len(held) == 201
    assert _due(held, 398, settled) is None  # 300..399 not yet read to its end
    out = _due(held, 399, settled)
    assert out is not None and out.num_rows == 100 and len(held) == 100
    assert dict(zip(out["k"].to_pylist(), out[SEQ].to_pylist(), strict=True))["k5"] == 250
    assert settled.superseded == [(0, 5)]
    assert sorted(p.name for p in folder.iterdir()) == ["4.arrows"]
    out = _due(held, None, settled)
    assert out is not None and out.num_rows == 100 and len(held) == 0
    assert not folder.exists()


def _versions(versions: list[tuple[str, int | None]], at: list[int], last: dict) -> pa.Table:
    keys = [versions[i][0] for i in at]
    stamps = [None if versions[i][1] is None else versions[i][1] * 1_000_000 for i in at]
    return _held_rows(keys, at, [last[k] for k in keys], stamps)


def _held_rows(
    keys: list[str], seqs: list[int], lasts: list[int], stamps: list[int | None] | None = None
) -> pa.Table:
    """Rows as the pipeline offers them to Held (`updated_at` in seconds, when given)."""
    columns = {"k": pa.array(keys, pa.string())}
    if stamps is not None:
        columns["updated_at"] = pa.array(stamps, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    columns[SEQ] = pa.array(seqs, pa.int64())
    columns[GROUP] = pa.array([0] * len(keys), pa.int64())
    columns[LAST] = pa.array(lasts, pa.int64())
    return pa.table(columns)


def test_a_batch_copies_only_the_held_chunks_it_concerns() -> None:
    """A run holding many keys: a batch with a version of one chunk's keys, and one in
    which another chunk's keys come due, leave every other chunk as it was (the same
    object), never copied or re-ranked (a new version is kept beside the old one, both
    settled together when due)."""
    held, settled = Held("k"), Settled()

    def offer(keys: list[str], seqs: range, last: int) -> None:
        held.offer(_held_rows(keys, list(seqs), [last] * len(keys)))

    def chunks() -> list[pa.Table]:
        return [c for _, c in held._chunks]

    for b in range(5):  # keys of chunk b are last seen at 1000 + b
        offer([f"{b}-{i}" for i in range(10)], range(b * 10, b * 10 + 10), 1000 + b)
    before = chunks()
    offer([f"2-{i}" for i in range(10)], range(100, 110), 1002)
    assert [c for c in chunks() if any(c is b for b in before)] == before
    assert len(settled.superseded) == 0 and len(held) == 60
    kept = [c for c in chunks() if c is not before[0]]
    due = _due(held, 1000, settled)
    assert due is not None
    assert sorted(due["k"].to_pylist()) == sorted(f"0-{i}" for i in range(10))
    assert len(chunks()) == len(kept)
    assert all(a is b for a, b in zip(chunks(), kept, strict=True))


# -- a whole run through the spill ----------------------------------------------------------

_WRAPPED = """
import atexit, resource, signal, sys
import tutormax_cli.held as h, tutormax_cli.spill as s
h.HELD_BYTES, h.SPILL_BUFFER_ROWS, s.RANGE_ROWS = int(sys.argv[1]), 500, int(sys.argv[3])
spilled = [0]
_spill = h.Held._spill
def counted(self):
    spilled[0] += 1
    _spill(self)
h.Held._spill = counted
atexit.register(lambda: print(f"spilled {spilled[0]} times", file=sys.stderr))
limit, _, n = sys.argv[2].partition("=")
if limit == "fsize":  # a file-size limit stands in for a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(n), int(n)))
elif limit == "nofile":
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(n), int(n)))
from tutormax_cli.cli import main
sys.argv = ["tutormax"] + sys.argv[4:]
main()
"""
KEYS = 6_000


def _twice_far_apart(path: Path) -> None:
    """Every session twice, the second pass after all of the first: a run that holds every
    key at once. A third of the keys' first versions carry the newer updated_at (they win),
    a third carry none (they lose to the second's), and the rest lose to a newer second."""
    ids = [f"S{i:05d}" for i in range(KEYS)]

    def version(i: int, second: bool) -> dict[str, object]:
        stamp = {0: ("2024-12-02", "2024-12-01"), 1: (None, "2024-12-01"),
                 2: ("2024-12-01", "2024-12-03")}[i % 3][second]  # fmt: skip
        return {"session_id": ids[i], "tutor_id": "tut_0001", "student_id": f"st{i}",
                "scheduled_start": "2024-11-09T02:00:00Z", "duration_minutes": 90 if second else 60,
                "subject": "Math", "updated_at": stamp and f"{stamp}T00:00:00Z"}  # fmt: skip

    rows = [version(i, False) for i in range(KEYS)] + [version(i, True) for i in range(KEYS)]
    pq.write_table(pa.Table.from_pylist(rows), path)


def _enrich(args: list[str], held_bytes: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _WRAPPED, str(held_bytes), "0", "1000", "enrich", *args,
         "--as-of", "2025-01-01T00:00:00Z", "--batch-size", "500", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _stored(url: str) -> dict[str, int]:
    """Each stored session's duration (60: its first version won, 90: its second)."""
    store = Store.connect(url)
    try:
        return {k: r["duration_minutes"] for k, r in read_rows(store, "sessions").items()}
    finally:
        store.close()


def test_a_run_through_the_spill_stores_what_one_in_memory_stores(
    db_url: str, tmp_path: Path
) -> None:
    """6,000 keys held at once, spilled (64 KiB in memory, ranges of 1,000 positions) into
    SQLite and PostgreSQL, and held in memory (the default) into SQLite: the same rows
    stored, the same counts, each key's best version."""
    import json

    src = tmp_path / "twice.parquet"
    _twice_far_apart(src)
    tutors = str(Path(__file__).parent.parent / "sample_data" / "tutors.csv")
    results = []
    for held_bytes, url in ((64 << 10, db_url), (1 << 40, f"sqlite:///{tmp_path}/memory.db")):
        assert _enrich([tutors, "--db", url], held_bytes).returncode == 0
        proc = _enrich([str(src), "--db", url], held_bytes)
        assert proc.returncode == 0, proc.stderr
        spilled = int(proc.stderr.split("spilled ")[1].split()[0])
        assert (spilled > 0) == (held_bytes < 1 << 40), proc.stderr
        (summary,) = json.loads(proc.stdout)["files"]
        results.append((_stored(url), {k: summary[k] for k in
                        ("read", "accepted", "duplicates", "inserted", "rejected")}))  # fmt: skip
    assert results[0] == results[1]
    stored, counts = results[0]
    assert counts == {"read": 2 * KEYS, "accepted": KEYS, "duplicates": KEYS,
                      "inserted": KEYS, "rejected": 0}  # fmt: skip
    want = {0: 60, 1: 90, 2: 90}
    assert [stored[f"S{i:05d}"] for i in range(KEYS)] == [want[i % 3] for i in range(KEYS)]


def _limited(db: str, tmp_path: Path, limit: str, range_rows: int, **hint: str) -> None:
    """The doubled file through the held spill under a resource limit (`limit`, as the
    wrapper takes it), into `db` with its tutors: a clear error, nothing left in TMPDIR."""
    src = tmp_path / "twice.parquet"
    _twice_far_apart(src)
    tutors = str(Path(__file__).parent.parent / "sample_data" / "tutors.csv")
    assert _enrich([tutors, "--db", db], 1 << 40).returncode == 0
    temp = tmp_path / "temp"
    temp.mkdir()
    full_temp_disk(
        [sys.executable, "-c", _WRAPPED, str(64 << 10), limit, str(range_rows), "enrich",
         str(src), "--db", db, "--batch-size", "500", "--as-of", "2025-01-01T00:00:00Z"],
        temp, **hint,
    )  # fmt: skip


@pytest.mark.postgres
def test_a_full_disk_under_the_held_spill_is_a_clear_error(pg_url: str, tmp_path: Path) -> None:
    """The held versions' spill cannot be written (a file-size limit stands in for a full
    disk; the database is another process, not limited): exit 2, a message naming the
    temporary folder and what to do, no traceback, nothing left in it."""
    _limited(pg_url, tmp_path, "fsize=20000", 1000)


def test_too_few_open_files_for_the_held_spill_is_a_clear_error(tmp_path: Path) -> None:
    """The spill's partitions (here 128: ranges of 94 positions) cannot all be open under
    a limit of 64 open files: exit 2 naming the folder, the fix for that cause (it said to
    find more free space), no traceback, nothing left."""
    _limited(f"sqlite:///{tmp_path}/held.db", tmp_path, "nofile=64", 10,
             hint="raise the limit of open files (ulimit -n)")  # fmt: skip


_PEAK = """
import sys, numpy as np, pyarrow as pa
import tutormax_cli.held as h, tutormax_cli.spill as s
h.HELD_BYTES, s.MAX_RANGES = 4 << 20, int(sys.argv[2])
n = int(sys.argv[1])
pool = pa.default_memory_pool()
base = pool.max_memory()
held = h.Held("k", span=2 * n)
for at in range(0, n, 16_000):  # every key held until a second pass, after all of them
    seqs = np.arange(at, min(at + 16_000, n))
    held.offer(pa.table({"k": pa.array([f"key-{i:09d}" for i in seqs]),
                         "_seq": pa.array(seqs), "_group": pa.array(np.zeros(len(seqs), np.int64)),
                         "_last": pa.array(seqs + n)}))
total = 0
for due in held.take_due(None):
    total += due.num_rows
assert total == n, total
print(pool.max_memory() - base)
"""


@pytest.mark.parametrize("max_ranges", [128, 2], ids=["ranges", "wide-ranges-split"])
def test_what_a_run_holds_takes_no_more_memory_for_more_keys(max_ranges: int) -> None:
    """Arrow's high-water mark of Held in a process of its own, every key held at once:
    the same for 800k keys as for 200k (past HELD_BYTES, here 4 MiB). In memory it was
    the run's: about 40 bytes a key of these rows, 250 of a session's. With at most 2
    ranges (as a run past 128 × 65,536 positions has ranges wider than 65,536), every key
    falls in one range, settled in pieces split by key; whole, it held every key."""

    def peak(n: int) -> int:
        out = subprocess.run([sys.executable, "-c", _PEAK, str(n), str(max_ranges)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    small, big = peak(200_000), peak(800_000)
    assert small > 0
    assert big <= small * 1.25 + (1 << 20), (small, big)


def test_a_partition_written_in_many_pieces_comes_back_as_one_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A spilled partition comes back whole: every version of each key, in one table for
    the caller to rank once, however many pieces it was written in (a spill buffer of one
    row: 2,000 pieces). Ranked or joined piece by piece, draining grew with the square of
    the run (2M keys: 50 s)."""
    monkeypatch.setattr(held_module, "HELD_BYTES", 0)
    monkeypatch.setattr(held_module, "SPILL_BUFFER_ROWS", 1)
    held = Held("k", span=4000)
    for seq in range(2000):  # one version a batch: k0..k999, then each again
        held.offer(_held_rows([f"k{seq % 1000}"], [seq], [2000 + seq % 1000]))
    (out,) = held.take_due(None)
    assert out.num_rows == 2000 and out.column("k").num_chunks == 1
    assert sorted(out[SEQ].to_pylist()) == list(range(2000))


def test_a_partition_over_drain_bytes_comes_back_in_pieces_a_key_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A due partition of more than DRAIN_BYTES of versions is split by key into pieces
    of about that size (memory stays bounded), each key's versions all in one piece."""
    monkeypatch.setattr(held_module, "HELD_BYTES", 0)
    monkeypatch.setattr(held_module, "DRAIN_BYTES", 4 << 10)
    held = Held("k", span=4000)
    keys = [f"key-{i:04d}" for i in range(1000)]
    for round_ in range(3):  # every key three times, all due at the end
        seqs = [round_ * 1000 + i for i in range(1000)]
        held.offer(_held_rows(keys, seqs, [3000 + i for i in range(1000)]))
    pieces = list(held.take_due(None))
    assert len(pieces) > 4 and max(p.nbytes for p in pieces) < 4 * (4 << 10)
    seen = [set(p["k"].to_pylist()) for p in pieces]
    assert sum(len(k) for k in seen) == 1000 and set().union(*seen) == set(keys)
    assert all(p.num_rows == 3 * len(k) for p, k in zip(pieces, seen, strict=True))


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (errno.ENOSPC, "set TMPDIR to a directory with more free space"),
        (errno.EFBIG, "set TMPDIR to a directory with more free space"),
        (errno.EMFILE, "raise the limit of open files (ulimit -n)"),
        (errno.ENOENT, "something removed tutormax's temporary files"),
        (errno.EACCES, "set TMPDIR to a directory tutormax may write to"),
        (errno.EROFS, "set TMPDIR to a directory tutormax may write to"),
    ],
)
def test_a_temporary_file_error_names_the_fix_for_its_cause(code: int, hint: str) -> None:
    err = spill.temp_error(OSError(code, os.strerror(code)))
    assert err.message.startswith(f"temporary files in {tempfile.gettempdir()}: ")
    assert err.hint is not None and err.hint.startswith(hint)
