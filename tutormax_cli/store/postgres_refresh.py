"""PostgreSQL's side of `tutormax refresh`: keyset pages out by COPY TO, derived values
back by COPY + UPDATE … FROM, guarded by the row version; statistics after a bulk load."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..fields import fields_for
from ..rules.arrow import cast_each
from ..schema import KINDS
from . import pgbinary

# What a timestamp column holds, as format_type names it: an instant, or a wall time that
# tutormax writes (and reads) as UTC. Any other type a DBA chose (text, a date…) is read as
# its text; a value with an offset is turned into UTC (_naive_utc), the rest is judged by
# refresh.typed, value by value.
_INSTANT, _WALL = "timestamp with time zone", "timestamp without time zone"
# Every COPY and UPDATE of a refresh: timestamps in UTC and ISO, whatever the role's,
# database's or server's settings (set for the transaction alone).
_SETTINGS = "SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, YMD', true)"
_COLUMN_TYPES = (
    "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
    "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
)
# A text timestamp that ends with a zone offset ('… 10:00:00+00', '…T10:00Z', '…-05:30').
_ZONED = r"\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?)$"


# The column types whose COPY text Arrow reads as the field's own type; a column of any
# other type a DBA chose (text, numeric(6,2), a date…) is read as text, which refresh.typed
# parses by the field's rule, value by value, as a fresh load parses a CSV cell.
_READ_NATIVELY = {
    pa.int64(): ("bigint", "integer", "smallint"),
    pa.float64(): ("double precision", "real"),
    pa.bool_(): ("boolean",),
}


def _select_expr(name: str, type_: pa.DataType, stored: str) -> str:
    if pa.types.is_timestamp(type_):
        if stored == _INSTANT:  # the UTC wall time: a naive timestamp's text
            return f'("{name}" AT TIME ZONE \'UTC\') AS "{name}"'
        if stored == _WALL:  # already one (NOTE: AT TIME ZONE on it gives an instant, '…+00')
            return f'"{name}"'
        return f'"{name}"::text AS "{name}"'
    if pa.types.is_list(type_):
        if stored.endswith("[]"):
            return f'array_to_json("{name}")::text AS "{name}"'
        return f'"{name}"::text AS "{name}"'  # an array literal, or JSON, or a DBA's text
    if stored == "character":  # char(n) pads its text with blanks; ::text is what it holds
        return f'"{name}"::text AS "{name}"'
    return f'"{name}"'


def _naive_utc(arr: pa.Array) -> pa.Array:
    """Text timestamps with a zone offset → their UTC wall time, as text that
    refresh.typed reads; every other value (naive, or no timestamp at all) as it is."""
    zoned = pc.fill_null(pc.match_substring_regex(arr, _ZONED), False)
    if not pc.any(zoned).as_py():
        return arr
    utc = pa.timestamp("us", tz="UTC")
    instants, _refused = cast_each(pc.if_else(zoned, arr, pa.scalar(None, arr.type)),
                                   lambda a: a.cast(utc), utc)  # fmt: skip
    text = pc.strftime(instants.cast(pa.timestamp("us")), format="%Y-%m-%dT%H:%M:%S")
    return pc.coalesce(text.cast(arr.type), arr)


def _guard_expr(alias: str = "") -> str:
    """What a refresh compares before it writes back: the row version's transaction id.

    NOTE: any UPDATE of a row gives it a new xmin (an upsert that changed nothing writes
    nothing and keeps it), so a row someone wrote after refresh read it is left alone. An md5
    of the input columns' text did the same at a third of the refresh's time: computed on
    every row read and again in the UPDATE (README, Performance)."""
    prefix = f"{alias}." if alias else ""
    return f"{prefix}xmin::text"


def read_page(dbapi_conn: Any, kind: str, after: str | None, limit: int) -> pa.Table:
    """The next `limit` rows after key `after`, every column, by one COPY TO."""
    from .refresh import GUARD
    from .tables import arrow_schema

    schema = arrow_schema(kind)
    key = KINDS[kind].key
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"{_SETTINGS}; {_COLUMN_TYPES}", (f'"{kind}"',))
        stored = dict(cur.fetchall())  # the table's column types, as they are now
        cols = ", ".join(_select_expr(f.name, f.type, stored.get(f.name, "")) for f in schema)
        where = cur.mogrify(f'WHERE "{key}" > %s', (after,)).decode() if after is not None else ""
        select = (
            f'SELECT {cols}, {_guard_expr()} AS "{GUARD}" FROM "{kind}" {where} '
            f'ORDER BY "{key}" LIMIT {int(limit)}'
        )
        sql = f"COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER true)"
        sink = _Sink()
        cur.copy_expert(sql, sink)
    finally:
        cur.close()
    types = {f.name: _read_as(f.type, stored.get(f.name, "")) for f in schema}
    types[GUARD] = pa.string()
    data = sink.getvalue()
    try:
        table = _read_csv(data, types)
    except pa.ArrowInvalid:
        # A timestamp Arrow cannot take ('infinity', a year past its range: a row changed
        # by hand; PostgreSQL holds every other type to Arrow's): those columns as text,
        # which refresh.typed casts value by value.
        text = {n: pa.string() if pa.types.is_timestamp(t) else t for n, t in types.items()}
        table = _read_csv(data, text)
    for f in schema:  # timestamps read as text: those with an offset to UTC
        if pa.types.is_timestamp(f.type) and pa.types.is_string(table[f.name].type):
            i = table.schema.get_field_index(f.name)
            table = table.set_column(i, f.name, _naive_utc(table[f.name].combine_chunks()))
    return table


def _read_as(type_: pa.DataType, stored: str) -> pa.DataType:
    """The Arrow type a column's COPY text is read as (refresh.typed makes it type_)."""
    if pa.types.is_timestamp(type_):
        return pa.timestamp("us") if stored in (_INSTANT, _WALL) else pa.string()
    if pa.types.is_list(type_):
        return pa.string()
    if type_ in _READ_NATIVELY and stored not in _READ_NATIVELY[type_]:
        return pa.string()
    return type_


