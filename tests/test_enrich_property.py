"""Property: a run's verdicts, counts and stored rows do not depend on `--batch-size`.

Hypothesis builds tutors + sessions + feedback files that mix valid rows with hostile values
(each field drawn from valid values and from the hostile classes of tests/hostile/: year 0,
no seconds, offsets without a colon, 7-9 fraction digits, 19/20-digit ints, `+7`, `0x10`,
`7.0`, `1e20`, `nan`, `inf`, `1e309`, leap days, NUL bytes, invalid UTF-8, lone surrogates,
JSON objects where text belongs, whitespace, nulls), duplicate keys with random `updated_at`,
and parents that do not exist. Each file set is written as CSV or as JSON Lines (JSON Lines
also with native numbers, booleans, lists and objects), enriched into a fresh SQLite
database at `--batch-size` 1, 7 and the default, and:

* every run rejects the same rows with the same error codes, and stores the same version
  of every key (the tables are equal);
* per file, read = accepted + rejected + duplicates, and read is the number of rows written;
* the stored keys are exactly the (trimmed) keys of the rows that were not rejected: rows in
  the database = distinct accepted keys;
* the exit code is 1 exactly when a row was rejected, and nothing is a traceback;
* a second run of the same input, at another as-of, changes nothing (inserted = updated =
  0, the database byte-identical, `enriched_at` included).
"""

from __future__ import annotations

import atexit
import csv
import json
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tutormax_cli.cli import app

AS_OF = "2024-11-09T12:00:00Z"
AS_OF_LATER = "2025-06-01T00:00:00Z"
KEYS = {"tutors": "tutor_id", "sessions": "session_id", "feedback": "feedback_id"}
SETTINGS = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# A value is text (what CSV gives) or, for JSON Lines only, a native JSON value (`Native`).
# In CSV, "\udcff" is written as the byte 0xFF (invalid UTF-8); in JSON it is the escape
# \udcff, a lone surrogate.


class Native:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Native({self.value!r})"


TS_VALID = ["2024-11-07T14:00:00Z", "2024-11-07 14:00", "2024-02-29", "2000-02-29T23:59:59Z",
            "2024-11-07T14:00:00.123456789+05:30", " 2024-11-07T14:00:00Z ", "0001-01-01",
            "2024-11-07T14:00:00-23:59", "9999-12-31T23:59:59.999999Z"]  # fmt: skip
TS_HOSTILE = ["0000-01-01", "2024-02-30", "2023-02-29", "2024-11-07T14:00:00+0530",
              "2024-11-07T14:00:00+05", "0001-01-01T00:00:00+05:00", "2024-11-07T14",
              "2024-11-07T14:00:00.1234567890Z", "nan", "2024-13-01", "   ",
              "2024-11-07T14:00:00z"]  # fmt: skip
INT_VALID = ["60", "+7", " 45 ", "0", "007", "\t30\t"]
INT_HOSTILE = ["0x10", "7.0", "1e20", "9223372036854775808", "12345678901234567890", "nan",
               "-1", "481", "+-7", "inf", "1e309"]  # fmt: skip
INT_NATIVE = [Native(60), Native(7.0), Native(1e20), Native(60.5), Native(True),
              Native(12345678901234567890), Native(float("nan")), Native(float("inf")),
              Native("60"), Native([60]), Native({"v": 60})]  # fmt: skip
FLOAT_VALID = ["0.5", "1", ".5", "1e-400", "0", " 0.25 "]
FLOAT_HOSTILE = ["nan", "inf", "-Infinity", "1e309", "2", "-0.1", "0x1p-1", "1,5"]
FLOAT_NATIVE = [Native(0.5), Native(1), Native(float("nan")), Native(2.0), Native(True)]
BOOL_VALID = ["true", "F", "yes", "0", " 1 ", "NO"]
BOOL_HOSTILE = ["2", "truee", "y", "on"]
BOOL_NATIVE = [Native(True), Native(False), Native(1), Native(0), Native(2), Native(1.0)]
TEXT_VALID = ["Ann", "Zoë", "  Bob  ", "D\ufffey", "\U0001f600"]
TEXT_HOSTILE = ["", "   ", "A\x00n", "B\udcffb", "x" * 2000]
TEXT_NATIVE = [Native({"a": 1}), Native([1]), Native(5), Native(True), Native("\ud800"),
               Native("\ud83d\ude00")]  # fmt: skip
LIST_VALID = ["Math", "Math;Art", "Math | SAT Prep", '["Math","SAT Prep"]', "[]",
              '[1, 2.5, true, null, "x"]', " math ; MATH "]  # fmt: skip
