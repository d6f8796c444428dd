"""The run's duplicate bookkeeping (duplicates.DuplicateIndex, DuplicateCounter) against a
per-record oracle, in memory and spilled to disk in several partitions."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tutormax_cli import duplicates
from tutormax_cli.duplicates import DuplicateCounter, DuplicateIndex

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
@settings(max_examples=150, deadline=None)
@given(batches=BATCHES)
def test_index_knows_each_repeated_hash_and_its_last_position(spill_rows: int, batches) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(duplicates, "SPILL_ROWS", spill_rows)
        _index_matches_the_oracle(batches)


def _index_matches_the_oracle(batches) -> None:
    index = DuplicateIndex()
    positions: dict[int, list[int]] = {}
    seq = 0
    for batch in batches:
        hs = [h for h, _ in batch]
        seqs = list(range(seq, seq + len(hs)))
        for h, s in zip(hs, seqs, strict=True):
            positions.setdefault(h, []).append(s)
        seq += len(hs)
        index.add(pa.array(hs, pa.int64()), pa.array(seqs, pa.int64()))
    index.finish()
    want = {h: max(s) for h, s in positions.items() if len(s) > 1}
    assert dict(zip(index.hashes.to_pylist(), index.last.to_pylist(), strict=True)) == want
    assert index.hashes.to_pylist() == sorted(want)
    asked = list(positions) + [12345]
    got = index.lookup(pa.array(asked, pa.int64())).to_pylist()
    assert got == [want.get(h) for h in asked]
