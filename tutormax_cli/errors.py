"""One exception root with an exit code, and the error codes rows are rejected with."""

from __future__ import annotations

from typing import Any

# Exit codes (SPEC §4).
EXIT_OK = 0  # every row accepted
EXIT_REJECTS = 1  # some rows rejected, the rest done
EXIT_FATAL = 2  # usage or fatal error: nothing (more) written
EXIT_BUG = 3  # an internal error: a bug (the traceback goes to the log)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_BROKEN_PIPE = 141  # stdout closed by its reader (`| head`): 128 + SIGPIPE, said quietly


def first_line(exc: BaseException) -> str:
    """An exception's message, one line (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class TutormaxError(Exception):
    """Root of every error tutormax raises on purpose; carries the process exit code."""

    exit_code = EXIT_FATAL
    # What a run that this error stopped mid-way had done (files.RunSummary), for --json.
    summary: Any = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Interrupted(TutormaxError):
    """Ctrl-C or SIGTERM: the run stopped; `committed` says what was committed before it
    (the CLI names the signal and sets the exit code: interrupts)."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, committed: str) -> None:
        super().__init__("interrupted" + committed)
        self.committed = committed


class UsageError(TutormaxError):
    """A bad option value or combination."""


class InputError(TutormaxError):
    """A file that cannot be read as records: unreadable, corrupt, unknown kind, missing columns."""


class OutputError(TutormaxError):
    """An output file (enriched rows, rejects) cannot be written: full disk, no permission."""


class ReaderGone(OutputError):
    """The reader of a pipe we write (stdout, a FIFO) went away: 141, as a tool SIGPIPE ends."""

    exit_code = EXIT_BROKEN_PIPE


class DatabaseError(TutormaxError):
    """The database failed outside a single row's fault, in a way an operator must fix
    (bad credentials, no privilege, a read-only server): fatal."""


class DatabaseUnavailable(DatabaseError):
    """An outage: cannot connect, the connection was lost, the server is shutting down or
    busy (SQLite locked). The queue worker backs off and retries; a file run stops."""


class DatabaseConflict(DatabaseUnavailable):
    """The database ended a transaction to break a deadlock, or one it could not serialize
    (SQLSTATE 40P01, 40001): the same work, in a transaction of its own again, may pass."""


class SchemaMismatch(DatabaseError):
    """The database answers, but its tables are not the ones this tutormax writes (a
    missing table or column, another type): fatal until the schema is upgraded."""

    hint_text = (
        "run `tutormax db upgrade` to bring the database to this version's schema; if "
        "`tutormax db current` says it is current, a table was changed by hand"
    )


class StatementCancelled(DatabaseError):
    """The database cancelled a statement of tutormax's (SQLSTATE 57014): it ran past the
    role's or database's statement_timeout, or someone cancelled it. The write of a batch
    is split first (store/backend.bisect): a row whose write is cancelled on its own is
    refused; this is what is left — a batch whose halves are cancelled too, or another
    statement: fatal, with the settings to change."""

    hint_text = (
        "lower --batch-size, or raise statement_timeout for tutormax's role "
        "(ALTER ROLE … SET statement_timeout = …); if nobody set one, an operator "
        "cancelled the statement"
    )


class QueueError(TutormaxError):
    """Redis is unreachable or a stream operation failed."""


# Row-level error codes: each rejected row carries a list of {field, code, message}.
REQUIRED = "required"
TOO_LONG = "too_long"
TOO_SHORT = "too_short"
BLANK = "blank"
INVALID_EMAIL = "invalid_email"
INVALID_CHOICE = "invalid_choice"
INVALID_TIMESTAMP = "invalid_timestamp"
INVALID_INT = "invalid_int"
INVALID_FLOAT = "invalid_float"
INVALID_BOOL = "invalid_bool"
INVALID_LIST = "invalid_list"
INVALID_STRING = "invalid_string"  # a JSON object or array (or another non-text) where text goes
OUT_OF_RANGE = "out_of_range"
INVALID_UTF8 = "invalid_utf8"
NUL_BYTE = "nul_byte"
FIELD_TOO_LARGE = "field_too_large"
MALFORMED_ROW = "malformed_row"
MISSING_PARENT = "missing_parent"
DATABASE_REFUSED = "database"

# Dead-letter error classes (SPEC §6): metadata.error of a dead letter.
DLQ_VALIDATION = "validation"
DLQ_MISSING_PARENT = "missing_parent"
DLQ_POISON = "poison"
DLQ_DATABASE = "database"
