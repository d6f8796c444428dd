"""Envelopes, publish and the dead-letter commands (list, show, replay, drain) on a real Redis."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redisfixtures import dead_letters, producer_envelope, redis_client, xadd_raw
from typer.testing import CliRunner

from tutormax_cli.cli import app
from tutormax_cli.queue.envelope import (
    MESSAGE_MAX_BYTES,
    Message,
    Poison,
    checksum,
    envelope_text,
    parse_envelope,
    wire_bytes,
)
from tutormax_cli.queue.letters import DeadLetter
from tutormax_cli.queue.streams import Streams

SESSION = {"session_id": "S1", "tutor_id": "T1", "student_id": "st1", "duration_minutes": 60,
           "scheduled_start": "2024-11-07T14:00:00Z", "subject": "Math"}  # fmt: skip


def cli(*args: str | Path, redis: str, prefix: str) -> tuple[int, str, str]:
    argv = [str(a) for a in args] + ["--redis", redis, "--prefix", prefix]
    result = CliRunner().invoke(app, argv)
    return result.exit_code, result.stdout, result.stderr


# -- envelopes ---------------------------------------------------------------------------------


def test_checksum_is_sha256_of_sorted_json() -> None:
    data = {"b": 1, "a": "Zoë", "c": [1, 2]}
    expected = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    assert checksum(data) == expected


def test_a_tutormax_producer_envelope_is_read_unchanged() -> None:
    data = {"tutor_id": "T001", "name": "Zoë Smith", "subjects": ["Math"], "tenure_days": 3}
    raw = producer_envelope("tutormax:tutors", data, {"source": "api"})
    env = parse_envelope(raw.encode())
    assert env["data"] == data
    assert env["metadata"] == {"source": "api"}
    # a producer that sends no metadata at all is fine too
    no_meta = json.loads(raw)
    del no_meta["metadata"]
    assert parse_envelope(json.dumps(no_meta))["data"] == data


def test_our_envelope_has_every_field_and_a_valid_checksum() -> None:
    data = {"session_id": "S1", "note": "naïve ☕", "n": 1.5, "ok": True, "none": None}
    env = json.loads(envelope_text("tutormax:sessions", data, {"row": 3}))
    assert set(env) == {"id", "timestamp", "channel", "data", "metadata", "checksum"}
    assert env["channel"] == "tutormax:sessions"
    assert env["data"] == data
    assert env["checksum"] == checksum(data)
    assert parse_envelope(envelope_text("x", data))["data"] == data


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), _VALUES, max_size=6), st.dictionaries(st.text(), _VALUES))
def test_any_envelope_we_write_goes_on_the_wire_and_reads_back_with_its_checksum(
    data: dict[str, Any], metadata: dict[str, Any]
) -> None:
    """Text beyond ASCII goes as UTF-8 (smaller than its escapes), a lone surrogate, which
    UTF-8 cannot hold, escaped: every envelope encodes for Redis, its size is its bytes,
    and it reads back to the same data, its checksum Python's sorted dump's. The metadata
    too (review: it was escaped, and a dead letter of a message whose metadata held emoji
    was 3× the message, its replay over the cap)."""
    text = envelope_text("tutormax:sessions", data, metadata)
    raw = text.encode()  # what redis-py sends: strict UTF-8
    assert wire_bytes(text) == len(raw)
    env = parse_envelope(raw)
    assert env["data"] == data and env["checksum"] == checksum(data)
    assert env["metadata"] == metadata
    utf8 = json.dumps(metadata, ensure_ascii=False)
    if _utf8_ok(utf8):
        assert utf8 in text


def _utf8_ok(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


GOOD = json.loads(envelope_text("tutormax:sessions", SESSION))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"not json", "not JSON", id="not-json"),
        pytest.param(b'{"data": "\xff"}', "not valid UTF-8", id="invalid-utf8"),
        pytest.param(b"[1, 2]", "not a JSON object", id="array"),
        pytest.param(json.dumps({"data": {}}).encode(), "lacks id, timestamp", id="missing-keys"),
        pytest.param(json.dumps({**GOOD, "data": [1]}).encode(), "data is not", id="data-list"),
        pytest.param(
            json.dumps({**GOOD, "data": {**SESSION, "subject": "Art"}}).encode(),
            "checksum does not match",
            id="tampered",
        ),
        pytest.param(json.dumps({**GOOD, "metadata": 3}).encode(), "metadata", id="bad-metadata"),
    ],
)
def test_poison_messages_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(Poison, match=reason):
        parse_envelope(raw)


def test_message_over_the_cap_is_poison_unread() -> None:
    huge = envelope_text("x", {"blob": "x" * 2000})
    with pytest.raises(Poison, match="over the 1000-byte cap"):
        parse_envelope(huge, max_bytes=1000)
    assert parse_envelope(huge)["data"]["blob"] == "x" * 2000  # the default cap is 1 MiB


# -- publish -----------------------------------------------------------------------------------


TUTORMAX = str(Path(sys.executable).with_name("tutormax"))


@pytest.mark.redis
def test_publish_pipelines_fresh_envelopes(streams: Streams) -> None:
    n = streams.publish("sessions", (({**SESSION, "session_id": f"S{i}"}, {"row": i})
                                     for i in range(2500)))  # fmt: skip
    assert n == 2500
    client = redis_client()
    try:
        entries = client.xrange(streams.stream("sessions"), count=3000)
    finally:
        client.close()
    assert len(entries) == 2500
    envs = [parse_envelope(f[b"message"]) for _, f in entries]
    assert [e["data"]["session_id"] for e in envs[:3]] == ["S0", "S1", "S2"]
    assert envs[7]["metadata"] == {"row": 7}
    assert {e["channel"] for e in envs} == {streams.stream("sessions")}
    assert len({e["id"] for e in envs}) == 2500


@pytest.mark.redis
def test_publish_command_reads_files_parents_first(
    tmp_path: Path, redis_url: str, prefix: str, streams: Streams
) -> None:
    tutors = tmp_path / "tutors.csv"
    tutors.write_bytes(
        b"tutor_id,name,email,onboarding_date,status,subjects\n"
        b"T1,Ann,ann@x.org,2024-01-15,active,Math;SAT\n"
        b"T2,B\xffb,bob@x.org,2024-01-15,active,Math\n"  # invalid UTF-8: cannot travel as JSON
        b"T3,Cy,cy@x.org,2024-01-15,active\n"  # malformed
    )
    sessions = tmp_path / "sessions.jsonl"
    sessions.write_text(json.dumps(SESSION) + "\n")
    code, out, err = cli("publish", sessions, tutors, "--json", redis=redis_url, prefix=prefix)
    assert code == 1, err  # some rows skipped
    summary = json.loads(out)
    assert [f["kind"] for f in summary["files"]] == ["tutors", "sessions"]
    assert (summary["published"], summary["skipped"]) == (2, 2)
    assert summary["files"][0]["problems"] == [
        "row 2: name: not valid UTF-8",
        "row 3: expected 6 fields, found 5",
    ]  # in order
    envs = [env for _, env in _entries(streams, "tutors")]
    assert envs[0]["data"]["subjects"] == "Math;SAT"
    assert envs[0]["metadata"] == {"source": "tutormax publish", "file": "tutors.csv", "row": 1}
    assert [env["data"] for _, env in _entries(streams, "sessions")] == [SESSION]


@pytest.mark.redis
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_publish_skips_a_record_whose_message_would_be_over_the_cap(
    tmp_path: Path, redis_url: str, prefix: str, streams: Streams, fmt: str
) -> None:
    """A record whose envelope would be over MESSAGE_MAX_BYTES was published (exit 0), and
    every worker then dead-lettered it as poison: it is skipped and counted (exit 1), with
    its row and size, like any record that cannot travel; the rest are published. Escapes
    count: 400k quotes are 800k bytes of JSON. Text beyond ASCII travels as UTF-8: 300k
    'é' are 600 KB (as ASCII escapes, 1.8 MB: it was skipped before)."""
    big = {"T2": "A" * 1_100_000, "T3": '"' * 400_000, "T4": "é" * 300_000}
    rows = [("T1", "Ann"), *big.items(), ("T5", "Eve")]
    path = tmp_path / f"tutors.{fmt}"
    if fmt == "csv":
        lines = ['"' + v.replace('"', '""') + '"' for _, v in rows]
        path.write_text("tutor_id,name,email,onboarding_date,status,subjects\n" + "".join(
            f"{k},{n},a@b.org,2024-01-15,active,Math\n" for (k, _), n in zip(rows, lines,
            strict=True)))  # fmt: skip
    else:
        path.write_text("".join(json.dumps({"tutor_id": k, "name": v, "email": "a@b.org",
            "onboarding_date": "2024-01-15", "status": "active", "subjects": "Math"}) + "\n"
            for k, v in rows))  # fmt: skip
    code, out, err = cli("publish", path, "--json", redis=redis_url, prefix=prefix)
    assert code == 1, err
    summary = json.loads(out)
    assert (summary["published"], summary["skipped"]) == (4, 1)
    problems = summary["files"][0]["problems"]
    assert [p.split(":")[0] for p in problems] == ["row 2"]
    assert all("over the 1,048,576-byte cap" in p for p in problems)
    envs = [env for _, env in _entries(streams, "tutors")]
    assert [e["data"]["tutor_id"] for e in envs] == ["T1", "T3", "T4", "T5"]
    assert envs[2]["data"]["name"] == big["T4"]


@pytest.mark.redis
@pytest.mark.parametrize("key", ["tutors:enrichment", "dead_letter", "dead_letter:sources"])
def test_a_key_of_another_type_where_tutormax_writes_is_named(
    tmp_path: Path, redis_url: str, prefix: str, key: str
) -> None:
    """A string (another program's key) where a stream goes: the worker said Redis's
    WRONGTYPE, named no key, and claimed a batch was pending when it had none."""
    client = redis_client()
    try:
        client.set(f"{prefix}{key}", "x")
        if key != "tutors:enrichment":  # the dead-letter keys are met when one is written
            client.xadd(f"{prefix}tutors:enrichment", {"message": "not json"})
    finally:
        client.close()
    proc = subprocess.run([TUTORMAX, "worker", "--burst", "--redis", redis_url, "--prefix",
                           prefix, "--db", f"sqlite:///{tmp_path / 't.db'}"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    kind = "hash" if key.endswith("sources") else "stream"
    assert f"{prefix}{key} holds a string, not a {kind}" in proc.stderr
    assert "choose another --prefix or --streams" in proc.stderr
    if key == "tutors:enrichment":
        assert "pending" not in proc.stderr  # no batch was read


@pytest.mark.redis
def test_unreachable_redis_is_exit_2_with_the_password_masked(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps(SESSION) + "\n")
    code, _, err = cli("publish", f, redis="redis://u:s3cret@127.0.0.1:1/0", prefix="tmtest:x:")
    assert code == 2
    assert "redis://u:***@127.0.0.1:1/0" in err
    assert "s3cret" not in err


def test_every_queue_command_help_has_an_example() -> None:
    for cmd in (["publish"], ["worker"], ["stats"], ["dlq", "list"], ["dlq", "show"],
                ["dlq", "replay"], ["dlq", "drain"]):  # fmt: skip
        result = CliRunner().invoke(app, [*cmd, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.stdout, cmd


# -- dead letters ------------------------------------------------------------------------------


def _entries(streams: Streams, kind: str) -> list[tuple[str, dict[str, Any]]]:
    client = redis_client()
    try:
        rows = client.xrange(streams.stream(kind))
    finally:
        client.close()
    return [(i.decode(), json.loads(f[b"message"])) for i, f in rows]


def _letter(kind: str, entry_id: str, error: str = "validation", **data: Any) -> DeadLetter:
    record = {**SESSION, **data}
    detail = [{"field": "subject", "code": "blank", "message": "must not be blank"}]
    return DeadLetter(Message(kind, entry_id, {}, 2), record, error, detail, {"row": 9})


@pytest.mark.redis
def test_dead_letter_is_written_once_per_source_entry(streams: Streams) -> None:
    letters = [_letter("sessions", "1-0"), _letter("sessions", "1-1", "missing_parent")]
    assert streams.dead_letter(letters) == 2
    assert streams.dead_letter(letters) == 0  # a worker killed before its ACK writes again
    entries = dead_letters(streams)
    assert len(entries) == 2
    meta = entries[0][1]["metadata"]
    assert meta["source_stream"] == streams.stream("sessions")
    assert (meta["source_id"], meta["error"], meta["attempts"]) == ("1-0", "validation", 2)
    assert meta["detail"][0]["code"] == "blank"
    assert meta["failed_at"].endswith("+00:00")
    assert entries[0][1]["data"] == SESSION
    assert entries[0][1]["checksum"] == checksum(SESSION)


@pytest.mark.redis
def test_dlq_list_and_show(streams: Streams, redis_url: str, prefix: str) -> None:
    streams.dead_letter([_letter("sessions", "1-0"), _letter("tutors", "2-0", "poison"),
                         _letter("sessions", "3-0", "missing_parent")])  # fmt: skip
    code, out, _ = cli("dlq", "list", "--json", redis=redis_url, prefix=prefix)
    assert code == 0
    assert json.loads(out)["total"] == 3
    code, out, _ = cli("dlq", "list", "--kind", "sessions", "--error", "missing_parent",
                       "--json", redis=redis_url, prefix=prefix)  # fmt: skip
    listed = json.loads(out)["dead_letters"]
    assert [d["envelope"]["metadata"]["source_id"] for d in listed] == ["3-0"]
    code, out, _ = cli("dlq", "list", redis=redis_url, prefix=prefix)
    assert code == 0 and "dead letters (3 of 3)" in out  # results on stdout (SPEC §7)
    entry_id = listed[0]["entry_id"]
    code, out, _ = cli("dlq", "show", entry_id, "--json", redis=redis_url, prefix=prefix)
    assert code == 0
    assert json.loads(out)["envelope"]["metadata"]["error"] == "missing_parent"
    code, _, err = cli("dlq", "show", "9-9", redis=redis_url, prefix=prefix)
    assert code == 2 and "no dead letter 9-9" in err


@pytest.mark.redis
def test_replay_requeues_with_a_fresh_envelope_once(
    streams: Streams, redis_url: str, prefix: str
) -> None:
    streams.dead_letter([_letter("sessions", "1-0"), _letter("sessions", "1-1")])
    first, second = (i for i, _ in dead_letters(streams))
    code, out, _ = cli("dlq", "replay", first, "--json", redis=redis_url, prefix=prefix)
    assert code == 0
    assert json.loads(out)["replayed"] == 1
    (new_id, env), = _entries(streams, "sessions")  # fmt: skip
    assert env["data"] == SESSION
    assert env["checksum"] == checksum(SESSION)
    assert env["channel"] == streams.stream("sessions")
    assert env["metadata"] == {
        "row": 9,
        "replayed_from": first,
        "replay_chain": [first],
        "previous_attempts": 2,
    }
    assert [i for i, _ in dead_letters(streams)] == [second]
    # replaying the same id again finds nothing and doubles nothing
    code, out, _ = cli("dlq", "replay", first, "--json", redis=redis_url, prefix=prefix)
    assert code == 1
    assert json.loads(out)["not_found"] == [first]
    assert len(_entries(streams, "sessions")) == 1
    # and a replayed record can be dead-lettered again under its new entry id
    assert streams.dead_letter([_letter("sessions", new_id)]) == 1


@pytest.mark.redis
def test_a_replay_over_the_message_cap_is_left_in_place_and_utf8_text_stays_utf8(
    streams: Streams, redis_url: str, prefix: str
) -> None:
    """A record whose replay would be over the 1 MiB cap was replayed, taken for poison by
    the worker and lost (its poison dead letter keeps 64 KiB of it, and no replay takes a
    raw entry); 600 KB of CJK text came back at 1.2 MB, each character escaped as six
    bytes (the review of 2026-12-07). Text beyond ASCII is sent as UTF-8 now, and a replay
    still over the cap stays a dead letter, said so (exit 1)."""
    cjk = "漢" * 200_000  # 600 KB as UTF-8, 1.2 MB escaped
    near = "a" * (MESSAGE_MAX_BYTES - 200)  # under the cap alone; not with the envelope
    streams.dead_letter(
        [_letter("sessions", "1-0", note=cjk), _letter("sessions", "1-1", note=near)]
    )
    first, second = (i for i, _ in dead_letters(streams))
    code, out, _ = cli("dlq", "replay", "--all", "--json", redis=redis_url, prefix=prefix)
    result = json.loads(out)
    assert code == 1 and result["replayed"] == 1
    assert list(result["left"].values()) == [[second]]
    assert "over the 1,048,576-byte message cap" in next(iter(result["left"]))
    assert [i for i, _ in dead_letters(streams)] == [second]
    client = redis_client()
    try:
        ((_, fields),) = client.xrange(streams.stream("sessions"))
    finally:
        client.close()
    assert len(fields[b"message"]) < 700_000
    assert parse_envelope(fields[b"message"])["data"]["note"] == cjk  # its checksum holds


@pytest.mark.redis
def test_replay_leaves_unknown_sources_and_raw_poison_in_place(
    streams: Streams, redis_url: str, prefix: str
) -> None:
    streams.dead_letter([_letter("sessions", "1-0")])
    poison = DeadLetter(Message("tutors", "2-0", {}), {"message": "garbage"}, "poison", [],
                        raw_entry=True)  # fmt: skip
    streams.dead_letter([poison])
    xadd_raw(
        streams,
        "dead_letter",
        {
            "message": envelope_text(
                "x",
                SESSION,
                {"source_stream": "elsewhere:sessions", "source_id": "5-0", "error": "validation"},
            )
        },
    )
    code, out, _ = cli("dlq", "replay", "--all", "--dry-run", "--json", redis=redis_url,
                       prefix=prefix)  # fmt: skip
    dry = json.loads(out)
    assert code == 1 and dry["replayed"] == 0
    assert dry["histogram"]["by_error"] == {"poison": 1, "validation": 2}
    assert len(dead_letters(streams)) == 3 and not _entries(streams, "sessions")
    code, out, _ = cli("dlq", "replay", "--all", "--json", redis=redis_url, prefix=prefix)
    result = json.loads(out)
    assert code == 1 and result["replayed"] == 1
    assert sorted(result["left"]) == ["poison: a raw entry, no record to replay",
                                      "unknown source stream 'elsewhere:sessions'"]  # fmt: skip
    assert len(dead_letters(streams)) == 2
    code, _, err = cli("dlq", "replay", redis=redis_url, prefix=prefix)
    assert code == 2 and "--all" in err


@pytest.mark.redis
def test_a_dead_letter_replayed_while_drain_exports_it_is_not_kept_as_drained(
    streams: Streams, tmp_path: Path
) -> None:
    """Another shell replays dead letter A while drain exports A and B: drain deleted B
    alone, said nothing, left A in its file as drained (A, failing again, was exported
    twice) and wrote `drained:` over A's replay mark (the review of 2026-12-07). Now its
    file holds B alone, it names A as gone, and A's mark still says replayed."""
    from tutormax_cli.queue import dlq

    streams.dead_letter([_letter("sessions", "1-0"), _letter("sessions", "1-1")])
    a, b = (i for i, _ in dead_letters(streams))
    asked = [0]

    def stop() -> bool:  # asked before each dead letter is written to the file
        asked[0] += 1
        if asked[0] == 2:  # A is in the file already
            assert dlq.replay(streams, dlq.Selection(ids=(a,))).complete
        return False

    out = tmp_path / "dead.jsonl"
    summary = dlq.drain(streams, dlq.Selection(all=True), out, stop=stop)
    assert [json.loads(x)["entry_id"] for x in out.read_text().splitlines()] == [b]
    assert (summary["written"], summary["deleted"], summary.get("gone")) == (1, 1, [a])
    assert dead_letters(streams) == []
    marks = {k.decode(): v.decode() for k, v in streams.r.hgetall(streams.index_key).items()}
    assert sorted(v.split(":")[0] for v in marks.values()) == ["drained", "replayed"]
    assert len(_entries(streams, "sessions")) == 1  # A, replayed


@pytest.mark.redis
def test_drain_writes_the_file_before_deleting(
    streams: Streams, redis_url: str, prefix: str, tmp_path: Path, monkeypatch: Any
) -> None:
    streams.dead_letter([_letter("sessions", f"1-{i}") for i in range(1500)])
    out = tmp_path / "dead.jsonl"
    seen_at_delete: list[int] = []
    real_delete = Streams.delete_dead_letters

    def delete_after_checking(self: Streams, entries: list) -> list[str]:
        seen_at_delete.append(len(out.read_text().splitlines()))  # the file is complete already
        return real_delete(self, entries)

    monkeypatch.setattr(Streams, "delete_dead_letters", delete_after_checking)
    code, stdout, _ = cli("dlq", "drain", "--out", out, "--json", redis=redis_url, prefix=prefix)
    assert code == 0
    assert json.loads(stdout) | {"out": None} == {
        "out": None,
        "written": 1500,
        "deleted": 1500,
        "gone": [],
        "too_big": [],
        "dead_letter_stream": f"{prefix}dead_letter",
    }
    assert seen_at_delete == [1500, 1500]  # two chunks (1,000 + 500), the file whole at each
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["envelope"]["data"] == SESSION
    assert dead_letters(streams) == []
    # Their marks stay, as `drained:`: the same source entries, delivered again (a group
    # recreated reads its stream from the start), are not dead-lettered a second time.
    assert streams.dead_letter([_letter("sessions", "1-0")]) == 0
    assert streams.dead_letter([_letter("sessions", "2-0")]) == 1
    # drain never overwrites a file
    code, _, err = cli("dlq", "drain", "--out", out, redis=redis_url, prefix=prefix)
    assert code == 2 and "exists already" in err
    assert len(dead_letters(streams)) == 1
    # nor writes a file named '-' (it did): - is no file it can fsync before deleting
    code, _, err = cli("dlq", "drain", "--out", "-", redis=redis_url, prefix=prefix)
    assert code == 2 and "--out -" in err and not Path("-").exists()
    assert len(dead_letters(streams)) == 1
