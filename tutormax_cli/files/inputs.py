"""Where an input's bytes come from: a file, a compressed file (`.gz`, `.zst`/`.zstd`,
`.bz2`), or `-` (stdin). Stdin, and any input that is not a regular file (a FIFO,
`<(zcat …)`), is first copied to an unlinked temporary file (in TMPDIR, 1 MiB at a time),
because a run reads an input more than once (the header probe, the duplicate-key
pre-pass) and Parquet needs to seek; the space is freed when the run ends, however it ends.

A stream is bounded twice while it is copied, since it may be endless (`/dev/zero`, `yes`):
- its head is copied first (`head_bytes`: what the format's header check reads), checked
  by the caller (files/read.Source), and only then the rest (`_Input.finish`): a stream
  that is not a file of the kind asked for is refused after its first MiB, not its last;
- the copy stops, exit 2 naming TMPDIR, once its file system has less than `spool_reserve`
  free (5% of it, at least 1 GiB on any but a small one) and the spool holds more than
  half of what was free when it began: what the machine's other programs need is not
  tutormax's to take, and a small input still goes on a nearly full disk. A JSON Lines
  stream has no such head (a line over the cap is a rejected row, not the end of the run),
  so this is its only bound. A compressed stream (told by its first bytes) is copied whole
  before its head is read (Source calls `finish`), since its head cannot be read alone."""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import InputError, Interrupted, first_line
from ..schema import MAX_COLUMNS

COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}


STDIN = "-"


SPOOL_CHUNK_BYTES = 1 << 20
SPOOL_RESERVE_BYTES = 1 << 30


def spool_reserve(size: int) -> int:
    """What a spool leaves free on a file system of `size` bytes: 5% of it, and at least
    1 GiB where that is at most a tenth of it (10% of a small one)."""
    return max(size // 20, min(SPOOL_RESERVE_BYTES, size // 10))


def is_stdin(path: Path | str) -> bool:
    return str(path) == STDIN


def split_compression(name: str) -> tuple[str, str | None]:
    """(the name without its compression suffix, the codec): `a.csv.gz` → (`a.csv`, gzip)."""
    dot = name.rfind(".")
    codec = COMPRESSIONS.get(name[dot:].lower()) if dot > 0 else None
    return (name[:dot], codec) if codec else (name, None)


class _Input:
    """Where a source's bytes come from: a file, a compressed file, or a spool (stdin, a
    FIFO). `open()` gives a fresh binary reader each time; `fraction()` turns the bytes a
    reader has parsed into the fraction of the input done."""

    def __init__(
        self, path: Path, head_bytes: int | None = None, stop: Callable[[], bool] | None = None
    ) -> None:
        """`head_bytes`: for a stream, copy only that much for now (see `finish`); `stop`:
        asked between two chunks of a stream's copy (the command's graceful stop)."""
        self.path = path
        self._stop = stop
        self.stdin = is_stdin(path)
        self.label = "stdin" if self.stdin else str(path)
        self.base, self.codec = (STDIN, None) if self.stdin else split_compression(path.name)
        self._spool: Any = None
        self._rest: Any = None  # the stream whose head alone is spooled, until `finish`
        if self.stdin:
            self._spool_from(sys.stdin.buffer if sys.stdin is not None else None, head_bytes)
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except OSError as exc:
            raise InputError(f"{path}: not readable: {exc.strerror or exc}") from None
        if stat.S_ISREG(st.st_mode):
            self.size = st.st_size
            return
        if stat.S_ISDIR(st.st_mode) or not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            raise InputError(f"{path}: not a file")
        try:  # a FIFO, /dev/stdin, <(zcat …): read once, into the spool
            fh = path.open("rb")
        except OSError as exc:
            raise InputError(f"{path}: not readable: {exc.strerror or exc}") from None
        try:
            self._spool_from(fh, head_bytes)
        finally:
            if self._rest is None:
                fh.close()

    def __str__(self) -> str:
        return self.label

    def _spool_from(self, stream: Any, head_bytes: int | None) -> None:
        if stream is None:
            raise InputError("stdin: there is no standard input to read")
        if stream.isatty():
            raise InputError("stdin is a terminal: pipe or redirect the input (… | tutormax …)")
        self._spool = tempfile.TemporaryFile(prefix="tutormax-input-")  # noqa: SIM115 - kept
        self.size = 0
        st = os.fstatvfs(self._spool.fileno())
        self._free_at_start = st.f_bavail * st.f_frsize
        ended = self._copy(stream, head_bytes)
        self.codec = compression_of(os.pread(self._spool.fileno(), len(_BZ2_BLOCK) + 4, 0))
        if not ended:
            self._rest = stream

    def finish(self) -> None:
        """Copy the rest of a stream whose head alone was spooled (a no-op otherwise)."""
        if self._rest is not None:
            stream, self._rest = self._rest, None
            try:
                self._copy(stream, None)
            finally:
                if stream is not getattr(sys.stdin, "buffer", None):
                    stream.close()

    def _copy(self, stream: Any, limit: int | None) -> bool:
        """Append up to `limit` bytes of `stream` (all of it if None) to the spool, within
        the free-space reserve; whether the stream ended."""
        spool = self._spool
        try:
            while limit is None or self.size < limit:
                if self._stop is not None and self._stop():
                    self.close()
                    raise Interrupted(
                        f" while {self.label} was copied to a temporary file "
                        f"({self.size:,} bytes): nothing was read from it or written"
                    )
                want = SPOOL_CHUNK_BYTES if limit is None else min(limit - self.size, 1 << 20)
                chunk = stream.read(want)
                if not chunk:
                    return True
                self._check_room(len(chunk))
                spool.write(chunk)
                self.size += len(chunk)
            return False
        except OSError as exc:
            self.close()
            raise InputError(
                f"{self.label}: cannot copy the input to a temporary file in "
                f"{tempfile.gettempdir()}: {exc.strerror or exc} (set TMPDIR to a roomier place)"
            ) from None
        finally:
            if not spool.closed:
                spool.flush()

    def _check_room(self, more: int) -> None:
        """InputError if writing `more` bytes would leave less than the reserve free, unless
        the spool is still under half of what was free when it began (a small input on a
        file system fuller than the reserve is copied, as a file would be read). A file
        system that does not say its size (0 blocks: some FUSE and network ones) is not
        judged."""
        self._spool.flush()  # what the file system counts
        st = os.fstatvfs(self._spool.fileno())
        if st.f_blocks == 0:
            return
        reserve = spool_reserve(st.f_blocks * st.f_frsize)
        free = st.f_bavail * st.f_frsize
        if free - more >= reserve or self.size + more <= self._free_at_start // 2:
            return
        self.close()
        raise InputError(
            f"{self.label}: copying the input to a temporary file in {tempfile.gettempdir()} "
            f"stopped at {self.size:,} bytes: {free / 2**20:,.1f} MiB are free there, and "
            f"tutormax leaves {reserve / 2**20:,.1f} MiB free (set TMPDIR to a roomier place, "
            "or give the input as a file)"
        )

    def open(self) -> Any:
        """A new binary reader at the start: buffered, readline-able; seekable unless the
        input is compressed."""
        raw: Any
        if self._spool is not None:
            raw = io.BufferedReader(_SpoolView(self._spool.fileno(), self.size), 1 << 16)
            if self.codec is None:
                return raw
        elif self.codec is None:
            return self.path.open("rb")
        else:
            raw = pa.OSFile(str(self.path))
        try:
            stream = pa.CompressedInputStream(raw, self.codec)
        except (pa.ArrowException, OSError):
            raw.close()
            raise
        return io.BufferedReader(_Decompressed(stream, raw), 1 << 16)

    def native(self) -> Any:
        """What Arrow's Parquet reader opens: the path of a file, a reader of a spool."""
        return str(self.path) if self._spool is None else self.open()

    def fraction(self, parsed: int, fh: Any) -> float:
        """How much of the input `parsed` bytes (of decompressed text) are.

        NOTE: never the reader's position: Arrow reads far ahead of what it has parsed. For
        a compressed input the decompressed size is not known up front; it is estimated as
        the file size times the ratio seen so far (text produced / compressed bytes
        consumed), so the fraction is an estimate that firms up as the run goes."""
        if self.codec is None:
            return parsed / max(self.size, 1)
        dec = getattr(fh, "raw", None)
        if not isinstance(dec, _Decompressed) or not dec.consumed():
            return 0.0
        total = self.size * (dec.produced / dec.consumed())
        return parsed / max(total, 1.0)

    def close(self) -> None:
        if self._rest is not None and self._rest is not getattr(sys.stdin, "buffer", None):
            self._rest.close()
        self._rest = None
        if self._spool is not None:
            spool, self._spool = self._spool, None
            spool.close()


# A spooled input (stdin, a FIFO) is told compressed by its first bytes.
# gzip's magic and its one method (deflate); zstd's frame magic; bzip2's "BZh", a block
# size digit, then a block's magic (pi) or, for an empty stream, the end's (sqrt(pi)): "BZh"
# alone is a CSV header's first bytes as well.
_GZIP, _ZSTD = b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd"
_BZ2_BLOCK, _BZ2_END = bytes.fromhex("314159265359"), bytes.fromhex("177245385090")


def compression_of(head: bytes) -> str | None:
    """The codec a spooled stream's first bytes say it is compressed with, or None."""
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_ZSTD):
        return "zstd"
    level, magic = head[3:4], head[4:10]
    bz2 = head[:3] == b"BZh" and level.isdigit() and level != b"0"
    return "bz2" if bz2 and magic in (_BZ2_BLOCK, _BZ2_END) else None


