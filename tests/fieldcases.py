"""Helpers for the derived-field tests: build a validated-shape table from a few values."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from tutormax_cli.fields import Context, derive
from tutormax_cli.schema import KINDS

AS_OF = datetime(2024, 11, 7, 17, 0, tzinfo=UTC)


def ts(text: str) -> datetime:
    """ISO-8601 text -> aware datetime (no offset means UTC, as in SPEC §2)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def table(kind: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Every column of `kind` in its canonical Arrow type; absent values are null."""
    return pa.table(
        {
            c.name: pa.array([row.get(c.name) for row in rows], type=c.type.arrow)
            for c in KINDS[kind].columns
        }
    )


def derive_rows(
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    as_of: datetime = AS_OF,
    tz: str = "UTC",
    session_start: Callable[[pa.Array], pa.Array] | None = None,
) -> list[dict[str, Any]]:
    """Derived fields of `rows` as plain dicts, one per input row."""
    ctx = Context(as_of=as_of, timezone=tz, session_start=session_start)
    out = derive(kind, table(kind, rows), ctx)
    return out.to_pylist()


def derive_one(kind: str, row: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
    return derive_rows(kind, [row], **kw)[0]
