"""JSON records → Arrow: bounded structure, and per-record values that ignore the batch.

`records_to_table` is the one JSON-records → Arrow function (JSON Lines files and the
queue). Each JSON value type has one meaning per column type (records.py's table), so a
record's verdict after validation is the same alone and in any batch; deep or wide JSON is
refused before anything builds it, in a file, in an envelope and in a running worker.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from dbfixtures import tutor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redisfixtures import dead_letters, jsonable, pending, publish, xadd_raw

from tutormax_cli import json_bounds, schema
from tutormax_cli.json_bounds import (
    StructureError,
    TooManyKeys,
    check_width,
    loads_bounded,
    loads_record,
)
from tutormax_cli.queue import envelope as envelope_module
from tutormax_cli.queue.envelope import Poison, envelope_text, parse_envelope
from tutormax_cli.queue.policy import RetryPolicy
from tutormax_cli.queue.streams import Streams
from tutormax_cli.queue.worker import Worker, WorkerOptions
from tutormax_cli.records import MISPLACED_SUFFIX, _as_text, misplaced_masks, records_to_table
from tutormax_cli.store import Store
from tutormax_cli.validate import validate

DEEP = "[" * 10_000 + "]" * 10_000
# Three objects 900 deep in one 16 KB record: 7.9 GB once Arrow inferred nested structs.
DEEP3 = "{" + ",".join(f'"k{i}":' + '{"":' * 900 + "1" + "}" * 900 for i in range(3)) + "}"
WIDE = json.dumps({f"c{i}": 1 for i in range(100_000)})

TUTOR = {"tutor_id": "T1", "name": "Ann", "email": "a@x.org", "onboarding_date": "2024-01-15",
         "status": "active", "subjects": ["Math"]}  # fmt: skip
SESSION = {"session_id": "S1", "tutor_id": "T1", "student_id": "st1", "duration_minutes": 60,
           "scheduled_start": "2024-11-07T14:00:00Z", "subject": "Math"}  # fmt: skip
BASE = {"tutors": TUTOR, "sessions": SESSION}


def verdicts(kind: str, records: list[dict[str, Any]]) -> list[Any]:
    """Per record: ("ok", typed values of the record's own keys) or ("rejected", codes)."""
    table, masks = misplaced_masks(records_to_table(records, schema.KINDS[kind]))
    checked = validate(schema.KINDS[kind], table)
    typed = checked.table.to_pylist()
    others = {k: v.to_pylist() for k, v in checked.others.items()}
    out: list[Any] = []
    accepted = iter(range(len(typed)))
    rejected = {r.index: r.errors for r in checked.rejected}
    for i, record in enumerate(records):
        flagged = sorted(name for name, mask in masks.items() if mask[i].as_py())
        if i in rejected:
            out.append(("rejected", sorted((e.field, e.code) for e in rejected[i]), flagged))
            continue
        j = next(accepted)
        # The record's own keys in its own order (a batch orders its extra columns by their
        # first appearance in the batch, which is the batch's, not the record's).
        row = {k: typed[j][k] if k in typed[j] else others[k][j] for k in record}
        out.append(("ok", repr(row), flagged))
    return out


def alone(kind: str, records: list[dict[str, Any]]) -> list[Any]:
    return [verdicts(kind, [r])[0] for r in records]


# -- what each JSON type becomes ---------------------------------------------------------------

BATCH_INDEPENDENT_CASES = [
    # (kind, field, values): each value's verdict must not change with its neighbours
    pytest.param("sessions", "duration_minutes", [60, 60.5, 60.0, "60", True], id="int-mixed"),
    pytest.param(
        "sessions", "duration_minutes", [2**64, 60, 10**18, 2**63 - 1, 2**63], id="big-ints"
    ),
    pytest.param(
        "sessions", "engagement_score", [1, 0.5, 2**53 + 1, float("nan"), "0.25"], id="float-mixed"
    ),
    pytest.param("sessions", "no_show", [True, 1, 0, 2, "yes", 1.0], id="bool-mixed"),
    pytest.param("tutors", "name", ["Bea", {"first": "Bea"}, ["Bea"], 7, False], id="string-mixed"),
    pytest.param(
        "tutors",
        "subjects",
        [["Math", None], ["Art"], "Math;Art", {"a": 1}, [1, True]],
        id="list-mixed",
    ),
    pytest.param("tutors", "name", ["Bea", json.loads('"\\ud800"')], id="lone-surrogate"),
    pytest.param("tutors", "team", [60, 60.5, "blue", [1, None], {"a": 1}], id="unknown-column"),
]


@pytest.mark.parametrize(("kind", "field", "values"), BATCH_INDEPENDENT_CASES)
def test_a_value_means_the_same_alone_and_next_to_any_other(
    kind: str, field: str, values: list[Any]
) -> None:
    records = [{**BASE[kind], field: v} for v in values]
    assert verdicts(kind, records) == alone(kind, records)
    assert verdicts(kind, records[::-1]) == alone(kind, records[::-1])


def test_an_int_next_to_a_float_stays_an_int() -> None:
    records = [{**SESSION, "duration_minutes": 60}, {**SESSION, "duration_minutes": 60.5}]
    table = validate(schema.SESSIONS, records_to_table(records, schema.SESSIONS))
    assert table.table.column("duration_minutes").to_pylist() == [60]
    assert [(e.field, e.code) for e in table.rejected[0].errors] == [
        ("duration_minutes", "invalid_int")
    ]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("duration_minutes", 60.0, 60),  # JSON's 60.0 is the number 60
        ("duration_minutes", "60", 60),
        ("engagement_score", 1, 1.0),
        ("no_show", 1, True),
        ("no_show", "yes", True),
    ],
)
def test_json_values_accepted_by_the_csv_rule(field: str, value: Any, expected: Any) -> None:
    for neighbour in (None, "0", 0.5, True):  # whatever the batch holds
        records = [{**SESSION, field: value}, {**SESSION, "session_id": "S2", field: neighbour}]
        checked = validate(schema.SESSIONS, records_to_table(records, schema.SESSIONS))
        assert checked.table.column(field)[0].as_py() == expected
        assert 0 not in {r.index for r in checked.rejected}


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("duration_minutes", 60.5, "invalid_int"),
        ("duration_minutes", True, "invalid_int"),
        ("duration_minutes", 2**64, "invalid_int"),  # was an uncaught OverflowError
        ("duration_minutes", {"minutes": 60}, "invalid_int"),
        ("engagement_score", float("nan"), "invalid_float"),
        ("no_show", 2, "invalid_bool"),
        ("scheduled_start", 1731000000, "invalid_timestamp"),
    ],
)
def test_json_values_rejected_by_the_csv_rule(field: str, value: Any, code: str) -> None:
    for neighbour in (None, "1", 0.5, True, 60):
        records = [{**SESSION, field: value}, {**SESSION, "session_id": "S2", field: neighbour}]
        checked = validate(schema.SESSIONS, records_to_table(records, schema.SESSIONS))
        (first, *_) = checked.rejected
        assert (first.index, [(e.field, e.code) for e in first.errors]) == (0, [(field, code)])


