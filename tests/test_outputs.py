"""Where outputs go and where inputs come from, on the installed `tutormax` command: symlinks
written through, FIFOs and devices written in place, `-` for stdout and stdin, compressed
inputs; refusals exit 2 in one line. Then progress that tells the truth: the fraction a
reader reports is what its parser has done, and the bar's rate and ETA arithmetic."""

from __future__ import annotations

import bz2
import gzip
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

from tutormax_cli.cli.progress import Estimate, FileProgress
from tutormax_cli.files import BatchWriter, Source

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
AS_OF = "2024-11-09T12:00:00Z"
HEADER = "tutor_id,name,email,onboarding_date,status,subjects,updated_at"


def tutors_csv(n: int, bad: int = 0) -> str:
    """n tutors of equal width (so equal batches hold equal bytes); `bad` of them rejected."""
    rows = [
        f"T{i:05d},Name {i:05d},t{i:05d}@x.org,2024-01-15,active,Math,2024-11-09T10:00:00Z"
        for i in range(n - bad)
    ]
    rows += [f"B{i:05d},Name {i:05d},not-an-email,2024-01-15,active,Math," for i in range(bad)]
    return HEADER + "\n" + "\n".join(rows) + "\n"


def tutors_jsonl(n: int) -> str:
    return "".join(
        json.dumps(
            {
                "tutor_id": f"T{i:05d}",
                "name": f"Name {i:05d}",
                "email": f"t{i:05d}@x.org",
                "onboarding_date": "2024-01-15",
                "status": "active",
                "subjects": ["Math"],
            }
        )
        + "\n"
        for i in range(n)
    )


def tm(*args: str | Path, stdin: bytes | None = None, **kw: Any) -> subprocess.CompletedProcess:
    argv = [TUTORMAX, *(str(a) for a in args)]
    env = {**os.environ, **kw.pop("env", {})}
    return subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=120, **kw)


def enrich(*args: str | Path, **kw: Any) -> subprocess.CompletedProcess:
    return tm("enrich", *args, "--no-db", "--as-of", AS_OF, **kw)


def one_clean_line(result: subprocess.CompletedProcess) -> str:
    """A refusal: exit 2, one `error:` line, no traceback."""
    text = result.stderr.decode()
    assert result.returncode == 2, text
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    return lines[0]


@pytest.fixture
def tutors(tmp_path: Path) -> Path:
    path = tmp_path / "tutors.csv"
    path.write_text(tutors_csv(50))
    return path


@pytest.fixture
def expected(tutors: Path, tmp_path: Path) -> bytes:
    """The enriched tutors, written to a plain new file."""
    out = tmp_path / "expected" / "tutors.csv"
    result = enrich(tutors, "--out", out)
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


# --- outputs -------------------------------------------------------------------------------


def test_symlinked_out_writes_through_and_stays_a_link(tutors, expected, tmp_path) -> None:
    real = tmp_path / "data" / "enriched.csv"
    real.parent.mkdir()
    real.write_text("stale\n")
    real.chmod(0o640)
    links = tmp_path / "links"
    links.mkdir()
    link = links / "current.csv"
    link.symlink_to(real)

    result = enrich(tutors, "--out", link)

    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == expected
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # the replaced file's permissions
    assert not list(tmp_path.rglob("*.partial"))


