"""The SPEC §1 parse rules (tutormax_cli.rules), through `validate` as the pipeline runs them.

Three parts: a boundary table for every field type on text (as the CSV reader delivers it:
binary), the Arrow-type matrix (every Arrow type × every field type: accepted with which
value, or rejected with which code, never an exception), and the property that a value's
verdict is the one it gets alone, whatever its neighbours in the column (SPEC §6a).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from typing import Any

import hypothesis
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutormax_cli import schema
from tutormax_cli.schema import Column, Kind, Type
from tutormax_cli.validate import validate

# ---------------------------------------------------------------- helpers

FIELDS = {
    Type.STRING: Column("s", Type.STRING),
    Type.INT: Column("n", Type.INT),
    Type.FLOAT: Column("x", Type.FLOAT),
    Type.BOOL: Column("b", Type.BOOL),
    Type.TIMESTAMP: Column("t", Type.TIMESTAMP),
    Type.LIST: Column("l", Type.LIST),
}
ORDER = (Type.STRING, Type.INT, Type.FLOAT, Type.BOOL, Type.TIMESTAMP, Type.LIST)
IS, II, IF, IB, IT, IL = (
    "invalid_string",
    "invalid_int",
    "invalid_float",
    "invalid_bool",
    "invalid_timestamp",
    "invalid_list",
)
Verdict = tuple[str, Any]


def _shown(v: Any) -> Any:
    """Typed values in a comparable, readable form (instants as ISO-8601 in UTC)."""
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).isoformat()
    return v


def verdicts(col: Column, arr: pa.Array) -> list[Verdict]:
    """Per value of `arr` validated as one column of field `col`: ("ok", typed value) or
    ("bad", sorted error codes)."""
    kind = Kind(name="probe", columns=(col,), key=col.name)
    result = validate(kind, pa.table({col.name: arr}))
    out: list[Verdict | None] = [None] * len(arr)
    typed = result.table.column(col.name).to_pylist()
    for pos, value in zip(result.accepted.to_pylist(), typed, strict=True):
        out[pos] = ("ok", _shown(value))
    for r in result.rejected:
        out[r.index] = ("bad", tuple(sorted({e.code for e in r.errors})))
    assert all(v is not None for v in out)
    return out  # type: ignore[return-value]


def verdict(col: Column, arr: pa.Array) -> Verdict:
    (only,) = verdicts(col, arr)
    return only


def text(value: str | bytes | None) -> pa.Array:
    """One CSV cell as the reader delivers it (binary)."""
    raw = value.encode() if isinstance(value, str) else value
    return pa.array([raw], pa.binary())


def expect(e: Any) -> Verdict:
    if isinstance(e, str) and (e.startswith("invalid_") or e in {"nul_byte", "field_too_large"}):
        return ("bad", (e,))
    return ("ok", e)


def utc(s: str) -> str:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC).isoformat()


# ---------------------------------------------------------------- text boundary tables

TIMESTAMPS = [
    ("bare date is midnight UTC", "2024-11-07", utc("2024-11-07T00:00:00")),
    ("leap day", "2024-02-29", utc("2024-02-29T00:00:00")),
    ("not a leap year", "2023-02-29", IT),
    ("february 30", "2024-02-30", IT),
    ("month 13", "2024-13-01", IT),
    ("day 0", "2024-11-00", IT),
    ("T and Z", "2024-11-07T14:00:00Z", utc("2024-11-07T14:00:00")),
    ("space, no offset is UTC", "2024-11-07 14:00:00", utc("2024-11-07T14:00:00")),
    ("seconds optional", "2024-11-07 14:00", utc("2024-11-07T14:00:00")),
    ("minutes with Z", "2024-11-07T14:00Z", utc("2024-11-07T14:00:00")),
    ("minutes with offset", "2024-11-07T14:00+05:30", utc("2024-11-07T08:30:00")),
    ("hour only", "2024-11-07T14", IT),
    ("hour only with Z", "2024-11-07T14Z", IT),
    ("hour only with offset", "2024-11-07T14+05:30", IT),
    ("hour only, space", "2024-11-07 14", IT),
    ("offset +05:30", "2024-11-07T14:00:00+05:30", utc("2024-11-07T08:30:00")),
    ("offset -05:00", "2024-11-07T14:00:00-05:00", utc("2024-11-07T19:00:00")),
    ("offset -00:00", "2024-11-07T14:00:00-00:00", utc("2024-11-07T14:00:00")),
    ("offset +23:59", "2024-11-07T14:00:00+23:59", utc("2024-11-06T14:01:00")),
    ("offset +HHMM", "2024-11-07T14:00:00+0530", IT),
    ("offset +HH", "2024-11-07T14:00:00+05", IT),
    ("offset +HH after minutes", "2024-11-07T14:00+05", IT),
    ("offset hour 24", "2024-11-07T14:00:00+24:00", IT),
    ("offset minute 60", "2024-11-07T14:00:00+05:60", IT),
    ("lower-case z", "2024-11-07T14:00:00z", IT),
    ("lower-case t", "2024-11-07t14:00:00Z", IT),
    ("two offsets", "2024-11-07T14:00:00+05:00Z", IT),
    ("offset on a bare date", "2024-11-07+05:00", IT),
    ("Z on a bare date", "2024-11-07Z", IT),
    ("fraction 1 digit", "2024-11-07T14:00:00.5Z", utc("2024-11-07T14:00:00.500000")),
    ("fraction 3 digits + offset", "2024-11-07 14:00:00.250+05:30", utc("2024-11-07T08:30:00.25")),
    ("fraction 6 digits", "2024-11-07T14:00:00.123456Z", utc("2024-11-07T14:00:00.123456")),
    ("fraction 7 truncated", "2024-11-07T14:00:00.1234567Z", utc("2024-11-07T14:00:00.123456")),
    ("fraction 9 truncated", "2024-11-07T14:00:00.999999999", utc("2024-11-07T14:00:00.999999")),
    (
        "fraction 9 with offset",
        "2024-11-07T14:00:00.123456789+01:00",
        utc("2024-11-07T13:00:00.123456"),
    ),
    ("fraction 10 digits", "2024-11-07T14:00:00.1234567891Z", IT),
    ("empty fraction", "2024-11-07T14:00:00.Z", IT),
    ("hour 24", "2024-11-07T24:00:00Z", IT),
    ("minute 60", "2024-11-07T14:60:00Z", IT),
    ("leap second", "2024-11-07T23:59:60Z", IT),
    ("year 1", "0001-01-01", utc("0001-01-01T00:00:00")),
    ("year 1 with its offset", "0001-01-01T05:00:00+05:00", utc("0001-01-01T00:00:00")),
    ("year 0", "0000-01-01", IT),
    ("year 0 with Z", "0000-12-31T23:59:59Z", IT),
    ("before year 1 in UTC", "0001-01-01T00:00:00+05:00", IT),
    ("last microsecond", "9999-12-31T23:59:59.999999999Z", utc("9999-12-31T23:59:59.999999")),
    ("after 9999 in UTC", "9999-12-31T23:59:59-01:00", IT),
    ("5-digit year", "12024-11-07", IT),
    ("1-digit month", "2024-1-07", IT),
    ("no dashes", "20241107", IT),
    ("slashes", "07/11/2024", IT),
    ("a word", "yesterday", IT),
    ("trailing garbage", "2024-11-07T14:00:00Zx", IT),
    ("surrounding whitespace", " \t2024-11-07T14:00:00Z  ", utc("2024-11-07T14:00:00")),
    ("blank is null", "   ", None),
    ("empty is null", "", None),
    ("null", None, None),
]

INTS = [
    ("zero", "0", 0),
    ("plus sign", "+7", 7),
    ("minus sign", "-7", -7),
    ("minus zero", "-0", 0),
    ("leading zeros", "007", 7),
    ("many leading zeros", "0" * 40 + "1", 1),
    ("int64 max", "9223372036854775807", 2**63 - 1),
    ("int64 min", "-9223372036854775808", -(2**63)),
    ("19 digits", "1234567890123456789", 1234567890123456789),
    ("int64 max + 1", "9223372036854775808", II),
    ("int64 min - 1", "-9223372036854775809", II),
    ("20 digits", "12345678901234567890", II),
    ("hex", "0x10", II),
    ("hex upper case", "0X1F", II),
    ("hex all ones", "0xFFFFFFFFFFFFFFFF", II),
    ("decimal point", "7.0", II),
    ("exponent", "1e3", II),
    ("plus minus", "+-7", II),
    ("two pluses", "++7", II),
    ("sign alone", "+", II),
    ("minus alone", "-", II),
    ("inner space", "1 000", II),
    ("thousands comma", "1,000", II),
    ("arabic-indic digit", "٣", II),
    ("a word", "many", II),
    ("surrounding whitespace", " 12 ", 12),
    ("blank is null", "  ", None),
    ("null", None, None),
]

FLOATS = [
    ("integer", "1", 1.0),
    ("decimal", "0.25", 0.25),
    ("plus sign", "+1.5", 1.5),
    ("leading dot", ".5", 0.5),
    ("trailing dot", "1.", 1.0),
    ("exponent", "1e3", 1000.0),
    ("negative exponent", "-2.5e-3", -0.0025),
    ("too small is 0", "1e-400", 0.0),
    ("largest double", "1.7976931348623157e308", 1.7976931348623157e308),
    ("overflow", "1e309", IF),
    ("negative overflow", "-1e309", IF),
    ("nan", "nan", IF),
    ("NaN", "NaN", IF),
    ("inf", "inf", IF),
    ("-inf", "-inf", IF),
    ("Infinity", "Infinity", IF),
    ("hex float", "0x1p3", IF),
    ("decimal comma", "1,5", IF),
    ("exponent alone", "1e", IF),
    ("a word", "many", IF),
    ("surrounding whitespace", " 0.5 ", 0.5),
    ("blank is null", " ", None),
    ("null", None, None),
]

BOOLS = [
    *[(f"true as {v}", v, True) for v in ("true", "TRUE", "True", "1", "yes", "Yes", "t", "T")],
    *[(f"false as {v}", v, False) for v in ("false", "FALSE", "0", "no", "NO", "f", "F")],
    ("surrounding whitespace", " yes ", True),
    ("2", "2", IB),
    ("maybe", "maybe", IB),
    ("y", "y", IB),
    ("on", "on", IB),
    ("blank is null", " ", None),
    ("null", None, None),
]

STRINGS = [
    ("as is, spaces kept", "  Ann  ", "  Ann  "),
    ("unicode", "Zoë 🎓", "Zoë 🎓"),
    ("JSON text is text", '["a"]', '["a"]'),
    ("null", None, None),
]

DEEP = "[" * 10_000 + "]" * 10_000
LISTS = [
    ("JSON array", '["Math","SAT Prep"]', ["Math", "SAT Prep"]),
    ("JSON with spaces", '[ "Math" , "SAT Prep" ]', ["Math", "SAT Prep"]),
    ("JSON across lines", '[\n"Math",\r\n"Art"\n]', ["Math", "Art"]),
    ("empty JSON array", "[]", []),
    ("empty JSON array with space", "[ ]", []),
    ("JSON empty string item", '[""]', [""]),
    ("JSON escapes", '["a \\"q\\"", "b,c", "\\u00e9"]', ['a "q"', "b,c", "é"]),
    ("JSON null items dropped", '[null, "a", null]', ["a"]),
    (
        "JSON numbers and booleans as text",
        "[1, 2.0, 0.5, true, 1e20]",
        ["1", "2", "0.5", "true", "1e+20"],
    ),
    ("JSON nested array", '[["a"]]', IL),
    ("JSON object item", '[{"a": 1}]', IL),
    ("JSON raw tab in a string", '["a\tb"]', IL),
    ("JSON 10,000 deep", DEEP, IL),
    ("JSON 65 deep", "[" * 65 + "]" * 65, IL),
    ("broken JSON", "[broken", IL),
    ("JSON then garbage", '["a"] x', IL),
    ("semicolons", "Math;SAT Prep", ["Math", "SAT Prep"]),
    ("pipes, blanks dropped", "Math | Physics|", ["Math", "Physics"]),
    ("mixed delimiters", "a;b|c", ["a", "b", "c"]),
    ("one item", "Math", ["Math"]),
    ("blank is an empty list", "   ", []),
    ("10,000 items", ";".join(["a"] * 10_000), ["a"] * 10_000),
    ("10,001 items", ";".join(["a"] * 10_001), IL),
    ("10,001 JSON items", "[" + ",".join(['"a"'] * 10_001) + "]", IL),
    ("null", None, None),
]


def _table(cases: list[tuple[str, Any, Any]]) -> Any:
    return pytest.mark.parametrize(
        ("value", "expected"), [c[1:] for c in cases], ids=[c[0] for c in cases]
    )


@_table(TIMESTAMPS)
def test_text_timestamps(value: str | None, expected: Any) -> None:
    assert verdict(FIELDS[Type.TIMESTAMP], text(value)) == expect(expected)


@_table(INTS)
def test_text_ints(value: str | None, expected: Any) -> None:
    assert verdict(FIELDS[Type.INT], text(value)) == expect(expected)


@_table(FLOATS)
def test_text_floats(value: str | None, expected: Any) -> None:
    assert verdict(FIELDS[Type.FLOAT], text(value)) == expect(expected)


@_table(BOOLS)
def test_text_bools(value: str | None, expected: Any) -> None:
    assert verdict(FIELDS[Type.BOOL], text(value)) == expect(expected)


@_table(STRINGS)
def test_text_strings(value: str | None, expected: Any) -> None:
    assert verdict(FIELDS[Type.STRING], text(value)) == expect(expected)


@_table(LISTS)
def test_text_lists(value: str | None, expected: Any) -> None:
    assert verdict(FIELDS[Type.LIST], text(value)) == expect(expected)


@pytest.mark.parametrize(
    ("value", "code"),
    [(b"a\x00b", "nul_byte"), (b"\xff", "invalid_utf8"), (b"\xed\xa0\x80", "invalid_utf8")],
    ids=["NUL", "invalid UTF-8", "encoded surrogate"],
)
@pytest.mark.parametrize("field", ORDER, ids=[t.value for t in ORDER])
def test_hostile_text_is_rejected_unread_in_every_field(
    field: Type, value: bytes, code: str
) -> None:
    assert verdict(FIELDS[field], text(value)) == ("bad", (code,))


# ---------------------------------------------------------------- the Arrow-type matrix

MAX_US = 253_402_300_799_999_999


def _ext(typ: pa.DataType, storage: pa.Array) -> pa.Array:
    return pa.ExtensionArray.from_storage(typ, storage)


def _ts(values: list[int | None], unit: str, tz: str | None = None) -> pa.Array:
    return pa.array(values, pa.int64()).view(pa.timestamp(unit, tz=tz))


def _list_view_out_of_order() -> pa.Array:
    # rows: ["z"], null, ["y", "z"] over values x, y, z (views not in row order)
    return pa.ListViewArray.from_arrays(
        pa.array([2, 0, 1], pa.int32()),
        pa.array([1, 2, 2], pa.int32()),
        pa.array(["x", "y", "z"]),
        mask=pa.array([False, True, False]),
    )


def _null_row_owning_items() -> pa.Array:
    # rows: ["x", "y"], null (whose range still spans "z"), []
    return pa.ListArray.from_arrays(
        pa.array([0, 2, 3, 3], pa.int32()),
        pa.array(["x", "y", "z"]),
        mask=pa.array([False, True, False]),
    )


EPOCH = utc("1970-01-01T00:00:00")
D = decimal.Decimal
# id, array (first value is the one judged; every other value is null), then the expected
# verdict per field: string, int, float, bool, timestamp, list.
MATRIX: list[tuple[str, pa.Array, tuple[Any, ...]]] = [
    ("null", pa.nulls(2), (None, None, None, None, None, None)),
    ("bool", pa.array([True, None]), ("true", II, IF, True, IT, IL)),
    *[
        (str(t), pa.array([1, None], t), ("1", 1, 1.0, True, IT, IL))
        for t in (
            pa.int8(),
            pa.int16(),
            pa.int32(),
            pa.int64(),
            pa.uint8(),
            pa.uint16(),
            pa.uint32(),
            pa.uint64(),
        )
    ],
    ("int64 45", pa.array([45, None]), ("45", 45, 45.0, IB, IT, IL)),
    ("int64 max", pa.array([2**63 - 1, None]), (str(2**63 - 1), 2**63 - 1, 2.0**63, IB, IT, IL)),
    (
        "uint64 max",
        pa.array([2**64 - 1, None], pa.uint64()),
        (str(2**64 - 1), II, 2.0**64, IB, IT, IL),
    ),
    ("float16", pa.array([1.5, None], pa.float16()), ("1.5", II, 1.5, IB, IT, IL)),
    ("float32 45.0", pa.array([45.0, None], pa.float32()), ("45", 45, 45.0, IB, IT, IL)),
    ("float64 4.5", pa.array([4.5, None]), ("4.5", II, 4.5, IB, IT, IL)),
    ("float64 1e20", pa.array([1e20, None]), ("1e+20", II, 1e20, IB, IT, IL)),
    (
        "float64 -2^63",
        pa.array([-(2.0**63), None]),
        ("-9.223372036854776e+18", -(2**63), -(2.0**63), IB, IT, IL),
    ),
    ("float64 2^63", pa.array([2.0**63, None]), ("9.223372036854776e+18", II, 2.0**63, IB, IT, IL)),
    ("float64 nan", pa.array([math.nan, None]), ("nan", II, IF, IB, IT, IL)),
    ("float64 inf", pa.array([math.inf, None]), ("inf", II, IF, IB, IT, IL)),
    (
        "decimal32 4.50",
        pa.array([D("4.50"), None], pa.decimal32(5, 2)),
        ("4.50", II, 4.5, IB, IT, IL),
    ),
    (
        "decimal64 45.00",
        pa.array([D("45.00"), None], pa.decimal64(12, 2)),
        ("45.00", 45, 45.0, IB, IT, IL),
    ),
    (
        "decimal128 0.1",
        pa.array([D("0.1"), None], pa.decimal128(10, 1)),
        ("0.1", II, 0.1, IB, IT, IL),
    ),
    (
        "decimal128 negative scale",
        pa.array([D("12300"), None], pa.decimal128(5, -2)),
        ("1.23E+4", 12300, 12300.0, IB, IT, IL),
    ),
    (
        "decimal256 10^39",
        pa.array([D(10) ** 39, None], pa.decimal256(40, 0)),
        (str(10**39), II, 1e39, IB, IT, IL),
    ),
    ("string", pa.array(["60", None]), ("60", 60, 60.0, IB, IT, ["60"])),
    (
        "large_string date",
        pa.array(["2024-11-07", None], pa.large_string()),
        ("2024-11-07", II, IF, IB, utc("2024-11-07T00:00:00"), ["2024-11-07"]),
    ),
    ("string_view", pa.array(["yes", None], pa.string_view()), ("yes", II, IF, True, IT, ["yes"])),
    ("binary", pa.array([b"1", None]), ("1", 1, 1.0, True, IT, ["1"])),
    (
        "binary_view",
        pa.array([b"a;b", None], pa.binary_view()),
        ("a;b", II, IF, IB, IT, ["a", "b"]),
    ),
    ("fixed_size_binary", pa.array([b"42", None], pa.binary(2)), ("42", 42, 42.0, IB, IT, ["42"])),
    (
        "large_binary invalid UTF-8",
        pa.array([b"\xff", None], pa.large_binary()),
        ("invalid_utf8",) * 6,
    ),
    (
        "dictionary<string>",
        pa.array(["true", None]).dictionary_encode(),
        ("true", II, IF, True, IT, ["true"]),
    ),
    ("dictionary<string> NUL", pa.array(["a\x00", None]).dictionary_encode(), ("nul_byte",) * 6),
    (
        "dictionary<int64>",
        pa.array([7, None]).dictionary_encode(),
        ("7", 7, 7.0, IB, IT, IL),
    ),
    (
        "dictionary<large_binary> invalid UTF-8",
        pa.array([b"\xff", None], pa.large_binary()).dictionary_encode(),
        ("invalid_utf8",) * 6,
    ),
    (
        "run-end encoded string",
        pc.run_end_encode(pa.array(["5", None])),
        ("5", 5, 5.0, IB, IT, ["5"]),
    ),
    (
        "timestamp[s]",
        _ts([0, None], "s"),
        ("1970-01-01 00:00:00.000000Z", II, IF, IB, EPOCH, IL),
    ),
    ("timestamp[s] overflow", _ts([2**62, None], "s"), (IS, II, IF, IB, IT, IL)),
    ("timestamp[s] year 0", _ts([-62_135_596_801, None], "s"), (IS, II, IF, IB, IT, IL)),
    (
        "timestamp[ms, Asia/Kolkata]",
        _ts([86_400_000, None], "ms", "Asia/Kolkata"),
        ("1970-01-02 00:00:00.000000Z", II, IF, IB, utc("1970-01-02T00:00:00"), IL),
    ),
    ("timestamp[ms] overflow", _ts([2**62, None], "ms"), (IS, II, IF, IB, IT, IL)),
    (
        "timestamp[us, UTC] last",
        _ts([MAX_US, None], "us", "UTC"),
        ("9999-12-31 23:59:59.999999Z", II, IF, IB, utc("9999-12-31T23:59:59.999999"), IL),
    ),
    ("timestamp[us] past 9999", _ts([MAX_US + 1, None], "us"), (IS, II, IF, IB, IT, IL)),
    (
        "timestamp[ns] truncated to the past",
        _ts([-1, None], "ns"),
        ("1969-12-31 23:59:59.999999Z", II, IF, IB, utc("1969-12-31T23:59:59.999999"), IL),
    ),
    (
        "timestamp[ns, UTC]",
        _ts([1_500, None], "ns", "UTC"),
        ("1970-01-01 00:00:00.000001Z", II, IF, IB, utc("1970-01-01T00:00:00.000001"), IL),
    ),
    (
        "date32",
        pa.array([0, None], pa.int32()).view(pa.date32()),
        ("1970-01-01", II, IF, IB, EPOCH, IL),
    ),
    (
        "date32 overflow",
        pa.array([2**30, None], pa.int32()).view(pa.date32()),
        (IS, II, IF, IB, IT, IL),
    ),
    (
        "date64",
        pa.array([86_400_000, None], pa.int64()).view(pa.date64()),
        ("1970-01-02", II, IF, IB, utc("1970-01-02T00:00:00"), IL),
    ),
    (
        "date64 overflow",
        pa.array([2**62, None], pa.int64()).view(pa.date64()),
        (IS, II, IF, IB, IT, IL),
    ),
    ("time32", pa.array([3600, None], pa.time32("s")), (IS, II, IF, IB, IT, IL)),
    ("time64", pa.array([1, None], pa.time64("us")), (IS, II, IF, IB, IT, IL)),
    ("duration", pa.array([1, None], pa.duration("s")), (IS, II, IF, IB, IT, IL)),
    (
        "interval",
        pa.array([pa.MonthDayNano([1, 2, 3]), None], pa.month_day_nano_interval()),
        (IS, II, IF, IB, IT, IL),
    ),
    ("struct", pa.array([{"a": 1}, None]), (IS, II, IF, IB, IT, IL)),
    (
        "map",
        pa.array([[("a", 1)], None], pa.map_(pa.string(), pa.int64())),
        (IS, II, IF, IB, IT, IL),
    ),
    (
        "sparse union",
        pa.UnionArray.from_sparse(
            pa.array([0, 1], pa.int8()), [pa.array([1, None]), pa.array([None, None], pa.string())]
        ),
        (IS, II, IF, IB, IT, IL),
    ),
    (
        "dense union",
        pa.UnionArray.from_dense(
            pa.array([0, 1], pa.int8()),
            pa.array([0, 0], pa.int32()),
            [pa.array(["a"]), pa.array([None], pa.int64())],
        ),
        (IS, II, IF, IB, IT, IL),
    ),
    ("list<string>", pa.array([["a", None, "b"], None]), (IS, II, IF, IB, IT, ["a", "b"])),
    (
        "large_list<string>",
        pa.array([["a"], None], pa.large_list(pa.string())),
        (IS, II, IF, IB, IT, ["a"]),
    ),
    (
        "fixed_size_list<string>",
        pa.array([["a", "b"], None], pa.list_(pa.string(), 2)),
        (IS, II, IF, IB, IT, ["a", "b"]),
    ),
    (
        "list_view<string>",
        pa.array([["a"], None], pa.list_view(pa.string())),
        (IS, II, IF, IB, IT, ["a"]),
    ),
    (
        "large_list_view<string>",
        pa.array([["a"], None], pa.large_list_view(pa.string())),
        (IS, II, IF, IB, IT, ["a"]),
    ),
    ("list<int64>", pa.array([[1, None, 2], None]), (IS, II, IF, IB, IT, ["1", "2"])),
    (
        "list<double>",
        pa.array([[2.0, 0.5, 1e20], None]),
        (IS, II, IF, IB, IT, ["2", "0.5", "1e+20"]),
    ),
    ("list<bool>", pa.array([[True, False], None]), (IS, II, IF, IB, IT, ["true", "false"])),
    (
        "list<decimal>",
        pa.array([[D("4.50")], None], pa.list_(pa.decimal128(5, 2))),
        (IS, II, IF, IB, IT, ["4.50"]),
    ),
    (
        "list<date32>",
        pa.array([[dt.date(2024, 11, 7)], None]),
        (IS, II, IF, IB, IT, ["2024-11-07"]),
    ),
    (
        "list<timestamp[s]>",
        pa.array([[0], None], pa.list_(pa.int64())).cast(pa.list_(pa.timestamp("s"))),
        (IS, II, IF, IB, IT, ["1970-01-01 00:00:00.000000Z"]),
    ),
    (
        "list<dictionary<string>>",
        pa.array([["a", "b"], None]).cast(pa.list_(pa.dictionary(pa.int8(), pa.string()))),
        (IS, II, IF, IB, IT, ["a", "b"]),
    ),
    ("list<binary>", pa.array([[b"a"], None], pa.list_(pa.binary())), (IS, II, IF, IB, IT, ["a"])),
    (
        "list<binary> invalid UTF-8",
        pa.array([[b"a", b"\xff"], None], pa.list_(pa.binary())),
        ("invalid_utf8",) * 6,
    ),
    ("list<string> NUL", pa.array([["a\x00"], None]), ("nul_byte",) * 6),
    ("list<null>", pa.array([[None], None]), (IS, II, IF, IB, IT, [])),
    ("list<list<string>>", pa.array([[["a"]], None]), (IS, II, IF, IB, IT, IL)),
    (
        "list<list<string>> empty",
        pa.array([[], None], pa.list_(pa.list_(pa.string()))),
        (IS, II, IF, IB, IT, []),
    ),
    (
        "list<list<string>> null item",
        pa.array([[None], None], pa.list_(pa.list_(pa.string()))),
        (IS, II, IF, IB, IT, []),
    ),
    ("list<struct>", pa.array([[{"a": 1}], None]), (IS, II, IF, IB, IT, IL)),
    ("list<time32>", pa.array([[1], None], pa.list_(pa.time32("s"))), (IS, II, IF, IB, IT, IL)),
    ("list of 10,001", pa.array([["a"] * 10_001, None]), (IS, II, IF, IB, IT, IL)),
    (
        "extension uuid",
        _ext(pa.uuid(), pa.array([b"0123456789abcdef", None], pa.binary(16))),
        ("0123456789abcdef", II, IF, IB, IT, ["0123456789abcdef"]),
    ),
    (
        "extension bool8",
        _ext(pa.bool8(), pa.array([1, None], pa.int8())),
        ("1", 1, 1.0, True, IT, IL),
    ),
    (
        "extension json",
        _ext(pa.json_(pa.string()), pa.array(['"x"', None])),
        ('"x"', II, IF, IB, IT, ['"x"']),
    ),
]


@pytest.mark.parametrize(("arr", "expected"), [c[1:] for c in MATRIX], ids=[c[0] for c in MATRIX])
@pytest.mark.parametrize("field", ORDER, ids=[t.value for t in ORDER])
def test_arrow_type_matrix(field: Type, arr: pa.Array, expected: tuple[Any, ...]) -> None:
    got = verdicts(FIELDS[field], arr)
    assert got[0] == expect(expected[ORDER.index(field)])
    assert got[1:] == [("ok", None)] * (len(arr) - 1)


def test_list_view_out_of_order_keeps_its_values() -> None:
    """Arrow 26's own list_view → list cast gives [], ["x"], [] here."""
    got = verdicts(FIELDS[Type.LIST], _list_view_out_of_order())
    assert got == [("ok", ["z"]), ("ok", None), ("ok", ["y", "z"])]


