"""Hostile dead letters and key names against `tutormax dlq …` and `tutormax stats`.

A dead letter is whatever is on the dead-letter stream: nested past any reader, numbers
out of range, metadata of every JSON type, data that looks like rich markup or emoji
codes, NaN. None of it may crash a command (exit 3), be changed on its way to stdout or
make --json print something that is not JSON; a full disk under `drain --out` names the
file and deletes nothing.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redisfixtures import redis_client, xadd_raw
from typer.testing import CliRunner

from tutormax_cli.cli import app
from tutormax_cli.queue.envelope import Message, checksum, envelope_text
from tutormax_cli.queue.letters import DeadLetter, DeadLetterRecord
from tutormax_cli.queue.streams import Streams

pytestmark = pytest.mark.redis


def _no_constants(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def strict_json(text: str) -> Any:
    return json.loads(text, parse_constant=_no_constants)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _dlq(streams: Streams, data: Any, meta: dict[str, Any] | str) -> str:
    """A dead letter as tutormax writes it, with `meta` (text: put as it is) for metadata."""
    body = envelope_text(streams.dead_letter_key, data, {"m": 1})
    if isinstance(meta, str):
        body = body.replace('"metadata": {"m": 1}', f'"metadata": {meta}')
    else:
        body = body.replace('"metadata": {"m": 1}', f'"metadata": {json.dumps(meta)}')
    return xadd_raw(streams, "dead_letter", {"message": body})


def _meta(streams: Streams, **extra: Any) -> dict[str, Any]:
    return {
        "source_stream": streams.stream("tutors"),
        "source_id": "1-0",
        "error": "missing_parent",
        "detail": [{"field": "tutor_id", "code": "x", "message": "m"}],
        "attempts": 1,
        **extra,
    }


def _args(redis_url: str, prefix: str) -> list[str]:
    return ["--redis", redis_url, "--prefix", prefix]


# -- 1: nested past reading, numbers out of range, metadata of any type ------------------

# Metadata values of every JSON type, as text (inf and NaN as Python's json reads them).
_ODD_VALUES = ["1e999", "-1e999", "NaN", "[1, 2]", '{"a": 1}', '"x"', "true", "null",
               "1.5", "-3", "9" * 4000, '"' + "9" * 5000 + '"', "[[[[[]]]]]"]  # fmt: skip


@pytest.mark.parametrize("value", _ODD_VALUES)
def test_every_metadata_accessor_reads_any_json_type(value: str) -> None:
    """Each metadata field holding any JSON value: every accessor answers, none raises."""
    keys = ("source_stream", "source_id", "error", "attempts", "detail", "raw_entry",
            "source_metadata", "replay_chain")  # fmt: skip
    meta = "{" + ", ".join(f'"{k}": {value}' for k in keys) + "}"
    raw = f'{{"data": {{"a": {value}}}, "metadata": {meta}}}'.encode()
    r = DeadLetterRecord.from_entry("1-0", {b"message": raw})
    assert isinstance(r.attempts, int)
    assert isinstance(r.error, str)
    assert r.source_id is None or isinstance(r.source_id, str)
    assert r.source_stream is None or isinstance(r.source_stream, str)
    assert isinstance(r.detail, list) and isinstance(r.raw_entry, bool)
    assert isinstance(r.source_metadata, dict) and isinstance(r.replay_chain, list)
    assert r.mark is None or isinstance(r.mark, str)
    str(r.attempts)  # shown in the table


@pytest.mark.parametrize("raw", ["[" * 200_000, "{" * 100_000, '{"a":' * 100 + "1" + "}" * 100])
def test_a_message_nested_past_reading_is_shown_as_the_raw_entry(raw: str) -> None:
    r = DeadLetterRecord.from_entry("1-0", {b"message": raw.encode(), b"x": b"y"})
    assert r.data == {"message": raw, "x": "y"}
    assert (r.error, r.attempts, r.source_stream, r.mark) == ("unknown", 0, None, None)


def test_commands_survive_deep_nesting_and_numbers_out_of_range(
    redis_url: str, prefix: str, streams: Streams, tmp_path: Path
) -> None:
    """`[` × 200,000 as a message, `"attempts": 1e999`, and valid JSON nested 300 and 600
    deep around a float (which the export reads again for its numbers as written: past
    Python's recursion that was exit 3): list, show, drain and stats all answer (exit 0),
    the deep ones shown as the raw entries they are."""
    deep = xadd_raw(streams, "dead_letter", {"message": "[" * 200_000})
    odd = _dlq(streams, {"tutor_id": "T1"}, json.dumps(_meta(streams)).replace('"attempts": 1',
               '"attempts": 1e999'))  # fmt: skip
    nested = [
        xadd_raw(
            streams,
            "dead_letter",
            {"message": '{"data": ' + "[" * n + "1.5" + "]" * n + ', "metadata": {}}'},
        )  # fmt: skip
        for n in (300, 600)
    ]
    args = _args(redis_url, prefix)
    listed = _cli("dlq", "list", "--json", *args)
    assert listed.exit_code == 0, listed.output
    doc = strict_json(listed.stdout)
    assert doc["total"] == 4
    assert doc["dead_letters"][0]["envelope"]["data"] == {"message": "[" * 200_000}
    table = _cli("dlq", "list", *args)
    assert table.exit_code == 0, table.output
    assert deep in table.stdout and odd in table.stdout
    for entry in (deep, odd, *nested):
        shown = _cli("dlq", "show", entry, "--json", *args)
        assert shown.exit_code == 0, shown.output
        assert strict_json(shown.stdout)["entry_id"] == entry
        assert _cli("dlq", "show", entry, *args).exit_code == 0
    db = f"sqlite:///{tmp_path / 'none.sqlite'}"
    stats = _cli("stats", "--json", "--db", db, *args)
    assert stats.exit_code == 0, stats.output
    assert strict_json(stats.stdout)["dead_letter"]["total"] == 4
    assert _cli("stats", "--db", db, *args).exit_code == 0
    out = tmp_path / "drained.jsonl"
    drained = _cli("dlq", "drain", "--out", str(out), *args)
    assert drained.exit_code == 0, drained.output
    lines = out.read_text().splitlines()
    assert [json.loads(ln)["entry_id"] for ln in lines] == [deep, odd, *nested]
    assert json.loads(lines[0])["envelope"]["data"] == {"message": "[" * 200_000}


# -- 2: replay with metadata fields of the wrong type ------------------------------------


def test_replay_takes_wrong_typed_history_as_absent(
    redis_url: str, prefix: str, streams: Streams
) -> None:
    """source_metadata "oops" or a list, replay_chain 5 or an object, attempts inf: each
    replays (those fields taken as absent), every one of them, and the counts are said."""
    odd = [
        {"source_metadata": "oops"},
        {"source_metadata": [1, 2]},
        {"replay_chain": 5},
        {"replay_chain": {"a": 1}, "replayed_from": 7},
        {"source_metadata": {"replay_chain": "x", "kept": True}, "attempts": 1e300},
    ]
    ids = [_dlq(streams, {"tutor_id": f"T{i}"}, _meta(streams, **m)) for i, m in enumerate(odd)]
    done = _cli("dlq", "replay", "--all", *_args(redis_url, prefix))
    assert done.exit_code == 0, done.output
    assert f"replayed {len(odd)} of {len(odd)} selected dead letters" in done.stderr
    assert streams.r.xlen(streams.dead_letter_key) == 0
    rows = streams.r.xrange(streams.stream("tutors"))
    metas = [json.loads(f[b"message"])["metadata"] for _, f in rows]
    assert [m["replay_chain"] for m in metas] == [[i] for i in ids]
    assert [m["replayed_from"] for m in metas] == ids
    assert metas[-1]["kept"] is True
    assert all(isinstance(m["previous_attempts"], int) for m in metas)


def test_dead_lettering_again_takes_wrong_typed_history_as_absent(streams: Streams) -> None:
    """A replayed record that fails again, its envelope's metadata hand-edited: inf
    previous_attempts, a replay_chain that is no list. Dead-lettered, not a crash."""
    for earlier in ({"previous_attempts": float("inf"), "replay_chain": 5},
                    {"previous_attempts": [1], "replay_chain": ["a"], "replayed_from": {}},
                    {"previous_attempts": "9" * 5000}):  # fmt: skip
        msg = Message("tutors", f"{len(str(earlier))}-0", {}, deliveries=2)
        letter = DeadLetter(msg, {"tutor_id": "T"}, "missing_parent", [], earlier)
        assert streams.dead_letter([letter]) == 1
    records = list(streams.dead_letters())
    assert [r.attempts for r in records] == [2, 2, 2]
    assert [r.replay_chain for r in records] == [[], ["a"], []]
    assert records[1].metadata()["replayed_from"] is None


# -- 3: stored text is never rich markup or emoji codes ----------------------------------


def test_data_and_names_are_printed_as_they_are_stored(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Data `[/]` and `:smile:`, a prefix `rev2:x:`: printed as they are, never as markup
    (a MarkupError was exit 3) or emoji (😄, ❌)."""
    pre = f"{prefix}rev2:x:"
    streams = Streams(redis_url, pre)
    try:
        meta = _meta(streams, detail=[{"field": "pad", "code": "x", "message": ":smile:"}])
        entry = _dlq(streams, {"tutor_id": "[/]", "pad": ":smile:"}, meta)
        bad = _dlq(streams, {"tutor_id": "[bold]", "pad": "[/bold]"}, meta)
        channel, source = streams.dead_letter_key, streams.stream("tutors")
    finally:
        streams.close()
    args = _args(redis_url, pre)
    listed = _cli("dlq", "list", *args)
    assert listed.exit_code == 0, listed.output
    assert "[/]" in listed.stdout and "[bold]" in listed.stdout
    assert ":smile:" in listed.stdout and "😄" not in listed.stdout
    shown = _cli("dlq", "show", entry, *args)
    assert shown.exit_code == 0, shown.output
    assert '"pad": ":smile:"' in shown.stdout and "😄" not in shown.stdout
    assert f'"channel": "{channel}"' in shown.stdout and "❌" not in shown.stdout
    assert '"tutor_id": "[bold]"' in _cli("dlq", "show", bad, *args).stdout
    stats = _cli("stats", "--db", f"sqlite:///{tmp_path / 'none.sqlite'}", *args)
    assert stats.exit_code == 0, stats.output
    assert f"dead letters in {channel}: 2" in stats.stdout and "❌" not in stats.stdout
    replay = _cli("dlq", "replay", "--all", "--dry-run", *args)
    assert replay.exit_code == 0, replay.output
    assert "❌" not in replay.stderr and f"{source} 2" in replay.stderr
    missing = _cli("dlq", "show", "1-1", *args)  # an error line names the stream as it is
    assert missing.exit_code != 0 and "Traceback" not in missing.output
    assert pre in missing.stderr and "❌" not in missing.stderr


def test_stats_reads_a_worker_counter_hash_of_junk(
    redis_url: str, prefix: str, streams: Streams, tmp_path: Path
) -> None:
    """The workers' counter hashes are Redis keys anyone may write: a count that is not a
    number (text, inf, a float too big for an int) reads as 0, never a ValueError (exit 3)."""
    client = redis_client()
    try:
        client.hset(streams.worker_key("junk"), mapping={"persisted": "lots", "read": "1e999",
                    "dead_lettered": "9" * 5000, "msgs_per_s": "inf"})  # fmt: skip
        client.expire(streams.worker_key("junk"), 60)
    finally:
        client.close()
    args = _args(redis_url, prefix)
    db = f"sqlite:///{tmp_path / 'none.sqlite'}"
    for extra in ([], ["--json"]):
        result = _cli("stats", "--db", db, *args, *extra)
        assert result.exit_code == 0, result.output
    worker = strict_json(result.stdout)["workers"]["junk"]
    assert (worker["persisted"], worker["read"], worker["dead_lettered"]) == (0, 0, 0)
    assert worker["msgs_per_s"] == 0.0


# -- 4: --json is strict JSON ---------------------------------------------------------


def test_json_output_is_strict_for_non_finite_numbers(
    redis_url: str, prefix: str, streams: Streams, tmp_path: Path
) -> None:
    """Data holding NaN and ±Infinity (Python's json reads them): --json writes them as
    the strings "NaN", "Infinity", "-Infinity", and every document parses strictly."""
    data = {"tutor_id": "T1", "a": float("nan"), "b": [float("inf"), {"c": float("-inf")}]}
    entry = _dlq(streams, data, _meta(streams, attempts=float("nan")))
    args = _args(redis_url, prefix)
    listed = _cli("dlq", "list", "--json", *args)
    assert listed.exit_code == 0, listed.output
    stored = strict_json(listed.stdout)["dead_letters"][0]["envelope"]
    assert stored["data"] == {"tutor_id": "T1", "a": "NaN", "b": ["Infinity", {"c": "-Infinity"}]}
    assert stored["metadata"]["attempts"] == "NaN"
    shown = _cli("dlq", "show", entry, "--json", *args)
    assert strict_json(shown.stdout)["envelope"]["data"]["a"] == "NaN"
    # `dlq show` and `dlq drain`'s file give the envelope as the stream holds it (Python's
    # JSON): nothing lost (a NaN is not the string "NaN"), and the checksum still holds. The
    # drained file is the dead letters' only copy.
    shown = _cli("dlq", "show", entry, *args)
    assert math.isnan(json.loads(shown.stdout)["data"]["a"])
    out = tmp_path / "drained.jsonl"
    drained = _cli("dlq", "drain", "--out", str(out), *args)
    assert drained.exit_code == 0, drained.output
    (line,) = out.read_text().splitlines()
    envelope = json.loads(line)["envelope"]
    assert math.isnan(envelope["data"]["a"]) and envelope["data"]["b"][0] == float("inf")
    assert envelope["checksum"] == checksum(envelope["data"])


# -- 5: a full disk under drain --out -------------------------------------------------

_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from tutormax_cli.cli import main
sys.argv = ["tutormax"] + sys.argv[2:]
main()
"""


def test_drain_on_a_full_disk_names_the_file_and_deletes_nothing(
    redis_url: str, prefix: str, streams: Streams, tmp_path: Path
) -> None:
    """A file-size limit stands in for a full disk: exit 2, one line naming the --out
    file, no traceback, no file (nor temporary file) left, every dead letter still there."""
    for i in range(20):
        _dlq(streams, {"tutor_id": f"T{i}", "pad": "x" * 2000}, _meta(streams))
    out = tmp_path / "drained.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED, "8192", "dlq", "drain", "--out", str(out),
         *_args(redis_url, prefix)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "nothing was deleted" in lines[0], lines
    assert list(tmp_path.iterdir()) == []
    client = redis_client()
    try:
        assert client.xlen(streams.dead_letter_key) == 20
    finally:
        client.close()


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["show"], ["show", "--json"]])
def test_a_lone_surrogate_in_a_dead_letter_is_shown_escaped(
    redis_url: str, prefix: str, streams: Streams, command: list[str]
) -> None:
    """JSON can hold a lone surrogate ("\\ud800"), so a record can, and the worker rightly
    dead-letters it (invalid_utf8). Printing it raised UnicodeEncodeError: `dlq list` and
    `dlq show` died with exit 3 on every later run. It is written as its escape, which in
    a JSON document is the same string."""
    entry = _dlq(streams, {"tutor_id": "t\ud800", "name": "a\udc00b"}, _meta(streams))
    args = [*command, entry] if command[0] == "show" else command
    proc = subprocess.run(
        [sys.executable, "-m", "tutormax_cli", "dlq", *args, *_args(redis_url, prefix)],
        capture_output=True, text=True, errors="strict", timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    if "--json" in command:
        doc = strict_json(proc.stdout)
        found = doc["dead_letters"][0] if command[0] == "list" else doc
        assert found["envelope"]["data"] == {"tutor_id": "t\ud800", "name": "a\udc00b"}
    else:
        assert "t\\ud800" in proc.stdout


def test_foreign_values_in_the_dead_letter_index_are_no_marks(
    redis_url: str, prefix: str, streams: Streams, tmp_path: Path
) -> None:
    """The index is a Redis hash anyone may write: a value that is no entry id made the
    worker and stats die with exit 3 (ValueError) once a dead letter existed; under a real
    source entry's mark it failed the dead-letter script. Neither a lost dead letter nor a
    live mark."""
    from dbfixtures import tutor
    from redisfixtures import publish

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert _cli("db", "init", "--db", db).exit_code == 0
    worker = [sys.executable, "-m", "tutormax_cli", "worker", "--burst", "--db", db,
              *_args(redis_url, prefix)]  # fmt: skip
    publish(streams, "tutors", [tutor(1, email="nope")])
    assert subprocess.run(worker, capture_output=True, timeout=60).returncode == 0
    publish(streams, "tutors", [tutor(2, email="nope")])
    entry = streams.r.xrange(streams.stream("tutors"))[-1][0].decode()
    streams.r.hset(
        streams.index_key,
        mapping={
            "foo": "garbage",
            f"{streams.stream('tutors')} {entry}": "not-an-id",
            "a": "1_000",
            "b": " 7",
            "c": "+5-0",
        },
    )  # fmt: skip  (int() takes these three)
    stats = _cli("stats", "--db", db, "--json", *_args(redis_url, prefix))
    assert stats.exit_code == 0, stats.output
    doc = strict_json(stats.stdout)["dead_letter"]
    assert doc["total"] == 1 and doc.get("lost", 0) == 0, doc
    again = subprocess.run(worker, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert streams.r.xlen(streams.dead_letter_key) == 2  # T2 dead-lettered despite the value
    assert streams.r.hget(streams.index_key, "a") == b"1_000"  # not swept as a lost one
