"""Key look-ups (Store's): which keys a table holds, the sessions' starts, row counts.

Each runs on the connection `reading()` gives: the open transaction's, so a batch sees its
own uncommitted rows, else a short-lived one (Store._reading)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
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
        with self._reading() as conn:  # (as text: a key column a DBA made char(n) pads it)
            stmt = sa.select(sa.cast(col, sa.Text)).where(self._key_filter(col, ids))
            found = conn.execute(stmt).scalars()
            value_set = pa.array(list(found), pa.string())
        return pc.is_in(arr, value_set=value_set).fill_null(False)

    def session_starts(self, session_ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Aligned `sessions.scheduled_start` (timestamp[us, UTC]); null when unknown."""
        arr = _string_array(session_ids)
        ids = pc.unique(arr.drop_null())
        if not len(ids):
            return pa.nulls(len(arr), TIMESTAMP)
        t = TABLES["sessions"]
        stmt = sa.select(sa.cast(t.c.session_id, sa.Text), t.c.scheduled_start).where(
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
        PostgreSQL, a column a DBA made `text` or `date`): each start read as its text and
        parsed alone, an offset (PostgreSQL writes the session's) taken to UTC, none meaning
        UTC; what does not parse is unknown (null), as for a session not stored, and said
        once in the log."""
        t = TABLES["sessions"]
        stmt = sa.select(
            sa.cast(t.c.session_id, sa.Text), sa.cast(t.c.scheduled_start, sa.Text)
        ).where(self._key_filter(t.c.session_id, ids))
        with self._reading() as conn:
            if self.dialect == "postgresql":  # ISO text whatever the role's DateStyle
                conn.exec_driver_sql("SELECT set_config('DateStyle', 'ISO, YMD', true)")
            rows = conn.execute(stmt).all()
        starts = [_utc(text) for _, text in rows]
        unreadable = [
            r[0] for r, s in zip(rows, starts, strict=True) if s is None and r[1] is not None
        ]
        if unreadable:
            log.warning(
                "%d stored session(s) have a scheduled_start that is not a timestamp (%s): "
                "their feedback's delay is left unknown",
                len(unreadable),
                ", ".join(map(repr, unreadable[:5])) + (" …" if len(unreadable) > 5 else ""),
            )
        return [r[0] for r in rows], pa.array(starts, TIMESTAMP)

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


def _utc(text: str | None) -> datetime | None:
    """An ISO timestamp's text as an aware UTC datetime (no offset: UTC); None if it is
    none ('', 'infinity', a year past 9999, a BC date)."""
    try:
        value = datetime.fromisoformat((text or "").strip())
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