def test_a_null_list_row_owning_items_is_just_null() -> None:
    nasty = _null_row_owning_items()
    assert verdicts(FIELDS[Type.LIST], nasty) == [("ok", ["x", "y"]), ("ok", None), ("ok", [])]
    hostile = pa.ListArray.from_arrays(
        pa.array([0, 1, 2], pa.int32()), pa.array(["x", "\x00"]), mask=pa.array([False, True])
    )
    assert verdicts(FIELDS[Type.LIST], hostile) == [("ok", ["x"]), ("ok", None)]


def test_sliced_columns_are_judged_on_their_own_values() -> None:
    base = pa.array(["a\x00", "ok", "b\x00"])
    assert verdicts(FIELDS[Type.STRING], base.slice(1, 1)) == [("ok", "ok")]
    lists = pa.array([["a\x00"], ["fine"], ["b\x00"]])
    assert verdicts(FIELDS[Type.LIST], lists.slice(1, 1)) == [("ok", ["fine"])]
    dictionary = pa.array(["x\x00", "y", "x\x00"]).dictionary_encode()
    assert verdicts(FIELDS[Type.STRING], dictionary.slice(1, 1)) == [("ok", "y")]


@pytest.mark.parametrize(
    ("items", "code"),
    [
        (["a" * ((1 << 20) + 1)], "field_too_large"),
        (["a" * (1 << 19), "b" * (1 << 19), "c"], "field_too_large"),
        (["a" * (1 << 19), "b" * (1 << 19)], None),
    ],
    ids=["one item over the cap", "items over the cap together", "items at the cap together"],
)
def test_list_items_are_capped(items: list[str], code: str | None) -> None:
    got = verdicts(FIELDS[Type.LIST], pa.array([items, ["x"]]))
    assert got[0] == (("bad", (code,)) if code else ("ok", items))
    assert got[1] == ("ok", ["x"])


