"""`nox -s bench` / `python -m bench`: tutormax against reference runs in the same command.

Generates its own data (seeded) under bench/data/, then times each step in a child process
(wall time and that process's own peak RSS) and prints ratios against the reference run
of the same step: DuckDB SQL for the file path, a plain COPY for PostgreSQL loading.
Absolute figures drift between machines; the ratios are what to compare.

    python -m bench                    # files: 1M sessions + 1M feedback, CSV and Parquet
    python -m bench --only files --rows 200000
    python -m bench --only rss5m       # peak RSS at 5M sessions
    python -m bench --only postgres    # 1M sessions into PostgreSQL vs COPY
    python -m bench --only queue       # publish, 1 and 2 workers into PostgreSQL, latency
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
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


def dataset(rows: int, tutors: int, fmt: str) -> dict[str, Path]:
    """Generate (once per size and format) tutors, sessions and feedback."""
    target = DATA / f"{rows}-{fmt}"
    marker = target / "done.json"
    if marker.exists():
        return {k: Path(v) for k, v in json.loads(marker.read_text()).items()}
    from tutormax_cli.generate import generate

    shutil.rmtree(target, ignore_errors=True)
    print(
        f"generating {rows:,} sessions + {rows:,} feedback + {tutors:,} tutors ({fmt})…",
        file=sys.stderr,
    )
    paths = generate(target, tutors=tutors, sessions=rows, feedback=rows, seed=7, fmt=fmt)
    marker.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


def tutormax(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "tutormax_cli", *map(str, args)]


def duckdb(kind: str, src: Path, dst: Path, sessions: Path | None = None) -> list[str]:
    """The DuckDB reference run of one kind, in a child process of its own."""
    sessions_arg = f"Path({str(sessions)!r})" if sessions else "None"
    code = (
        f"import sys; sys.path.insert(0, {str(HERE.parent)!r})\n"
        "from pathlib import Path\nfrom bench.duckdb_reference import duckdb_enrich\n"
        f"duckdb_enrich({kind!r}, Path({str(src)!r}), Path({str(dst)!r}), as_of={AS_OF!r}, "
        f"sessions_src={sessions_arg})"
    )
    return [sys.executable, "-c", code]


def files(rows: int) -> list[tuple[Run, Run]]:
    """CSV→Parquet and Parquet→Parquet, sessions alone and sessions+feedback, vs DuckDB."""
    pairs = []
    for fmt in ("csv", "parquet"):
        data = dataset(rows, max(rows // 100, 10), fmt)
        out = OUT / fmt
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        s, f = data["sessions"], data["feedback"]
        pairs.append(
            (
                timed(
                    f"tutormax sessions {fmt}→parquet",
                    tutormax("enrich", s, "--out", out / "s.parquet", "--no-db", "--as-of", AS_OF),
                    rows,
                ),
                timed(
                    f"duckdb   sessions {fmt}→parquet",
                    duckdb("sessions", s, out / "ds.parquet"),
                    rows,
                ),
            )
        )
        both = out / "both"
        pairs.append(
            (
                timed(
                    f"tutormax sessions+feedback {fmt}→parquet",
                    tutormax(
                        "enrich",
                        s,
                        f,
                        "--out",
                        both,
                        "--format",
                        "parquet",
                        "--no-db",
                        "--as-of",
                        AS_OF,
                    ),
                    2 * rows,
                ),
                _duckdb_pair(fmt, s, f, out, rows),
            )
        )
    return pairs


def _duckdb_pair(fmt: str, s: Path, f: Path, out: Path, rows: int) -> Run:
    """DuckDB doing the same two steps (sessions, then feedback joined to sessions)."""
    a = timed("duckdb sessions", duckdb("sessions", s, out / "d1.parquet"), rows)
    b = timed("duckdb feedback", duckdb("feedback", f, out / "d2.parquet", s), rows)
    return Run(
        f"duckdb   sessions+feedback {fmt}→parquet",
        a.seconds + b.seconds,
        max(a.rss_mib, b.rss_mib),
        2 * rows,
    )


def rss5m() -> list[Run]:
    runs = []
    for rows in (1_000_000, 5_000_000):
        data = dataset(rows, rows // 100, "parquet")
        out = OUT / "rss"
        out.mkdir(parents=True, exist_ok=True)
        runs.append(
            timed(
                f"tutormax sessions parquet {rows:,}",
                tutormax(
                    "enrich",
                    data["sessions"],
                    "--out",
                    out / f"s{rows}.parquet",
                    "--no-db",
                    "--as-of",
                    AS_OF,
                ),
                rows,
            )
        )
    return runs


def report_pairs(pairs: list[tuple[Run, Run]]) -> None:
    print(f"{'step':44} {'wall s':>8} {'rows/s':>10} {'peak MiB':>9} {'vs ref':>7}")
    for ours, ref in pairs:
        for r in (ours, ref):
            ratio = f"{ours.seconds / ref.seconds:.2f}×" if r is ours else ""
            print(f"{r.label:44} {r.seconds:8.2f} {r.rate:10,.0f} {r.rss_mib:9.0f} {ratio:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["files", "rss5m", "postgres", "queue"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["files", "rss5m", "postgres", "queue"])
    if "files" in only:
        print(f"\n== files: {args.rows:,} rows a kind; ratio = tutormax wall / DuckDB wall ==")
        report_pairs(files(args.rows))
    if "rss5m" in only:
        print("\n== memory: peak RSS at 1M and 5M sessions (Parquet in, Parquet out) ==")
        for r in rss5m():
            print(f"{r.label:44} {r.seconds:8.2f} {r.rate:10,.0f} {r.rss_mib:9.0f}")
    if "postgres" in only:
        from bench.postgres import run as pg_run

        pg_run(args.rows, dataset, timed, tutormax)
    if "queue" in only:
        from bench.queue import run as queue_run

        queue_run(args.rows, dataset, timed, tutormax)


if __name__ == "__main__":
    main()
