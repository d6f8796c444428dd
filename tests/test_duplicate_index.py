"""The run's duplicate bookkeeping (duplicates.DuplicateIndex, DuplicateCounter) against a
per-record oracle, in memory and spilled to disk in several partitions; its memory, which
must not grow with the run, and a full disk under its spill."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procfixtures import full_temp_disk

from tutormax_cli import duplicates, spill
from tutormax_cli.duplicates import (
    DuplicateCounter,
    DuplicateIndex,
)

HASHES = st.sampled_from([0, 1, -1, 7, 2**62, -(2**63), 2**63 - 1]) | st.integers(
    -(2**63), 2**63 - 1
)
BATCHES = st.lists(st.lists(st.tuples(HASHES, st.integers(0, 2)), max_size=12), max_size=6)


SPILLS = pytest.mark.parametrize(
    "spill_rows", [1, 3, 1 << 20], ids=["spill-every-pair", "spill-3", "in-memory"]
)


@SPILLS
@settings(max_examples=150, deadline=None)
@given(batches=BATCHES)
def test_counter_counts_every_later_occurrence_per_group(spill_rows: int, batches) -> None:
    """A row counts for its group when an earlier row of the run had its key; the run adds
    a batch's keys group by group, so the oracle walks them in that order too."""
    want: Counter[int] = Counter()
    seen: set[int] = set()
    counter = DuplicateCounter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(duplicates, "SPILL_ROWS", spill_rows)
        for batch in batches:
            for group in sorted({g for _, g in batch}):
                hs = [h for h, g in batch if g == group]
                for h in hs:
                    want[group] += h in seen
                    seen.add(h)
                counter.add(pa.array(map(str, hs)), group, pa.array(hs, pa.int64()))
        assert counter.finish() == {g: n for g, n in want.items() if n}


@SPILLS
@pytest.mark.parametrize("width", [1, 4, 1 << 16], ids=["range-1", "range-4", "range-64k"])
@settings(max_examples=150, deadline=None)
@given(batches=BATCHES, gaps=st.lists(st.integers(0, 3), max_size=6), cut=st.integers(1, 9))
def test_index_gives_each_row_of_a_repeated_key_its_last_position(
    spill_rows: int, width: int, batches, gaps: list[int], cut: int
) -> None:
    """Against a per-record oracle: asked for every position of the run in order (in
    batches of `cut`), the index gives a row whose hash recurs the position of that hash's
    last row, and null to any other, however the pairs were spilled and the positions
    partitioned. Positions skip `gaps` (rows with an invalid key are not added)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(duplicates, "SPILL_ROWS", spill_rows)
        mp.setattr(spill, "RANGE_ROWS", width)
        _index_matches_the_oracle(batches, gaps, cut)


def _index_matches_the_oracle(batches, gaps: list[int], cut: int) -> None:
    index = DuplicateIndex()
    positions: dict[int, list[int]] = {}
    seq = 0
    for b, batch in enumerate(batches):
        seq += gaps[b] if b < len(gaps) else 0
        hs = [h for h, _ in batch]
        seqs = list(range(seq, seq + len(hs)))
        for h, s in zip(hs, seqs, strict=True):
            positions.setdefault(h, []).append(s)
        seq += len(hs)
        index.add(pa.array(hs, pa.int64()), pa.array(seqs, pa.int64()))
    index.finish()
    last_of = {s: max(ss) for ss in positions.values() if len(ss) > 1 for s in ss}
    assert bool(index) == bool(last_of)
    assert index.rows == len(last_of)
    assert index.span == (max(last_of.values()) + 1 if last_of else 0)
    got: list[int | None] = []
    asked = list(range(seq + 2))  # and two past the end
    for at in range(0, len(asked), cut):
        got += index.lookup(pa.array(asked[at : at + cut], pa.int64())).to_pylist()
    index.close()
    assert got == [last_of.get(s) for s in asked]


def test_the_index_spills_by_position_and_reads_each_partition_in_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past SPILL_ROWS the (position, last) pairs are on disk in position ranges; a lookup
    holds only the ranges its positions fall in, the ones before dropped."""
    monkeypatch.setattr(duplicates, "SPILL_ROWS", 10)
    monkeypatch.setattr(spill, "RANGE_ROWS", 100)
    index = DuplicateIndex()
    hs = list(range(500)) * 2  # each hash at p and p + 500
    index.add(pa.array(hs, pa.int64()), pa.array(range(1000), pa.int64()))
    index.finish()
    assert index._found.on_disk and index._found.parts == 10
    assert index.lookup(pa.array([150, 650], pa.int64())).to_pylist() == [650, 650]
    assert sorted(index._window) == [1, 2, 3, 4, 5, 6]  # its batch spans them
    assert index.lookup(pa.array([700, 701], pa.int64())).to_pylist() == [700, 701]
    assert sorted(index._window) == [7]
    index.close()


