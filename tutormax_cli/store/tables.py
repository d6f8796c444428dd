"""The three tables (SPEC §5), built from schema.KINDS and the derived-field registry.

Column order in every table: the kind's input columns (SPEC §1), then its derived fields
(SPEC §3), then the provenance of the derived values: `enriched_at` (the as-of),
`reporting_timezone` and `formula_version` (SPEC §5). Both write paths and the upsert SQL
read the lists below; the migrations (migrations/versions/) bring a database to them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ..fields import fields_for
from ..schema import ID_MAX_CHARS, KINDS, Column, Kind, Type

ENRICHED_AT = "enriched_at"
REPORTING_TIMEZONE = "reporting_timezone"
FORMULA_VERSION = "formula_version"
PROVENANCE = (ENRICHED_AT, REPORTING_TIMEZONE, FORMULA_VERSION)
TIMESTAMP = pa.timestamp("us", tz="UTC")


class UTCDateTime(TypeDecorator[datetime]):
    """timestamptz on PostgreSQL; on SQLite naive UTC text. Always reads back aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # a column a DBA made text or date: by text
            raise ValueError(f"not a timestamp: {value!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def dump_list(value: list[str | None]) -> str:
    """The JSON text a list column holds on SQLite; the SQLite writer uses it too."""
    return json.dumps(value, ensure_ascii=False)


class StringList(TypeDecorator[list[str]]):
    """`text[]` on PostgreSQL, a JSON array in a TEXT column elsewhere."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return ARRAY(sa.Text())
        return sa.Text()

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return dump_list(list(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> list[str] | None:
        if value is None or dialect.name == "postgresql":
            return value
        return list(json.loads(value))


def _sql_type(column: Column) -> TypeEngine[Any]:
    if column.type is Type.STRING:
        return sa.String(ID_MAX_CHARS) if column.max_chars == ID_MAX_CHARS else sa.Text()
    types: dict[Type, TypeEngine[Any]] = {
        Type.INT: sa.BigInteger(),
        Type.FLOAT: sa.Double(),
        Type.BOOL: sa.Boolean(),
        Type.TIMESTAMP: UTCDateTime(),
        Type.LIST: StringList(),
    }
    return types[column.type]


def _arrow_sql_type(type_: pa.DataType) -> TypeEngine[Any]:
    if pa.types.is_integer(type_):
        return sa.BigInteger()
    if pa.types.is_boolean(type_):
        return sa.Boolean()
    if pa.types.is_floating(type_):
        return sa.Double()
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return sa.Text()
    if pa.types.is_timestamp(type_):
        return UTCDateTime()
    raise TypeError(f"no SQL type for derived field type {type_}")


metadata = sa.MetaData()


def _build(kind: Kind) -> sa.Table:
    parents = dict(kind.parents)
    columns: list[sa.Column[Any]] = []
    for c in kind.columns:
        args: list[Any] = []
        if c.name in parents:
            parent = KINDS[parents[c.name]]
            args.append(sa.ForeignKey(f"{parent.name}.{parent.key}"))
        columns.append(
            sa.Column(
                c.name,
                _sql_type(c),
                *args,
                primary_key=c.name == kind.key,
                nullable=not c.required,
                index=c.name in parents,  # FK columns: joins and parent deletes
            )
        )
    for f in fields_for(kind.name):
        columns.append(sa.Column(f.name, _arrow_sql_type(f.type)))
    columns.append(sa.Column(ENRICHED_AT, UTCDateTime(), nullable=False))
    columns.append(sa.Column(REPORTING_TIMEZONE, sa.Text()))  # null: written by 0.1.0
    columns.append(sa.Column(FORMULA_VERSION, sa.Integer()))
    return sa.Table(kind.name, metadata, *columns)


TABLES: dict[str, sa.Table] = {name: _build(kind) for name, kind in KINDS.items()}


def arrow_schema(kind: str) -> pa.Schema:
    """The Arrow schema `Store.write` expects (and conforms its input to)."""
    k = KINDS[kind]
    fields = [pa.field(c.name, c.type.arrow) for c in k.columns]
    fields += [pa.field(f.name, f.type) for f in fields_for(kind)]
    fields.append(pa.field(ENRICHED_AT, TIMESTAMP))
    fields.append(pa.field(REPORTING_TIMEZONE, pa.string()))
    fields.append(pa.field(FORMULA_VERSION, pa.int64()))
    return pa.schema(fields)


def conform(kind: str, table: pa.Table) -> pa.Table:
    """Exactly the table's columns, in table order, with canonical types.

    Unknown extra columns are dropped (SPEC §1); an absent optional input column is null.
    """
    k = KINDS[kind]
    optional = {c.name for c in k.columns if not c.required} | {REPORTING_TIMEZONE, FORMULA_VERSION}
    arrays = []
    for f in arrow_schema(kind):
        if f.name in table.column_names:
            col = table.column(f.name)
            arrays.append(col if col.type == f.type else col.cast(f.type))
        elif f.name in optional:
            arrays.append(pa.nulls(table.num_rows, f.type))
        else:
            raise ValueError(f"{kind}: column {f.name!r} missing from the batch to write")
    return pa.Table.from_arrays(arrays, schema=arrow_schema(kind))


class RowRefused(Exception):
    """The database refused the rows of one write attempt; `message` is its short reason.
    `cancelled`: it cancelled the attempt (a statement timeout) rather than refused a value,
    which a single row may cause and a batch too big for the timeout does (see bisect)."""

    def __init__(self, message: str, cancelled: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.cancelled = cancelled


def compared_columns(kind: str) -> list[str]:
    """The columns whose values decide whether a stored row is rewritten (upsert_clause):
    the input columns but the key, and the provenance of the derived values."""
    k = KINDS[kind]
    return [*(n for n in k.column_names if n != k.key), REPORTING_TIMEZONE, FORMULA_VERSION]


def upsert_clause(kind: str, distinct: str) -> str:
    """`ON CONFLICT … DO UPDATE … WHERE …` for target alias `t`.

    The row is rewritten only when an input column differs (`distinct` is the dialect's
    null-safe inequality) or the stored derived values come from another reporting
    timezone or formula version, and the incoming one ranks at least as high as the stored
    one by `updated_at` (SPEC §5), as versions of a key rank within a run (duplicates.py:
    one with `updated_at` beats one without): a stored row without it takes any version, a
    version without it replaces none that has it. So versions sent one batch at a time end
    as they do in one batch. The same input in the same timezone changes nothing, while
    the stored calendar fields never disagree with their own timezone.
    """
    k = KINDS[kind]
    names = [c.name for c in TABLES[kind].columns]
    sets = ", ".join(f'"{n}" = excluded."{n}"' for n in names if n != k.key)
    changed = " OR ".join(f't."{n}" {distinct} excluded."{n}"' for n in compared_columns(kind))
    where = f"({changed})"
    if "updated_at" in k.column_names:
        where = f"(t.updated_at IS NULL OR excluded.updated_at >= t.updated_at) AND {where}"
    return f'ON CONFLICT ("{k.key}") DO UPDATE SET {sets} WHERE {where}'
