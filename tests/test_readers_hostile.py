"""Hostile files: deep and wide JSON Lines, wide and duplicate headers, broken CSV rows.

SPEC §6a: a JSON value nested deeper than the limit is rejected before anything builds it;
no input of a few kilobytes may cost more than a few megabytes; a fault is one line and
exit 2, never a traceback. Each case runs the real `tutormax enrich` (in-process, or in a
child under an address-space limit to prove nothing allocates gigabytes).
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tutormax_cli.cli import app
from tutormax_cli.errors import InputError
from tutormax_cli.files import Source
from tutormax_cli.files.inputs import _Input
from tutormax_cli.schema import MAX_COLUMNS

TUTOR = {"tutor_id": "T1", "name": "Ann", "email": "a@x.org", "onboarding_date": "2024-01-15",
         "status": "active", "subjects": ["Math"]}  # fmt: skip
CSV_HEAD = b"tutor_id,name,email,onboarding_date,status,subjects\n"
DEEP = "[" * 10_000 + "]" * 10_000
DEEP3 = "{" + ",".join(f'"k{i}":' + '{"":' * 900 + "1" + "}" * 900 for i in range(3)) + "}"
WIDE_N = 100_000


def enrich(*args: str | Path) -> tuple[int, dict[str, Any] | None, str]:
    result = CliRunner().invoke(app, ["enrich", *map(str, args), "--no-db", "--json"])
    doc = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, doc, result.stderr


def rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def wide_csv(path: Path, n: int = WIDE_N) -> Path:
    path.write_text(",".join(f"c{i}" for i in range(n)) + "\n" + ",".join("1" * n) + "\n")
    return path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _schema_element(name: bytes, children: int | None = None) -> bytes:
    """A Parquet SchemaElement in Thrift's compact protocol: an optional INT32 leaf, or a
    group of `children` (type 1, repetition 3, name 4, num_children 5)."""
    b = b"\x15" + _zigzag(1) + b"\x25" + _zigzag(1) if children is None else b"\x35" + _zigzag(0)
    b += b"\x18" + _varint(len(name)) + name
    if children is not None:
        b += b"\x15" + _zigzag(children)
    return b + b"\x00"


def wide_parquet(path: Path, n: int = WIDE_N) -> Path:
    """A valid Parquet file of `n` INT32 columns and no row group: ~1.3 MB for 100,000
    (pyarrow takes seconds to write one; Arrow takes ~1 s and 240 MB to open it)."""
    footer = b"\x15" + _zigzag(1) + b"\x19\xfc" + _varint(n + 1) + _schema_element(b"schema", n)
    footer += b"".join(_schema_element(f"c{i}".encode()) for i in range(n))
    footer += b"\x16" + _zigzag(0) + b"\x19\x0c" + b"\x00"  # num_rows 0, no row groups
    path.write_bytes(b"PAR1" + footer + len(footer).to_bytes(4, "little") + b"PAR1")
    return path


def refused_fast(path: Path, *fragments: str, kind: str | None = "tutors") -> None:
    with pytest.raises(InputError) as caught:
        Source(path, kind=kind)
    for fragment in (str(path), *fragments):
        assert fragment in caught.value.message


# -- JSON Lines ----------------------------------------------------------------------------


def test_deep_jsonl_records_are_rejected_by_line_and_the_rest_goes_on(tmp_path: Path) -> None:
    assert len(DEEP3) < 16_000
    src = jsonl(tmp_path / "t.jsonl", [json.dumps(TUTOR), DEEP, DEEP3, '{"a": ' + DEEP + "}",
                                       json.dumps({**TUTOR, "tutor_id": "T2"})])  # fmt: skip
    code, doc, _ = enrich(src, "--out", tmp_path / "o.jsonl")
    assert code == 1
    assert doc is not None
    f = doc["files"][0]
    assert (f["read"], f["accepted"], f["rejected"]) == (5, 2, 3)
    got = [(r["row"], r["errors"][0]["code"], r["errors"][0]["message"])
           for r in rejects(tmp_path / "o.rejects.jsonl")]  # fmt: skip
    assert got == [
        (2, "malformed_row", "JSON nested 10000 deep, over the limit of 64, rejected unread"),
        (3, "malformed_row", "JSON nested 901 deep, over the limit of 64, rejected unread"),
        (4, "malformed_row", "JSON nested 10001 deep, over the limit of 64, rejected unread"),
    ]


def test_the_header_is_the_first_good_object_and_bad_lines_before_it_are_rows(
    tmp_path: Path,
) -> None:
    src = jsonl(tmp_path / "t.jsonl", ["", "not json", DEEP, "[1, 2]", json.dumps(TUTOR)])
    code, doc, _ = enrich(src, "--out", tmp_path / "o.jsonl")
    assert code == 1
    assert doc is not None
    assert [(r["row"], r["errors"][0]["code"]) for r in rejects(tmp_path / "o.rejects.jsonl")] == [
        (2, "malformed_row"),
        (3, "malformed_row"),
        (4, "malformed_row"),
    ]
    (row,) = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert list(row)[:6] == list(TUTOR)


def test_keys_first_seen_after_the_header_are_not_carried(tmp_path: Path) -> None:
    later = {**TUTOR, "tutor_id": "T2", "team": "red", "age": "old"}
    src = jsonl(tmp_path / "t.jsonl", [json.dumps(TUTOR), json.dumps(later)])
    code, _, _ = enrich(src, "--out", tmp_path / "o.jsonl")
    assert code == 1  # `age` is a tutors column: validated wherever it first appears
    (bad,) = rejects(tmp_path / "o.rejects.jsonl")
    assert (bad["row"], [e["field"] for e in bad["errors"]]) == (2, ["age"])
    (row,) = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    # Not a field of the kind: not carried. A field of it: a column of every row.
    assert "team" not in row and row["age"] is None


def test_a_wide_jsonl_header_is_exit_2_naming_file_and_count(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "w.jsonl", [DEEP, json.dumps({f"c{i}": 1 for i in range(WIDE_N)})])
    refused_fast(src, "line 2", "100,000 keys", f"{MAX_COLUMNS:,}")
    code, doc, err = enrich(src)
    assert (code, doc) == (2, None)
    assert "100,000 keys" in err and "Traceback" not in err


def test_a_wide_jsonl_record_is_a_malformed_row(tmp_path: Path) -> None:
    wide = json.dumps({**TUTOR, **{f"c{i}": 1 for i in range(WIDE_N)}})
    src = jsonl(tmp_path / "t.jsonl", [json.dumps(TUTOR), wide])
    code, _, _ = enrich(src, "--out", tmp_path / "o.jsonl")
    assert code == 1
    (bad,) = rejects(tmp_path / "o.rejects.jsonl")
    assert bad["row"] == 2
    assert bad["errors"][0]["code"] == "malformed_row"
    assert "100,006 keys, over the limit of 1,024" in bad["errors"][0]["message"]


def test_jsonl_keys_that_cannot_name_columns_reject_their_line(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "t.jsonl", [json.dumps(TUTOR), '{"a\\u0000b": 1}', '{"\\ud800": 1}'])
    code, _, _ = enrich(src, "--out", tmp_path / "o.jsonl")
    assert code == 1
    assert [r["errors"][0]["message"] for r in rejects(tmp_path / "o.rejects.jsonl")] == [
        "a key holds a NUL byte",
        "a key is not valid UTF-8 (a lone surrogate)",
    ]


def test_an_oversized_jsonl_line_is_skipped_unread(tmp_path: Path) -> None:
    from tutormax_cli.files.jsonl import JSONL_MAX_LINE_BYTES

    src = tmp_path / "t.jsonl"
    with src.open("w") as fh:
        fh.write(json.dumps(TUTOR) + "\n")
        fh.write('{"name": "' + "x" * (JSONL_MAX_LINE_BYTES + 5) + '"}\n')
        fh.write(json.dumps({**TUTOR, "tutor_id": "T2"}) + "\n")
    code, doc, _ = enrich(src, "--out", tmp_path / "o.jsonl")
    assert code == 1
    assert doc is not None and doc["files"][0]["accepted"] == 2
    (bad,) = rejects(tmp_path / "o.rejects.jsonl")
    assert bad["row"] == 2 and "rejected unread" in bad["errors"][0]["message"]


# -- CSV and Parquet headers -----------------------------------------------------------------


def test_a_wide_csv_header_is_refused_fast(tmp_path: Path) -> None:
    src = wide_csv(tmp_path / "w.csv")
    assert src.stat().st_size < 1_100_000
    refused_fast(src, "100,000 columns", f"limit of {MAX_COLUMNS:,}")
    refused_fast(src, "100,000 columns", kind=None)


def test_a_csv_header_cut_by_the_probe_still_counts(tmp_path: Path) -> None:
    from tutormax_cli.files.csv import CSV_HEADER_MAX_BYTES

    src = tmp_path / "w.csv"
    src.write_text(",".join(f"column_{i:07d}" for i in range(CSV_HEADER_MAX_BYTES // 10)) + "\n")
    refused_fast(src, "at least", "columns in the header")
    few = tmp_path / "long.csv"
    few.write_text(",".join(f"{i}" + "x" * 2000 for i in range(600)) + "\n")
    refused_fast(few, f"header row is over {CSV_HEADER_MAX_BYTES:,} bytes")
    one = tmp_path / "one.csv"
    one.write_text("tutor_id,name," + "x" * 200_000 + "\n")
    refused_fast(one, "a header name is over")


def test_the_column_limit_is_inclusive(tmp_path: Path) -> None:
    names = ["tutor_id", "name", "email", "onboarding_date", "status", "subjects"]
    names += [f"x{i}" for i in range(MAX_COLUMNS - len(names))]
    src = tmp_path / "t.csv"
    src.write_text(",".join(names) + "\n")
    assert Source(src).columns == names
    src.write_text(",".join([*names, "one_more"]) + "\n")
    refused_fast(src, f"{MAX_COLUMNS + 1:,} columns")


def test_a_wide_parquet_schema_is_refused_before_arrow_reads_it(tmp_path: Path) -> None:
    refused_fast(wide_parquet(tmp_path / "w.parquet"), "100,000 columns")
    # as pyarrow writes it, too (2,000 columns, exact count)
    table = pa.table({f"c{i}": pa.array([1]) for i in range(2000)})
    pq.write_table(table, tmp_path / "p.parquet")
    refused_fast(tmp_path / "p.parquet", "2,000 columns", f"limit of {MAX_COLUMNS:,}")
    names = ["tutor_id", "name", "email", "onboarding_date", "status", "subjects"]
    pq.write_table(pa.table({n: pa.array(["x"]) for n in names}), tmp_path / "ok.parquet")
    assert Source(tmp_path / "ok.parquet").columns == names


def test_duplicate_csv_column_names_are_exit_2_naming_them(tmp_path: Path) -> None:
    src = tmp_path / "d.csv"
    src.write_bytes(b"tutor_id,name,email,name,onboarding_date,status,subjects,email\n")
    refused_fast(src, "duplicate column names", "'name'", "'email'")
    code, _, err = enrich(src)
    assert code == 2 and "Traceback" not in err


def test_duplicate_parquet_column_names_are_exit_2_naming_them(tmp_path: Path) -> None:
    table = pa.table([pa.array(["T1"]), pa.array(["a"]), pa.array(["b"])],
                     names=["tutor_id", "name", "name"])  # fmt: skip
    pq.write_table(table, tmp_path / "d.parquet")
    refused_fast(tmp_path / "d.parquet", "duplicate column names", "'name'")


# -- Parquet: the byte budget, whatever the rows ------------------------------------------

PQ_BUDGET = 64 << 10  # BATCH_MAX_BYTES, scaled down with the rows so that the files stay small


@st.composite
def big_row_files(draw: st.DrawFn) -> dict[str, Any]:
    """A Parquet file's rows (a text column of sizes from empty to 1.5x the budget, in runs:
    big rows first, last, between, or nowhere; each value distinct or one repeated) and how
    pyarrow writes it."""
    runs = draw(st.lists(st.tuples(st.integers(1, 60), st.sampled_from(
        [None, 0, 5, 300, 3_000, 40_000, 100_000])), min_size=1, max_size=6))  # fmt: skip
    sizes = [size for count, size in runs for _ in range(count)]
    return {
        "sizes": sizes,
        "repeated": draw(st.booleans()),
        "nested": draw(st.booleans()),  # the text in a list, beside a map and a struct
        "batch_size": draw(st.sampled_from([1, 7, 50, 50_000])),
        "write": {
            "use_dictionary": draw(st.booleans()),
            "compression": draw(st.sampled_from(["none", "snappy", "zstd"])),
            "row_group_size": draw(st.sampled_from([5, 64, 10_000])),
            "write_batch_size": draw(st.sampled_from([1, 3])),
            "data_page_size": draw(st.sampled_from([1 << 10, 16 << 10])),
            "dictionary_pagesize_limit": draw(st.sampled_from([4 << 10, 64 << 10])),
        },
    }


@given(spec=big_row_files())
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_parquet_batches_keep_to_the_byte_budget_whatever_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: dict[str, Any]
) -> None:
    """Every batch the Parquet reader yields holds at most the byte budget decoded (plus one
    row, where a row is bigger); every step it decodes at once holds at most twice the budget
    plus what Arrow decodes whole anyway (pages and dictionary pages: two a column); and the
    rows come out all, in order, numbered from 1. Whatever the sizes of the rows and wherever
    the big ones are: the reader once sized all batches from the first 16 rows, and decoded
    a dictionary-encoded value for every row that repeats it."""
    from tutormax_cli.files import parquet, parquet_plan

    budget = (("BATCH_MAX_BYTES", PQ_BUDGET), ("STEP_MAX_BYTES", 2 * PQ_BUDGET),
              ("DICTIONARY_REPEAT_BYTES", PQ_BUDGET // 16))  # fmt: skip
    assert all(hasattr(parquet, n) or hasattr(parquet_plan, n) for n, _ in budget)
    for module in (parquet, parquet_plan):  # the reader and its plans
        for name, value in budget:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, value)
    sizes, write = spec["sizes"], spec["write"]
    text = [None if n is None else ("x" * n if spec["repeated"] else f"{i:06d}" + "x" * n)
            for i, n in enumerate(sizes)]  # fmt: skip
    table = pa.table({"id": [f"k{i}" for i in range(len(sizes))], "n": list(range(len(sizes))),
                      "text": pa.array(text, pa.string())})  # fmt: skip
    if spec["nested"]:
        n = len(sizes)
        table = table.set_column(2, "text", pa.array([[v, v] for v in text]))
        table = table.append_column(
            "map",
            pa.array(
                [{"k": i, f"k{i % 3}": 1} for i in range(n)], pa.map_(pa.string(), pa.int64())
            ),
        )
        table = table.append_column("struct", pa.array(
            [{"a": f"s{i % 5}", "b": [i] * (i % 3)} for i in range(n)]))  # fmt: skip
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, **write)

    steps: list[int] = []  # each step's bytes as Arrow decodes it (dictionaries as they are)
    decoded = getattr(parquet, "_decoded", None)
    if decoded is not None:

        def measured(b: pa.RecordBatch, *args: Any) -> Any:
            steps.append(b.nbytes)
            return decoded(b, *args)

        monkeypatch.setattr(parquet, "_decoded", measured)
    got = list(parquet._Parquet.batches(_Input(path), spec["batch_size"]))

    width = 2 if spec["nested"] else 1  # the text once, or twice in a list
    row_bytes = [width * len(v or "") + 16 for v in text] + [16]  # with its id and number
    assert pa.concat_tables([rb.table for rb in got]).equals(table)
    assert [rb.base for rb in got] == list(
        itertools.accumulate([1] + [rb.table.num_rows for rb in got[:-1]])
    )
    for rb in got:
        assert rb.table.num_rows <= spec["batch_size"]
        rows = row_bytes[rb.base - 1 : rb.base - 1 + rb.table.num_rows]
        assert rb.table.nbytes <= PQ_BUDGET + max(rows), (
            f"rows {rb.base:,} to {rb.base + len(rows) - 1:,}: {rb.table.nbytes:,} bytes"
        )
    page = write["data_page_size"] + write["write_batch_size"] * max(row_bytes)
    whole = write["dictionary_pagesize_limit"] + 2 * page  # what Arrow decodes whole, a column
    for held in steps if not spec["nested"] else ():  # nested rows: by their average only
        assert held <= 2 * PQ_BUDGET + 2 * whole + max(row_bytes), f"a step of {held:,} bytes"


# -- CSV rows ------------------------------------------------------------------------------


def test_a_malformed_csv_row_with_invalid_utf8_is_one_reject(tmp_path: Path) -> None:
    src = tmp_path / "t.csv"
    src.write_bytes(
        CSV_HEAD
        + b"T1,Ann,a@x,2024-01-01,active,Math\n"
        + b"T2,B\xffb,b@x,2024-01-01,active,Math,EXTRA\n"  # malformed and invalid UTF-8
        + b"T3,C\xe9y,c@x,2024-01-01,active,Math\n"  # invalid UTF-8 only
        + b"T4,D\xef\xbf\xbey,d@x,2024-01-01,active,Math\n"  # a real U+FFFE: kept as is
        + b"T5,Eve,e@x,2024-01-01,active,Math\n"
    )
    # A real process: pyarrow's "Exception ignored" went to the real stderr.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tutormax_cli",
            "enrich",
            src,
            "--no-db",
            "--out",
            tmp_path / "o.jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr
    got = [
        (r["row"], r["errors"][0]["code"], r["values"])
        for r in rejects(tmp_path / "o.rejects.jsonl")
    ]
    assert got[0] == (2, "malformed_row", {"_raw": "T2,B\\xffb,b@x,2024-01-01,active,Math,EXTRA"})
    assert got[1][:2] == (3, "invalid_utf8")
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    names = [(r["tutor_id"], r["name"]) for r in out]
    assert names == [("T1", "Ann"), ("T4", "D\ufffey"), ("T5", "Eve")]


def test_invalid_utf8_across_read_blocks_is_restored_exactly(tmp_path: Path) -> None:
    from tutormax_cli.files.csv import CSV_BLOCK_BYTES

    filler = b"T0,Ann,a@x,2024-01-01,active,Math\n" * (CSV_BLOCK_BYTES // 34 + 7)
    src = tmp_path / "t.csv"
    src.write_bytes(CSV_HEAD + filler + b"T9,\xc3\xa9\xff\xfe\xc3,x@y,2024-01-01,active,Math,X\n")
    code, doc, _ = enrich(src, "--out", tmp_path / "o.jsonl", "--batch-size", "1000")
    assert code == 1
    (bad,) = rejects(tmp_path / "o.rejects.jsonl")
    assert bad["values"] == {"_raw": "T9,é\\xff\\xfe\\xc3,x@y,2024-01-01,active,Math,X"}


# -- memory: nothing allocates gigabytes -----------------------------------------------------

_PEAK = """
import os, re, resource, sys
limit = int(sys.argv[1])
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.argv = ["tutormax", *sys.argv[2:]]
try:
    from tutormax_cli.cli import run
    code = run()
