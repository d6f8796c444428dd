"""The 17 derived fields of SPEC §3, one small function each, and their ordered registry.

`REGISTRY` is the single list that output files, the README's field table and the database
schema are built from. Order: tutors, sessions, feedback, each in SPEC order.
"""

from __future__ import annotations

import pyarrow as pa

from ..schema import KIND_ORDER
from . import feedback, sessions, tutors  # noqa: F401  (importing registers the formulas)
from .base import Context, Field, registered

# The version of the formulas: stored beside every row's derived values (SPEC §5), so
# `tutormax refresh` knows which rows an older formula computed. Bump it whenever a formula
# changes what it returns; tests/test_formula_version.py fails until you do.
FORMULA_VERSION = 1

# Kinds in processing order; within a kind, definition order (= SPEC order).
REGISTRY: tuple[Field, ...] = tuple(sorted(registered(), key=lambda f: KIND_ORDER.index(f.kind)))


def fields_for(kind: str) -> tuple[Field, ...]:
    return tuple(f for f in REGISTRY if f.kind == kind)


def derive(kind: str, table: pa.Table, ctx: Context) -> pa.Table:
    """Compute every derived field of `kind` over a validated table; one column each, in order."""
    fields = fields_for(kind)
    arrays = [f.compute(table, ctx).cast(f.type) for f in fields]
    return pa.table(arrays, names=[f.name for f in fields])


def markdown_table() -> str:
    """The README's field table, generated from the registry (a test keeps them in sync)."""
    lines = ["| kind | field | type | definition (SPEC §3) |", "|---|---|---|---|"]
    for f in REGISTRY:
        doc = f.doc.replace("|", "\\|")
        lines.append(f"| {f.kind} | `{f.name}` | {_TYPE_NAMES[str(f.type)]} | {doc} |")
    return "\n".join(lines)


_TYPE_NAMES = {"int64": "integer", "bool": "boolean", "string": "text", "double": "float"}

__all__ = [
    "FORMULA_VERSION",
    "REGISTRY",
    "Context",
    "Field",
    "derive",
    "fields_for",
    "markdown_table",
]
