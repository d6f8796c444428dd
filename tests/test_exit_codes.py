"""Faults are not rejects (SPEC §4): exit 1 only when rows were rejected, 2 for a fatal
problem (one line naming the file or setting, never a traceback), 3 for a bug (the
traceback goes to stderr). The installed `tutormax` command runs in a subprocess where the
fault is real (a file-size limit is a full disk)."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tutormax_cli.cli import app

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
SESSION_HEAD = "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject\n"


def sessions(path: Path, n: int, bad: set[int] = frozenset()) -> Path:  # type: ignore[assignment]
    rows = [f"S{i},T1,st{i},2024-11-09T02:00:00Z,{'x' if i in bad else 60},Math" for i in range(n)]
    path.write_text(SESSION_HEAD + "\n".join(rows) + "\n")
    return path


def run_limited(args: list[str], cwd: Path, max_file_bytes: int) -> subprocess.CompletedProcess:
    """`tutormax ARGS` with every file it writes capped at max_file_bytes: a full disk."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [TUTORMAX, *args], cwd=cwd, capture_output=True, text=True, preexec_fn=limit, timeout=120
    )


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_a_full_disk_under_out_is_exit_2_naming_the_file(tmp_path: Path) -> None:
    src = sessions(tmp_path / "s.csv", 20_000)
    proc = run_limited(["enrich", str(src), "--no-db", "--out", "o.jsonl"], tmp_path, 100_000)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert "o.jsonl" in line and "File too large" in line
    assert not (tmp_path / "o.jsonl").exists()  # never half a file under its real name


def test_a_full_disk_under_the_rejects_file_is_exit_2(tmp_path: Path) -> None:
    src = sessions(tmp_path / "s.csv", 20_000, bad=set(range(20_000)))
    proc = run_limited(["enrich", str(src), "--no-db", "--rejects", "r.jsonl"], tmp_path, 50_000)
    assert proc.returncode == 2, proc.stderr
    assert "r.jsonl" in one_error_line(proc.stderr)


