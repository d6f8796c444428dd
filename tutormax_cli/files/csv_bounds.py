"""A CSV byte stream in which no field or record costs more than its cap (SPEC §6a).

Arrow parses a CSV record only whole, within one read block: a 200 MB cell was read by
blocks grown to fit it and cost about four times its size (786 MB for a 200 KB gzip file).
Once a record is too big for the ordinary block (files/csv.py), the file is read again
through `BoundedCsv`, which hands Arrow every record as it is, except:

* a field of more than FIELD_MAX_BYTES value bytes is cut after FIELD_MAX_BYTES + 1 of
  them (a quoted `""` is one value byte, never split): still over the cap, so its row gets
  `field_too_large` for it, as the whole field would (an oversized value is nulled before
  any other check looks at it: validate._hostile_checks);
* a record still over RECORD_MAX_BYTES after that is cut where it passes the cap, and ends
  with more fields than the header has, then MARKER and its size: Arrow reports it as a
  malformed row, and `cut_reason` makes that "record of N bytes … rejected unread".

So a row's verdict is the one the whole record would get (a record the ordinary block
holds is never near a cap). Fields and records are told apart as Arrow does: a quote opens
a quoted field only at the field's start, `""` inside one is a quote, what follows its
closing quote is more of its value, and `\\n`, `\\r` and `\\r\\n` end a record outside quotes.

A chunk without a quote is checked at C speed (numpy finds its longest field and record)
and handed on whole; the others go field by field. Only files that need it are read so.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

import numpy as np

from ..schema import FIELD_MAX_BYTES, RECORD_MAX_BYTES

READ_BYTES = 1 << 20
MARKER = "__tutormax_record_over_cap__"
_BOM = b"\xef\xbb\xbf"  # Arrow skips it at the start of a file
# A run of an odd number of quotes, the whole run: inside a quoted field, the field's end
# (what follows its last quote is not a quote).
_ODD_RUN = re.compile(rb'(?<!")"(?:"")*(?!")')
_SPECIAL = re.compile(rb"[,\r\n]")
_QUOTES = re.compile(rb'"+')
_START, _UNQUOTED, _QUOTED, _QUOTE = 0, 1, 2, 3  # where the scanner stands in a field


class BoundedCsv:
    """A read-only byte stream over `raw` (a CSV file, header first) with every field and
    record within its cap (see the module's note). `columns`: the header's field count."""

    def __init__(
        self,
        raw: Any,
        columns: int,
        field_max: int = FIELD_MAX_BYTES,
        record_max: int = RECORD_MAX_BYTES,
    ) -> None:
        self._raw = raw
        self._field_max, self._record_max = field_max, record_max
        self._filler = b"," * (columns + 1)
        self._out: list[bytes] = []
        self._base = 0  # offset in the input of the chunk being scanned
        self._state = _START
        self._field = 0  # value bytes of the current field handed on so far
        self._field_size = 0  # all of them (more once the field is cut)
        self._field_no = 0  # the current field's place in its record (0: the first)
        self._record_no = 0  # the current record's number (0: the header)
        self._record = 0  # bytes of the current record handed on so far
        self._record_start = 0  # its offset in the input
        self._cut_field = False  # dropping the rest of the current field
        self._cut_record = False  # dropping the rest of the current record
        self._open_quote = False  # a quote handed on and not yet closed
        self.cuts: deque[int] = deque()  # input sizes of the records cut, in input order
        # Fields cut: record number (the header is 0) → {field's place: its value bytes};
        # and the bytes in the input of each record with a field cut.
        self.cut_fields: dict[int, dict[int, int]] = {}
        self.record_sizes: dict[int, int] = {}

    # -- the file interface (read by files/csv._Utf8Guard, which Arrow reads) -------------------

    def read(self, n: int = -1) -> bytes:
        """(Read only by files/csv._Utf8Guard, which holds its lock around every read.)"""
        while True:
            chunk = self._raw.read(READ_BYTES if n is None or n <= 0 else n)
            if not chunk:
                self._end_of_input()
                return self._take()
            if self._base == 0 and chunk.startswith(_BOM):  # not text of the header
                self._out.append(_BOM)
                chunk, self._base, self._record_start = chunk[3:], 3, 3
            self._scan(chunk)
            self._base += len(chunk)
            if out := self._take():  # b"" would say the input ended
                return out

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def _take(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    # -- scanning -------------------------------------------------------------------------------

    def _scan(self, chunk: bytes) -> None:
        outside = self._state in (_START, _UNQUOTED) and not (self._cut_field or self._cut_record)
        if outside and b'"' not in chunk and self._quick(chunk):
            return
        i, n = 0, len(chunk)
        while i < n:
            state = self._state
            if state == _QUOTED:
                j = chunk.find(b'"', i)
                self._value(chunk, i, n if j < 0 else j)
                if j < 0:
                    return
                self._state, i = _QUOTE, j + 1  # a quote: `""`, or the field's end
            elif state == _QUOTE and chunk[i] == 0x22:
                self._value(chunk, i, i + 1, escaped=True)
                self._state = _QUOTED
                i = self._escaped_run(chunk, i + 1)  # `""` seen: there may be many
            elif state == _QUOTE:
                self._close_quote()
            elif state == _START and chunk[i] == 0x22:
                if self._emit(b'"'):  # (a record cut before: its last quote stays open)
                    self._open_quote = True
                self._state, i = _QUOTED, i + 1
            else:
                m = _SPECIAL.search(chunk, i)
                end = n if m is None else m.start()
                self._state = _UNQUOTED
                self._value(chunk, i, end)
                if m is None:
                    return
                if chunk[end] == 0x2C:  # a comma: the next field
                    self._emit(b",")
                    self._field_end()
                    self._field_no += 1
                else:
                    self._record_end(self._base + end, chunk[end : end + 1])
                i = end + 1

    def _quick(self, chunk: bytes) -> bool:
        """A chunk without a quote: handed on whole if no field or record in it passes its
        cap (found at C speed); False to go field by field."""
        a = np.frombuffer(chunk, np.uint8)
        ends = np.flatnonzero((a == 0x2C) | (a == 0x0A) | (a == 0x0D))
        n = len(chunk)
        if not len(ends):
            if self._field + n > self._field_max or self._record + n > self._record_max:
                return False
            self._out.append(chunk)
            self._field, self._record, self._state = self._field + n, self._record + n, _UNQUOTED
            self._field_size = self._field
            return True
        fields = np.diff(ends, prepend=-1 - self._field, append=n) - 1  # each field's bytes
        if int(fields.max()) > self._field_max:
            return False
        lines = ends[a[ends] != 0x2C]
        if len(lines):
            records = np.diff(lines, prepend=-1 - self._record, append=n) - 1
        else:
            records = np.array([self._record + n])
        if int(records.max()) > self._record_max:
            return False
        self._out.append(chunk)
        self._field = self._field_size = n - 1 - int(ends[-1])
        self._state = _UNQUOTED if self._field else _START
        if len(lines):
            last = int(lines[-1])
            self._record_no += int((records[:-1] > 0).sum())  # an empty line is no record
            self._field_no = int((a[last + 1 :] == 0x2C).sum())
            self._record = n - 1 - last
            self._record_start = self._base + last + 1
        else:
            self._field_no += len(ends)
            self._record += n
        return True

    def _value(self, chunk: bytes, i: int, end: int, *, escaped: bool = False) -> None:
        """Value bytes chunk[i:end] of the current field (with `escaped`, the second quote of
        a `""`, the first held back as _QUOTE)."""
        if end <= i:
            return
        size = 1 if escaped else end - i
        self._field_size += size
        if self._cut_field:
            return
        room = self._field_max + 1 - self._field
        if size > room:  # keep self._field_max + 1 value bytes: over the cap, as the field is
            if not escaped:
                self._emit(chunk[i : i + room])
                self._field += room
            self._cut_field = True
            return
        self._field += size
        self._emit(b'""' if escaped else chunk[i:end])

    def _escaped_run(self, chunk: bytes, i: int) -> int:
        """Inside quotes at chunk[i], right after a `""`: take at C speed the value up to
        the next run of quotes that ends the field (an odd one; a regex finds it) or that
        may go on in the next read (at the chunk's end), and return where that run begins,
        for the careful way. A cell of 20 MiB of `ab""` took 2.7 s a quote pair at a time;
        each call costs the span it takes, so a file costs what it holds. So does a run of
        pairs right after this one (a cell of 20 MiB of `""` took 7 s a pair at a time):
        its pairs are taken whole, and an odd quote left at its end is the careful way's."""
        n = len(chunk)
        if i < n and chunk[i] == 0x22:
            run = _QUOTES.match(chunk, i)
            assert run is not None
            pairs = (run.end() - i) // 2
            self._take_escaped(chunk, i, i + 2 * pairs, pairs)
            i += 2 * pairs
            if i >= n or chunk[i] == 0x22:  # the field's end, or the next read tells
                return i
        if i >= n:
            return i
        m = _ODD_RUN.search(chunk, i)
        if m is not None:
            stop = m.start()
        else:  # no odd run: up to a run of quotes at the end, whose length the next read tells
            stop = n
            while stop > i and chunk[stop - 1] == 0x22:
                stop -= 1
        if stop <= i:
            return i
        pairs = chunk.count(b'"', i, stop) // 2  # only `""` pairs are left before `stop`
        self._take_escaped(chunk, i, stop, pairs)
        return stop

    def _take_escaped(self, chunk: bytes, i: int, stop: int, pairs: int) -> None:
        """The quoted value in chunk[i:stop], which holds `pairs` `""` pairs and no other
        quote, taken within the field's cap."""
        value = stop - i - pairs
        self._field_size += value
        if self._cut_field:
            return
        room = self._field_max + 1 - self._field
        if value <= room:
            self._field += value
            self._emit(chunk[i:stop])
            return
        if room > 0:  # the cut, once a field: within 2 bytes a value byte of its start
            span = min(stop - i, 2 * room + 2)
            quotes = np.flatnonzero(np.frombuffer(chunk, np.uint8, span, i) == 0x22)
            counts = np.ones(span, np.int32)
            counts[quotes[0::2]] = 0  # a pair is one value byte: its second quote
            taken = np.cumsum(counts, dtype=np.int32)
            end = int(np.searchsorted(taken, room)) + 1  # never inside a pair
            self._emit(chunk[i : i + end])
            self._field += room
        self._cut_field = True

    def _close_quote(self) -> None:
        if self._open_quote and self._emit(b'"'):
            self._open_quote = False
        self._state = _UNQUOTED

    def _emit(self, data: bytes) -> bool:
        """Hand `data` on, unless the record is cut (then, or now, past its cap)."""
        if self._cut_record:
            return False
        if self._record + len(data) > self._record_max:
            self._cut_record = True
            return False
        self._record += len(data)
        self._out.append(data)
        return True

    def _field_end(self) -> None:
        if self._cut_field:
            self.cut_fields.setdefault(self._record_no, {})[self._field_no] = self._field_size
        self._field = self._field_size = 0
        self._cut_field, self._state = False, _START

    def _record_end(self, at: int, end: bytes) -> None:
        """The record ends at input offset `at` with `end` (\\r or \\n; the \\n of a \\r\\n
        ends an empty record, which Arrow skips as it does a blank line)."""
        if at > self._record_start:  # not an empty line: a record
            self._field_end()
            if self._record_no in self.cut_fields:
                self.record_sizes[self._record_no] = at - self._record_start
            self._record_no += 1
        if self._cut_record:
            size = at - self._record_start
            if self._open_quote:
                self._out.append(b'"')
            self._out.append(self._filler + f"{MARKER}{size}".encode())
            self.cuts.append(size)
        if end:
            self._out.append(end)
        self._state, self._field, self._record, self._record_start = _START, 0, 0, at + 1
        self._field_size = self._field_no = 0
        self._cut_field = self._cut_record = self._open_quote = False

    def _end_of_input(self) -> None:
        if self._state == _QUOTE:
            self._close_quote()
        if self._cut_record:
            self._record_end(self._base, b"\n")
        elif self._cut_field:  # its size told; nothing added (an open quote may hold it)
            self._record_end(self._base, b"")


def cut_reason(text: str, cuts: deque[int]) -> tuple[str, str] | None:
    """For a malformed row's text: (the text before the filler, the reason) if BoundedCsv
    cut that record, else None. A row that merely ends like a cut one does not match the
    size of the next cut."""
    at = text.rfind(MARKER)
    digits = text[at + len(MARKER) :].rstrip("\r\n") if at >= 0 else ""
    if not digits.isdigit() or not cuts or cuts[0] != int(digits):
        return None
    size = cuts.popleft()
    reason = f"record of {size:,} bytes, over the {RECORD_MAX_BYTES:,}-byte cap: rejected unread"
    return text[:at].rstrip(","), reason
