"""A stream input (stdin, a FIFO, a character device) is copied to a temporary file before
it is read, and it may be endless: `/dev/zero`, `yes |`, a producer that never stops.

- A stream that is not a file of the kind asked for is refused once its head is read (the
  CSV header's 1 MiB, Parquet's magic number), not after the whole of it was copied: these
  tests feed endless streams and count the bytes the command took before it said so. (A
  file-size limit on the command makes a regression fail at 64 MiB instead of filling the
  disk.)
- Whatever the stream, the copy stops with some room left on TMPDIR's file system
  (`inputs.spool_reserve`): a private tmpfs, where the machine allows mounting one.
- Copying the head first changes no verdict: a CSV whose header ends just before, at or
  just after the head's end reads the same from stdin as from a file.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tutormax_cli.files.csv import CSV_HEADER_MAX_BYTES
from tutormax_cli.files.inputs import spool_reserve

TUTORMAX = str(Path(sys.executable).with_name("tutormax"))
SESSIONS = Path(__file__).parent.parent / "sample_data" / "sessions.csv"
FSIZE_LIMIT = 64 << 20  # a regression copies this much, then fails: never a full disk
HEAD = CSV_HEADER_MAX_BYTES + 1


def _limited() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then write() fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


class Fed:
    """A command fed an endless stream on its stdin (or through a FIFO) by a thread that
    counts what it managed to write before the command stopped reading."""

    def __init__(self, args: list[str], chunks: Iterator[bytes], fifo: Path | None = None,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.written = 0
        self.proc = subprocess.Popen(
            [TUTORMAX, *args],
            stdin=subprocess.DEVNULL if fifo else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_limited,
            env={**os.environ, **(env or {})},
        )
        sink = fifo.open("wb") if fifo else self.proc.stdin
        assert sink is not None
        self.proc.stdin = None  # the feeder's alone: communicate() would close it (an EOF)
        self._thread = threading.Thread(target=self._feed, args=(sink, chunks), daemon=True)
        self._thread.start()

    def _feed(self, sink, chunks: Iterator[bytes]) -> None:  # type: ignore[no-untyped-def]
        try:
            for chunk in chunks:
                sink.write(chunk)
                self.written += len(chunk)
        except OSError:  # the command stopped reading (BrokenPipeError)
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.close()

    def result(self) -> tuple[int, str]:
        _out, err = self.proc.communicate(timeout=120)
        self._thread.join(timeout=30)
        return self.proc.returncode, err.decode()


def endless(head: bytes, unit: bytes, pause_s: float = 0.0) -> Iterator[bytes]:
    yield head
    block = unit * max(1, (1 << 16) // len(unit))
    while True:
        if pause_s:
            time.sleep(pause_s)
        yield block


ENDLESS = {
    # name: (arguments, (the stream's head, what repeats after it), what the refusal says)
    "zeros-as-csv": (["--format", "csv", "--kind", "sessions"], (b"", b"\0"),
                     "a header name is over"),
    "yes-as-csv": (["--format", "csv", "--kind", "sessions"], (b"", b"y\n"),
                   "missing required sessions columns"),
    "one-endless-quoted-name": (["--format", "csv", "--kind", "sessions"],
                                (b'"', b"abc,def\n"), "a header name is over"),
    "another-kinds-header": (["--format", "csv", "--kind", "tutors"],
                             (SESSIONS.read_bytes().split(b"\n")[0] + b"\n",
                                     SESSIONS.read_bytes().split(b"\n")[1] + b"\n"),
                             "missing required tutors columns"),
    "zeros-as-parquet": (["--format", "parquet", "--kind", "sessions"], (b"", b"\0"),
                         "not a readable Parquet file: it does not begin with PAR1"),
    "gzip-as-parquet": (["--format", "parquet", "--kind", "sessions"],
                        (b"", gzip.compress(b"y\n" * 50_000)), "a compressed Parquet file"),
    "csv-as-parquet": (["--format", "parquet", "--kind", "sessions"],
                       (b"session_id\n", b"s1\n"), "does not begin with PAR1"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("command", "name"),
    [(c, n) for c in ("enrich", "publish") for n in ENDLESS
     if not (c == "publish" and "parquet" in ENDLESS[n][0])],  # publish reads CSV and JSONL
)  # fmt: skip
def test_an_endless_stream_of_the_wrong_shape_is_refused_after_its_head(
    command: str, name: str, tmp_path: Path
) -> None:
    args, (head, unit), says = ENDLESS[name]
    extra = ["--no-db"] if command == "enrich" else ["--redis", "redis://127.0.0.1:1/0"]
    fed = Fed([command, "-", *args, *extra], endless(head, unit), env={"TMPDIR": str(tmp_path)})
    code, err = fed.result()
    assert code == 2 and "Traceback" not in err, err
    assert says in err, err
    # the head (1 MiB), what the pipe and the readers' buffers hold: never the stream
    assert fed.written < HEAD + (8 << 20), (fed.written, err)
    assert not list(tmp_path.iterdir())  # the spool is gone


def test_a_fifo_and_a_character_device_are_refused_after_their_head(tmp_path: Path) -> None:
    fifo = tmp_path / "sessions.csv"
    os.mkfifo(fifo)
    fed = Fed(["enrich", str(fifo), "--kind", "sessions", "--no-db"],
              endless(b"", b"y\n"), fifo=fifo)  # fmt: skip
    code, err = fed.result()
    assert code == 2 and "missing required sessions columns" in err, err
    assert fed.written < HEAD + (8 << 20), fed.written
    for fmt, says in (("csv", "a header name is over"), ("parquet", "does not begin with PAR1")):
        done = subprocess.run(
            [TUTORMAX, "enrich", "/dev/zero", "--format", fmt, "--kind", "sessions", "--no-db"],
            capture_output=True, text=True, timeout=120, preexec_fn=_limited,
        )  # fmt: skip
        assert done.returncode == 2 and says in done.stderr, done.stderr


# -- the room left on TMPDIR -------------------------------------------------------------------


def test_the_reserve_is_five_percent_and_a_gib_where_that_is_a_tenth_at_most() -> None:
    gib = 1 << 30
    assert spool_reserve(200 * gib) == 10 * gib  # 5%
    assert spool_reserve(20 * gib) == gib  # 5% is 1 GiB
    assert spool_reserve(15 * gib) == gib  # 1 GiB, more than 5%
    assert spool_reserve(10 * gib) == gib  # a tenth
    assert spool_reserve(5 * gib) == gib // 2  # a small one: a tenth
    assert spool_reserve(64 << 20) == (64 << 20) // 10
    assert spool_reserve(0) == 0


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of this test's own (mounting needs root: skipped otherwise)."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs."""
    with tmpfs(tmp_path / "tmpfs", "48m") as where:
        assert shutil.disk_usage(where).total <= 64 << 20
        yield where