def _read_csv(data: pa.Buffer, types: dict[str, pa.DataType]) -> pa.Table:
    return pacsv.read_csv(
        pa.BufferReader(data),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            true_values=["t"],
            false_values=["f"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


class _Sink:
    """A file for copy_expert to write into: the bytes, kept."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes | str) -> int:
        self._parts.append(data.encode() if isinstance(data, str) else data)
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def analyze_if_stale(dbapi_conn: Any, kind: str) -> bool:
    """ANALYZE the table when its statistics are missing or older than most of its rows.

    NOTE: refresh joins each page of rows to the table (UPDATE … FROM the staging table).
    Right after a bulk load, before autovacuum has analyzed the table, the planner knows
    nothing of it and chose a plan several times slower a page (README, Performance).
    ANALYZE samples a bounded number of rows and blocks no reader or writer."""
    cur = dbapi_conn.cursor()
    try:
        cur.execute(
            "SELECT c.reltuples, coalesce(s.n_mod_since_analyze, 0), "
            "s.last_analyze IS NULL AND s.last_autoanalyze IS NULL "
            "FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.oid = %s::regclass",
            (f'"{kind}"',),
        )
        row = cur.fetchone()
        if row is None:
            return False
        reltuples, modified, never = row
        if not (never or reltuples < 0 or modified > max(reltuples, 0)):
            return False
        cur.execute(f'ANALYZE "{kind}"')
        return True
    finally:
        cur.close()


def update_derived(dbapi_conn: Any, kind: str, rows: pa.Table) -> int:
    """Write back derived values and provenance of `rows` where the input columns still
    hold what was read (the guard); returns how many rows were updated."""
    from .refresh import GUARD
    from .tables import PROVENANCE

    key = KINDS[kind].key
    names = [key, GUARD, *(f.name for f in fields_for(kind)), *PROVENANCE]
    part = rows.select(names)
    stage = f"tutormax_refresh_{kind}"
    sets = ", ".join(f'"{n}" = s."{n}"' for n in names[2:])
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"{_SETTINGS}; {pgbinary.stage_table_sql(stage, part.schema)}")
        cur.execute(f"TRUNCATE {stage}")
        cols = ", ".join(f'"{n}"' for n in names)
        cur.copy_expert(f"COPY {stage} ({cols}) FROM STDIN WITH (FORMAT binary)",
                        pgbinary.encode(part), size=1 << 20)  # fmt: skip
        same = f't."{key}" = s."{key}" AND {_guard_expr("t")} = s."{GUARD}"'
        # NOTE: the UPDATE alone locked rows in its join's order, and an enrich's upsert
        # in its own: each could wait for a row the other held (deadlock). Both take their
        # row locks in key order (postgres.PgBatch, ORDER BY key), this one before the UPDATE.
        cur.execute(
            f'SELECT count(*) FROM (SELECT 1 FROM "{kind}" AS t JOIN {stage} AS s ON {same} '
            f'ORDER BY t."{key}" FOR NO KEY UPDATE OF t) AS locked'
        )
        cur.execute(f'UPDATE "{kind}" AS t SET {sets} FROM {stage} AS s WHERE {same}')
        return int(cur.rowcount)
    finally:
        cur.close()
