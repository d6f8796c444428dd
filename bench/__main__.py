"""`nox -s bench` / `python -m bench`: tutormax against reference runs in the same command.

Generates its data once (seeded) under bench/data/ (bench/dataset.py: 100k tutors per 1M
sessions; CSV as an ordinary export writes it, UTC offsets mixed), then times each step in
a child process of its own, wall time and that process's own peak RSS, and prints ratios
against the references run on the same input in the same command:

* files: DuckDB (typed `read_csv` / `read_parquet`, SQL, `COPY … TO` Parquet, 2 threads:
  bench/duckdb_reference.py), Polars (`scan_csv(schema=…)` / `scan_parquet`, expressions,
  `sink_parquet`: bench/polars_reference.py) and the floor (pyarrow read with declared
  types → Parquet write, no derivation: bench/floor.py);
* PostgreSQL loading: a plain COPY (bench/postgres.py); refresh: a fresh load of the same
  rows (bench/refresh.py); the queue: bench/queue.py.

Absolute figures drift between machines; the ratios are what to compare.

    python -m bench                    # everything: files, memory, held, postgres, queue
    python -m bench --only files --rows 200000
    python -m bench --only files --format csv
    python -m bench --only memory      # peak RSS at --rows and 5 × --rows sessions
    python -m bench --only held        # --rows/2 and --rows keys each twice, far apart
    python -m bench --only postgres    # 1M sessions into PostgreSQL vs COPY
    python -m bench --only refresh     # refresh of every session / tutor vs a fresh load
    python -m bench --only queue       # publish, 1 and 2 workers into PostgreSQL, latency

Where the time of `tutormax enrich` goes: pyinstrument on `tutormax_cli.cli.run`
(README, Exit codes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.dataset import dataset

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
AS_OF = "2025-06-01T00:00:00Z"


@dataclass
class Run:
    label: str
    seconds: float
    rss_mib: float
    rows: int

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def timed(label: str, argv: list[str], rows: int, env: dict[str, str] | None = None) -> Run:
    """Run a child process; its wall time and its own peak RSS.

    NOTE: the peak is the child's VmHWM, sampled from /proc every 20 ms, not wait4's
    ru_maxrss: Linux starts a child's maxrss at its parent's high-water mark when it execs,
    so ru_maxrss would show this bench process whenever it was ever bigger than the child.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})  # fmt: skip
    peak = [0.0]
    finished = threading.Event()

    def sample() -> None:
        while not finished.wait(0.02):
            peak[0] = max(peak[0], _vm_hwm_mib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    _, status, _usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    finished.set()
    sampler.join()
    if proc.stderr:
        proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{label} failed ({code}): {' '.join(argv)}\n{stderr}")
    return Run(label, seconds, peak[0], rows)


def _vm_hwm_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tutormax(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tutormax_cli", *map(str, args)]


def _module(name: str, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", f"bench.{name}", *map(str, args)]


# The reference runs: argv for (jobs of (kind, src, dst)); each in a child process.
REFERENCES = {
    "duckdb": lambda jobs: _module("duckdb_reference", AS_OF, *_flat(jobs)),
    "polars": lambda jobs: _module("polars_reference", AS_OF, *_flat(jobs)),
}
_REF_ENV = {"PYTHONPATH": str(HERE.parent), "POLARS_MAX_THREADS": "2"}


def _flat(jobs: list[tuple[str, Path, Path]]) -> list[str | Path]:
    return [x for job in jobs for x in job]


def _floor(jobs: list[tuple[str, Path, Path]]) -> list[str]:
    return _module("floor", *[x for _, src, dst in jobs for x in (src, dst)])


@dataclass
class Row:
    """One step of the files table: tutormax and every reference on the same input."""

    step: str
    ours: Run
    refs: list[Run]
    floor: Run

    @property
    def fastest(self) -> Run:
        return min(self.refs, key=lambda r: r.seconds)


def file_row(
    step: str, jobs: list[tuple[str, Path, Path]], out: Path, rows: int, repeat: int = 1
) -> Row:
    """tutormax, DuckDB, Polars and the floor on the same jobs, one child process each;
    `repeat` rounds, each running all four in turn (so a drift of the machine's speed hits
    them alike), and each one's median wall time (its highest peak)."""
    srcs = [src for _, src, _ in jobs]
    if len(jobs) == 1:
        ours_argv = tutormax("enrich", *srcs, "--out", out / "tutormax" / f"{jobs[0][0]}.parquet",
                             "--no-db", "--as-of", AS_OF)  # fmt: skip
    else:
        ours_argv = tutormax("enrich", *srcs, "--out", out / "tutormax", "--format", "parquet",
                             "--no-db", "--as-of", AS_OF)  # fmt: skip
    runs: dict[str, tuple[list[str], dict[str, str] | None]] = {"tutormax": (ours_argv, None)}
    (out / "tutormax").mkdir(parents=True, exist_ok=True)
    for name, command in REFERENCES.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        ref_jobs = [(k, src, out / name / f"{k}.parquet") for k, src, _ in jobs]
        runs[name] = (command(ref_jobs), _REF_ENV)
    (out / "floor").mkdir(parents=True, exist_ok=True)
    floor_jobs = [(k, src, out / "floor" / f"{k}.parquet") for k, src, _ in jobs]
    runs["pyarrow floor"] = (_floor(floor_jobs), _REF_ENV)
    seen: dict[str, list[Run]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, (argv, env) in runs.items():
            seen[name].append(timed(name, argv, rows, env=env))
    ours, *refs, floor = (_median(name, seen[name], rows) for name in runs)
    return Row(step, ours, refs, floor)


def _median(label: str, runs: list[Run], rows: int) -> Run:
    return Run(label, statistics.median(r.seconds for r in runs), max(r.rss_mib for r in runs),
               rows)  # fmt: skip


def files(rows: int, formats: tuple[str, ...] = ("csv", "parquet"), repeat: int = 1) -> list[Row]:
    """CSV→Parquet and Parquet→Parquet, sessions alone and sessions+feedback."""
    table = []
    for fmt in formats:
        data = dataset(rows, max(rows // 10, 10), fmt)
        s, f = data["sessions"], data["feedback"]
        out = OUT / f"files-{fmt}"
        shutil.rmtree(out, ignore_errors=True)
        sessions = [("sessions", s, out)]
        both = [("sessions", s, out), ("feedback", f, out)]
        table.append(file_row(f"sessions {fmt}→parquet", sessions, out / "s", rows, repeat))
        table.append(
            file_row(f"sessions+feedback {fmt}→parquet", both, out / "sf", 2 * rows, repeat)
        )
    return table


def report_files(table: list[Row]) -> None:
    print(
        f"{'step':34} {'run':14} {'wall s':>7} {'rows/s':>10} {'peak MiB':>9} "
        f"{'vs fastest':>10} {'vs floor':>9}"
    )
    for row in table:
        for r in (row.ours, *row.refs, row.floor):
            vs_fast = vs_floor = ""
            if r is row.ours:
                vs_fast = f"{r.seconds / row.fastest.seconds:.2f}× {row.fastest.label}"
                vs_floor = f"{r.seconds / row.floor.seconds:.2f}×"
            step = row.step if r is row.ours else ""
            print(
                f"{step:34} {r.label:14} {r.seconds:7.2f} {r.rate:10,.0f} {r.rss_mib:9.0f} "
                f"{vs_fast:>10} {vs_floor:>9}"
            )


def memory(
    sizes: tuple[int, ...] = (1_000_000, 5_000_000), repeat: int = 1
) -> list[tuple[str, list[Run]]]:
    """tutormax's peak RSS on sessions alone (CSV and Parquet) and sessions+feedback (CSV),
    at each size: a streaming run's memory must not grow with the input. Every run
    `repeat` times, in rounds (one of each per round); the runs of each shape and size."""
    out = OUT / "memory"
    out.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, list[str], int]] = []
    for rows in sizes:
        for fmt in ("csv", "parquet"):
            data = dataset(rows, max(rows // 10, 10), fmt)
            argv = tutormax("enrich", data["sessions"], "--out", out / f"s{rows}.parquet",
                            "--no-db", "--as-of", AS_OF)  # fmt: skip
            jobs.append((f"sessions {fmt} {rows:,}", argv, rows))
        data = dataset(rows, max(rows // 10, 10), "csv")
        argv = tutormax("enrich", data["sessions"], data["feedback"], "--out", out,
                        "--format", "parquet", "--no-db", "--as-of", AS_OF)  # fmt: skip
        jobs.append((f"sessions+feedback csv {rows:,}", argv, 2 * rows))
    runs: dict[str, list[Run]] = {label: [] for label, _, _ in jobs}
    for _ in range(repeat):
        for label, argv, rows in jobs:
            runs[label].append(timed("tutormax", argv, rows))
    return list(runs.items())


def report_memory(runs: list[tuple[str, list[Run]]]) -> None:
    """Median peak of each (and the range); growth of the medians against the smallest size."""
    print(f"{'run':36} {'wall s':>7} {'peak MiB':>9} {'range MiB':>11} {'vs smallest':>11}")
    first: dict[str, float] = {}
    for label, rs in runs:
        shape = label.rsplit(" ", 1)[0]
        peak = statistics.median(r.rss_mib for r in rs)
        base = first.setdefault(shape, peak)
        growth = f"{(peak / base - 1) * 100:+.1f}%" if base else ""
        spread = f"{min(r.rss_mib for r in rs):.0f}-{max(r.rss_mib for r in rs):.0f}"
        wall = statistics.median(r.seconds for r in rs)
        print(f"{label:36} {wall:7.2f} {peak:9.0f} {spread:>11} {growth:>11}")


def compile_bytecode() -> None:
    """Write the bytecode of tutormax and of the bench's scripts before anything is timed.

    NOTE: pip writes an installed package's bytecode when it installs it; an editable
    checkout has none until Python writes it on first import, which PYTHONDONTWRITEBYTECODE
    (set in some CI images and sandboxes) forbids. Then every child compiled the modules
    it imports from source (a 2-row file: 0.32-0.38 s a run with bytecode, 0.37-0.46 s
    without), which DuckDB, Polars and the floor (small scripts over compiled libraries)
    barely pay. compileall writes it either way."""
    import compileall

    for package in (HERE.parent / "tutormax_cli", HERE):
        compileall.compile_dir(package, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--only",
        choices=["files", "memory", "rss5m", "held", "postgres", "refresh", "queue"],
        action="append",
    )
    parser.add_argument("--repeat", type=int, default=3,
                        help="files, memory: rounds of each run, medians (default 3)")  # fmt: skip
    parser.add_argument("--format", choices=["csv", "parquet"], action="append",
                        help="files: only this input format (default both)")  # fmt: skip
    args = parser.parse_args()
    only = set(args.only or ["files", "memory", "held", "postgres", "refresh", "queue"])
    compile_bytecode()
    if "files" in only:
        print(
            f"\n== files: {args.rows:,} rows a kind, {max(args.rows // 10, 10):,} tutors; "
            f"each run a child process, {args.repeat} round(s), medians; "
            "ratios = tutormax wall / the fastest reference "
            "(DuckDB, Polars) and / the pyarrow floor =="
        )
        report_files(files(args.rows, tuple(args.format or ("csv", "parquet")), args.repeat))
    if "memory" in only or "rss5m" in only:
        sizes = (args.rows, 5 * args.rows)
        print(f"\n== memory: tutormax's peak RSS at {sizes[0]:,} and {sizes[1]:,} sessions ==")
        report_memory(memory(sizes, args.repeat))
    if "held" in only:
        from bench.held import run as held_run

        held_run(args.rows, dataset, timed, tutormax)
    if "postgres" in only:
        from bench.postgres import run as pg_run

        pg_run(args.rows, dataset, timed, tutormax)
    if "refresh" in only:
        from bench.refresh import run as refresh_run

        refresh_run(args.rows, dataset, timed, tutormax)
    if "queue" in only:
        from bench.queue import run as queue_run

        queue_run(args.rows, dataset, timed, tutormax)


if __name__ == "__main__":
    main()