def test_a_list_with_a_null_item_drops_it_alone_and_in_a_batch() -> None:
    records = [{**TUTOR, "subjects": ["Math", None]}, {**TUTOR, "subjects": ["Art"]}]
    for batch in (records, records[:1]):
        checked = validate(schema.TUTORS, records_to_table(batch, schema.TUTORS))
        assert checked.table.column("subjects")[0].as_py() == ["Math"]


def test_a_pure_column_takes_the_native_fast_path() -> None:
    table = records_to_table([SESSION, {**SESSION, "no_show": True}], schema.SESSIONS)
    assert str(table.schema.field("duration_minutes").type) == "int64"
    assert str(table.schema.field("no_show").type) == "bool"
    assert str(table.schema.field("subject").type) == "string"
    wide = records_to_table([{**SESSION, "duration_minutes": 2**63}], schema.SESSIONS)
    assert str(wide.schema.field("duration_minutes").type) == "string"  # beyond int64
    # every value a string (a producer that sends text, `publish` of a CSV): text at once,
    # the same text the value-by-value path makes
    texts = [{**SESSION, "duration_minutes": "60", "no_show": "No"}, {**SESSION, "no_show": None}]
    texts[1]["duration_minutes"] = " 45 "
    table = records_to_table(texts, schema.SESSIONS)
    types = {c.name: c.type for c in schema.SESSIONS.columns}
    for name in ("duration_minutes", "no_show"):
        values = [r[name] for r in texts]
        assert str(table.column(name).type) == "string"
        assert table.column(name).to_pylist() == values
        assert table.column(name).chunk(0).equals(_as_text(values, types[name])[0])


