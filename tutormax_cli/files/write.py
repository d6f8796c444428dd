"""Write enriched batches as CSV, Parquet or JSON Lines, and rejected rows as the rejects file.

Writers stream: one batch at a time. Where the output goes (`output_target`):

* a regular file, or a name not taken yet: into `<target>.partial` beside the *target* (a
  symlink is followed to the file it names), renamed onto the target by `commit()`, so a
  failed run never leaves a half-written file under the real name and a link stays a link.
  The new file takes the permission bits of the one it replaces.
* anything else (a FIFO, a character device such as /dev/null): written directly, in order,
  never renamed over, never unlinked on abort.
* `-`, /dev/stdout, /dev/fd/N: the open descriptor itself (a duplicate of it), so a
  redirection's append mode is kept and nothing is truncated or reopened.

A name ending in .gz, .zst/.zstd or .bz2 is compressed on the way (CSV and JSON Lines)."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import OutputError, ReaderGone, UsageError
from .encode import conform
from .formats import TABLE
from .inputs import STDIN, split_compression

_FD_PATH = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/(\d+)/fd)/(\d+)$")


@dataclass(frozen=True)
class OutputTarget:
    """Where an output's bytes go; see the module docstring."""

    given: Path  # as the user typed it (messages name it)
    path: Path  # the file renamed onto (replace), or the path opened (direct)
    mode: str  # "replace" | "direct" | "fd"
    fd: int | None = None  # mode "fd": the descriptor written through
    codec: str | None = None  # compressed on the way (from the name's suffix)
    what: str = "a file"  # for messages: "stdout", "a FIFO", "a character device", …

    @property
    def streamed(self) -> bool:
        """Written as the run goes (no temporary file): it cannot be all or nothing."""
        return self.mode != "replace"

    @property
    def label(self) -> str:
        return "stdout" if self.fd == 1 and str(self.given) == STDIN else str(self.given)


