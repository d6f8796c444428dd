"""A JSON number in a string field is its text as written (README, "JSON values").

Python reads a JSON number as an int or a double, and a double holds `1e2` and `100`,
`123456789012345678.1` and `…8.2`, alike; `1e400` becomes infinity, `-0` the int 0. When a
string field (an id above all) got the double's rendering, distinct records merged as one
key's duplicates and the run said exit 0. Here every number token the grammar allows, in a
JSON Lines file and in a queue message, must come out as its own text, and two different
tokens as two keys.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from dbfixtures import read_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redisfixtures import pending, xadd_raw
from typer.testing import CliRunner

from tutormax_cli import schema
from tutormax_cli.cli import app
from tutormax_cli.json_bounds import (
    data_as_written,
    dumps_as_written,
    loads_number_texts,
    loads_record,
)
from tutormax_cli.queue.envelope import envelope_text, parse_envelope
from tutormax_cli.queue.policy import RetryPolicy
from tutormax_cli.queue.streams import Streams
from tutormax_cli.queue.worker import Worker, WorkerOptions
from tutormax_cli.records import records_to_table
from tutormax_cli.store import Store

# JSON's number grammar (RFC 8259 §6), digits and exponents long enough to pass a double's
# 17 significant digits and its exponent range.
NUMBER = st.from_regex(
    r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,22})?([eE][+-]?[0-9]{1,4})?", fullmatch=True
)

# Pairs a double (or Python's int) holds alike; each must stay two texts, two keys.
COLLIDING = [
    ("123456789012345678.1", "123456789012345678.2"),
    ("1e2", "100"),
    ("1E2", "1e+2"),
    ("1e400", "2e400"),  # both infinity as doubles
    ("-0", "0"),
    ("-0.0", "0.0"),
    ("1.0", "1"),
    ("0.5000", "0.5"),
    ("1e-400", "0e0"),  # both 0.0 as doubles
]


def tutor_line(token: str, name: str = "A") -> str:
    return (
        f'{{"tutor_id": {token}, "name": "{name}", "email": "{name.lower()}@x.org", '
        '"onboarding_date": "2024-01-15", "status": "active", "subjects": ["Math"]}'
    )


def ids_of(lines: list[str]) -> list[str]:
    records = [loads_record(line.encode()) for line in lines]
    encoded = [line.encode() for line in lines]
    table = records_to_table(
        records, schema.TUTORS, number_texts=lambda i: loads_number_texts(encoded[i])
    )
    return table.column("tutor_id").to_pylist()


@pytest.mark.parametrize(("a", "b"), COLLIDING)
def test_two_numbers_a_double_holds_alike_are_two_texts(a: str, b: str) -> None:
    assert ids_of([tutor_line(a), tutor_line(b)]) == [a, b]
    assert ids_of([tutor_line(b)]) == [b]  # alone as in a batch


def test_only_a_record_whose_number_may_have_lost_its_text_is_read_again() -> None:
    lines = [tutor_line(t).encode() for t in ("12", "1.5", '"T3"', "0", "7")]
    records = [loads_record(line) for line in lines]
    asked: list[int] = []

    def number_texts(i: int) -> Any:
        asked.append(i)
        return loads_number_texts(lines[i])

    table = records_to_table(records, schema.TUTORS, number_texts=number_texts)
    assert table.column("tutor_id").to_pylist() == ["12", "1.5", "T3", "0", "7"]
    assert asked == [1, 3]  # the float and the int 0; digits of another int are their text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=st.lists(NUMBER, min_size=1, max_size=6))
def test_any_json_number_in_a_string_field_is_its_token_text(tokens: list[str]) -> None:
    lines = [tutor_line(t) for t in tokens]
    assert ids_of(lines) == tokens
    assert [ids_of([line])[0] for line in lines] == tokens


# -- the whole run: files and the queue --------------------------------------------------------


def test_enrich_keeps_every_distinct_number_id_a_key(tmp_path: Path, db_url: str) -> None:
    tokens = [t for pair in COLLIDING for t in pair]
    names = [f"N{i}" for i in range(len(tokens))]
    path = tmp_path / "tutors.jsonl"
    path.write_text("\n".join(map(tutor_line, tokens, names)) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app, ["enrich", str(path), "--db", db_url, "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    (doc,) = json.loads(result.stdout)["files"]
    assert (doc["inserted"], doc["duplicates"], doc["rejected"]) == (len(tokens), 0, 0)
    written = [json.loads(line)["tutor_id"] for line in out.read_text().splitlines()]
    assert written == tokens
    store = Store.connect(db_url)
    try:
        stored = read_rows(store, "tutors")
    finally:
        store.close()
    assert {k: r["name"] for k, r in stored.items()} == dict(zip(tokens, names, strict=True))


def test_the_no_db_transform_writes_each_number_id_as_written(tmp_path: Path) -> None:
    tokens = ["1e2", "100", "123456789012345678.1", "123456789012345678.2", "1e400"]
    path = tmp_path / "tutors.jsonl"
    path.write_text("\n".join(tutor_line(t, f"N{i}") for i, t in enumerate(tokens)) + "\n")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["enrich", str(path), "--no-db", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"][0]["duplicates"] == 0
    with out.open(newline="") as fh:
        assert [row["tutor_id"] for row in csv.DictReader(fh)] == tokens


def _raw_envelope(data_text: str, channel: str = "tutors") -> str:
    """A producer's envelope around data written by hand (number tokens as they are): the
    checksum is over the data as Python reads and sorts it, as SPEC §6 says."""
    digest = hashlib.sha256(json.dumps(json.loads(data_text), sort_keys=True).encode())
    return (
        f'{{"id": "{uuid.uuid4()}", "timestamp": "2024-11-07T14:00:00", "channel": "{channel}", '
        f'"data": {data_text}, "metadata": {{}}, "checksum": "{digest.hexdigest()}"}}'
    )


@pytest.mark.redis
def test_the_worker_keeps_every_distinct_number_id_a_key(streams: Streams, store: Store) -> None:
    tokens = [t for pair in COLLIDING for t in pair]
    for i, token in enumerate(tokens):
        xadd_raw(streams, "tutors", {"message": _raw_envelope(tutor_line(token, f"N{i}"))})
    retry = RetryPolicy(max_attempts=2, base_ms=10, max_ms=40)
    options = WorkerOptions(consumer="w1", block_ms=50, retry=retry)
    totals = Worker(streams, store, options).run(burst=True)
    n = len(tokens)
    assert (totals["read"], totals["persisted"], totals["dead_lettered"]) == (n, n, 0)
    stored = read_rows(store, "tutors")
    assert {k: r["name"] for k, r in stored.items()} == {t: f"N{i}" for i, t in enumerate(tokens)}
    assert pending(streams) == 0


@pytest.mark.redis
def test_publish_and_the_worker_keep_every_number_id_as_written(
    tmp_path: Path, streams: Streams, store: Store, redis_url: str, prefix: str
) -> None:
    """`tutormax publish` of a JSON Lines file sent its records as Python read them: `1e2`
    went on the stream as `100.0`, and three of six distinct ids merged (the review of
    2026-12-07, evening). Each number id is published, and stored, as written."""
    tokens = ["1e2", "100.0", "-0", "0", "123456789012345678.1", "123456789012345678.2"]
    path = tmp_path / "tutors.jsonl"
    path.write_text("\n".join(tutor_line(t, f"N{i}") for i, t in enumerate(tokens)) + "\n")
    done = CliRunner().invoke(app, ["publish", str(path), "--redis", redis_url, "--prefix", prefix])
    assert done.exit_code == 0, done.output
    totals = Worker(streams, store, WorkerOptions(consumer="w1", block_ms=50)).run(burst=True)
    assert (totals["read"], totals["persisted"]) == (6, 6), totals
    stored = read_rows(store, "tutors")
    assert {k: r["name"] for k, r in stored.items()} == {t: f"N{i}" for i, t in enumerate(tokens)}


@pytest.mark.redis
def test_a_dead_letter_and_its_replay_keep_a_number_id_as_written(
    streams: Streams, store: Store
) -> None:
    """A session whose tutor_id is `1e2` (stored so: a tutor `1e2`) is dead-lettered while
    its tutor is missing; the dead letter wrote `100.0`, and the replay brought back a
    session of tutor `100.0`, missing its parent for ever. Both keep `1e2` now."""
    session = (
        '{"session_id": 5e0, "tutor_id": 1e2, "student_id": "st", '
        '"scheduled_start": "2024-11-07T14:00:00Z", "duration_minutes": 60, "subject": "Math"}'
    )
    xadd_raw(streams, "sessions", {"message": _raw_envelope(session, "sessions")})
    retry = RetryPolicy(max_attempts=1, base_ms=10, max_ms=40)
    options = WorkerOptions(consumer="w1", block_ms=50, retry=retry)
    assert Worker(streams, store, options).run(burst=True)["dead_lettered"] == 1
    (letter,) = streams.dead_letters()
    assert b'"tutor_id": 1e2' in letter.raw and b'"session_id": 5e0' in letter.raw
    xadd_raw(streams, "tutors", {"message": _raw_envelope(tutor_line("1e2"))})
    assert streams.replay(letter) is not None
    totals = Worker(streams, store, options).run(burst=True)
    assert (totals["persisted"], totals["dead_lettered"]) == (2, 0), totals
    assert read_rows(store, "sessions")["5e0"]["tutor_id"] == "1e2"
    assert set(read_rows(store, "tutors")) == {"1e2"}


@settings(max_examples=200, deadline=None)
@given(tokens=st.lists(NUMBER, min_size=1, max_size=4), text=st.text(max_size=5))
def test_an_envelope_of_data_as_written_keeps_each_number_and_a_valid_checksum(
    tokens: list[str], text: str
) -> None:
    """The envelope of a record read with its numbers as written (a dead letter, a replay,
    a JSON Lines record published) writes each number as it was read, and its checksum is
    the one a consumer computes from the body (SPEC §6)."""
    items = ", ".join(f'"n{i}": {t}' for i, t in enumerate(tokens))
    record = f'{{{items}, "nested": [{tokens[0]}, {{"x": {tokens[-1]}}}], "t": {json.dumps(text)}}}'
    data = data_as_written(record)
    assert data is not None
    text = envelope_text("sessions", data)
    env = parse_envelope(text.encode())  # Poison if the checksum is not the consumer's
    assert env["data"] == json.loads(record)
    assert data_as_written(text, "data") == data  # every token, nested ones too, as written
    assert data_as_written(dumps_as_written(data)) == data


@pytest.mark.redis
def test_dlq_drain_and_show_keep_each_number_as_the_stream_holds_it(
    tmp_path: Path, streams: Streams, store: Store, redis_url: str, prefix: str
) -> None:
    """Two dead letters whose ids are `1e2` and `100.0` (their tutor `1E2` missing): the
    stream holds them as written, but `dlq drain` wrote both as `100.0` into the file that
    is their only copy once drained, and `dlq show --json` showed `100.0`."""
    for sid in ("1e2", "100.0"):
        session = (
            f'{{"session_id": {sid}, "tutor_id": 1E2, "student_id": "st", "duration_minutes": '
            '60, "scheduled_start": "2024-11-07T14:00:00Z", "subject": "Math", "x": NaN}'
        )
        xadd_raw(streams, "sessions", {"message": _raw_envelope(session, "sessions")})
    retry = RetryPolicy(max_attempts=1, base_ms=10, max_ms=40)
    options = WorkerOptions(consumer="w1", block_ms=50, retry=retry)
    assert Worker(streams, store, options).run(burst=True)["dead_lettered"] == 2
    q = ["--redis", redis_url, "--prefix", prefix]
    first = next(iter(streams.dead_letters())).entry_id
    shown = CliRunner().invoke(app, ["dlq", "show", first, "--json", *q])
    assert shown.exit_code == 0, shown.output
    assert '"session_id": 1e2' in shown.stdout and '"tutor_id": 1E2' in shown.stdout
    assert '"x": "NaN"' in shown.stdout  # --json is strict JSON
    human = CliRunner().invoke(app, ["dlq", "show", first, *q])  # it showed 100.0
    assert human.exit_code == 0, human.output
    assert '"session_id": 1e2,' in human.stdout and '"tutor_id": 1E2,' in human.stdout
    assert '\n    "x": NaN' in human.stdout  # as the stream holds it, indented
    listed = CliRunner().invoke(app, ["dlq", "list", "--json", *q])
    assert '"session_id": 100.0' in listed.stdout and '"session_id": 1e2' in listed.stdout
    out = tmp_path / "drained.jsonl"
    drained = CliRunner().invoke(app, ["dlq", "drain", "--out", str(out), *q])
    assert drained.exit_code == 0, drained.output
    lines = out.read_text().splitlines()
    assert [loads_number_texts(line)["envelope"]["data"]["session_id"] for line in lines] == [
        "1e2", "100.0"
    ]  # fmt: skip
    assert all('"tutor_id": 1E2' in line and '"x": NaN' in line for line in lines)


@pytest.mark.redis
def test_a_foreign_dead_letter_that_is_no_object_keeps_its_numbers(
    tmp_path: Path, streams: Streams, redis_url: str, prefix: str
) -> None:
    """Someone else's dead letter whose message is JSON but no object (`1e2`, `[-0, 1.50]`):
    `list --json`, `show` and `drain` wrote it as `100.0` and `[0, 1.5]`."""
    for message in ("1e2", "[-0, 1.50]"):
        xadd_raw(streams, "dead_letter", {"message": message})
    q = ["--redis", redis_url, "--prefix", prefix]
    listed = CliRunner().invoke(app, ["dlq", "list", "--json", *q])
    assert listed.exit_code == 0, listed.output
    assert '"data": 1e2,' in listed.stdout and '"data": [-0, 1.50],' in listed.stdout
    first = next(iter(streams.dead_letters())).entry_id
    human = CliRunner().invoke(app, ["dlq", "show", first, *q])
    assert '"data": 1e2,' in human.stdout, human.output
    out = tmp_path / "drained.jsonl"
    drained = CliRunner().invoke(app, ["dlq", "drain", "--out", str(out), *q])
    assert drained.exit_code == 0, drained.output
    data = [loads_number_texts(x)["envelope"]["data"] for x in out.read_text().splitlines()]
    assert data == ["1e2", ["-0", "1.50"]]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, sort_keys=st.booleans(), indent=st.sampled_from([None, 0, 2, 4]))
def test_dumps_as_written_writes_as_json_dumps_does(
    value: object, sort_keys: bool, indent: int | None
) -> None:
    """Without numbers read as text, dumps_as_written is json.dumps (indented too: `dlq
    show`), so only the numbers' tokens differ."""
    expected = json.dumps(value, sort_keys=sort_keys, indent=indent, ensure_ascii=False)
    assert dumps_as_written(value, sort_keys=sort_keys, indent=indent) == expected
