"""What a derived field is: a named pure function over a validated Arrow table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from ..config import DEFAULT_TIMEZONE

# session_id array -> that session's scheduled_start (timestamp[us, UTC]), null when unknown.
SessionStartLookup = Callable[[pa.Array], pa.Array]


@dataclass(frozen=True)
class Context:
    """What a formula may depend on besides the record: SPEC §2's as-of and reporting timezone."""

    as_of: datetime  # timezone-aware; the reference instant of the run or batch
    timezone: str = DEFAULT_TIMEZONE  # IANA name of the reporting timezone
    # Resolves feedback sessions not carried on the record (same run, then the database).
    session_start: SessionStartLookup | None = None


Compute = Callable[[pa.Table, Context], pa.Array]


@dataclass(frozen=True)
class Field:
    """One of the 17 derived fields; `doc` is the SPEC sentence that defines it."""

    name: str
    kind: str
    type: pa.DataType
    compute: Compute
    doc: str


_REGISTERED: list[Field] = []


def derived(kind: str, type_: pa.DataType) -> Callable[[Compute], Compute]:
    """Register a formula as a derived field of `kind`; the function name is the field name."""

    def register(fn: Compute) -> Compute:
        doc = " ".join((fn.__doc__ or "").split())
        if not doc:
            raise ValueError(f"derived field {fn.__name__} needs its SPEC sentence as docstring")
        _REGISTERED.append(Field(fn.__name__, kind, type_, fn, doc))
        return fn

    return register


def registered() -> tuple[Field, ...]:
    return tuple(_REGISTERED)