def output_target(path: Path) -> OutputTarget:
    """Classify an output path (no side effect). OutputError if it cannot be one."""
    codec = split_compression(path.name)[1]
    if str(path) == STDIN:
        return OutputTarget(path, path, "fd", 1, None, "stdout")
    fd = _descriptor(path)
    if fd is not None:
        what = {1: "stdout", 2: "stderr"}.get(fd, f"file descriptor {fd}")
        return OutputTarget(path, path, "fd", fd, codec, what)
    try:
        st = os.stat(path)
    except FileNotFoundError:  # a new file (or a dangling link: the file it names)
        return OutputTarget(path, Path(os.path.realpath(path)), "replace", None, codec)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        return OutputTarget(path, Path(os.path.realpath(path)), "replace", None, codec)
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {path}: it is a directory")
    what = (
        "a FIFO"
        if stat.S_ISFIFO(st.st_mode)
        else "a character device"
        if stat.S_ISCHR(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "a block device"
    )
    return OutputTarget(path, path, "direct", None, codec, what)


def _descriptor(path: Path) -> int | None:
    """The descriptor a path stands for (/dev/stdout, /dev/fd/N, /proc/self/fd/N, or a link
    whose chain passes through one), else None. NOTE: following such a link to the file it
    names and renaming onto that would lose a redirection's append mode (`>>`)."""
    p = os.path.abspath(path)
    for _ in range(40):  # /dev/stdout → /proc/self/fd/1 on Linux (a device on macOS: direct)
        m = _FD_PATH.match(p)
        if m and (m.group(1) is None or int(m.group(1)) == os.getpid()):
            return int(m.group(2))
        try:
            link = os.readlink(p)
        except OSError:  # not a link (or not there)
            return None
        p = os.path.normpath(os.path.join(os.path.dirname(p), link))
    return None


def writes_stdout(path: Path | None) -> bool:
    """Whether an output path (--out, --rejects) is the process's stdout (`-`, /dev/stdout,
    /dev/fd/1): such a run has no room on stdout for --json's document."""
    if path is None:
        return False
    try:
        return output_target(path).fd == 1
    except OutputError:
        return False


def check_output(target: OutputTarget, fmt: str, *, atomic: bool) -> None:
    """Refuse, before anything is written, what an output cannot be (UsageError)."""
    if not TABLE[fmt].streams and target.mode == "fd" and target.fd in (1, 2):
        raise UsageError(
            f"--out {target.given}: Parquet is not written to {target.what} (a Parquet "
            "reader needs the whole file to seek in); use --format csv or jsonl, or a file"
        )
    if not TABLE[fmt].outer_compression and target.codec:
        raise UsageError(
            f"--out {target.given}: Parquet compresses inside the file; drop the compression suffix"
        )
    if atomic and target.streamed:
        raise UsageError(
            f"--atomic: --out {target.given} is {target.what}, written as the run goes, so "
            "the run cannot be all or nothing; write to a file, or drop --atomic"
        )


class BatchWriter:
    """Streams tables of one schema to an output; the first batch fixes the schema.

    Encoding and writing happen on a background thread (Arrow releases the GIL there), so
    the next batch is enriched while this one is written; errors surface on the next call.
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.format = fmt
        self.target = output_target(path)
        t = self.target.path
        self.partial = t.with_name(t.name + ".partial") if not self.target.streamed else None
        self.schema: pa.Schema | None = None
        self._writer: Any = None
        self._fh: Any = None  # the sink: a NativeFile, or a Python file (a descriptor's dup)
        self._raw: Any = None  # under a compressing sink, the file itself
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="tutormax-writer"
        )
        self._pending: Future[None] | None = None

    @property
    def streamed(self) -> bool:
        """Written in place as the run goes (stdout, a FIFO, a device): an abort leaves what
        was written; nothing is renamed into place."""
        return self.target.streamed

    def write(self, table: pa.Table) -> None:
        with _writing(self.target.label):
            if self.schema is None:
                self.schema = table.schema
                self._open(table.schema)
            self._wait()
            assert self._pool is not None
            self._pending = self._pool.submit(self._write, conform(table, self.schema))

    def _write(self, table: pa.Table) -> None:
        self._writer.write(table)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _open(self, schema: pa.Schema) -> None:
        self._fh = self._sink()
        self._writer = TABLE[self.format].encoder(self._fh, schema)

    def _sink(self) -> Any:
        t = self.target
        if self.partial is not None:
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            sink: Any = pa.BufferedOutputStream(pa.OSFile(str(self.partial), "wb"), 1 << 20)
        elif t.fd is not None:
            sink = open(os.dup(t.fd), "wb", buffering=1 << 16)  # noqa: SIM115 - closed in _close
        else:  # a FIFO blocks here until it has a reader
            sink = pa.BufferedOutputStream(pa.OSFile(str(t.path), "wb"), 1 << 20)
        if t.codec is None:
            return sink
        self._raw = sink
        return pa.CompressedOutputStream(sink, t.codec)

    def finish(self, empty_schema: pa.Schema | None = None) -> None:
        """Write out and close the temporary file; an output with no row still gets a header."""
        with _writing(self.target.label):
            if self.schema is None:
                self.write((empty_schema or pa.schema([])).empty_table())
            self._wait()
            self._close()

    def commit(self, empty_schema: pa.Schema | None = None) -> None:
        """Finish (if not yet) and move the file into place under its real name (through a
        symlink: onto the file it names). A streamed output is done once finished."""
        if self._pool is not None:
            self.finish(empty_schema)
        if self.partial is None:
            return
        with _writing(self.target.label):
            target = self.target.path
            with suppress(FileNotFoundError):
                os.chmod(self.partial, stat.S_IMODE(os.stat(target).st_mode))
            os.replace(self.partial, target)

    def abort(self) -> None:
        """Stop; a temporary file is removed, a streamed output (a FIFO, stdout) is only
        closed: what was written of it stays written."""
        with suppress(Exception):
            self._wait()
        with suppress(Exception):
            self._close()
        if self.partial is not None:
            with suppress(OSError):
                self.partial.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for name in ("_fh", "_raw"):  # the compressing stream first, then the file under it
            fh = getattr(self, name)
            if fh is not None:
                setattr(self, name, None)
                if not fh.closed:
                    fh.close()


@contextmanager
def _writing(path: Path | str) -> Iterator[None]:
    """An OSError while writing an output (full disk, permissions) is a fatal error that
    names the file, not a traceback."""
    try:
        yield
    except BrokenPipeError as exc:
        raise ReaderGone(f"cannot write {path}: its reader went away") from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OutputError(f"cannot write {path}: {reason}") from exc
    except pa.ArrowException as exc:  # Arrow's own I/O errors (IOError subclasses) land here
        raise OutputError(f"cannot write {path}: {exc}") from exc
