"""The batch function's run memory: the feedback → session join of one run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tutormax_cli.duplicates import key_hashes
from tutormax_cli.parents import SessionStarts

TS = pa.timestamp("us", tz="UTC")


def test_session_lookup_matches_a_dict() -> None:
    rnd = random.Random(5)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    memory = SessionStarts()
    truth: dict[str, datetime] = {}
    for chunk in range(3):  # sessions arrive in several batches
        ids = [f"S{chunk}-{i}" for i in range(200)]
        starts = [base + timedelta(minutes=rnd.randrange(10**6)) for _ in ids]
        truth.update(zip(ids, starts, strict=True))
        memory.remember(pa.array(ids), pa.array(starts, TS))
    asked = [rnd.choice(list(truth)) for _ in range(300)] + ["unknown", "S9-1"]
    rnd.shuffle(asked)
    got = memory.lookup(pa.array(asked)).to_pylist()
    assert got == [truth.get(i) for i in asked]


def test_lookup_with_no_sessions_is_all_null() -> None:
    assert SessionStarts().lookup(pa.array(["S1", "S2"])).to_pylist() == [None, None]


def _weak_hash(ids: pa.Array) -> pa.Array:
    """A hash that many keys share (their length), so the index's clash path runs."""
    return pa.compute.utf8_length(ids).cast(pa.int64()).fill_null(0)


@pytest.mark.parametrize("hash_keys", [key_hashes, _weak_hash], ids=["siphash", "clashing"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_session_index_matches_a_per_record_oracle(hash_keys, data) -> None:
    """Versions of a session across batches, with and without updated_at, look-ups between
    the batches: each look-up gives the start of the version a database would keep (newest
    updated_at, a version with one beating one without, else the last), or null."""
    keys = st.sampled_from([f"S{i}" for i in range(12)] + ["S10000", "ses_é", "x" * 40])
    instant = st.one_of(st.none(), st.integers(-62135596800 * 10**6, 253402300799 * 10**6).map(_at))
    version = st.tuples(keys, st.integers(0, 10**12).map(_at), instant)
    memory = SessionStarts(hash_keys)
    best: dict[str, tuple[tuple[bool, int, int], datetime]] = {}
    seq = 0
    for _ in range(data.draw(st.integers(1, 4), label="batches")):
        batch = data.draw(st.lists(version, max_size=30), label="batch")
        for key, start, updated in batch:
            rank = (updated is not None, _us(updated) if updated else 0, seq)
            seq += 1
            if key not in best or rank > best[key][0]:
                best[key] = (rank, start)
        memory.remember(
            pa.array([k for k, _, _ in batch], pa.string()),
            pa.array([s for _, s, _ in batch], TS),
            pa.array([u for _, _, u in batch], TS),
        )
        asked = data.draw(st.lists(st.one_of(keys, st.none()), max_size=20), label="asked")
        got = memory.lookup(pa.array(asked, pa.string())).to_pylist()
        assert got == [best[k][1] if k in best else None for k in asked]


def _at(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
