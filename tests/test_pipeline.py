"""The batch function's run memory: the feedback → session join of one run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa

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