class _SpoolView(io.RawIOBase):
    """One reader of the spool, with its own position: reads by offset (pread), so readers
    of the same spool never move each other."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd, self._size, self._pos = fd, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self._fd, len(buffer), self._pos)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def tell(self) -> int:
        return self._pos


class _Decompressed(io.RawIOBase):
    """Arrow's decompressing stream as a Python raw stream, counting what it produces and
    (through the file under it) what it consumed, for `_Input.fraction`."""

    def __init__(self, stream: Any, raw: Any) -> None:
        super().__init__()
        self._stream, self._raw = stream, raw
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = int(self._stream.readinto(buffer))
        except pa.ArrowException as exc:  # a corrupt or truncated stream
            raise OSError(f"cannot decompress: {first_line(exc)}") from None
        self.produced += n
        return n

    def consumed(self) -> int:
        try:
            return int(self._raw.tell())
        except (OSError, ValueError, pa.ArrowException):
            return 0

    def close(self) -> None:
        if not self.closed:
            with suppress(Exception):
                self._stream.close()
            with suppress(Exception):
                self._raw.close()
        super().close()


def _check_names(path: _Input, names: list[str]) -> None:
    """A header of at most MAX_COLUMNS columns, each name once (CSV and Parquet)."""
    if len(names) > MAX_COLUMNS:
        raise InputError(
            f"{path}: {len(names):,} columns in the header, over the limit of {MAX_COLUMNS:,}"
        )
    twice = [n for n, count in Counter(names).items() if count > 1]
    if twice:
        shown = ", ".join(repr(n) for n in twice[:10]) + (" …" if len(twice) > 10 else "")
        raise InputError(f"{path}: duplicate column names in the header: {shown}")