def test_containers_where_text_belongs_are_flagged_per_row() -> None:
    records = [{**TUTOR, "name": {"a": 1}}, TUTOR, {**TUTOR, "subjects": {"a": 1}}]
    table = records_to_table(records, schema.TUTORS)
    assert table.column("name" + MISPLACED_SUFFIX).to_pylist() == [True, False, False]
    assert table.column("subjects" + MISPLACED_SUFFIX).to_pylist() == [False, False, True]
    rest, masks = misplaced_masks(table)
    assert set(masks) == {"name", "subjects"}
    assert not any(n.endswith(MISPLACED_SUFFIX) for n in rest.column_names)
    assert rest.column("name").to_pylist()[0] == '{"a": 1}'
    plain = records_to_table([TUTOR, {**TUTOR, "subjects": ["Art"]}], schema.TUTORS)
    assert misplaced_masks(plain)[1] == {}


def test_columns_are_the_header_plus_the_kinds() -> None:
    records = [{"tutor_id": "T1", "team": "a"}, {"tutor_id": "T2", "late": 1, "age": 40}]
    table = records_to_table(records, schema.TUTORS, columns=["tutor_id", "team"])
    assert table.column_names == ["tutor_id", "team", "age"]  # `late` came after the header
    assert table.column("team").to_pylist() == ["a", None]
    assert records_to_table(records).column_names == ["tutor_id", "team", "late", "age"]
    empty = records_to_table([{}, {}], schema.TUTORS, columns=())
    assert (empty.num_rows, empty.num_columns) == (2, 0)


def test_an_unknown_column_is_text_even_when_all_null() -> None:
    table = records_to_table([{"team": None}], schema.TUTORS, columns=["team"])
    assert str(table.schema.field("team").type) == "string"  # a stable output schema


# -- bounded parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", [DEEP, DEEP3, DEEP.encode(), DEEP3.encode()], ids=["str", "str-x3", "bytes", "bytes-x3"]
)
def test_deep_json_is_refused_before_parsing(text: str | bytes, monkeypatch) -> None:
    assert len(DEEP3) < 16_000
    monkeypatch.setattr(json_bounds, "json_loads", _never_parsed)
    with pytest.raises(StructureError, match="over the limit of 64"):
        loads_bounded(text)
    with pytest.raises(StructureError):
        loads_record(text)


def _never_parsed(text: object) -> None:
    raise AssertionError("parsed, not refused first")


def test_depth_and_width_at_the_limits_are_fine() -> None:
    at_limit = "[" * 64 + "]" * 64
    assert loads_bounded(at_limit) == json.loads(at_limit)
    with pytest.raises(StructureError, match="65 deep"):
        loads_bounded("[" + at_limit + "]")
    record = {f"c{i}": "a:b" for i in range(1024)}  # colons in values are not keys
    assert loads_record(json.dumps(record)) == record
    with pytest.raises(TooManyKeys, match="1,025 keys"):
        loads_record(json.dumps({**record, "one more": 1}))


def test_a_wide_record_is_refused_unparsed(monkeypatch) -> None:
    monkeypatch.setattr(json_bounds, "json_loads", _never_parsed)
    with pytest.raises(TooManyKeys) as caught:
        check_width(WIDE)
    assert caught.value.keys == 100_000
    with pytest.raises(TooManyKeys):
        loads_record(WIDE)
    nested = json.dumps({"a": {f"c{i}": 1 for i in range(5000)}, "b": 1})
    check_width(nested)  # keys of a nested object are not the record's


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[1]", "not a JSON object"),
        ('{"a\\u0000b": 1}', "NUL"),
        ('{"\\ud800": 1}', "lone surrogate"),
        ("{", "Expecting"),
    ],
)
def test_a_record_must_be_an_object_with_usable_keys(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        loads_record(text)


# -- envelopes ---------------------------------------------------------------------------------


def _envelope_around(data_text: str) -> bytes:
    """An envelope whose data is the given JSON text (checksum over it, if it parses)."""
    try:
        digest = json.loads(envelope_text("x", json.loads(data_text)))["checksum"]
    except (RecursionError, ValueError):
        digest = "0" * 64
    return (f'{{"id": "1", "timestamp": "t", "channel": "x", "data": {data_text}, '
            f'"metadata": {{}}, "checksum": "{digest}"}}').encode()  # fmt: skip


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param('{"a": ' + DEEP + "}", "nested 10002 deep", id="10000-deep"),
        pytest.param(DEEP3, "nested 902 deep", id="900-deep-x3"),
        pytest.param(json.dumps({f"c{i}": 1 for i in range(2000)}), "2,000 keys", id="wide"),
    ],
)
def test_hostile_envelopes_are_poison_with_a_reason(data: str, reason: str, monkeypatch) -> None:
    if "deep" in reason:  # refused before any parser sees it
        monkeypatch.setattr(envelope_module, "json_loads", _never_parsed)
        monkeypatch.setattr(envelope_module, "orjson_loads", _never_parsed)
    with pytest.raises(Poison, match=reason):
        parse_envelope(_envelope_around(data))


