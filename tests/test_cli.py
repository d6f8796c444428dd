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
    # Typer names the shell itself when it can tell it from the process tree; a run without
    # a shell among its parents (a job detached from the terminal) cannot. Typer's own
    # switch takes the shell from the command line instead.
    done = tm("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert done.returncode == 0 and "complete -o default -F _tutormax_completion tutormax" in (
        done.stdout
    ), done.stderr


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
    generate = tm("generate", "-h").stdout
    assert "--format <csv|parquet|jsonl>" in generate
    assert "-o, --out DIR" in generate and "--sessions N" in generate
    assert not re.search(r"<(str|int|path)>", generate), generate
    for command in ("enrich", "refresh", "publish"):
        text = tm(command, "-h").stdout
        assert "--log-level <debug|info|warning|error>" in text, command
        assert "-v, --verbose" in text and "-q, --quiet" in text, command


def test_generate_format_is_a_choice(tmp_path: Path) -> None:
    done = tm("generate", "--out", str(tmp_path), "--tutors", "3", "--sessions", "4",
              "--feedback", "2", "--format", "jsonl")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "feedback.jsonl", "sessions.jsonl", "tutors.jsonl"
    ]  # fmt: skip
    bad = tm("generate", "--out", str(tmp_path / "x"), "--format", "xlsx")
    assert bad.returncode == 2 and "'xlsx' is not one of 'csv', 'parquet', 'jsonl'" in bad.stderr
    assert not (tmp_path / "x").exists()


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
        # the tables fit; a message line holding a path may be longer, never broken (the
        # terminal wraps it, and a copy of it is the path)
        long = [line for line in done.stderr.splitlines() if len(line) > int(columns)]
        assert all(str(tmp_path) in line for line in long), long


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [(signal.SIGINT, 130, "interrupted ("), (signal.SIGTERM, 143, "terminated by SIGTERM (")],
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_says_what_each_file_committed_and_exits_130(
    tmp_path: Path, stop: signal.Signals, code: int, said: str
) -> None:
    """Ctrl-C (130) or SIGTERM (143, a `kill`, `timeout`, a service manager): the run stops
    at the end of its batch and says what each file committed, which is what the database
    holds."""
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
    proc.send_signal(stop)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    stored = sessions()
    assert stored < 150_000
    line = [ln for ln in err.splitlines() if ln.startswith(said)][0]
    assert f"sessions.csv {stored:,}" in line and "tutors.csv 50" in line
    assert f"({stored + 50:,} rows were committed" in line
    assert "Traceback" not in err


def test_dry_run_says_nothing_was_written_and_where_it_would_have_gone(tmp_path: Path) -> None:
    out = tmp_path / ("a-long-folder-name-" * 8) / "out"  # a path wider than any terminal
    done = tm("enrich", str(SAMPLE / "tutors.csv"), str(SAMPLE / "bad" / "sessions.csv"),
              "--dry-run", "--out", str(out), "--as-of", AS_OF, cwd=tmp_path,
              COLUMNS="80")  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "dry run: nothing was written." in done.stderr
    assert "the database would have been sqlite:///" in done.stderr
    assert f"tutors.csv → {out / 'tutors.csv'}" in done.stderr  # on one line, however long
    assert "rejected rows →" in done.stderr
    assert f"rejected rows → {out / 'rejects.jsonl'}" in done.stderr
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


# -- --log-level, -v and -q on the long-running commands -------------------------------------

DEBUG = re.compile(r"^\S+ \S+ DEBUG ", re.M)  # a text log line: date, time, level


def one_document(done: subprocess.CompletedProcess) -> dict:
    """--json: exactly one JSON document, alone on stdout."""
    assert done.stdout.count("\n") == 1 and done.stdout.endswith("\n"), done.stdout
    doc = json.loads(done.stdout)  # a second document would be "Extra data"
    assert isinstance(doc, dict)
    return doc