def test_large_and_dictionary_strings_are_capped() -> None:
    big = "a" * ((1 << 20) + 1)
    for arr in (
        pa.array([big, "x"], pa.large_string()),
        pa.array([big, "x"]).dictionary_encode(),
        pa.array([big, "x"], pa.string_view()),
    ):
        assert verdicts(FIELDS[Type.STRING], arr) == [("bad", ("field_too_large",)), ("ok", "x")]


# ---------------------------------------------------------------- the verdict is the value's

# Text values as producers write them, good and bad, close to every boundary above.
_SPECIAL_TEXT = [
    *(c[1] for c in TIMESTAMPS + INTS + FLOATS + BOOLS + STRINGS),
    *(c[1] for c in LISTS if c[1] is None or len(c[1]) < 200),
    "2024-11-07 14:00",
    "0000-01-01",
    "1234567890123456789",
    "9223372036854775807",
    "+7",
    "0x10",
    "1e309",
    "nan",
    "[1, 2.5]",
    "[null]",
    '["a", null]',
    "a;;b",
]
_OFFSETS = ["", "Z", "z", "+05:30", "-05:00", "+0530", "+05", "+24:00", "-00:00", "+23:59", "+05:3"]
_FRACTIONS = ["", ".5", ".250", ".123456", ".1234567", ".123456789", ".1234567891", "."]
_TIMES = ["", "14", "14:00", "14:00:00", "23:59:59", "00:00", "24:00:00", "14:60", "1:00"]