def test_an_envelope_holds_any_record_a_jsonl_file_may_hold() -> None:
    deepest = {"a": json.loads("[" * 63 + "]" * 63)}  # 64 deep with the record itself
    assert loads_record(json.dumps(deepest)) == deepest
    assert parse_envelope(_envelope_around(json.dumps(deepest)))["data"] == deepest
    with pytest.raises(Poison, match="nested 66 deep"):
        parse_envelope(_envelope_around(json.dumps({"a": [deepest["a"]]})))


# -- a real worker on Redis --------------------------------------------------------------------


def _worker(streams: Streams, store: Store) -> Worker:
    retry = RetryPolicy(max_attempts=2, base_ms=10, max_ms=40)
    return Worker(streams, store, WorkerOptions(consumer="w1", block_ms=50, retry=retry))


@pytest.mark.redis
def test_the_worker_dead_letters_hostile_messages_and_goes_on(
    streams: Streams, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(streams, "tutors", [tutor(1)])
    for data in ('{"a": ' + DEEP + "}", DEEP3, json.dumps({f"c{i}": 1 for i in range(2000)})):
        xadd_raw(streams, "tutors", {"message": _envelope_around(data)})
    # A message whose parsing raises what nobody foresaw is poison too, not a dead worker.
    import tutormax_cli.queue.worker as worker_module

    real_parse = worker_module.parse

    def parse(raw: bytes | str, *args: Any) -> dict[str, Any]:
        if b"T-crash" in (raw if isinstance(raw, bytes) else raw.encode()):
            raise RuntimeError("unforeseen")
        return real_parse(raw, *args)

    monkeypatch.setattr(worker_module, "parse", parse)
    publish(streams, "tutors", [tutor("-crash"), tutor(2)])
    odd = {**jsonable(tutor(3)), "name": {"first": "Cy"}, "age": 2**70, "subjects": ["A", None]}
    publish(streams, "tutors", [odd])
    totals = _worker(streams, store).run(burst=True)
    letters = dead_letters(streams)
    reasons = sorted(e["metadata"]["detail"][0]["message"] for _, e in letters)
    assert store.row_counts()["tutors"] == 2, reasons  # T1 and T2
    assert (totals["read"], totals["persisted"], totals["dead_lettered"]) == (7, 2, 5)
    by_code = sorted((e["metadata"]["error"], e["data"].get("tutor_id", "")) for _, e in letters)
    assert by_code == [("poison", "")] * 4 + [("validation", "T3")]  # poison keeps the raw entry
    (crashed,) = [e for _, e in letters if "T-crash" in e["data"].get("message", "")]
    assert crashed["metadata"]["detail"][0]["message"] == "unparsable: RuntimeError: unforeseen"
    (odd_letter,) = [e for _, e in letters if e["metadata"]["error"] == "validation"]
    assert "age" in {d["field"] for d in odd_letter["metadata"]["detail"]}  # 2**70: no crash
    assert any("nested 10002 deep" in r for r in reasons)
    assert any("nested 902 deep" in r for r in reasons)
    assert any("2,000 keys" in r for r in reasons)
    assert any("RuntimeError: unforeseen" in r for r in reasons)
    assert pending(streams) == 0


# -- the property: a record's verdict ignores its batch ----------------------------------------

TEXTS = st.one_of(
    st.text(max_size=8),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=4),  # lone surrogates too
    st.sampled_from(
        [
            "60",
            " 7 ",
            "1.5",
            "1e3",
            "true",
            "no",
            "2024-11-07T14:00:00Z",
            "2024-11-07",
            "2024-02-30",
            "a@b",
            "Math;Art",
            '["x", "y"]',
            "active",
            "",
            "inf",
            "NaN",
        ]
    ),
)
INTS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 5, 60, 480, 10**18, 2**53 + 1, 2**63 - 1, 2**63, -(2**63)]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 60.0, 0.5, 1e18, 1e300]),
    TEXTS,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def records(draw: Any, kind: str) -> dict[str, Any]:
    base = dict(BASE.get(kind, {}))
    names = [c.name for c in schema.KINDS[kind].columns] + ["team", "note"]
    for name in draw(st.lists(st.sampled_from(names), max_size=6, unique=True)):
        if draw(st.booleans()):
            base.pop(name, None)
        else:
            base[name] = draw(VALUES)
    return base


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(["tutors", "sessions", "feedback"]))
def test_a_record_gets_the_same_verdict_in_any_batch(data: Any, kind: str) -> None:
    batch = data.draw(st.lists(records(kind), min_size=1, max_size=8))
    assert verdicts(kind, batch) == alone(kind, batch)