def test_enrich_log_level_verbose_and_quiet(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    files = [str(SAMPLE / "tutors.csv"), str(SAMPLE / "bad" / "tutors.csv")]

    def enrich(*args: str, **env: str) -> subprocess.CompletedProcess:
        return tm("enrich", *files, "--db", db, "--as-of", AS_OF, *args, cwd=tmp_path, **env)

    default = enrich()
    assert default.returncode == 1 and default.stdout == ""
    assert "tutormax enrich" in default.stderr and not DEBUG.search(default.stderr)
    for verbose in (enrich("-v"), enrich("--log-level", "debug")):
        # a debug line per batch, and the summary as always
        assert verbose.returncode == 1 and verbose.stdout == ""
        assert re.search(r" DEBUG database: sqlite:///", verbose.stderr), verbose.stderr
        assert re.search(r" DEBUG \S+/tutors\.csv \(tutors\): 25 rows read", verbose.stderr)
        assert "tutormax enrich" in verbose.stderr and "total" in verbose.stderr
    verbose_json = enrich("-v", "--json")
    assert one_document(verbose_json)["files"][0]["read"] == 25
    assert DEBUG.search(verbose_json.stderr) and "tutormax enrich" not in verbose_json.stderr
    quiet_runs = (enrich("-q"), enrich("--log-level", "warning"),
                  enrich(TUTORMAX_LOG_LEVEL="warning"))  # fmt: skip
    for quiet in quiet_runs:
        # no table, no progress: the rejected rows, by error, and where they went
        assert quiet.returncode == 1 and quiet.stdout == ""
        lines = quiet.stderr.splitlines()
        assert len(lines) == 1, quiet.stderr
        assert re.fullmatch(r"rejected \d+ rows \(.*invalid_email 2.*\) → \S+\.jsonl", lines[0])
    silent = enrich("--log-level", "error")
    assert silent.returncode == 1 and silent.stdout == silent.stderr == ""
    ok = tm("enrich", files[0], "--db", db, "--as-of", AS_OF, "-q", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout == ok.stderr == ""


def test_refresh_log_level_verbose_and_quiet(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert tm("enrich", str(SAMPLE / "tutors.csv"), "--db", db, "--as-of", AS_OF).returncode == 0

    def refresh(*args: str) -> subprocess.CompletedProcess:
        return tm("refresh", "--db", db, "--as-of", "2025-06-01", *args)

    default = refresh()
    assert default.returncode == 0 and default.stdout == ""
    assert "tutormax refresh" in default.stderr and not DEBUG.search(default.stderr)
    verbose = refresh("-v")
    assert verbose.returncode == 0 and verbose.stdout == ""
    assert re.search(r" DEBUG tutors: 25 of 25 rows scanned", verbose.stderr), verbose.stderr
    assert "tutormax refresh" in verbose.stderr
    verbose_json = refresh("--log-level", "debug", "--json", "--dry-run")
    assert one_document(verbose_json)["kinds"][0]["scanned"] == 25
    assert DEBUG.search(verbose_json.stderr) and "tutormax refresh" not in verbose_json.stderr
    for args in (["-q"], ["--log-level", "warning"], ["--log-level", "error"]):
        quiet = refresh(*args)
        assert quiet.returncode == 0 and quiet.stdout == quiet.stderr == "", args


@pytest.mark.redis
def test_publish_log_level_verbose_and_quiet(redis_url: str, prefix: str) -> None:
    files = [str(SAMPLE / "tutors.csv"), str(SAMPLE / "bad" / "tutors.csv")]

    def publish(*args: str) -> subprocess.CompletedProcess:
        return tm("publish", *files, "--redis", redis_url, "--prefix", prefix, *args)

    default = publish()
    assert default.returncode == 1 and default.stdout == ""  # 1: records were skipped
    assert "25 tutors →" in default.stderr and "  skipped row 11:" in default.stderr
    assert not DEBUG.search(default.stderr)
    verbose = publish("-v")
    assert verbose.returncode == 1 and verbose.stdout == ""
    assert re.search(r" DEBUG redis: redis://", verbose.stderr), verbose.stderr
    assert re.search(r" DEBUG \S+/tutors\.csv \(tutors\): 25 records", verbose.stderr)
    assert "25 tutors →" in verbose.stderr
    verbose_json = publish("-v", "--json")
    assert one_document(verbose_json)["skipped"] == 2 and DEBUG.search(verbose_json.stderr)
    for quiet in (publish("-q"), publish("--log-level", "warning")):
        # what was skipped, and nothing about what went well
        assert quiet.returncode == 1 and quiet.stdout == ""
        assert "→" not in quiet.stderr and "msgs/s" not in quiet.stderr
        assert "bad/tutors.csv: 2 tutors skipped" in quiet.stderr
        assert "  skipped row 11:" in quiet.stderr
    silent = publish("--log-level", "error")
    assert silent.returncode == 1 and silent.stdout == silent.stderr == ""


# -- results on stdout, the rest on stderr (SPEC §7) -------------------------------------------


def test_refresh_and_db_reports_stdout_and_stderr(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert tm("enrich", str(SAMPLE / "tutors.csv"), "--db", db, "--as-of", AS_OF).returncode == 0
    # refresh: its summary (a run's) on stderr; --json's document alone on stdout
    human = tm("refresh", "--db", db, "--as-of", "2025-06-01")
    assert human.returncode == 0 and human.stdout == ""
    assert "tutormax refresh" in human.stderr and "tutors" in human.stderr
    doc = tm("refresh", "--db", db, "--as-of", "2025-07-01", "--json")
    assert doc.returncode == 0 and doc.stderr == ""
    assert one_document(doc)["kinds"][0]["changed"] == 25
    # db upgrade and db current: reports, on stdout
    for command in (["db", "upgrade"], ["db", "current"]):
        report = tm(*command, "--db", db)
        assert report.returncode == 0 and report.stderr == "", report.stderr
        assert "sqlite:///" in report.stdout and "revision" in report.stdout
        doc = tm(*command, "--db", db, "--json")
        assert doc.returncode == 0 and doc.stderr == ""
        assert one_document(doc)["database"].startswith("sqlite:///")
    assert one_document(tm("db", "current", "--db", db, "--json"))["status"] == "current"
    assert one_document(tm("db", "upgrade", "--db", db, "--json"))["tables"]["tutors"] == 25


ORPHANS = "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject\n" + "".join(
    f"S{i},NOBODY,st{i},2024-11-09T0{i}:00:00Z,60,Math\n" for i in range(1, 4)
)


@pytest.mark.redis
def test_dlq_replay_and_drain_stdout_and_stderr(
    tmp_path: Path, redis_url: str, prefix: str
) -> None:
    q = ["--redis", redis_url, "--prefix", prefix]
    orphans = tmp_path / "orphans.csv"
    orphans.write_text(ORPHANS)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"

    def dead_letter_them(expected: int = 3) -> None:
        """Three orphan sessions (and what was replayed), dead-lettered at the first try."""
        assert tm("publish", str(orphans), *q).returncode == 0
        worker = tm("worker", "--burst", "--json", "--db", db, "--max-attempts", "1",
                    "--retry-base-ms", "10", "--block-ms", "50", *q)  # fmt: skip
        assert worker.returncode == 0, worker.stderr
        assert json.loads(worker.stdout)["dead_lettered"] == expected

    dead_letter_them()
    # replay: the summary on stderr; --json's document alone on stdout
    human = tm("dlq", "replay", "--all", "--dry-run", *q)
    assert human.returncode == 0 and human.stdout == ""
    assert "would replay 3 of 3 selected dead letters" in human.stderr
    doc = tm("dlq", "replay", "--all", "--dry-run", "--json", *q)
    assert doc.returncode == 0 and doc.stderr == ""
    assert one_document(doc)["selected"] == 3
    ids = [
        r["entry_id"] for r in json.loads(tm("dlq", "list", "--json", *q).stdout)["dead_letters"]
    ]
    human = tm("dlq", "replay", ids[0], *q)
    assert human.returncode == 0 and human.stdout == ""
    assert "replayed 1 of 1 selected dead letters" in human.stderr
    doc = tm("dlq", "replay", "--all", "--json", *q)
    assert doc.returncode == 0 and doc.stderr == ""
    assert one_document(doc)["replayed"] == 2
    # drain: the file is the result, written where --out says; the summary on stderr
    dead_letter_them(expected=3 + 3)  # and the three replayed, dead again
    human = tm("dlq", "drain", "--out", str(tmp_path / "a.jsonl"), *q)
    assert human.returncode == 0 and human.stdout == ""
    assert "wrote 6 dead letters to" in human.stderr
    assert (tmp_path / "a.jsonl").read_text().count("\n") == 6
    dead_letter_them()
    doc = tm("dlq", "drain", "--out", str(tmp_path / "b.jsonl"), "--json", *q)
    assert doc.returncode == 0 and doc.stderr == ""
    assert one_document(doc)["written"] == one_document(doc)["deleted"] == 3