def test_dangling_symlink_out_creates_the_file_it_names(tutors, expected, tmp_path) -> None:
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "later" / "made.csv")
    result = enrich(tutors, "--out", link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and (tmp_path / "later" / "made.csv").read_bytes() == expected


def test_fifo_out_is_written_in_place(tutors, expected, tmp_path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()

    result = enrich(tutors, "--out", fifo)
    reader.join(timeout=30)

    assert result.returncode == 0, result.stderr
    assert got == [expected]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # never replaced
    assert not list(tmp_path.glob("*.partial"))


def test_dev_null_out_and_rejects_in_the_working_folder(tutors, tmp_path) -> None:
    tutors.write_text(tutors_csv(20, bad=2))
    result = enrich(tutors, "--out", "/dev/null", cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # rows rejected
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not Path("/dev/null.rejects.jsonl").exists()
    rejects = (tmp_path / "tutormax.rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 2


def test_out_dash_puts_exactly_the_output_on_stdout(tutors, expected) -> None:
    result = enrich(tutors, "--out", "-")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert b"tutors.csv" in result.stderr  # the summary


def test_out_dash_in_json_lines(tutors, tmp_path) -> None:
    want = tmp_path / "want.jsonl"
    assert enrich(tutors, "--out", want).returncode == 0
    result = enrich(tutors, "--out", "-", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    assert result.stdout == want.read_bytes()
    assert [json.loads(line)["tutor_id"] for line in result.stdout.splitlines()][:2] == [
        "T00000",
        "T00001",
    ]


def test_dev_stdout_keeps_the_redirections_append_mode(tutors, expected, tmp_path) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes(b"kept\n")
    with log.open("ab") as fh:
        result = subprocess.run(
            [TUTORMAX, "enrich", str(tutors), "--no-db", "--as-of", AS_OF, "--out", "/dev/stdout"],
            stdout=fh,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert log.read_bytes() == b"kept\n" + expected


def test_compressed_out(tutors, expected, tmp_path) -> None:
    out = tmp_path / "out.csv.gz"
    result = enrich(tutors, "--out", out)
    assert result.returncode == 0, result.stderr
    assert gzip.decompress(out.read_bytes()) == expected
    assert not (tmp_path / "out.csv.rejects.jsonl").exists()


# --- inputs --------------------------------------------------------------------------------


def test_stdin_csv(tutors, expected, tmp_path) -> None:
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    result = enrich(
        "-",
        "--kind",
        "tutors",
        "--format",
        "csv",
        "--out",
        "-",
        stdin=tutors.read_bytes(),
        env={"TMPDIR": str(spool_dir)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    assert not list(spool_dir.iterdir())  # the spool is gone


def test_stdin_jsonl(tmp_path) -> None:
    src = tmp_path / "tutors.jsonl"
    src.write_text(tutors_jsonl(30))
    want = tmp_path / "want.jsonl"
    assert enrich(src, "--out", want).returncode == 0
    got = tmp_path / "got.jsonl"
    result = enrich(
        "-", "--kind", "tutors", "--format", "jsonl", "--out", got, stdin=src.read_bytes()
    )
    assert result.returncode == 0, result.stderr
    assert got.read_bytes() == want.read_bytes()


def test_stdin_gzipped_is_told_by_its_first_bytes(tutors, expected) -> None:
    result = enrich(
        "-",
        "--kind",
        "tutors",
        "--format",
        "csv",
        "--out",
        "-",
        stdin=gzip.compress(tutors.read_bytes()),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


@pytest.mark.parametrize(
    "missing, keep",
    [("--kind", ["--format", "csv"]), ("--format", ["--kind", "tutors"]), ("--kind", [])],
)
def test_stdin_needs_kind_and_format(tutors, missing: str, keep: list[str]) -> None:
    line = one_clean_line(enrich("-", *keep, "--out", "-", stdin=tutors.read_bytes()))
    assert "stdin" in line and missing in line


def compress(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.compress(data)
    if codec == "bz2":
        return bz2.compress(data)
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("suffix, codec", [(".gz", "gzip"), (".zst", "zstd"), (".bz2", "bz2")])
def test_compressed_inputs_give_the_plain_files_output(tmp_path, fmt, suffix, codec) -> None:
    plain = tmp_path / f"tutors.{fmt}"
    plain.write_text(tutors_csv(40, bad=3) if fmt == "csv" else tutors_jsonl(40))
    packed = tmp_path / "packed" / f"tutors.{fmt}{suffix}"
    packed.parent.mkdir()
    packed.write_bytes(compress(plain.read_bytes(), codec))

    want, got = tmp_path / "want", tmp_path / "got"
    a = enrich(plain, "--out", want / f"out.{fmt}", "--rejects", want / "rejects.jsonl")
    b = enrich(packed, "--out", got / f"out.{fmt}", "--rejects", got / "rejects.jsonl")

    assert a.returncode == b.returncode, b.stderr
    assert (got / f"out.{fmt}").read_bytes() == (want / f"out.{fmt}").read_bytes()
    if fmt == "csv":  # the same rejects, the file named as given
        rejects = [json.loads(line) for line in (got / "rejects.jsonl").read_text().splitlines()]
        assert [r["row"] for r in rejects] == [38, 39, 40]
        assert {r["source"] for r in rejects} == {str(packed)}


def test_several_inputs_drop_the_compression_suffix(tmp_path) -> None:
    (tmp_path / "tutors.csv.gz").write_bytes(gzip.compress(tutors_csv(5).encode()))
    sessions = "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject\n"
    sessions += "S1,T00001,st1,2024-11-09T02:00:00Z,60,Math\n"
    (tmp_path / "sessions.csv.zst").write_bytes(compress(sessions.encode(), "zstd"))
    out = tmp_path / "out"
    result = enrich(tmp_path / "tutors.csv.gz", tmp_path / "sessions.csv.zst", "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sessions.csv", "tutors.csv"]


def test_a_corrupt_compressed_input_is_one_line(tmp_path) -> None:
    bad = tmp_path / "tutors.csv.gz"
    bad.write_bytes(gzip.compress(tutors_csv(5).encode())[:-30] + b"garbage" * 5)
    line = one_clean_line(enrich(bad, "--kind", "tutors", "--out", tmp_path / "o.csv"))
    assert str(bad) in line
    assert not (tmp_path / "o.csv").exists()


# --- refusals ------------------------------------------------------------------------------


def test_parquet_to_stdout_is_refused(tutors) -> None:
    line = one_clean_line(enrich(tutors, "--out", "-", "--format", "parquet"))
    assert "Parquet" in line and "stdout" in line


def test_atomic_with_a_fifo_is_refused(tutors, tmp_path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    line = one_clean_line(enrich(tutors, "--out", fifo, "--atomic"))
    assert "--atomic" in line and "FIFO" in line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_atomic_with_stdout_is_refused(tutors) -> None:
    line = one_clean_line(enrich(tutors, "--out", "-", "--atomic"))
    assert "--atomic" in line and "stdout" in line


def test_compressed_parquet_input_is_refused(tmp_path) -> None:
    table = pa.table({"tutor_id": ["T1"], "name": ["A"], "email": ["a@x.org"]})
    path = tmp_path / "tutors.parquet"
    pq.write_table(table, path)
    packed = tmp_path / "tutors.parquet.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    line = one_clean_line(enrich(packed, "--out", tmp_path / "o.csv"))
    assert "Parquet" in line and "decompress" in line


def test_stdout_takes_one_output(tutors, tmp_path) -> None:
    other = tmp_path / "more.csv"
    other.write_text(tutors_csv(3))
    line = one_clean_line(enrich(tutors, other, "--out", "-"))
    assert "--out -" in line


def test_stdin_named_twice_is_refused(tutors) -> None:
    args = ("-", "-", "--kind", "tutors", "--format", "csv", "--out", "-")
    line = one_clean_line(enrich(*args, stdin=tutors.read_bytes()))
    assert "stdin" in line


def test_rejects_and_output_both_on_stdout_is_refused(tutors) -> None:
    line = one_clean_line(enrich(tutors, "--out", "-", "--rejects", "-"))
    assert "--rejects" in line


# --- writers in process: abort leaves a stream alone --------------------------------------


def test_abort_never_unlinks_a_fifo(tmp_path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    writer = BatchWriter(fifo, "jsonl")
    writer.write(pa.table({"a": [1, 2]}))
    writer.abort()
    reader.join(timeout=10)
    assert got == [b'{"a": 1}\n{"a": 2}\n']  # what was written stays written
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_abort_removes_the_temporary_file_beside_the_target(tmp_path) -> None:
    real = tmp_path / "real" / "out.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "out.csv"
    link.symlink_to(real)
    writer = BatchWriter(link, "csv")
    writer.write(pa.table({"a": [1]}))
    assert (real.parent / "out.csv.partial").exists()  # beside the target, not the link
    writer.abort()
    assert real.read_text() == "old\n" and link.is_symlink()
    assert not list(tmp_path.rglob("*.partial"))


# --- progress: what the readers report -----------------------------------------------------


def fractions(path: Path, batch_size: int, **kw: Any) -> list[float]:
    return [rb.done for rb in Source(path, **kw).batches(batch_size)]


def assert_truthful(done: list[float], batches: int) -> None:
    assert len(done) == batches
    assert done[-1] == 1.0 and all(d < 1.0 for d in done[:-1])
    assert done == sorted(done)
    for i, d in enumerate(done[:-1], start=1):  # equal batches: i/n of the way
        assert d == pytest.approx(i / batches, abs=0.03), (i, done)


def test_csv_fraction_is_the_parsers_not_the_read_aheads(tmp_path) -> None:
    path = tmp_path / "tutors.csv"
    path.write_text(tutors_csv(20_000))  # 1.5 MB: Arrow reads it all before batch 1
    assert_truthful(fractions(path, 2_000), 10)


def test_quoted_csv_fraction(tmp_path) -> None:
    path = tmp_path / "tutors.csv"
    rows = pv.read_csv(pa.BufferReader(tutors_csv(20_000).encode()))
    pv.write_csv(rows, path)  # Arrow quotes every text value: ~15% of the bytes are quotes
    assert path.read_bytes().count(b'"') > 200_000
    assert_truthful(fractions(path, 2_000), 10)


def test_gzipped_csv_fraction(tmp_path) -> None:
    path = tmp_path / "tutors.csv.gz"
    path.write_bytes(gzip.compress(tutors_csv(20_000).encode()))
    done = fractions(path, 2_000)
    assert done[-1] == 1.0 and done == sorted(done) and all(d < 1.0 for d in done[:-1])
    assert 0.03 < done[0] < 0.2  # an estimate from the compression ratio: near 0.1
    assert done[4] == pytest.approx(0.5, abs=0.1)


def test_jsonl_fraction(tmp_path) -> None:
    path = tmp_path / "tutors.jsonl"
    path.write_text(tutors_jsonl(5_000))
    assert_truthful(fractions(path, 500), 10)


def test_parquet_fraction(tmp_path) -> None:
    path = tmp_path / "tutors.parquet"
    pq.write_table(pv.read_csv(pa.BufferReader(tutors_csv(5_000).encode())), path)
    assert_truthful(fractions(path, 500), 10)


def test_stdin_fraction(tmp_path) -> None:
    path = tmp_path / "tutors.csv"
    path.write_text(tutors_csv(20_000))
    with path.open("rb") as fh:
        saved = sys.stdin
        sys.stdin = type("In", (), {"buffer": fh, "isatty": lambda self: False})()
        try:
            src = Source(Path("-"), "csv", "tutors")
        finally:
            sys.stdin = saved
    assert_truthful([rb.done for rb in src.batches(2_000)], 10)
    assert src.name == "stdin.csv"
    src.close()


# --- progress: the bar's arithmetic --------------------------------------------------------


def test_first_update_shows_no_rate_and_no_eta() -> None:
    est = Estimate()
    est.update(50_000, 0.1, now=100.0)
    assert est.rate is None and est.eta is None


def test_rate_is_smoothed_from_the_second_update_and_eta_follows_the_fraction() -> None:
    est = Estimate()
    est.update(50_000, 0.1, now=100.0)
    est.update(100_000, 0.2, now=101.0)  # 50,000 rows in 1 s
    assert est.rate == pytest.approx(50_000)
    # 100,000 rows are 20%: 400,000 to come at 50,000 rows/s
    assert est.eta == pytest.approx(8.0)
    est.update(150_000, 0.3, now=101.5)  # 100,000 rows/s over this interval
    assert est.rate == pytest.approx(50_000 + 0.3 * 50_000)
    assert est.eta == pytest.approx(150_000 * 0.7 / 0.3 / 65_000)
    est.update(500_000, 1.0, now=105.0)
    assert est.eta == 0.0


def test_updates_at_the_same_instant_are_merged_into_the_next_interval() -> None:
    est = Estimate()
    est.update(10, 0.1, now=5.0)
    est.update(20, 0.2, now=6.0)
    est.update(30, 0.3, now=6.0)  # no time passed: no rate from it
    assert est.rate == pytest.approx(10)
    est.update(40, 0.4, now=7.0)  # 20 rows in the 1 s since the last measured update
    assert est.rate == pytest.approx(10 + 0.3 * (20 - 10))


def test_file_progress_keeps_an_estimate_per_file_with_its_clock() -> None:
    ticks = iter([0.0, 2.0, 3.0, 4.0])
    bar = FileProgress(enabled=False, clock=lambda: next(ticks))
    with bar:
        bar.update("a.csv", "tutors", 100, 0.5)
        bar.update("b.csv", "tutors", 10, 0.1)
        bar.update("a.csv", "tutors", 200, 1.0)
        bar.update("b.csv", "tutors", 30, 0.3)
    a, b = bar.estimates["a.csv"], bar.estimates["b.csv"]
    assert (a.rate, a.eta) == (pytest.approx(100 / 3), 0.0)
    assert b.rate == pytest.approx(10) and b.eta == pytest.approx(30 * 0.7 / 0.3 / 10)


# --- generate reports what it wrote --------------------------------------------------------


def test_generate_summary_on_stderr(tmp_path) -> None:
    result = tm(
        "generate", "--out", tmp_path, "--tutors", "5", "--sessions", "20", "--feedback", "7"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("wrote 3 files, 32 rows in ") and last.endswith(" rows/s)")


# --- publish reads stdin too ---------------------------------------------------------------


def test_publish_from_stdin(tutors) -> None:
    from redisfixtures import REDIS_URL, redis_client

    client = redis_client()  # skips without Redis (fails under CI)
    prefix = f"tmtest:{os.urandom(6).hex()}:"
    try:
        args = ("-", "--kind", "tutors", "--format", "csv", "--redis", REDIS_URL)
        result = tm("publish", *args, "--prefix", prefix, "--json", stdin=tutors.read_bytes())
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["published"] == 50 and summary["files"][0]["source"] == "-"
        assert client.xlen(summary["files"][0]["stream"]) == 50
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.mark.parametrize(
    "suffix,opener", [(".gz", gzip.open), (".bz2", bz2.open)], ids=["gz", "bz2"]
)
def test_a_compressed_rejects_name_is_compressed(tmp_path: Path, suffix: str, opener: Any) -> None:
    """--rejects r.jsonl.gz was written plain under that name."""
    src = tmp_path / "tutors.csv"
    src.write_text(tutors_csv(5, bad=2))
    rejects = tmp_path / f"r.jsonl{suffix}"
    done = enrich(src, "--rejects", rejects)
    assert done.returncode == 1, done.stderr
    with opener(rejects, "rt") as fh:
        lines = [json.loads(line) for line in fh]
    assert [r["errors"][0]["field"] for r in lines] == ["email", "email"]
