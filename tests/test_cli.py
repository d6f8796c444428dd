"""The command line a user expects (SPEC §7), through the installed `tutormax` command in a
subprocess: --version, -h everywhere, completion, choices and metavars in --help, results on
stdout and people's output on stderr, a summary that never cuts a number at 80 columns,
Ctrl-C that says exactly what was committed, a dry run that says where things would go."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
SAMPLE = Path(__file__).parent.parent / "sample_data"
AS_OF = "2024-11-09T12:00:00Z"
COMMANDS = [
    ["enrich"], ["generate"], ["publish"], ["worker"], ["stats"], ["db"], ["db", "init"],
    ["dlq"], ["dlq", "list"], ["dlq", "show"], ["dlq", "replay"], ["dlq", "drain"],
]  # fmt: skip


def tm(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TUTORMAX, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env={**os.environ, **env},
    )  # fmt: skip


def test_version_comes_from_the_package_metadata() -> None:
    for flag in ("--version", "-V"):
        done = tm(flag)
        assert done.returncode == 0
        assert done.stdout.strip() == f"tutormax {version('tutormax')}"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_h_works_everywhere(command: list[str]) -> None:
    done = tm(*command, "-h")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: tutormax")


def test_shell_completion_is_typers() -> None:
    done = tm("--show-completion", "bash")
    assert done.returncode == 0 and "complete" in done.stdout


def test_help_lists_choices_and_readable_metavars() -> None:
    enrich = tm("enrich", "-h").stdout
    assert "Usage: tutormax enrich [OPTIONS] PATH..." in enrich
    assert "<tutors|sessions|feedback>" in enrich and "<csv|parquet|jsonl>" in enrich
    assert "<list[" not in enrich and "{PATH" not in enrich
    replay = tm("dlq", "replay", "-h").stdout
    assert "Usage: tutormax dlq replay [OPTIONS] [ID...]\n" in replay
    assert "<validation|missing_parent|poison|database>" in replay
    assert "Usage: tutormax dlq show [OPTIONS] ID\n" in tm("dlq", "show", "-h").stdout
    worker = tm("worker", "-h").stdout
    assert "<debug|info|warning|error>" in worker and "<text|json>" in worker
    assert "-v, --verbose" in worker and "-q, --quiet" in worker


def test_enrich_results_summary_on_stderr_and_json_alone_on_stdout(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    files = [str(SAMPLE / "tutors.csv"), str(SAMPLE / "bad" / "tutors.csv")]
    human = tm("enrich", *files, "--db", db, "--as-of", AS_OF, cwd=tmp_path)
    assert human.returncode == 1 and human.stdout == ""
    assert "tutormax enrich" in human.stderr and "total" in human.stderr
    assert "rejected rows by error:" in human.stderr
    doc = tm("enrich", *files, "--db", db, "--as-of", AS_OF, "--json", cwd=tmp_path)
    summary = json.loads(doc.stdout)  # exactly one document
    assert doc.stderr == ""
    assert summary["rejected_by_code"]["invalid_email"] == 2
    assert {"duplicates", "rows_per_s", "rejected_by_code"} <= set(summary["files"][0])
    quiet = tm("enrich", files[0], "--db", db, "--as-of", AS_OF, "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == quiet.stderr == ""


def test_the_summary_never_cuts_a_number_at_80_columns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    gen = tm("generate", "--out", str(data), "--tutors", "50", "--sessions", "123456",
             "--feedback", "0")  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    inputs = [str(data / "tutors.csv"), str(data / "sessions.csv")]
    for columns in ("80", "60"):
        done = tm("enrich", *inputs, "--db", db, "--as-of", AS_OF, COLUMNS=columns)
        assert done.returncode == 0, done.stderr
        assert "123,456" in done.stderr and "123,506" in done.stderr  # sessions, total
        assert "…" not in done.stderr
        assert all(len(line) <= int(columns) for line in done.stderr.splitlines())


def test_ctrl_c_says_what_each_file_committed_and_exits_130(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert tm("generate", "--out", str(data), "--tutors", "50", "--sessions", "150000",
              "--feedback", "0").returncode == 0  # fmt: skip
    db_file = tmp_path / "db.sqlite"
    proc = subprocess.Popen(
        [TUTORMAX, "enrich", str(data / "tutors.csv"), str(data / "sessions.csv"), "--db",
         f"sqlite:///{db_file}", "--batch-size", "1000", "--as-of", AS_OF],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def sessions() -> int:
        try:
            with sqlite3.connect(db_file) as conn:
                return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
        except sqlite3.Error:
            return 0

    end = time.monotonic() + 60
    while sessions() < 3000 and time.monotonic() < end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    stored = sessions()
    assert stored < 150_000
    line = [ln for ln in err.splitlines() if ln.startswith("interrupted (")][0]
    assert f"sessions.csv {stored:,}" in line and "tutors.csv 50" in line
    assert f"({stored + 50:,} rows were committed" in line
    assert "Traceback" not in err


def test_dry_run_says_nothing_was_written_and_where_it_would_have_gone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = tm("enrich", str(SAMPLE / "tutors.csv"), str(SAMPLE / "bad" / "sessions.csv"),
              "--dry-run", "--out", str(out), "--as-of", AS_OF, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "dry run: nothing was written." in done.stderr
    assert "the database would have been sqlite:///" in done.stderr
    assert f"tutors.csv → {out / 'tutors.csv'}" in done.stderr
    assert "rejected rows →" in done.stderr
    assert not out.exists() and not (tmp_path / "tutormax.db").exists()
    assert not list(tmp_path.glob("*.jsonl"))


@pytest.mark.redis
def test_queue_results_go_to_stdout(tmp_path: Path, redis_url: str, prefix: str) -> None:
    q = ["--redis", redis_url, "--prefix", prefix]
    pub = tm("publish", str(SAMPLE / "tutors.csv"), *q)
    assert pub.returncode == 0 and pub.stdout == "" and "25 tutors" in pub.stderr
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    stats = tm("stats", *q, "--db", db)
    assert stats.returncode == 0 and "streams on" in stats.stdout and stats.stderr == ""
    listed = tm("dlq", "list", *q)
    assert listed.returncode == 0 and "dead letters (0 of 0)" in listed.stdout
    init = tm("db", "init", "--db", db)
    assert init.returncode == 0 and "→ revision" in init.stdout
    worker = tm("worker", "--burst", "--json", "--block-ms", "50", "--db", db, *q)
    assert worker.returncode == 0, worker.stderr
    assert json.loads(worker.stdout)["persisted"] == 25
    assert re.search(r" INFO worker .* stopped", worker.stderr)
    quiet = tm("worker", "--burst", "-q", "--block-ms", "50", "--db", db, *q)
    assert quiet.returncode == 0 and " INFO " not in quiet.stderr