VALID_ROW = SESSIONS.read_bytes().split(b"\n")[1] + b"\n"
UNBOUNDED = {  # streams no head check can refuse: the reserve is their bound
    "csv-endless-valid-rows": (["--format", "csv", "--kind", "sessions"],
                               SESSIONS.read_bytes().split(b"\n")[0] + b"\n", VALID_ROW),
    "jsonl-endless-zeros": (["--format", "jsonl", "--kind", "sessions"], b"", b"\0"),
    "jsonl-endless-records": (["--format", "jsonl", "--kind", "sessions"], b"",
                              b'{"session_id": "s1", "tutor_id": "t1"}\n'),
}  # fmt: skip


@pytest.mark.parametrize("name", UNBOUNDED)
def test_an_endless_stream_stops_with_the_reserve_left_free(name: str, small_tmpfs: Path) -> None:
    args, head, unit = UNBOUNDED[name]
    total = shutil.disk_usage(small_tmpfs).total
    fed = Fed(["enrich", "-", *args, "--no-db"], endless(head, unit),
              env={"TMPDIR": str(small_tmpfs)})  # fmt: skip
    code, err = fed.result()
    assert code == 2 and "Traceback" not in err, err
    said = re.search(r"stopped at ([\d,]+) bytes: ([\d,.]+) MiB are free there, and "
                     r"tutormax leaves ([\d,.]+) MiB free \(set TMPDIR", err)  # fmt: skip
    assert said, err
    copied = int(said[1].replace(",", ""))
    # it took what the reserve allows, to within a chunk, and never more
    assert total - spool_reserve(total) - (2 << 20) <= copied <= total - spool_reserve(total)
    assert float(said[2].replace(",", "")) >= spool_reserve(total) / 2**20 - 0.05
    assert shutil.disk_usage(small_tmpfs).free == shutil.disk_usage(small_tmpfs).total or (
        not list(small_tmpfs.iterdir())
    )  # the spool is gone


