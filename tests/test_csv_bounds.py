"""csv_bounds.BoundedCsv: a CSV stream in which no field or record passes its cap (SPEC §6a).

Its output is compared with the input as Arrow parses both: every record the same, but for
a field over the cap (its first FIELD_MAX_BYTES + 1 value bytes, and its size reported) and
a record still over the cap after that (a malformed row, said so). The caps are made small
here so that generated files reach them; the installed command is then run on real sizes,
counting its memory."""

from __future__ import annotations

import gzip
import io
import json
import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pv
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hostile_corpus import tutormax, vm_peaks

from tutormax_cli.files import csv_bounds
from tutormax_cli.files.csv_bounds import BoundedCsv, cut_reason

FIELD, RECORD = 8, 40  # the caps in the generated cases


class Chunks(io.RawIOBase):
    """`data`, read back in the sizes `sizes` gives (cycled): reads split anywhere."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.at, self.sizes, self.i = data, 0, sizes or [1 << 20], 0

    def read(self, n: int = -1) -> bytes:
        size = self.sizes[self.i % len(self.sizes)]
        self.i += 1
        out = self.data[self.at : self.at + size]
        self.at += len(out)
        return out


def arrow_rows(data: bytes, columns: int) -> tuple[list[list[bytes | None]], list[str]]:
    """Rows of a CSV text as Arrow parses it (values as bytes), and its malformed rows' texts."""
    bad: list[str] = []

    def invalid(row: object) -> str:
        bad.append(row.text)  # type: ignore[attr-defined]
        return "skip"

    names = [f"c{i}" for i in range(columns)]
    table = pv.read_csv(
        io.BytesIO(data),
        read_options=pv.ReadOptions(block_size=1 << 22),
        parse_options=pv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid),
        convert_options=pv.ConvertOptions(
            column_types={n: pa.binary() for n in names}, strings_can_be_null=False
        ),
    )
    return [list(r.values()) for r in table.to_pylist()], bad


def bounded(
    data: bytes, columns: int, sizes: list[int], field: int = FIELD, record: int = 1 << 20
) -> BoundedCsv:
    return BoundedCsv(Chunks(data, sizes), columns, field, record)


def read_all(stream: BoundedCsv, n: int) -> bytes:
    out = []
    while chunk := stream.read(n):
        out.append(chunk)
    return b"".join(out)


_TEXT = st.text(alphabet='ab,"\r\né€', max_size=14)
_ASCII = st.text(alphabet='ab,"\r\n', max_size=14)


@st.composite
def csv_files(
    draw: st.DrawFn, text: st.SearchStrategy[str] = _TEXT
) -> tuple[bytes, int, list[list[str]], list[list[bool]]]:
    """A CSV file of 2-3 columns whose records are well formed, each field quoted when it
    must be (and sometimes when it need not), line ends of every kind; its records, and
    which fields are quoted."""
    columns = draw(st.integers(2, 3))
    rows = draw(st.lists(st.lists(text, min_size=columns, max_size=columns), max_size=8))
    ends = [b"\n", b"\r\n", b"\r"]
    parts = [b",".join(f"c{i}".encode() for i in range(columns)) + b"\n"]
    quoted = []
    for row in rows:
        cells, flags = [], []
        for value in row:
            quote = draw(st.booleans()) or any(c in value for c in ',"\r\n') or value == ""
            raw = value.encode()
            cells.append(b'"' + raw.replace(b'"', b'""') + b'"' if quote else raw)
            flags.append(quote)
        parts.append(b",".join(cells) + draw(st.sampled_from(ends)))
        quoted.append(flags)
    return b"".join(parts), columns, rows, quoted


@settings(max_examples=400, deadline=None)
@given(csv_files(), st.lists(st.integers(1, 9), min_size=1, max_size=6))
def test_fields_over_the_cap_are_cut_and_sized_the_rest_is_as_read(
    case: tuple[bytes, int, list[list[str]], list[list[bool]]], sizes: list[int]
) -> None:
    data, columns, rows, _ = case
    stream = bounded(data, columns, sizes)
    got, bad = arrow_rows(read_all(stream, 5), columns)
    assert not bad
    want = [[v.encode() for v in row] for row in rows]
    assert len(got) == len(want)
    cut = {}
    for number, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        for place, (gv, wv) in enumerate(zip(g, w, strict=True)):
            assert gv == wv[: FIELD + 1], (number, place)
            if len(wv) > FIELD + 1:  # less was kept than the value holds
                cut.setdefault(number, {})[place] = len(wv)
    assert stream.cut_fields == cut


