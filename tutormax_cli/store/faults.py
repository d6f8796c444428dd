"""Which database failures are outages, schema mismatches, operator problems or bugs.

SPEC §6 tells faults apart: an outage (cannot connect, connection lost, server shutting
down, SQLite busy) is waited out; a database that answers with a schema this version does
not write is fatal; an operator problem (credentials, privileges, a read-only server) is
fatal; anything else is a bug. Row-level refusals (constraints, bad values) never get
here: the write path isolates them by bisection.
"""

from __future__ import annotations

import sqlite3

import psycopg2

from ..errors import DatabaseError, DatabaseUnavailable, SchemaMismatch

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_PG_OUTAGE_CLASSES = ("08", "53", "57")  # connection exception, insufficient resources, shutdown
_PG_OUTAGE_CODES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock timeout
_PG_SCHEMA_CODES = {"42P01", "42703", "42804", "42P10"}  # undefined table/column, wrong type
_PG_OPERATOR_CLASSES = ("28", "3D", "25")  # authorization, no such database, read-only server
_PG_OPERATOR_CODES = {"42501"}  # insufficient privilege

_SQLITE_OUTAGE = ("database is locked", "database table is locked", "disk i/o error")
_SQLITE_SCHEMA = ("no such table", "no such column", "has no column named")

FaultType = type[DatabaseError] | None


def kind_of(exc: BaseException) -> FaultType:
    """The tutormax error class for a driver error; None for a bug (re-raise it as is)."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, psycopg2.Error):
        return _postgres(orig)
    if isinstance(orig, sqlite3.Error):
        return _sqlite(orig)
    if type(exc).__name__ in ("DisconnectionError", "TimeoutError"):  # SQLAlchemy's pool
        return DatabaseUnavailable
    return None


def _postgres(exc: psycopg2.Error) -> FaultType:
    code = exc.pgcode or ""
    if not code:  # no SQLSTATE: the client itself failed (refused, reset, closed)
        if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
            return DatabaseUnavailable
        return None
    if code[:2] in _PG_OUTAGE_CLASSES or code in _PG_OUTAGE_CODES:
        return DatabaseUnavailable
    if code in _PG_SCHEMA_CODES:
        return SchemaMismatch
    if code[:2] in _PG_OPERATOR_CLASSES or code in _PG_OPERATOR_CODES:
        return DatabaseError
    return None


def _sqlite(exc: sqlite3.Error) -> FaultType:
    text = str(exc).lower()
    if any(s in text for s in _SQLITE_OUTAGE):
        return DatabaseUnavailable
    if any(s in text for s in _SQLITE_SCHEMA):
        return SchemaMismatch
    if "unable to open" in text or "readonly" in text or "not authorized" in text:
        return DatabaseError
    return None