_PEAK = """
import sys, tracemalloc, numpy as np, pyarrow as pa
from tutormax_cli.duplicates import DuplicateCounter, DuplicateIndex
n, which = int(sys.argv[1]), sys.argv[2]
pool = pa.default_memory_pool()
rng = np.random.default_rng(7)
base = pool.max_memory()
tracemalloc.start()  # numpy's arrays (outside Arrow's pool) and Python's objects
bookkeeping = DuplicateCounter() if which == "counter" else DuplicateIndex()
for at in range(0, n, 16_000):
    if which == "repeated":  # every key twice, n / 2 rows apart (a bijection of i mod n / 2)
        i = (np.arange(at, min(at + 16_000, n)) % (n // 2)).astype(np.uint64)
        h = pa.array((i * np.uint64(0x9E3779B97F4A7C15)).view(np.int64))
    else:
        h = pa.array(rng.integers(-2**63, 2**63 - 1, min(16_000, n - at), dtype=np.int64))
    if which == "counter":
        bookkeeping.add(h, at % 2, h)
    else:
        bookkeeping.add(h, pa.array(np.arange(at, at + len(h))))
bookkeeping.finish()
if which == "repeated":  # the run's main pass asks for every position, batch by batch
    for at in range(0, n, 16_000):
        got = bookkeeping.lookup(pa.array(np.arange(at, min(at + 16_000, n))))
        assert got.null_count == 0, at
print(pool.max_memory() - base + tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.parametrize("which", ["counter", "index", "repeated"])
def test_the_bookkeeping_of_a_bigger_run_takes_no_more_memory(which: str) -> None:
    """The high-water mark of a run's key bookkeeping (Arrow's pool, numpy and Python
    objects), in a process of its own: the same for 2M keys as for 500k (past SPILL_ROWS),
    distinct or each twice. The pairs were re-read whole once for each 1M of them, and
    their buffer and partitions were 1M pairs: 23 → 64 MiB from 1M to 4M keys, which made
    the end of a 5M-row run its peak of memory. The repeated keys' index was in memory, 16
    bytes a key, for the whole run."""

    def peak(n: int) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _PEAK, str(n), which], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    small, big = peak(500_000), peak(2_000_000)
    assert small > 0
    assert big <= small * 1.1 + (1 << 20), (small, big)
    assert big < 24 << 20, big  # a few buffers of SPILL_ROWS pairs (4 MiB each), not the run's


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
import tutormax_cli.duplicates as d
d.SPILL_ROWS = 10
from tutormax_cli.cli import main
sys.argv = ["tutormax"] + sys.argv[1:]
main()
"""


def test_a_full_disk_under_the_key_spill_is_a_clear_error(tmp_path: Path) -> None:
    """The duplicate count's spill cannot be written (a file-size limit stands in for a
    full disk): exit 2, a message naming the temporary folder and what to do, no traceback,
    nothing left in it. (Its own file said only "Error writing bytes to file".)"""
    src = tmp_path / "s.csv"
    rows = [f"S{i},T1,st{i},2024-11-09T02:00:00Z,60,Math" for i in range(20_000)]
    src.write_text(
        "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject\n"
        + "\n".join(rows)
        + "\n"
    )
    temp = tmp_path / "temp"
    temp.mkdir()
    full_temp_disk(
        [sys.executable, "-c", _FULL_DISK, "enrich", str(src), "--no-db", "--out",
         str(tmp_path / "o.parquet"), "--as-of", "2025-01-01T00:00:00Z"], temp
    )  # fmt: skip
    assert not (tmp_path / "o.parquet").exists()
