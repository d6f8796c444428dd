"""Key look-ups (Store's): which keys a table holds, the sessions' starts, row counts.

Each runs on the connection `reading()` gives: the open transaction's, so a batch sees its
own uncommitted rows, else a short-lived one (Store._reading)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from ..schema import KINDS
from .backend import Backend
from .tables import TABLES, TIMESTAMP

log = logging.getLogger("tutormax.store")


class Lookups:
    def __init__(
        self, reading: Callable[[], AbstractContextManager[sa.Connection]], backend: Backend
    ) -> None:
        self._reading = reading
        self.backend = backend
        self.dialect = backend.name

    def _key_filter(self, col: sa.ColumnElement[Any], ids: pa.Array) -> sa.ColumnElement[bool]:
        """`col` is one of `ids`, as one bound parameter."""
        return self.backend.key_filter(col, ids)

    def existing_keys(self, kind: str, keys: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Bool mask aligned with `keys`: the key is stored in that kind's table."""
        arr = _string_array(keys)
        ids = pc.unique(arr.drop_null())
        if not len(ids):
            return pa.array([False] * len(arr), pa.bool_())
        col = TABLES[kind].c[KINDS[kind].key]
        with self._reading() as conn:
            found = conn.execute(sa.select(col).where(self._key_filter(col, ids))).scalars()
            value_set = pa.array(list(found), pa.string())
        return pc.is_in(arr, value_set=value_set).fill_null(False)

    def session_starts(self, session_ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Aligned `sessions.scheduled_start` (timestamp[us, UTC]); null when unknown."""
        arr = _string_array(session_ids)
        ids = pc.unique(arr.drop_null())
        if not len(ids):
            return pa.nulls(len(arr), TIMESTAMP)
        t = TABLES["sessions"]
        stmt = sa.select(t.c.session_id, t.c.scheduled_start).where(
            self._key_filter(t.c.session_id, ids)
        )
        try:
            with self._reading() as conn:
                rows = conn.execute(stmt).all()
            found, starts = [r[0] for r in rows], pa.array([r[1] for r in rows], TIMESTAMP)
        except (ValueError, OverflowError, pa.ArrowException):  # a start changed by hand
            found, starts = self._session_starts_as_text(ids)
        if not found:
            return pa.nulls(len(arr), TIMESTAMP)
        return starts.take(pc.index_in(arr, value_set=pa.array(found, pa.string())))

    def _session_starts_as_text(self, ids: pa.Array) -> tuple[list[str], pa.Array]:
        """session_starts where a stored start is not a timestamp any driver or Arrow takes
        (a row changed by hand: '' or text in SQLite, 'infinity' or a year past 9999 in
        PostgreSQL): each start read as naive UTC text and cast alone; what does not cast
        is unknown (null), as for a session not stored, and said once in the log."""
        from ..rules.arrow import cast_each

        t = TABLES["sessions"]
        start: Any = t.c.scheduled_start
        if self.dialect == "postgresql":
            start = sa.func.timezone("UTC", start)
        stmt = sa.select(t.c.session_id, sa.cast(start, sa.Text)).where(
            self._key_filter(t.c.session_id, ids)
        )
        with self._reading() as conn:
            rows = conn.execute(stmt).all()
        text = pa.array([r[1] for r in rows], pa.string())
        naive, bad = cast_each(text, lambda a: a.cast(pa.timestamp("us")), pa.timestamp("us"))
        if bad is not None:
            unreadable = [rows[i][0] for i in pc.indices_nonzero(bad).to_pylist()]
            log.warning(
                "%d stored session(s) have a scheduled_start that is not a timestamp (%s): "
                "their feedback's delay is left unknown",
                len(unreadable),
                ", ".join(map(repr, unreadable[:5])) + (" …" if len(unreadable) > 5 else ""),
            )
        return [r[0] for r in rows], naive.cast(TIMESTAMP)

    def row_counts(self) -> dict[str, int]:
        """Rows per table; 0 for a table not created yet."""
        counts: dict[str, int] = {}
        with self._reading() as conn:
            inspector = sa.inspect(conn)
            for name, table in TABLES.items():
                if not inspector.has_table(name):
                    counts[name] = 0
                    continue
                count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                counts[name] = int(count)
        return counts


def _string_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return arr if arr.type == pa.string() else arr.cast(pa.string())