LIST_HOSTILE = ['[1, {"x": 2}]', '["a",["b"]]', "[", '["\\ud800"]', "[" * 70 + "]" * 70,
                '["M\\u0000"]']  # fmt: skip
LIST_NATIVE = [Native(["Math"]), Native([]), Native([1, {"x": 2}]), Native({"a": 1}),
               Native(5), Native("Math|Art"), Native(["a", None, "b"])]  # fmt: skip


@dataclass(frozen=True)
class Field:
    valid: st.SearchStrategy  # what a good row holds
    hostile: tuple[Any, ...]  # what a corrupted field may hold instead (text, CSV and JSON)
    native: tuple[Any, ...] = ()  # … and JSON values, JSON Lines only
    optional: bool = False  # a good row may leave it null


def one_of(values: list[Any]) -> st.SearchStrategy:
    return st.sampled_from(values)


def key(pool: str, size: int, unknown: str | None = None) -> st.SearchStrategy:
    """A key from a small pool (so keys repeat), sometimes padded, sometimes unknown."""
    ids = [f"{pool}{i}" for i in range(size)] + ([unknown] * 2 if unknown else [])
    return st.tuples(st.sampled_from(ids), st.sampled_from(["", "", "", " ", "\t"])).map(
        lambda t: t[1] + t[0] + t[1]
    )


UPDATED_AT = ["2024-11-01T09:00:00Z", "2024-11-01 10:00:00+01:00", "2024-11-01T12:00:00Z",
              "2024-11-02", "2024-11-01T12:00"]  # fmt: skip
KEY_HOSTILE = ("", "   ", "K\x00", "x" * 51, "B\udcffb")
TS = Field(one_of(TS_VALID), tuple(TS_HOSTILE), (Native(1730988000), Native({"t": 1})))
OPTIONAL_TS = Field(one_of(TS_VALID), tuple(TS_HOSTILE), (Native(1.5),), optional=True)
INT = Field(one_of(INT_VALID), tuple(INT_HOSTILE), tuple(INT_NATIVE))
FLOAT = Field(one_of(FLOAT_VALID), tuple(FLOAT_HOSTILE), tuple(FLOAT_NATIVE), optional=True)
BOOL = Field(one_of(BOOL_VALID), tuple(BOOL_HOSTILE), tuple(BOOL_NATIVE), optional=True)
TEXT = Field(one_of(TEXT_VALID), tuple(TEXT_HOSTILE), tuple(TEXT_NATIVE))
LIST = Field(one_of(LIST_VALID), tuple(LIST_HOSTILE), tuple(LIST_NATIVE))
RATING = Field(one_of(["1", "3", "5", " 4 "]), ("0", "6", "4.5", "five"), tuple(INT_NATIVE))

FIELDS: dict[str, dict[str, Field]] = {
    "tutors": {
        "tutor_id": Field(key("T", 4), KEY_HOSTILE),
        "name": TEXT,
        "email": Field(one_of(["a@x.org", "b@y.com"]), ("nope", "a@@x", "@x", "a@"),
                       tuple(TEXT_NATIVE)),
        "onboarding_date": TS,
        "status": Field(one_of(["active", "inactive", "churned"]), ("Active", "gone", "")),
        "subjects": LIST,
        "baseline_sessions_per_week": Field(one_of(["3.5", "1e20", "0"]), tuple(FLOAT_HOSTILE),
                                            tuple(FLOAT_NATIVE), optional=True),
        "updated_at": Field(one_of(UPDATED_AT), tuple(TS_HOSTILE), optional=True),
    },
    "sessions": {
        "session_id": Field(key("S", 4), KEY_HOSTILE),
        "tutor_id": Field(key("T", 4, unknown="T9"), KEY_HOSTILE),
        "student_id": Field(one_of(["st1", "st2", " st3 "]), KEY_HOSTILE),
        "scheduled_start": TS,
        "duration_minutes": INT,
        "subject": TEXT,
        "late_start_minutes": Field(one_of(["9223372036854775807", "3", "10"]),
                                    ("-9223372036854775809", "-3", "9223372036854775808"),
                                    tuple(INT_NATIVE), optional=True),
        "engagement_score": FLOAT,
        "no_show": BOOL,
        "actual_start": OPTIONAL_TS,
        "updated_at": Field(one_of(UPDATED_AT), tuple(TS_HOSTILE), optional=True),
    },
    "feedback": {
        "feedback_id": Field(key("F", 4), KEY_HOSTILE),
        "session_id": Field(key("S", 4, unknown="S99"), KEY_HOSTILE),
        "student_id": Field(one_of(["st1", "st2"]), KEY_HOSTILE),
        "tutor_id": Field(key("T", 4, unknown="T9"), KEY_HOSTILE),
        "overall_rating": RATING,
        "submitted_at": TS,
        "patience_rating": Field(RATING.valid, RATING.hostile, RATING.native, optional=True),
        "improvement_areas": Field(LIST.valid, LIST.hostile, LIST.native, optional=True),
        "free_text_feedback": Field(TEXT.valid, TEXT.hostile, TEXT.native, optional=True),
        "would_recommend": BOOL,
    },
}  # fmt: skip