@settings(max_examples=300, deadline=None)
@given(csv_files(_ASCII), st.lists(st.integers(1, 9), min_size=1, max_size=6))
def test_a_record_over_the_cap_is_a_malformed_row_that_says_so(
    case: tuple[bytes, int, list[list[str]], list[list[bool]]], sizes: list[int]
) -> None:
    """(ASCII: Arrow decodes a malformed row's text, which the reader's UTF-8 guard makes
    safe in the command; here the texts go to Arrow as they are.)"""
    data, columns, rows, quoted = case
    stream = bounded(data, columns, sizes, record=RECORD // 2)
    got, bad = arrow_rows(read_all(stream, 7), columns)
    kept, cut = iter(got), iter(bad)
    for row, flags in zip(rows, quoted, strict=True):
        values = [v.encode()[: FIELD + 1] for v in row]
        # What the record is handed on as: its fields (quotes and `""` included), commas.
        text = sum(
            len(v) + (2 + v.count(b'"') if q else 0) for v, q in zip(values, flags, strict=True)
        )
        if text + len(row) - 1 <= RECORD // 2:
            assert next(kept) == values
        else:
            reason = cut_reason(next(cut), stream.cuts)
            assert reason is not None and "rejected unread" in reason[1]
    assert next(kept, None) is None and next(cut, None) is None
    assert not stream.cuts  # every cut record was reported, in order


def test_a_row_ending_like_a_cut_one_is_not_taken_for_one() -> None:
    from collections import deque

    text = "a,b,,," + csv_bounds.MARKER + "77"
    assert cut_reason(text, deque()) is None
    assert cut_reason(text, deque([78])) is None
    hit = cut_reason(text, deque([77]))
    assert hit is not None and hit[0] == "a,b" and "77 bytes" in hit[1]


def test_quick_chunks_and_careful_ones_agree() -> None:
    """Unquoted chunks go through numpy, quoted ones field by field: one random file read
    in both ways, with reads split at every size, gives one text."""
    rnd = random.Random(7)
    lines = [b"a,b,c"]
    for _ in range(300):
        cells = [b"x" * rnd.choice([0, 1, 49, 50, 51, 120]) for _ in range(3)]
        lines.append(b",".join(cells))
    data = b"\r\n".join(lines) + b"\n"
    quoted = data.replace(b"x" * 120, b'"' + b"x" * 120 + b'"')
    for size in (1, 3, 64, 1000, 1 << 20):
        plain = read_all(bounded(data, 3, [size], 50, 400), 4096)
        careful = read_all(bounded(quoted, 3, [size], 50, 400), 4096)
        assert plain == careful.replace(b'"', b""), size


# -- the installed command, real caps ------------------------------------------------------

HEADER = "session_id,tutor_id,student_id,scheduled_start,duration_minutes,subject\n"


def _row(sid: str, subject: str) -> str:
    return f"{sid},t1,u1,2024-01-01T00:00:00Z,30,{subject}\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux")