@st.composite
def _timestamp_text(draw: st.DrawFn) -> str:
    year = draw(
        st.sampled_from([0, 1, 2, 999, 1969, 1970, 2024, 9998, 9999]) | st.integers(0, 9999)
    )
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    date = f"{year:04d}-{month:02d}-{day:02d}"
    time = draw(st.sampled_from(_TIMES))
    if not time:
        return date + draw(st.sampled_from(["", "", "Z", "+05:00", "T"]))
    sep = draw(st.sampled_from(["T", " ", "t", "  "]))
    frac = draw(st.sampled_from(_FRACTIONS)) if time.count(":") == 2 else ""
    return date + sep + time + frac + draw(st.sampled_from(_OFFSETS))


_INT_TEXT = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(-(2**64), 2**64).map(lambda n: f"+{n}" if n >= 0 else str(n)),
    st.integers(0, 2**64).map(lambda n: f"00{n}"),
    st.integers(0, 2**64).map(hex),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
_TEXT = st.one_of(
    st.sampled_from(_SPECIAL_TEXT),
    _timestamp_text(),
    _INT_TEXT,
    st.text(alphabet='0123456789+-.eEx:TZ ;|[]"', max_size=8),
    st.text(max_size=6),
)


@st.composite
def _cell(draw: st.DrawFn) -> bytes | None:
    """One CSV cell: a text value, maybe padded with whitespace, or a hostile byte string."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return None
    if kind == 1:
        return draw(
            st.sampled_from([b"", b"  ", b"a\x00b", b"\x00", b"\xff", b"\xc3(", b"\xed\xa0\x80"])
        )
    value = draw(_TEXT)
    if value is None:
        return None
    if draw(st.booleans()):
        value = (
            draw(st.sampled_from([" ", "\t", "  "]))
            + value
            + draw(st.sampled_from(["", " ", "\n"]))
        )
    return value.encode("utf-8", errors="surrogatepass")


def _same_alone(col: Column, column: pa.Array, alone: list[pa.Array]) -> None:
    together = verdicts(col, column)
    for i, single in enumerate(alone):
        assert together[i] == verdict(col, single), (i, column[i])
        assert together[i] == verdict(col, column.slice(i, 1)), (i, column[i])


_PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_PROPERTY
@given(cells=st.lists(_cell(), min_size=1, max_size=12), field=st.sampled_from(ORDER))
def test_a_text_value_gets_the_verdict_it_gets_alone(
    cells: list[bytes | None], field: Type
) -> None:
    column = pa.array(cells, pa.binary())
    _same_alone(FIELDS[field], column, [pa.array([c], pa.binary()) for c in cells])


_NATIVE_INTS = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, 45, 2**63 - 1, -(2**63), 10**18])
)
_NATIVE_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**64), 2**64).map(float),
    st.sampled_from([45.0, 4.5, 1e20, -0.0, 2.0**63, -(2.0**63), math.nan, math.inf]),
)


@st.composite
def _native_column(draw: st.DrawFn) -> tuple[pa.DataType, list[Any], Any]:
    """(Arrow type, values, how to build an array of them) for a random native column."""
    n = draw(st.integers(1, 10))

    def values(strategy: st.SearchStrategy[Any]) -> list[Any]:
        return draw(st.lists(st.none() | strategy, min_size=n, max_size=n))

    choice = draw(st.integers(0, 9))
    if choice == 0:
        return pa.int64(), values(_NATIVE_INTS), None
    if choice == 1:
        return pa.uint64(), values(st.integers(0, 2**64 - 1)), None
    if choice == 2:
        return draw(st.sampled_from([pa.float64(), pa.float32()])), values(_NATIVE_FLOATS), None
    if choice == 3:
        decimals = st.decimals(min_value=-(10**17), max_value=10**17, places=2, allow_nan=False)
        return pa.decimal128(20, 2), values(decimals), None
    if choice == 4:
        unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
        tz = draw(st.sampled_from([None, "UTC", "Asia/Kolkata"]))
        ints = st.integers(-(2**63), 2**63 - 1) | st.integers(-(10**12), 10**12)
        return pa.timestamp(unit, tz=tz), values(ints), "view"
    if choice == 5:
        return pa.date32(), values(st.integers(-(2**31), 2**31 - 1)), "view"
    if choice == 6:
        return pa.string(), values(_TEXT.filter(lambda s: s is not None) | st.just("a\x00")), "dict"
    if choice == 7:
        items = st.lists(st.none() | st.text(max_size=4) | st.just("\x00"), max_size=4)
        return pa.list_(pa.string()), values(items), None
    if choice == 8:
        return pa.list_(pa.int64()), values(st.lists(st.none() | _NATIVE_INTS, max_size=4)), None
    return pa.bool_(), values(st.booleans()), None


def _build(typ: pa.DataType, vals: list[Any], how: Any) -> pa.Array:
    if how == "view":
        storage = pa.int32() if pa.types.is_date32(typ) else pa.int64()
        return pa.array(vals, storage).view(typ)
    if how == "dict":
        return pa.array(vals, typ).dictionary_encode()
    return pa.array(vals, typ)


@_PROPERTY
@given(native=_native_column(), field=st.sampled_from(ORDER))
def test_a_native_value_gets_the_verdict_it_gets_alone(
    native: tuple[Any, ...], field: Type
) -> None:
    typ, vals, how = native
    column = _build(typ, vals, how)
    _same_alone(FIELDS[field], column, [_build(typ, [v], how) for v in vals])


@pytest.mark.parametrize(
    ("field", "cases"),
    [
        (Type.TIMESTAMP, TIMESTAMPS),
        (Type.INT, INTS),
        (Type.FLOAT, FLOATS),
        (Type.BOOL, BOOLS),
        (Type.LIST, [c for c in LISTS if c[1] is None or len(c[1]) < 1000]),
    ],
    ids=["timestamp", "int", "float", "bool", "list"],
)
def test_long_columns_of_repeated_values(field: Type, cases: list[tuple[str, Any, Any]]) -> None:
    """Past 64 values a failed column is cut over its distinct values; same verdicts."""
    values = [c[1] for c in cases]
    cells = [values[(i * 7) % len(values)] for i in range(5 * len(values))]
    column = pa.array([None if v is None else v.encode() for v in cells], pa.binary())
    expected = {c[1]: expect(c[2]) for c in cases}
    assert verdicts(FIELDS[field], column) == [expected[v] for v in cells]


def test_the_issue_cases_next_to_a_bad_row() -> None:
    """The measured bugs of issue 7: each value alone and next to a refused value."""
    cases = [
        (Type.TIMESTAMP, "0000-01-01"),
        (Type.TIMESTAMP, "2024-11-07 14:00"),
        (Type.INT, "1234567890123456789"),
        (Type.INT, "+7"),
        (Type.INT, "0x10"),
        (Type.FLOAT, "1e309"),
    ]
    for field, value in cases:
        alone = verdict(FIELDS[field], text(value))
        column = pa.array([value.encode(), b"\xffbad", b"nope"], pa.binary())
        assert verdicts(FIELDS[field], column)[0] == alone, value


def test_the_real_kinds_use_these_rules() -> None:
    """The schema's own columns go through the same parse (codes as in the tables)."""
    table = pa.table(
        {
            "tutor_id": ["T1"],
            "name": ["Ann"],
            "email": ["a@b"],
            "onboarding_date": ["2024-11-07T14"],
            "status": ["active"],
            "subjects": [["Math", None]],
            "age": [1e20],
        }
    )
    (rejected,) = validate(schema.TUTORS, table).rejected
    assert {(e.field, e.code) for e in rejected.errors} == {
        ("onboarding_date", "invalid_timestamp"),
        ("age", "invalid_int"),
    }