@st.composite
def row(draw: st.DrawFn, kind: str, jsonl: bool) -> dict[str, Any]:
    """A good row, then 0-2 of its fields corrupted (hostile or null): about half the rows
    get through, so duplicates, parents and stored versions are exercised too."""
    fields = FIELDS[kind]
    r = {}
    for name, f in fields.items():
        r[name] = None if f.optional and draw(st.integers(0, 3)) == 0 else draw(f.valid)
    corrupt = draw(st.lists(st.sampled_from(list(fields)), max_size=2, unique=True))
    for name in corrupt[: draw(st.sampled_from([0, 0, 1, 1, 2]))]:
        f = fields[name]
        r[name] = draw(st.sampled_from([None, *f.hostile, *(f.native if jsonl else ())]))
    return r


GOOD = {
    "tutors": [{"tutor_id": f"T{i}", "name": "Ann", "email": "a@x.org",
                "onboarding_date": "2024-01-15", "status": "active", "subjects": "Math",
                "baseline_sessions_per_week": None, "updated_at": None} for i in (0, 1)],
    "sessions": [{"session_id": f"S{i}", "tutor_id": f"T{i}", "student_id": "st1",
                  "scheduled_start": "2024-11-07T14:00:00Z", "duration_minutes": "60",
                  "subject": "Math", "late_start_minutes": None, "engagement_score": None,
                  "no_show": None, "actual_start": None, "updated_at": None} for i in (0, 1)],
    "feedback": [],
}  # fmt: skip


def dataset(jsonl: bool) -> st.SearchStrategy:
    """Up to 9 random rows of each kind, after (sometimes) two good tutors and sessions, so
    that parents exist and their keys are duplicated by the random rows."""
    return (
        st.tuples(
            st.fixed_dictionaries(
                {kind: st.lists(row(kind, jsonl), max_size=9) for kind in FIELDS}
            ),
            st.booleans(),
        )
        .map(lambda t: {k: (GOOD[k] if t[1] else []) + rows for k, rows in t[0].items()})
        .filter(
            lambda d: any(d.values())  # a JSON Lines run needs a file
        )
    )


# -- writing the files -----------------------------------------------------------------------


def _text(value: Any) -> str:
    assert not isinstance(value, Native)
    return "" if value is None else value


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_text(r[c]) for c in columns])


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    def plain(v: Any) -> Any:
        return v.value if isinstance(v, Native) else v

    with path.open("w", encoding="ascii") as fh:
        for r in rows:  # every key in every record: the first record is the header
            fh.write(json.dumps({k: plain(v) for k, v in r.items()}) + "\n")


def write_files(where: Path, data: dict[str, list[dict[str, Any]]], jsonl: bool) -> list[str]:
    names = []
    for kind, rows in data.items():
        if not rows and jsonl:
            continue  # an empty JSON Lines file has no header to tell its kind
        columns = list(FIELDS[kind])
        name = f"{kind}.{'jsonl' if jsonl else 'csv'}"
        if jsonl:
            write_jsonl(where / name, rows)
        else:
            write_csv(where / name, rows, columns)
        names.append(name)
    return names


# -- running ---------------------------------------------------------------------------------