def test_a_bug_is_exit_3_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A formula that raises (simulated) is an internal error, not "rows rejected"."""
    import tutormax_cli.pipeline as pipeline

    def broken(*_args: object) -> None:
        raise TypeError("simulated bug in a formula")

    monkeypatch.setattr(pipeline, "derive", broken)
    src = sessions(tmp_path / "s.csv", 3)
    result = CliRunner().invoke(app, ["enrich", str(src), "--no-db"])
    assert result.exit_code == 3
    assert "Traceback" in result.stderr and "simulated bug in a formula" in result.stderr
    assert "internal error" in result.stderr


def test_rows_rejected_is_the_only_exit_1(tmp_path: Path) -> None:
    src = sessions(tmp_path / "s.csv", 5, bad={2})
    proc = subprocess.run(
        [TUTORMAX, "enrich", str(src), "--no-db", "--rejects", "r.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_an_atomic_run_stopped_by_max_errors_leaves_no_output(tmp_path: Path) -> None:
    """--atomic with two inputs, stopped in the second: the first input's finished output
    is not left under its real name either, and the summary names no output."""
    from tutormax_cli.files import EnrichOptions, run_enrich
    from tutormax_cli.store import Store

    tutors = tmp_path / "t.csv"
    tutors.write_text(
        "tutor_id,name,email,onboarding_date,status,subjects\nT1,Ann,a@x,2024-01-15,active,Math\n"
    )
    src = sessions(tmp_path / "s.csv", 30, bad={15})
    out = tmp_path / "out"

    def connect() -> Store:
        store = Store.connect(f"sqlite:///{tmp_path / 'db.sqlite'}")
        store.init_schema()
        return store

    opts = EnrichOptions(
        paths=[tutors, src], as_of=datetime(2024, 11, 9, tzinfo=UTC), batch_size=10,
        out=out, atomic=True, max_errors=0,
    )  # fmt: skip
    summary = run_enrich(opts, connect)
    assert summary.stopped and "--atomic" in summary.stopped
    assert not [p.name for p in out.iterdir() if not p.name.startswith("rejects")]
    assert all(f.output is None for f in summary.files)
    # Rolled back: nothing is counted stored (1 tutor and 19 sessions were, before).
    assert [(f.inserted, f.updated, f.unchanged) for f in summary.files] == [(0, 0, 0)] * 2
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("select count(*) from sessions").fetchone() == (0,)


def test_an_atomic_run_that_fails_mid_run_leaves_no_output(tmp_path: Path) -> None:
    from tutormax_cli.errors import DatabaseError
    from tutormax_cli.files import EnrichOptions, run_enrich
    from tutormax_cli.store import Store

    db = tmp_path / "db.sqlite"
    url = f"sqlite:///{db}"
    tutors = tmp_path / "t.csv"
    tutors.write_text(
        "tutor_id,name,email,onboarding_date,status,subjects\nT1,Ann,a@x,2024-01-15,active,Math\n"
    )
    src = sessions(tmp_path / "s.csv", 30)
    out = tmp_path / "out"
    store = Store.connect(url)

    def sabotage(source: str, kind: str, rows_done: int, done: float) -> None:
        if kind == "sessions":  # the run's own connection loses its table mid-run
            assert store._conn is not None
            store._conn.exec_driver_sql("DROP TABLE feedback")
            store._conn.exec_driver_sql("DROP TABLE sessions")

    store.init_schema()
    opts = EnrichOptions(
        paths=[tutors, src], as_of=datetime(2024, 11, 9, tzinfo=UTC), batch_size=10,
        out=out, atomic=True,
    )  # fmt: skip
    with pytest.raises(DatabaseError) as failure:
        run_enrich(opts, lambda: store, progress=sabotage)
    assert "nothing was committed" in failure.value.message
    assert not out.exists() or not [p for p in out.iterdir() if p.suffix == ".csv"]
    assert not list(out.glob("*.partial")) if out.exists() else True


def test_the_rejects_file_survives_surrogates_and_huge_values(tmp_path: Path) -> None:
    big = "x" * (3 << 20)
    src = tmp_path / "t.jsonl"
    src.write_text(
        json.dumps({"tutor_id": "T1", "name": "\\ud800", "email": "a@x",
                    "onboarding_date": "2024-01-01", "status": "active", "subjects": ["M"]})
        .replace("\\\\ud800", "\\ud800")
        + "\n"
        + json.dumps({"tutor_id": "T2", "name": big, "email": "nope",
                      "onboarding_date": "2024-01-01", "status": "active", "subjects": ["M"]})
        + "\n"
    )  # fmt: skip
    rejects = tmp_path / "r.jsonl"
    proc = subprocess.run(
        [TUTORMAX, "enrich", str(src), "--no-db", "--rejects", str(rejects)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = rejects.read_bytes().splitlines()
    assert len(lines) == 2 and all(len(line) < 8 << 10 for line in lines)
    first, second = (json.loads(line) for line in lines)
    assert first["errors"][0]["code"] == "invalid_utf8"
    name = second["values"]["name"]
    assert name["truncated"] is True and name["bytes"] == 3 << 20 and name["prefix"] == "x" * 1024
    assert os.path.getsize(rejects) < 16 << 10


# Ways out that are neither a row rejected nor a fault of the input: the process ends with
# the code the command chose, whatever Arrow's threads or the reader of stdout are doing.
EARLY_EXITS = [
    pytest.param(["--out", "-", "--atomic"], 2, id="refused-after-the-header-probe"),
    pytest.param(["--kind", "sessions"], 2, id="wrong-kind-after-the-header-probe"),
    pytest.param(["--out", "-", "--format", "parquet"], 2, id="parquet-on-stdout"),
    # the bad row is row 51 of 56: in batch 26 of 28, so with one batch in flight (batches
    # go side by side) the stop leaves one unread
    pytest.param(
        ["--max-errors", "0", "--batch-size", "2"], 2, id="stopped-by-max-errors-mid-file"
    ),
]


@pytest.mark.parametrize(("extra", "code"), EARLY_EXITS)
def test_early_exits_never_abort_under_load(tmp_path: Path, extra: list[str], code: int) -> None:
    """Arrow's I/O threads drop the Python objects a reader was given (a file, a buffer, an
    invalid-row callback) when a pending read completes; one doing so while the interpreter
    finalized aborted the process (exit -6, 'terminate called without an active
    exception'): CI saw it once in 1,800 tests, and 24 runs at once here saw it ~1 in 15.
    So 24 runs, 6 at a time, must all end with the command's own code."""
    src = tmp_path / "tutors.csv"
    good = [f"T{i},Name,t{i}@x.org,2024-01-15,active,Math" for i in range(50)]
    src.write_text("tutor_id,name,email,onboarding_date,status,subjects\n" + "\n".join(
        [*good, "B1,Name,not-an-email,2024-01-15,active,Math", *good[:5]]) + "\n")  # fmt: skip
    argv = [TUTORMAX, "enrich", str(src), "--no-db", "--as-of", "2024-11-09", *extra]
    from concurrent.futures import ThreadPoolExecutor

    def once(_: int) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(6) as pool:
        runs = list(pool.map(once, range(24)))
    for run in runs:
        assert run.returncode == code, run.stderr
        assert "terminate called" not in run.stderr and "Traceback" not in run.stderr


CLOSED_STDOUT = [
    pytest.param(["--help"], id="help"),
    pytest.param(["--version"], id="version"),
    pytest.param(["stats", "--redis", "redis://127.0.0.1:1/0"], id="stats-table"),
    pytest.param(["stats", "--json", "--redis", "redis://127.0.0.1:1/0"], id="stats-json"),
]


@pytest.mark.parametrize("args", CLOSED_STDOUT)
def test_a_closed_stdout_is_141_quietly_never_1(tmp_path: Path, args: list[str]) -> None:
    """`tutormax … | head`: the reader went away. Exit 1 would say rows were rejected; a
    tool killed by SIGPIPE reports 141, and says nothing."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    try:
        run = subprocess.run(
            [TUTORMAX, *args, *(["--db", f"sqlite:///{tmp_path / 'x.db'}"] if "stats" in args
                                else [])],
            cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert run.returncode == 141, run.stderr
    assert "Traceback" not in run.stderr and "error:" not in run.stderr, run.stderr


@pytest.mark.parametrize(("args", "code"), [
    pytest.param(["enrich", "missing.csv", "--no-db"], 2, id="fatal"),
    pytest.param(["enrich", "t.csv", "--no-db", "--as-of", "2024-11-09"], 1, id="rows-rejected"),
])  # fmt: skip
def test_a_closed_stderr_keeps_the_commands_own_code(
    tmp_path: Path, args: list[str], code: int
) -> None:
    """A reader of stderr that went away silences stderr; it does not turn 2 or 1 into 141."""
    (tmp_path / "t.csv").write_text(
        "tutor_id,name,email,onboarding_date,status,subjects\n"
        "T1,A,a@x.org,2024-01-15,active,Math\nT2,B,not-an-email,2024-01-15,active,Math\n"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        run = subprocess.run([TUTORMAX, *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=write_end, timeout=120)  # fmt: skip
    finally:
        os.close(write_end)
    assert run.returncode == code


_A_BUG = """
import sys
import tutormax_cli.pipeline as pipeline
def broken(*_args):
    raise TypeError("simulated bug in a formula")
pipeline.derive = broken
sys.argv = ["tutormax", *sys.argv[1:]]
from tutormax_cli.cli import main
main()
"""
STDERR_CLOSED = [
    pytest.param(["enrich", "missing.csv", "--no-db"], 2, id="missing-input"),
    pytest.param(["enrich", "t.csv", "--no-db", "--no-such-option"], 2, id="usage"),
    pytest.param(["enrich", "t.csv", "--no-db", "--as-of", "soon"], 2, id="bad-setting"),
    pytest.param(["dlq", "list", "--redis", "redis://127.0.0.1:1/0"], 2, id="no-redis"),
    pytest.param(["enrich", "s.csv", "--no-db", "--out", "o.jsonl"], 3, id="bug"),
    pytest.param(["enrich", "t.csv", "--no-db", "--out", "o.jsonl"], 1, id="rows-rejected"),
    pytest.param(["enrich", "s.csv", "--no-db", "--out", "o.jsonl"], 0, id="ok"),
]


@pytest.mark.parametrize(("args", "code"), STDERR_CLOSED)
def test_stderr_closed_outright_keeps_the_code_the_outcome_deserves(
    tmp_path: Path, args: list[str], code: int
) -> None:
    """`tutormax … 2>&-`: no stderr at all (Python starts with sys.stderr None). Every error
    said 1 ("rows were rejected"): the command failed at import, on sys.stderr.isatty(). Its
    messages go nowhere, as asked; its exit code is its own, and its files are whole (the
    first file opened would otherwise take descriptor 2, stderr's)."""
    (tmp_path / "t.csv").write_text(
        "tutor_id,name,email,onboarding_date,status,subjects\n"
        "T1,A,a@x.org,2024-01-15,active,Math\nT2,B,not-an-email,2024-01-15,active,Math\n"
    )
    sessions(tmp_path / "s.csv", 3)
    argv = [sys.executable, "-c", _A_BUG, *args] if code == 3 else [TUTORMAX, *args]
    run = subprocess.run(argv, cwd=tmp_path, stdout=subprocess.PIPE, text=True, timeout=120,
                         preexec_fn=lambda: os.close(2))  # fmt: skip
    assert run.returncode == code
    if code in (0, 1):
        rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
        assert len(rows) == (3 if code == 0 else 1)


def test_out_dash_into_a_closed_pipe_is_141(tmp_path: Path) -> None:
    src = sessions(tmp_path / "s.csv", 50_000)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        run = subprocess.run(
            [TUTORMAX, "enrich", str(src), "--no-db", "--out", "-"],
            cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert run.returncode == 141, run.stderr
    assert "Traceback" not in run.stderr and "its reader went away" in run.stderr


@pytest.mark.parametrize(
    "as_of",
    ["0001-01-01T00:00:00+05:00", "0001-01-01T04:59:59+05:00", "9999-12-31T23:00:00-05:00"],
)
@pytest.mark.parametrize("command", ["enrich", "refresh"])
def test_an_as_of_outside_the_years_1_to_9999_in_utc_is_a_bad_option(
    tmp_path: Path, command: str, as_of: str
) -> None:
    """A valid ISO-8601 text whose instant falls before year 1 (or after 9999) in UTC was
    taken: stored as year 0 on SQLite, every row rejected by PostgreSQL (exit 1), a
    traceback from refresh. It is the option's fault: exit 2 naming it, nothing written."""
    db = f"sqlite:///{tmp_path / 't.db'}"
    assert CliRunner().invoke(app, ["db", "init", "--db", db]).exit_code == 0
    src = str(sessions(tmp_path / "s.csv", 3))
    enrich = ["enrich", src, "--no-db", "--out", str(tmp_path / "o.jsonl")]
    args = ["refresh", "--db", db] if command == "refresh" else enrich
    result = CliRunner().invoke(app, [*args, "--as-of", as_of])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert "--as-of" in line and "out of range" in line
    assert not (tmp_path / "o.jsonl").exists()
    fine = CliRunner().invoke(app, [*args, "--as-of", "0001-01-01T05:00:00+05:00"])
    assert fine.exit_code in (0, 1), fine.output  # the first instant of year 1 in UTC


@pytest.mark.parametrize("tz", ["Factory", "posixrules", "Etc/GMT+14", "A" * 300, "", "localtime"])
@pytest.mark.parametrize("command", ["enrich", "refresh", "worker"])
def test_a_timezone_arrow_cannot_use_is_a_bad_option(tmp_path: Path, command: str, tz: str) -> None:
    """zoneinfo takes files of the tz database that are not zones ('Factory', 'posixrules'):
    Arrow refused them at the first batch, an internal error (exit 3) with a traceback, the
    worker's batch left pending. A name too long for a file name said only 'File name too
    long'. Each is exit 2 naming --timezone, before anything is read."""
    db = f"sqlite:///{tmp_path / 't.db'}"
    src = str(sessions(tmp_path / "s.csv", 3))
    args = {
        "enrich": ["enrich", src, "--no-db", "--out", str(tmp_path / "o.jsonl")],
        "refresh": ["db", "init", "--db", db],
        "worker": ["worker", "--burst", "--db", db, "--redis", "redis://127.0.0.1:1/0"],
    }[command]
    if command == "refresh":
        assert CliRunner().invoke(app, args).exit_code == 0
        args = ["refresh", "--db", db]
    result = CliRunner().invoke(app, [*args, "--timezone", tz])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert "--timezone" in line and "not a known IANA timezone name" in line
    assert not (tmp_path / "o.jsonl").exists()


CLOBBERS = {  # args after the input s.csv; each would write over the input or over a result
    "out-is-the-input": ["--out", "s.csv"],
    "out-is-the-input-as-./": ["--out", "./s.csv"],
    "out-is-a-hard-link-to-the-input": ["--out", "link.csv"],
    "rejects-is-the-input": ["--out", "o.csv", "--rejects", "s.csv"],
    "rejects-is-the-output": ["--out", "o.csv", "--rejects", "o.csv"],
    "default-rejects-is-an-output": ["rejects.jsonl", "--out", "od"],
    "rejects-is-an-input-into-the-db": ["--db", "sqlite:///t.db", "--rejects", "s.csv"],
}


@pytest.mark.parametrize("case", list(CLOBBERS))
def test_no_run_writes_over_an_input_or_over_another_of_its_results(
    tmp_path: Path, case: str
) -> None:
    """A review found `--rejects` equal to `--out` losing the rejected rows (the summary said
    they were there), `--out` or `--rejects` naming the only input replacing it, and an
    output called rejects.jsonl replacing the default rejects file: the outputs were only
    checked against the inputs with several inputs. Each is now exit 2 before anything is
    read or written, and every file is as it was."""
    src = sessions(tmp_path / "s.csv", 5, bad={2})
    (tmp_path / "link.csv").hardlink_to(src)
    (tmp_path / "rejects.jsonl").write_text(
        json.dumps(
            {
                "session_id": "J1",
                "tutor_id": "T1",
                "student_id": "x",
                "scheduled_start": "2024-11-09T02:00:00Z",
                "duration_minutes": 60,
                "subject": "Math",
            }
        )
        + "\n"  # fmt: skip
    )
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    result = subprocess.run([TUTORMAX, "enrich", "s.csv", *CLOBBERS[case]], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "would overwrite the input" in line or "writes that file too" in line
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before
    assert not (tmp_path / "od").exists()


@pytest.mark.parametrize("group", ["", "  ", "a\nb"])
@pytest.mark.parametrize("command", [["worker", "--burst"], ["stats"]])
def test_a_blank_group_name_is_a_bad_option(command: list[str], group: str) -> None:
    """`--group ''` made a consumer group of that name on the streams (Redis takes it)."""
    result = CliRunner().invoke(app, [*command, "--group", group, "--redis",
                                      "redis://127.0.0.1:1/0"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--group'" in result.stderr and "blank" in result.stderr


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_generate_on_a_full_disk_names_the_file(tmp_path: Path, fmt: str) -> None:
    """It said only 'Error writing bytes to file. Detail: [errno 27] File too large' (or
    'File too large'): the one line names the file now, and no cut or .partial file is
    left under it."""
    args = ["generate", "--out", "g", "--sessions", "200000", "--format", fmt]
    proc = run_limited(args, tmp_path, 200_000)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert f"cannot write g/sessions.{fmt}" in line and "File too large" in line
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [f"tutors.{fmt}"]


EXTENSION_PRINTS = r"""
import ctypes, sys
from tutormax_cli import cli

@cli.app.command("probe")
def probe() -> None:
    # What psycopg2 does when the server ends a connection mid-COPY: a chained exception
    # printed from C by PyErr_Print (which hands it to sys.excepthook). PyRun_SimpleString
    # does exactly that with an exception its code raises.
    ctypes.pythonapi.PyRun_SimpleString(ctypes.c_char_p(
        b"raise SystemError('<function decode> returned a result with an exception set') "
        b"from ConnectionError('terminating connection due to administrator command')"))
    print("went on")

sys.argv = ["tutormax", *sys.argv[1:], "probe"]
cli.main()
"""


def test_an_exception_a_c_extension_prints_reaches_the_log_not_the_user(tmp_path: Path) -> None:
    """psycopg2 calls PyErr_Print when the server ends a connection mid-COPY: a bare chain
    (AdminShutdown, then a SystemError from a decoder) reached the user's terminal right
    before the one-line error, in 2 of 3 runs of a review. Typer installs its own
    sys.excepthook as the app starts; the root callback puts tutormax's in its place."""
    proc = subprocess.run([sys.executable, "-c", EXTENSION_PRINTS], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "went on"
    assert "returned a result with an exception set" not in proc.stderr
    assert "direct cause" not in proc.stderr


@pytest.mark.parametrize("db", [False, True], ids=["no-db", "sqlite"])
def test_a_run_stopped_by_max_errors_is_exit_2_not_rows_rejected(tmp_path: Path, db: bool) -> None:
    """Exit 1 says "some rows rejected, the rest done" (SPEC §4); a run --max-errors stopped
    did not do the rest: exit 2, the last line naming the option and what was committed,
    no output file under its real name, the rejected rows in the rejects file."""
    src = sessions(tmp_path / "s.csv", 100, bad={15})  # rows left to read after the stop
    tutors = tmp_path / "t.csv"
    tutors.write_text("tutor_id,name,email,onboarding_date,status,subjects\n"
                      "T1,Ann,a@x,2024-01-15,active,Math\n")  # fmt: skip
    out = tmp_path / "out.csv"
    where = ["--db", f"sqlite:///{tmp_path / 'db.sqlite'}"] if db else ["--no-db"]
    if db:
        first = subprocess.run([TUTORMAX, "enrich", str(tutors), *where], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert first.returncode == 0, first.stderr
    proc = subprocess.run(
        [TUTORMAX, "enrich", str(src), *where, "--out", str(out), "--batch-size", "10",
         "--max-errors", "0", "--as-of", "2024-11-09", "--rejects", str(tmp_path / "r.jsonl")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    said = " ".join(proc.stderr.split())  # the summary wraps at the terminal's width
    last = said[said.rindex("stopped: ") :]
    assert last.startswith("stopped: more than 0 rows rejected (--max-errors)"), last
    if db:  # the batch with the rejected row is written whole: 10 + 9
        assert "19 rows were committed before it" in last, last
        import sqlite3

        with sqlite3.connect(tmp_path / "db.sqlite") as conn:
            assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (19,)
    else:
        assert "no output file was left under its real name" in last, last
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("where", ["last-batch", "first-of-two-files"])
def test_max_errors_passed_in_the_last_batch_stops_nothing(tmp_path: Path, where: str) -> None:
    """The limit passed in the run's last batch: nothing was left to do, so the run ends as
    one that rejected rows (exit 1, its output whole in place). Passed in a file's last
    batch with another file to read, it stops (exit 2)."""
    src = sessions(tmp_path / "s.csv", 30, bad={24, 27})  # both in the last batch of 10
    paths = [str(src)]
    if where == "first-of-two-files":
        paths.append(str(sessions(tmp_path / "s2.csv", 5)))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [TUTORMAX, "enrich", *paths, "--no-db", "--out", str(out), "--batch-size", "10",
         "--max-errors", "1", "--as-of", "2024-11-09", "--rejects", str(tmp_path / "r.jsonl")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2
    if where == "last-batch":
        assert proc.returncode == 1 and "stopped" not in proc.stderr, proc.stderr
        assert (out / "s.csv").read_text().count("\n") == 1 + 28  # the header, 28 rows
    else:
        said = " ".join(proc.stderr.split())
        assert proc.returncode == 2 and "stopped: more than 1 rows" in said, proc.stderr
        assert not [p for p in out.iterdir() if not p.name.startswith("r")]


EMPTY_URL_COMMANDS = [
    ["enrich", "in.csv", "--db"],
    ["refresh", "--db"],
    ["worker", "--burst", "--db"],
    ["stats", "--db"],
    ["db", "init", "--db"],
    ["db", "upgrade", "--db"],
    ["db", "current", "--db"],
    ["worker", "--burst", "--redis"],
    ["stats", "--redis"],
    ["publish", "in.csv", "--redis"],
    ["dlq", "list", "--redis"],
    ["dlq", "replay", "--all", "--redis"],
    ["dlq", "drain", "--out", "d.jsonl", "--redis"],
]


@pytest.mark.parametrize("url", ["", "  "])
@pytest.mark.parametrize("command", EMPTY_URL_COMMANDS, ids=" ".join)
def test_an_empty_url_option_is_a_bad_option_not_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], url: str
) -> None:
    """`--db "$DATABASE_URL"` with the variable unset used to be the default SQLite file in
    the working folder (or the default Redis): the run went to another database, exit 0."""
    monkeypatch.chdir(tmp_path)
    sessions(tmp_path / "in.csv", 2)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, [*command, url])
    option = command[-1]
    assert result.exit_code == 2, result.output
    assert f"{option} is empty" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no tutormax.db, no output
