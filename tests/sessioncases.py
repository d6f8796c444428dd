"""Versions of sessions and the oracle of which one a database keeps (SPEC §4): shared by
the feedback join's tests, in memory (test_pipeline) and on disk (test_session_join)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import strategies as st

TS = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Version = tuple[str, datetime, datetime | None]  # session_id, scheduled_start, updated_at

KEYS = st.sampled_from([f"S{i}" for i in range(12)] + ["S10000", "ses_é", "x" * 40])
_INSTANT = st.integers(-62135596800 * 10**6, 253402300799 * 10**6)
VERSIONS = st.tuples(
    KEYS,
    st.integers(-(10**15), 10**15).map(lambda us: EPOCH + timedelta(microseconds=us)),
    st.one_of(st.none(), _INSTANT.map(lambda us: EPOCH + timedelta(microseconds=us))),
)


class Kept:
    """Per key, the version a database keeps: newest updated_at, a version with one beating
    one without, else the last."""

    def __init__(self) -> None:
        self._best: dict[str, tuple[tuple[bool, int, int], datetime]] = {}
        self._seq = 0

    def add(self, batch: list[Version]) -> None:
        for key, start, updated in batch:
            us = (updated - EPOCH) // timedelta(microseconds=1) if updated else 0
            rank = (updated is not None, us, self._seq)
            self._seq += 1
            if key not in self._best or rank > self._best[key][0]:
                self._best[key] = (rank, start)

    def starts(self, keys: list[str | None]) -> list[datetime | None]:
        return [self._best[k][1] if k in self._best else None for k in keys]


def columns(batch: list[Version]) -> tuple[pa.Array, pa.Array, pa.Array]:
    """A batch as the ids, starts and updated_at SessionStarts.remember takes."""
    return (
        pa.array([k for k, _, _ in batch], pa.string()),
        pa.array([s for _, s, _ in batch], TS),
        pa.array([u for _, _, u in batch], TS),
    )