def enrich(where: Path, names: list[str], db: Path, *extra: str) -> tuple[int, dict, list[dict]]:
    rejects = where / f"rejects-{db.stem}.jsonl"
    rejects.unlink(missing_ok=True)
    result = CliRunner().invoke(
        app,
        ["enrich", *[str(where / n) for n in names], "--db", f"sqlite:///{db}", "--json",
         "--rejects", str(rejects), *extra],
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.exit_code in (0, 1), (result.exit_code, result.stderr[-2000:])
    doc = json.loads(result.stdout)
    lines = rejects.read_text().splitlines() if rejects.exists() else []
    return result.exit_code, doc, [json.loads(line) for line in lines]


def tables(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(db)
    try:
        return {
            t: conn.execute(f"SELECT * FROM {t} ORDER BY {k}").fetchall() for t, k in KEYS.items()
        }
    finally:
        conn.close()


def stored_keys(db: Path) -> dict[str, set[str]]:
    conn = sqlite3.connect(db)
    try:
        return {t: {r[0] for r in conn.execute(f"SELECT {k} FROM {t}")} for t, k in KEYS.items()}
    finally:
        conn.close()


def dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [line for line in conn.iterdump() if line.startswith("INSERT")]
    finally:
        conn.close()


_TEMPLATE: dict[str, Path] = {}


def fresh_db(where: Path, name: str) -> Path:
    """An empty database at this version's schema: a copy of one made once (creating the
    schema costs most of a small run)."""
    if "db" not in _TEMPLATE:
        base = Path(tempfile.mkdtemp(prefix="tutormax-template-"))
        atexit.register(shutil.rmtree, base, True)
        result = CliRunner().invoke(app, ["db", "init", "--db", f"sqlite:///{base / 't.db'}"])
        assert result.exit_code == 0, result.stderr
        _TEMPLATE["db"] = base / "t.db"
    target = where / name
    shutil.copyfile(_TEMPLATE["db"], target)
    return target


def verdicts(rejects: list[dict]) -> list[tuple[str, int, list[str]]]:
    return sorted(
        (Path(r["source"]).name, r["row"], sorted({e["code"] for e in r["errors"]}))
        for r in rejects
    )


def check(data: dict[str, list[dict[str, Any]]], jsonl: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        names = write_files(where, data, jsonl)
        runs = {}
        for batch in ("1", "7", None):
            db = fresh_db(where, f"db-{batch or 'default'}.sqlite")
            extra = ["--batch-size", batch] if batch else []
            runs[batch] = (db, *enrich(where, names, db, "--as-of", AS_OF, *extra))

        first = runs[None]
        for batch, (db, code, doc, rejects) in runs.items():
            assert verdicts(rejects) == verdicts(first[3]), f"--batch-size {batch}"
            assert tables(db) == tables(first[0]), f"--batch-size {batch}: stored versions"
            assert code == (1 if rejects else 0)
            for f in doc["files"]:
                kind = f["kind"]
                assert f["read"] == len(data[kind]), f
                assert f["read"] == f["accepted"] + f["rejected"] + f["duplicates"], f
                assert f["accepted"] == f["inserted"] + f["updated"] + f["unchanged"], f
                assert f["rejected"] == sum(Path(r["source"]).name == Path(f["source"]).name
                                            for r in rejects)  # fmt: skip
            # rows in the database = the distinct (trimmed) keys of the rows not rejected
            rejected = {(Path(r["source"]).name, r["row"]) for r in rejects}
            for kind, name in zip([n.split(".")[0] for n in names], names, strict=True):
                want = {
                    row[KEYS[kind]].strip(" \t")
                    for i, row in enumerate(data[kind], 1)
                    if (name, i) not in rejected
                }
                got = stored_keys(db)[kind]
                assert got == want, f"{kind}, --batch-size {batch}"
                accepted = sum(f["accepted"] for f in doc["files"] if f["kind"] == kind)
                assert accepted == len(got)

        # a second run of the same input at another as-of changes nothing
        db = first[0]
        before = dump(db)
        code, doc, rejects = enrich(where, names, db, "--as-of", AS_OF_LATER)
        assert code == first[1]
        assert verdicts(rejects) == verdicts(first[3])
        for f in doc["files"]:
            assert (f["inserted"], f["updated"]) == (0, 0), f
        assert dump(db) == before


@SETTINGS
@given(data=dataset(jsonl=False))
def test_csv_verdicts_do_not_depend_on_the_batch_size(data: dict[str, list]) -> None:
    check(data, jsonl=False)


@SETTINGS
@given(data=dataset(jsonl=True))
def test_jsonl_verdicts_do_not_depend_on_the_batch_size(data: dict[str, list]) -> None:
    check(data, jsonl=True)


def test_the_strategies_cover_every_hostile_class() -> None:
    """The hostile values of the issue are all drawn from somewhere."""
    drawn = set(TS_HOSTILE + INT_HOSTILE + FLOAT_HOSTILE + TEXT_HOSTILE + LIST_HOSTILE)
    for value in [
        "0000-01-01",
        "2024-02-30",
        "2024-11-07T14:00:00+0530",
        "0x10",
        "7.0",
        "1e20",
        "nan",
        "inf",
        "1e309",
        "9223372036854775808",
        "A\x00n",
        "B\udcffb",
    ]:
        assert value in drawn, value  # fmt: skip