# ---------------------------------------------------------------- the bisection itself


def _accepted(values: list[str], cast: Any) -> list[bool]:
    """Per value: does `cast` accept it alone (and, for floats, give a finite number)?"""
    out = []
    for v in values:
        try:
            got = cast(pa.array([v]))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            out.append(False)
            continue
        finite = pc.is_finite(got) if pa.types.is_floating(got.type) else pc.is_valid(got)
        out.append(bool(finite[0].as_py()))
    return out


_ARROWISH = (
    st.text(alphabet="0123456789-+:.TZ tz xXeEnaif", max_size=34) | _timestamp_text() | _TEXT
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_ARROWISH.filter(lambda v: v is not None), min_size=1, max_size=20))
def test_plausible_patterns_hold_for_everything_arrow_accepts(values: list[str]) -> None:
    """cast_each may refuse, unread, a value its `plausible` pattern does not match: that is
    only sound if every value the cast accepts matches. Checked against Arrow itself."""
    from tutormax_cli.rules import scalars, timestamps

    arr = pa.array(values)
    checks = [
        (scalars._PLAUSIBLE_INT, lambda a: a.cast(pa.int64()), lambda v: "x" not in v.lower()),
        (scalars._PLAUSIBLE_FLOAT, lambda a: a.cast(pa.float64()), None),
        (timestamps._PLAUSIBLE_TIMESTAMP, lambda a: a.cast(pa.timestamp("us", tz="UTC")), None),
        (timestamps._PLAUSIBLE_TIMESTAMP, lambda a: a.cast(pa.timestamp("us")), None),
    ]
    for pattern, cast, applies in checks:
        matches = pc.match_substring_regex(arr, pattern).to_pylist()
        for v, ok, match in zip(values, _accepted(values, cast), matches, strict=True):
            if ok and (applies is None or applies(v)):
                assert match, (pattern, v)


