"""The feedback's session join on disk (session_join, spill): past parents.MEMORY_SESSIONS
sessions a --no-db run joins out of core, and must give every feedback row the start the
in-memory join gives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sessioncases import KEYS, VERSIONS, Kept, columns
from typer.testing import CliRunner

import tutormax_cli.parents as parents
import tutormax_cli.spill as spill
from tutormax_cli.cli import app
from tutormax_cli.keyhash import key_hashes
from tutormax_cli.parents import SessionStarts
from tutormax_cli.spill import Spill, hash_part

AS_OF = "2025-01-01T00:00:00Z"


def _weak_hash(ids: pa.Array) -> pa.Array:
    """A hash many keys share (their length): every key lands in one or two partitions, and
    distinct keys of one hash must still be told apart by the key itself."""
    return pa.compute.utf8_length(ids).cast(pa.int64()).fill_null(0)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_spill_gives_back_each_partition_in_append_order(data) -> None:
    parts = data.draw(st.sampled_from([1, 2, 8, 64]), label="parts")
    appends = data.draw(
        st.lists(st.lists(st.integers(0, parts - 1), max_size=40), max_size=6), label="appends"
    )
    store = Spill(pa.schema([("v", pa.int64())]), parts, buffer_rows=data.draw(st.integers(1, 50)))
    expected: dict[int, list[int]] = {p: [] for p in range(parts)}
    value = 0
    try:
        for where in appends:
            values = list(range(value, value + len(where)))
            value += len(where)
            for v, p in zip(values, where, strict=True):
                expected[p].append(v)
            store.append(pa.table({"v": pa.array(values, pa.int64())}), np.array(where, np.int64))
        for p in range(parts):
            assert store.read(p)["v"].to_pylist() == expected[p]
        assert store.rows == value
    finally:
        store.close()


def test_hash_part_takes_the_top_bits_of_every_hash() -> None:
    hashes = np.array([0, -1, np.iinfo(np.int64).min, np.iinfo(np.int64).max, 1 << 58], np.int64)
    assert hash_part(hashes, 64).tolist() == [0, 63, 32, 31, 1]
    assert hash_part(hashes, 1).tolist() == [0] * 5


@pytest.mark.parametrize("hash_keys", [key_hashes, _weak_hash], ids=["keyhash", "clashing"])
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_the_join_on_disk_matches_a_per_record_oracle(hash_keys, data) -> None:
    """Versions of a session across batches (with and without updated_at), the switch to
    disk at any point, feedback rows in batches with gaps (rows a pre-pass found invalid):
    each row gets the start of the version a database would keep, or null."""
    memory = SessionStarts(hash_keys, memory_sessions=data.draw(st.integers(0, 40), label="budget"))
    kept = Kept()
    for _ in range(data.draw(st.integers(1, 4), label="session batches")):
        batch = data.draw(st.lists(VERSIONS, max_size=30), label="sessions")
        kept.add(batch)
        memory.remember(*columns(batch))
    try:
        if not memory.on_disk:
            return  # the in-memory index has its own oracle test (test_pipeline)
        feedback = st.lists(st.lists(st.one_of(KEYS, st.none()), max_size=25), max_size=4)
        pos, batches = 0, []
        for rows in data.draw(feedback, label="feedback"):  # the pre-pass: valid ids, positions
            at = [pos + i for i, k in enumerate(rows) if k is not None]
            ids = [k for k in rows if k is not None]
            memory.probe(pa.array(ids, pa.string()), pa.array(at, pa.int64()))
            batches.append((ids, at))
            pos += len(rows) + data.draw(st.integers(0, 3), label="gap")
        memory.join()
        for ids, at in batches:
            rows = memory.for_rows(pa.array(ids, pa.string()), pa.array(at, pa.int64()))
            asked = data.draw(st.lists(st.sampled_from(ids), max_size=10)) if ids else []
            assert rows.lookup(pa.array(asked, pa.string())).to_pylist() == kept.starts(asked)
    finally:
        memory.close()


# -- whole runs -------------------------------------------------------------------------------


def _generate(out: Path) -> dict[str, Path]:
    result = CliRunner().invoke(
        app,
        ["generate", "--out", str(out), "--sessions", "3000", "--feedback", "4000", "--seed", "3"],
    )
    assert result.exit_code == 0, result.output
    return {k: out / f"{k}.csv" for k in ("tutors", "sessions", "feedback")}


def _hostile_extras(tmp: Path) -> tuple[Path, Path]:
    """A second sessions file with newer and older versions of known sessions, and a second
    feedback file (JSON Lines) naming those, unknown sessions and invalid ids."""
    sessions = tmp / "more_sessions.csv"
    sessions.write_text(
        "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject,updated_at\n"
        + "".join(
            f"S{i:06d},T{1 + i % 50:05d},st1,2024-0{1 + i % 9}-10T10:00:00Z,60,Math,"
            f"2030-01-0{1 + i % 2}T00:00:00Z\n"
            for i in range(1, 400, 7)
        )
    )
    feedback = tmp / "more_feedback.jsonl"
    rows = []
    for i, sid in enumerate(
        [f"S{i:06d}" for i in range(1, 400, 3)] + ["nope", "", None, "S999999"]
    ):
        rows.append(
            {
                "feedback_id": f"X{i}",
                "session_id": sid,
                "student_id": "st1",
                "tutor_id": "T00001",
                "overall_rating": 1 + i % 5,
                "submitted_at": "2024-12-01T00:00:00Z",
            }
        )
    feedback.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sessions, feedback


def _run(paths: list[Path], out: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["enrich", *map(str, paths), "--out", str(out), "--no-db", "--as-of", AS_OF, "--json"]
    )
    return result.exit_code, result.stdout


def test_a_run_past_the_memory_budget_writes_what_an_in_memory_run_writes(
    tmp_path, monkeypatch
) -> None:
    data = _generate(tmp_path / "data")
    more_sessions, more_feedback = _hostile_extras(tmp_path)
    paths = [data["sessions"], more_sessions, data["feedback"], more_feedback]
    in_memory = _run(paths, tmp_path / "memory")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(parents, "MEMORY_SESSIONS", 100)
    monkeypatch.setattr(spill, "BUFFER_ROWS", 64)  # many writes a partition
    on_disk = _run(paths, tmp_path / "disk")
    assert on_disk[0] == in_memory[0] == 1  # the hostile rows are rejected
    assert _summary(on_disk[1]) == _summary(in_memory[1])
    for name in ("feedback.csv", "more_feedback.jsonl"):
        a = _rows(tmp_path / "memory" / name)
        b = _rows(tmp_path / "disk" / name)
        assert a == b
        assert any(r["feedback_delay_hours"] is not None for r in a)
    delays = [r["feedback_delay_hours"] for r in _rows(tmp_path / "disk" / "more_feedback.jsonl")]
    assert None in delays  # unknown sessions find no start
    assert list(temp.iterdir()) == []  # the spill is gone with the run


def _summary(stdout: str) -> list[dict]:
    files = json.loads(stdout)["files"]
    return [
        {k: v for k, v in f.items() if k not in ("seconds", "output", "rows_per_s")} for f in files
    ]


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import csv

    with path.open(newline="") as f:
        return [{k: (None if v == "" else v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_a_full_disk_under_the_join_is_a_clear_error(tmp_path) -> None:
    """The spill cannot be written (a file-size limit stands in for a full disk): exit 2,
    a message naming the temporary folder, no traceback, no temporary file left."""
    data = _generate(tmp_path / "data")
    temp = tmp_path / "temp"
    temp.mkdir()
    driver = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
        "import tutormax_cli.parents as p\n"
        "p.MEMORY_SESSIONS = 10\n"
        "from tutormax_cli.cli import main\n"
        "sys.argv = ['tutormax'] + sys.argv[1:]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            driver,
            "enrich",
            str(data["sessions"]),
            str(data["feedback"]),
            "--no-db",
            "--as-of",
            AS_OF,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"temporary files in {temp}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(temp.iterdir()) == []


def test_a_burst_of_ctrl_c_during_cleanup_still_removes_the_spill(tmp_path, monkeypatch) -> None:
    """Interrupts landing while a spill's files are removed (a held Ctrl-C repeats every
    ~30 ms) do not leave a half-deleted folder: SIGALRM every 2 ms raises KeyboardInterrupt
    inside the cleanup of 4,096 files."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parts = 4096  # a file a partition: a cleanup of some tens of milliseconds
    store = Spill(pa.schema([("v", pa.int64())]), parts)
    store.append(pa.table({"v": pa.array(range(parts), pa.int64())}), np.arange(parts))
    store.read(0)
    inside, fired = [False], [0]
    original = Spill._close

    def watched_close(self: Spill) -> None:
        inside[0] = True
        try:
            original(self)
        finally:
            inside[0] = False

    def handler(signum: int, frame: object) -> None:
        if inside[0]:
            fired[0] += 1
            raise KeyboardInterrupt

    monkeypatch.setattr(Spill, "_close", watched_close)
    # An interrupt that lands in a finalizer run meanwhile (a weakref callback, a __del__)
    # is "unraisable": Python reports it and goes on, as it would in a real run. Reported to
    # pytest's hook, the storm interrupted the hook itself and failed the test (CI, once).
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)
    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
    try:
        store.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired[0] > 0  # the interrupts did land inside the cleanup
    assert list(tmp_path.iterdir()) == []


def test_the_session_pre_pass_stops_when_asked(tmp_path) -> None:
    """Ctrl-C during the feedback pre-pass ends it at the next batch, not after the file."""
    from datetime import UTC, datetime

    from tutormax_cli.files.plan import EnrichOptions, open_sources
    from tutormax_cli.files.prepass import join_sessions

    data = _generate(tmp_path / "data")
    opts = EnrichOptions([data["feedback"]], as_of=datetime(2025, 1, 1, tzinfo=UTC))
    sessions = SessionStarts(memory_sessions=0)
    sessions.remember(pa.array(["S1"]), pa.array([0], pa.timestamp("us", tz="UTC")))
    asked = iter([False, False, True])
    try:
        with pytest.raises(KeyboardInterrupt):
            join_sessions(sessions, open_sources(opts), 100, lambda: next(asked))
    finally:
        sessions.close()