finally:
    status = open("/proc/self/status").read()
    sys.stderr.write("\\nVmPeak " + re.search(r"VmPeak:\\s+(\\d+)", status).group(1) + "\\n")
sys.stderr.flush()
sys.stdout.flush()
os._exit(code)  # as the tutormax script leaves (tutormax_cli.cli._exit)
"""


def _run_limited(limit: int, *args: str | Path) -> tuple[int, str, int]:
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, str(limit), "enrich", *map(str, args), "--no-db"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    peak = re.findall(r"VmPeak (\d+)", proc.stderr)
    return proc.returncode, proc.stderr, int(peak[-1]) * 1024 if peak else 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc: Linux")
def test_hostile_inputs_stay_within_a_few_hundred_mb_of_a_normal_run(tmp_path: Path) -> None:
    good = jsonl(tmp_path / "good.jsonl", [json.dumps(TUTOR)])
    code, err, normal = _run_limited(0, good, "--out", tmp_path / "o.jsonl")
    assert code == 0 and normal > 0, err
    limit = normal + (400 << 20)  # a normal run's address space, plus 400 MiB
    wide = json.dumps({f"c{i}": 1 for i in range(WIDE_N)})
    hostile = {  # name: (file, expected exit code)
        "deep.jsonl": (jsonl(tmp_path / "deep.jsonl", [json.dumps(TUTOR), DEEP3, DEEP]), 1),
        "wide.jsonl": (jsonl(tmp_path / "wide.jsonl", [wide]), 2),
        "wide-record.jsonl": (jsonl(tmp_path / "wr.jsonl", [json.dumps(TUTOR), wide]), 1),
        "wide.csv": (wide_csv(tmp_path / "wide.csv"), 2),
        "wide.parquet": (wide_parquet(tmp_path / "wide.parquet"), 2),
    }
    for name, (path, expected) in hostile.items():
        code, err, peak = _run_limited(
            limit, path, "--kind", "tutors", "--out", tmp_path / f"o-{name}.jsonl"
        )
        assert code == expected, f"{name}: exit {code}, limit {limit >> 20} MiB\n{err[-2000:]}"
        assert "MemoryError" not in err and "internal error" not in err, name
        assert peak < limit, name


HEADER_ONLY = "tutor_id,name,email,onboarding_date,status,subjects"


HEADER_ONLY_FILES = {
    "no-final-newline": HEADER_ONLY,
    "newline": HEADER_ONLY + "\n",
    "crlf-and-a-blank-line": HEADER_ONLY + "\r\n\r\n",
    "blank-lines-before": "\n\n" + HEADER_ONLY,
}


@pytest.mark.parametrize("text", HEADER_ONLY_FILES.values(), ids=HEADER_ONLY_FILES.keys())
def test_a_csv_of_a_header_alone_is_zero_rows(tmp_path: Path, text: str) -> None:
    """An export of an empty table (often without a final newline: Arrow refused it as
    'Empty CSV file or block', exit 2) reads as no rows, and the output gets the header."""
    src = tmp_path / "tutors.csv"
    src.write_text(text)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("tutormax")), "enrich", str(src), "--no-db",
         "--out", str(tmp_path / "out.csv"), "--as-of", "2024-11-09", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (summary,) = json.loads(done.stdout)["files"]
    assert summary["read"] == summary["accepted"] == 0
    assert (tmp_path / "out.csv").read_text().startswith('"tutor_id","name"')


@pytest.mark.parametrize(
    ("lines", "read", "rejected"),
    [([], 0, 0), (["", "  "], 0, 0), (["not json"], 1, 1), (["[1, 2]", "", "{"], 2, 2)],
    ids=["empty", "blank-lines", "one-malformed-line", "only-malformed-lines"],
)
def test_a_jsonl_file_without_a_record_is_an_empty_input_of_its_kind(
    tmp_path: Path, lines: list[str], read: int, rejected: int
) -> None:
    """An empty JSON Lines export (or one whose lines are all malformed) with --kind is an
    input of no valid rows, as a CSV of a header alone is: read 0, or its lines rejected
    (exit 1). It was a fatal error (exit 2: "no JSON object on any line"). Without --kind
    its kind cannot be told: exit 2, saying to pass it."""
    src = jsonl(tmp_path / "t.jsonl", lines)
    out = tmp_path / "o.parquet"
    code, doc, err = enrich(src, "--kind", "tutors", "--out", out,
                            "--rejects", tmp_path / "r.jsonl")  # fmt: skip
    assert code == (1 if rejected else 0), err
    assert doc is not None
    f = doc["files"][0]
    assert (f["read"], f["rejected"], f["accepted"]) == (read, rejected, 0)
    assert pq.read_table(out).num_rows == 0
    if rejected:
        assert len(rejects(tmp_path / "r.jsonl")) == rejected
    code, doc, err = enrich(src)
    assert code == 2 and "no JSON object with a key on any line" in err and "--kind" in err