@pytest.mark.parametrize("shape", ["gzip-100mb-cell", "sparse-600mb-cell", "quoted-40mb"])
def test_a_huge_csv_cell_is_rejected_in_bounded_memory(tmp_path: Path, shape: str) -> None:
    """A cell of 100 MB in a 100 KB gzip file cost 500 MB; one of 600 MB crashed (exit 3, a
    4 GiB block); now each is its row's field_too_large, its size told, the next row read,
    and the run's resident set stays near a small run's."""
    (tmp_path / "small.csv").write_text(HEADER + _row("s0", "Math"))
    tutormax(tmp_path, "enrich", "small.csv", "--no-db", measure=True)
    normal = vm_peaks(tmp_path)[1]
    assert normal > 0
    size = {"gzip-100mb-cell": 100 << 20, "sparse-600mb-cell": 600 << 20, "quoted-40mb": 40 << 20}
    n = size[shape]
    if shape == "gzip-100mb-cell":
        name = "big.csv.gz"
        with gzip.open(tmp_path / name, "wb", compresslevel=1) as fh:
            fh.write((HEADER + _row("s1", "")).encode()[:-1])
            block = b"a" * (1 << 20)
            for _ in range(n >> 20):
                fh.write(block)
            fh.write(b"\n" + _row("s2", "Math").encode())
    elif shape == "sparse-600mb-cell":  # a hole reads as NUL bytes: no disk used
        name = "big.csv"
        with open(tmp_path / name, "wb") as fh:
            fh.write((HEADER + _row("s1", "")).encode()[:-1])
            fh.seek(n, 1)
            fh.write(b"\n" + _row("s2", "Math").encode())
    else:
        name = "big.csv"
        with open(tmp_path / name, "wb") as fh:
            fh.write((HEADER + _row("s1", "")).encode()[:-1] + b'"')
            chunk = b'ab""c,\n' * (1 << 17)
            for _ in range(n // len(chunk)):
                fh.write(chunk)
            fh.write(b'"\n' + _row("s2", "Math").encode())
    run = tutormax(tmp_path, "enrich", name, "--no-db", "--json", "--rejects", "r.jsonl",
                   measure=True)  # fmt: skip
    hwm = vm_peaks(tmp_path)[1]
    assert run.code == 1, run.context()
    assert run.doc is not None and run.doc["files"][0]["accepted"] == 1
    reject = json.loads((tmp_path / "r.jsonl").read_text())
    assert reject["row"] == 1
    assert [e["code"] for e in reject["errors"]] == ["field_too_large"]
    if shape == "sparse-600mb-cell":  # 1 KiB of NULs is 6 KiB of JSON: over a row's echo
        assert reject["values"]["_omitted"]["columns"] == 1
    else:
        echo = reject["values"]["subject"]
        assert echo["truncated"] is True
        want = n if shape == "gzip-100mb-cell" else (n // (7 << 17)) * (6 << 17)  # `""`: 1 byte
        assert echo["bytes"] == want
    assert hwm < normal + (120 << 20), (hwm >> 20, normal >> 20)


# -- Parquet: a page is decompressed whole, so one over its limit is not read -----------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux")
@pytest.mark.parametrize("shape", ["text-page", "int-page", "second-row-group"])
def test_a_parquet_page_too_big_to_decompress_is_refused_unread(tmp_path: Path, shape: str) -> None:
    """8 KB of zstd held a 200 MB page of one value, which cost 919 MB to reject; a page of
    ten million zeros is as small. Each is exit 2 naming the column and the rows, before
    the page is decompressed, its resident set near a small run's."""
    import pyarrow.parquet as pq

    (tmp_path / "small.csv").write_text(HEADER + _row("s0", "Math"))
    tutormax(tmp_path, "enrich", "small.csv", "--no-db", measure=True)
    normal = vm_peaks(tmp_path)[1]

    def sessions(n: int, subject: pa.Array, duration: pa.Array) -> pa.Table:
        return pa.table({"session_id": [f"s{i}" for i in range(n)], "tutor_id": ["t1"] * n,
                         "student_id": ["u1"] * n, "scheduled_start": ["2024-01-01T00:00:00Z"] * n,
                         "duration_minutes": duration, "subject": subject})  # fmt: skip

    src = tmp_path / "bomb.parquet"
    if shape == "text-page":
        table = sessions(1, pa.array(["a" * (100 << 20)]), pa.array([30]))
        pq.write_table(table, src, compression="zstd", use_dictionary=False)
        column, rows = "subject", "rows 1-1"
    elif shape == "int-page":
        import numpy as np

        n = 10_000_000
        zeros = pa.array(np.zeros(n, np.int32))

        def same(text: str) -> pa.Array:  # n rows of one value, 4 bytes each
            return pa.DictionaryArray.from_arrays(zeros, pa.array([text]))

        table = pa.table({"session_id": same("s"), "tutor_id": same("t1"),
                          "student_id": same("u1"), "scheduled_start": same("2024-01-01"),
                          "duration_minutes": pa.array(np.full(n, 30, np.int64)),
                          "subject": same("Math")})  # fmt: skip
        pq.write_table(table, src, compression="zstd", data_page_size=1 << 30,
                       max_rows_per_page=n, write_batch_size=n, row_group_size=n,
                       use_dictionary=["session_id", "tutor_id", "student_id",
                                       "scheduled_start", "subject"])  # fmt: skip
        del table, zeros
        column, rows = "duration_minutes", f"rows 1-{n:,}"
    else:
        ok = sessions(2, pa.array(["Math", "Art"]), pa.array([30, 40]))
        bad = sessions(1, pa.array(["a" * (100 << 20)]), pa.array([30]))
        with pq.ParquetWriter(src, ok.schema, compression="zstd", use_dictionary=False) as w:
            w.write_table(ok)
            w.write_table(bad)
        column, rows = "subject", "rows 3-3 (row group 1)"
    assert src.stat().st_size < 4 << 20  # (the repeated indices of 10M rows: 3.6 MB)
    run = tutormax(tmp_path, "enrich", src.name, "--no-db", measure=True)
    hwm = vm_peaks(tmp_path)[1]
    assert run.code == 2, run.context()
    line = run.stderr.strip().splitlines()[-1]
    assert f"column {column}, {rows}" in line and "over the 67,108,864-byte limit" in line, line
    assert "Traceback" not in run.stderr
    assert hwm < normal + (120 << 20), (hwm >> 20, normal >> 20)


def test_a_field_of_escaped_quotes_is_cut_exactly_at_any_read_size() -> None:
    """`ab""` repeated (and runs of four quotes): taken at C speed, not a quote pair at a
    time (a 20 MiB cell took 2.7 s), cut where its value passes the cap, never inside a
    pair, and its value's size told."""
    value = 'ab"' * 700 + '""' * 50 + "z"  # value bytes: 2,100 + 100 + 1
    raw = value.replace('"', '""').encode()
    data = b'c0,c1\n"' + raw + b'",x\ny,"' + raw + b'"\n'
    for size in (1, 2, 3, 5, 64, 1000, 1 << 20):
        stream = bounded(data, 2, [size], field=1000)
        got, bad = arrow_rows(read_all(stream, 4096), 2)
        assert not bad and got == [[value.encode()[:1001], b"x"], [b"y", value.encode()[:1001]]]
        assert stream.cut_fields == {1: {0: len(value)}, 2: {1: len(value)}}, size


def test_a_bom_and_a_quoted_header_cell_do_not_shift_the_record_numbers() -> None:
    """A leading BOM was taken for text of the header's first cell, so a quoted newline in
    that cell ended a record: every later size went to the row before (the re-review)."""
    big = b"x" * 30
    data = b'\xef\xbb\xbf"c\n0",c1\n' + big + b",a\nb," + big + b"\n"
    stream = bounded(data, 2, [7], field=10)
    out = read_all(stream, 64)
    assert out.startswith(b'\xef\xbb\xbf"c\n0",c1\n')
    assert stream.cut_fields == {1: {0: 30}, 2: {1: 30}}


def test_a_malformed_record_with_a_field_cut_tells_its_size_in_the_file() -> None:
    """Its echo said the size of what was read (the cut text), not of the record."""
    from tutormax_cli.files.batch import Malformed, RawBatch
    from tutormax_cli.files.rejects import echo_values, malformed_rows

    data = b"c0,c1\n" + b"y" * 50 + b",a,b\nok,ok\n"
    stream = bounded(data, 2, [1 << 20], field=10)
    read_all(stream, 64)
    assert stream.record_sizes == {1: 54}
    bad = Malformed(1, "y" * 2000, "expected 2 fields, found 3", stream.record_sizes[1])
    rb = RawBatch(pa.table({"c0": pa.array([], pa.string())}), 1, (1,), [bad])
    ((_, values, _),) = malformed_rows(rb)
    assert echo_values(values, set())["_raw"]["bytes"] == 54


def test_the_scanners_work_grows_with_the_file_not_with_its_escaped_quotes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After each `""` the scanner looked at a whole MiB with numpy however soon the field
    ended: an ordinary export (subjects as `"[""A"",""B""]"`) read through it took 5 ms a
    row, and 41 KB of gzip took a minute (the second re-review). What numpy is given now is
    bounded by the input's size. (Counted, not timed.)"""
    import numpy as np

    given: list[int] = []
    real = np.frombuffer

    def counted(buffer: bytes, dtype: object = float, count: int = -1, offset: int = 0):
        out = real(buffer, dtype, count, offset)
        given.append(out.nbytes)
        return out

    monkeypatch.setattr(np, "frombuffer", counted)
    rows = [b'"t%d","[""Calculus"",""ACT Prep""]"' % k for k in range(3000)]
    rows.append(b'"big","' + b'a""' * 2000 + b'"')
    data = b"c0,c1\n" + b"\n".join(rows) + b"\n"
    stream = bounded(data, 2, [1 << 20], field=1000)
    got, bad = arrow_rows(read_all(stream, 1 << 20), 2)
    assert not bad and len(got) == 3001
    assert sum(given) <= 2 * len(data), (sum(given), len(data))


def test_a_cell_of_escaped_quotes_alone_is_taken_a_run_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cell of nothing but `""` pairs went through the careful way a pair at a time: 20
    MiB of them took 7 s, and a 400 KB gzip of 400 MB of them 109 s (the review of
    2026-12-07). Its pairs are taken a run at a time now, cut at the cap exactly, whatever
    the read size, an odd quote at a run's end still the field's end. (Counted, not timed.)"""
    value = '"' * 20_000
    raw = value.replace('"', '""').encode()
    data = b'c0,c1\n"' + raw + b'",x\n"a' + raw + b'","' + raw + b'"\n'
    calls = [0]
    real = BoundedCsv._value

    def counted(self: BoundedCsv, *args: object, **kwargs: object) -> None:
        calls[0] += 1
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BoundedCsv, "_value", counted)
    for size in (1 << 20, 1, 2, 3, 7, 4096):
        calls[0] = 0
        stream = bounded(data, 2, [size], field=1000)
        got, bad = arrow_rows(read_all(stream, 1 << 16), 2)
        assert not bad
        assert got == [
            [value.encode()[:1001], b"x"],
            [b"a" + value.encode()[:1000], value.encode()[:1001]],
        ]
        assert stream.cut_fields == {1: {0: 20_000}, 2: {0: 20_001, 1: 20_000}}, size
        if size == 1 << 20:
            assert calls[0] < 20, calls[0]  # a pair at a time: 60,000