# -- the head copied first changes no verdict ----------------------------------------------------

SESSION_HEADER = SESSIONS.read_bytes().split(b"\n")[0].decode()


def _header_of(length: int, newline_in_pad: bool) -> bytes:
    """The sessions header and quoted padding columns: `length` bytes before its line end."""
    base = SESSION_HEADER + ","
    target = length - len(base)
    k = -(-target // 100_000)  # names under the csv module's 131,072-character field limit
    letters = target - 3 * k + 1  # each name quoted, the names comma-separated
    sizes = [letters // k + (i < letters % k) for i in range(k)]
    names = [(f"p{i}-" + "x" * n)[:n] for i, n in enumerate(sizes)]
    if newline_in_pad:
        names[0] = names[0][:2] + "\n" + names[0][3:]
    text = (base + ",".join(f'"{n}"' for n in names)).encode()
    assert len(text) == length
    return text


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    delta=st.integers(-4, 4),
    newline_in_pad=st.booleans(),
    end=st.sampled_from([b"\n", b"\r\n", b""]),
)
@example(delta=0, newline_in_pad=False, end=b"\n")
@example(delta=1, newline_in_pad=False, end=b"")
@example(delta=-1, newline_in_pad=True, end=b"\r\n")
def test_stdin_reads_as_the_file_does_around_the_heads_end(
    delta: int, newline_in_pad: bool, end: bytes, tmp_path: Path
) -> None:
    header = _header_of(CSV_HEADER_MAX_BYTES + delta, newline_in_pad)
    body = header + end + (VALID_ROW * 3 if end else b"")
    src = tmp_path / "s.csv"
    src.write_bytes(body)
    outs = {}
    for how in ("file", "stdin"):
        out = tmp_path / f"{how}.csv"
        args = [str(src)] if how == "file" else ["-", "--format", "csv"]
        done = subprocess.run(
            [TUTORMAX, "enrich", *args, "--kind", "sessions", "--no-db", "--out", str(out),
             "--as-of", "2025-03-01T00:00:00Z", "--rejects", str(tmp_path / f"{how}.rej")],
            input=body if how == "stdin" else None, capture_output=True, timeout=120,
        )  # fmt: skip
        said = done.stderr.decode().replace(str(src), "<input>").replace("stdin:", "<input>:")
        said = re.sub(r"\d+(\.\d+)? s\b|[\d,.]+ rows/s", "", said)
        outs[how] = (done.returncode, said.replace("stdin.csv", "<input>"),
                     out.read_bytes() if out.exists() else None)  # fmt: skip
    assert outs["file"][0] == outs["stdin"][0], outs
    assert outs["file"][2] == outs["stdin"][2]
    if outs["file"][0] == 2:
        assert outs["file"][1] == outs["stdin"][1], outs


TUTORS = SESSIONS.with_name("tutors.csv")


def _stdin_run(tmp: Path, data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TUTORMAX, "enrich", "-", "--kind", "tutors", "--format", "csv", "--no-db", "--out",
         "-", "--as-of", "2025-03-01T00:00:00Z"],
        input=data, capture_output=True, timeout=120, env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip


def test_a_small_stream_is_copied_on_a_file_system_fuller_than_the_reserve(
    tmp_path: Path,
) -> None:
    """A few KB on stdin where TMPDIR's file system has less free than the reserve: copied
    (it may take half of what was free), as the same bytes in a file are read; an endless
    stream there stops at that half."""
    with tmpfs(tmp_path / "tmpfs", "64m") as where:
        (where / "filler").write_bytes(b"\0" * (59 << 20))  # 5 MiB left, the reserve 6.4
        small = _stdin_run(where, TUTORS.read_bytes())
        assert small.returncode == 0, small.stderr
        assert small.stdout.count(b"\n") == TUTORS.read_bytes().count(b"\n")
        free = shutil.disk_usage(where).free
        fed = Fed(["enrich", "-", "--format", "csv", "--kind", "sessions", "--no-db"],
                  endless(SESSIONS.read_bytes().split(b"\n")[0] + b"\n", VALID_ROW),
                  env={"TMPDIR": str(where)})  # fmt: skip
        code, err = fed.result()
        assert code == 2 and "tutormax leaves" in err, err
        copied = int(re.search(r"stopped at ([\d,]+) bytes", err)[1].replace(",", ""))  # type: ignore[index]
        assert free // 2 - (2 << 20) <= copied <= free // 2


def test_a_file_system_that_does_not_say_its_size_is_not_judged(tmp_path: Path) -> None:
    """A tmpfs of size 0 has no limit and says 0 blocks, as some FUSE and network file
    systems do: every stdin was refused there ("0 MiB left free")."""
    with tmpfs(tmp_path / "tmpfs", "0") as where:
        assert shutil.disk_usage(where).total == 0
        done = _stdin_run(where, TUTORS.read_bytes())
        assert done.returncode == 0, done.stderr


def test_a_header_beginning_like_bzip2_is_csv_on_stdin_as_in_a_file(tmp_path: Path) -> None:
    """ "BZh" alone took a CSV for bzip2 on stdin (the file, named .csv, read fine)."""
    head, *rows = TUTORS.read_bytes().splitlines()
    data = b"\n".join([b"BZh91AY," + head, *(b"x," + r for r in rows if r)]) + b"\n"
    src = tmp_path / "t.csv"
    src.write_bytes(data)
    from_file = subprocess.run([TUTORMAX, "enrich", str(src), "--no-db", "--out", "-", "--kind",
                                "tutors", "--as-of", "2025-03-01T00:00:00Z"],
                               capture_output=True, timeout=120)  # fmt: skip
    from_stdin = _stdin_run(tmp_path, data)
    assert from_file.returncode == 0, from_file.stderr
    assert (from_stdin.returncode, from_stdin.stdout) == (from_file.returncode, from_file.stdout)
    assert b"bz2" not in from_stdin.stderr


def test_the_first_sigterm_stops_a_streams_copy(tmp_path: Path) -> None:
    """The first SIGTERM (a graceful stop) ends the copy of an endless stream at the next
    chunk: exit 143 saying so, nothing left in TMPDIR. It went on copying (to the reserve)."""
    fed = Fed(["enrich", "-", "--format", "csv", "--kind", "sessions", "--no-db"],
              endless(SESSIONS.read_bytes().split(b"\n")[0] + b"\n", VALID_ROW, 0.005),
              env={"TMPDIR": str(tmp_path)})  # fmt: skip
    deadline = time.monotonic() + 30
    while fed.written < HEAD + (2 << 20) and time.monotonic() < deadline:  # past the head
        time.sleep(0.05)
    fed.proc.send_signal(signal.SIGTERM)
    code, err = fed.result()
    assert code == 143 and "Traceback" not in err, err
    assert "while stdin was copied to a temporary file" in err, err
    assert not list(tmp_path.iterdir())