def test_cast_each_isolates_the_refused_values_with_few_casts() -> None:
    from tutormax_cli.rules.arrow import cast_each

    calls = 0

    def cast(a: pa.Array) -> pa.Array:
        nonlocal calls
        calls += 1
        return a.cast(pa.int64())

    values = [str(i) for i in range(4096)]
    values[100], values[3000] = "x", "y"
    typed, bad = cast_each(pa.array(values), cast, pa.int64())
    assert bad is not None and pc.indices_nonzero(bad).to_pylist() == [100, 3000]
    assert typed.to_pylist() == [None if i in (100, 3000) else i for i in range(4096)]
    assert calls <= 2 * 2 * 12 + 1  # about 2·k·log2(n) for k = 2 bad values among 4096
    assert cast_each(pa.array(["1", None]), cast, pa.int64())[1] is None


# ---------------------------------------------------------------- fast paths = the general rule

_JSON_ITEM = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
_PLAIN_ITEM = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "Zs"]), max_size=6
)
_COMPACT_LIST = st.lists(_PLAIN_ITEM | _JSON_ITEM, max_size=4).map(
    lambda xs: json.dumps(xs, separators=(",", ":"), ensure_ascii=False)
)
_LIST_TEXT = st.one_of(
    _COMPACT_LIST,
    _COMPACT_LIST,
    st.lists(_JSON_ITEM, max_size=4).map(lambda xs: json.dumps(xs, separators=(",", ":"))),
    st.lists(_JSON_ITEM, max_size=4).map(json.dumps),
    st.lists(_JSON_ITEM, max_size=4).map(lambda xs: " " + json.dumps(xs)),
    st.lists(st.sampled_from(["a", " b ", "", "c d"]), max_size=4).map(";".join),
    st.text(alphabet='[]",\\ ab;|', max_size=10),
)


