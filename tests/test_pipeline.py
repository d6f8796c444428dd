"""The batch function's run memory: the feedback → session join of one run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sessioncases import KEYS, VERSIONS, Kept, columns

from tutormax_cli.keyhash import key_hashes
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


@pytest.mark.parametrize("hash_keys", [key_hashes, _weak_hash], ids=["keyhash", "clashing"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_session_index_matches_a_per_record_oracle(hash_keys, data) -> None:
    """Versions of a session across batches, with and without updated_at, look-ups between
    the batches: each look-up gives the start of the version a database would keep (newest
    updated_at, a version with one beating one without, else the last), or null."""
    memory = SessionStarts(hash_keys)
    kept = Kept()
    for _ in range(data.draw(st.integers(1, 4), label="batches")):
        batch = data.draw(st.lists(VERSIONS, max_size=30), label="batch")
        kept.add(batch)
        memory.remember(*columns(batch))
        asked = data.draw(st.lists(st.one_of(KEYS, st.none()), max_size=20), label="asked")
        got = memory.lookup(pa.array(asked, pa.string())).to_pylist()
        assert got == kept.starts(asked)
    memory.seal()  # every session read: the index is built and keeps no updated_at
    asked = data.draw(st.lists(st.one_of(KEYS, st.none()), max_size=20), label="sealed")
    assert memory.lookup(pa.array(asked, pa.string())).to_pylist() == kept.starts(asked)
    with pytest.raises(RuntimeError):
        memory.remember(*columns(data.draw(st.lists(VERSIONS, min_size=1, max_size=3))))