def _same_parse(fast: Any, general: Any, column: pa.Array) -> bool:
    """Whether `fast` (None: it declined) gives what `general` gives; returns if it took it."""
    got = fast(column)
    if got is None:
        return False
    typed, bad = got if isinstance(got, tuple) else (got, None)
    want_typed, want_bad = general(column)
    assert typed.to_pylist() == want_typed.to_pylist()
    flagged = [False] * len(column) if bad is None else bad.to_pylist()
    assert flagged == ([False] * len(column) if want_bad is None else want_bad.to_pylist())
    return True


_FAST_CASES = settings(max_examples=400, deadline=None)


def _columns(usual: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> Any:
    """Columns of usual values (which a fast path should take) and of any values."""
    return st.one_of(
        st.lists(usual | st.none(), min_size=1, max_size=12),
        st.lists(usual | odd | st.none(), min_size=1, max_size=12),
    )


_USUAL_TIMESTAMP = st.builds(
    lambda t, frac, off: f"{t.year:04d}-{t:%m-%d}{frac}{off}",
    st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59)),
    # the time (an hour alone is refused), then a fraction (7 digits are cut to 6)
    st.sampled_from(
        ["T10:00:00", "T10:00:00.5", " 23:59:59.123456", "T00:00:00.000"] * 3
        + ["T10:00", "T10:00:00.1234567", "T10"]
    ),  # fmt: skip
    st.sampled_from(["Z", "+00:00", "-08:00", "+14:00", "+05:30", "-23:59"] * 3 + ["z", "+0530"]),
)


@_FAST_CASES
@given(values=_columns(_USUAL_TIMESTAMP, _timestamp_text()))
def test_compact_timestamps_give_the_general_verdicts(values: list[str | None]) -> None:
    from tutormax_cli.rules import timestamps as ts

    took = _same_parse(
        ts._compact_timestamps, ts._general_timestamps, pa.array(values, pa.string())
    )
    hypothesis.event(f"compact path taken: {took}")


@_FAST_CASES
@given(values=st.lists(_INT_TEXT | _TEXT | st.none(), min_size=1, max_size=12))
def test_the_one_cast_of_ints_gives_the_general_verdicts(values: list[str | None]) -> None:
    from tutormax_cli.rules import scalars

    column = pa.array(values, pa.string())
    took = _same_parse(scalars._text_ints, scalars._general_ints, column)
    hypothesis.event(f"parsed: {took}")


@_FAST_CASES
@given(values=_columns(_COMPACT_LIST, _LIST_TEXT))
def test_compact_json_lists_give_the_general_verdicts(values: list[str | None]) -> None:
    from tutormax_cli.rules import lists

    took = _same_parse(
        lists._compact_json_lists, lists._general_lists, pa.array(values, pa.string())
    )
    hypothesis.event(f"compact path taken: {took}")


def test_the_fast_paths_are_taken_on_usual_columns() -> None:
    """The fast paths exist for these columns; the tests above compare them only if taken."""
    from tutormax_cli.rules import lists, timestamps

    stamps = pa.array(["2024-11-07T14:00:00Z", None, "2024-11-07T14:00:00.5+05:30"])
    assert timestamps._compact_timestamps(stamps) is not None
    assert timestamps._compact_timestamps(pa.array(["2024-11-07T14:00:00+0530"])) is None
    assert timestamps._compact_timestamps(pa.array(["2024-11-07 14Z"])) is None
    assert lists._compact_json_lists(pa.array(['["a","b"]', "[]", '[""]', None])) is not None
    assert lists._compact_json_lists(pa.array(['["a", "b"]'])) is None
