"""Bench: the queue path (SPEC §6) — publish, workers draining into PostgreSQL, latency.

Steps (keys under a prefix `tmbench:<hex>:` of this run, deleted afterwards; scratch
databases `tutormax_bench_*` as in bench/postgres.py):

  publish    `tutormax publish tutors sessions` (tutors first): messages/s. Reference, in the
             same run: the same number of XADDs by a plain redis-py loop, pipelined 1,000 a
             round trip like tutormax, of envelopes built beforehand (10,000 real ones,
             cycled: the cost of an XADD depends on its size, not on its text).
  1 worker   `tutormax worker --burst` draining those messages into a fresh database.
  2 workers  the data published again under another prefix, then two `worker --burst` of
             one group into another fresh database; ratio = two / one.
             For every worker: its peak RSS (wait4) and VmRSS sampled every second, to show
             it is flat (mean of the first quarter of the samples vs the last quarter).
             CPU seconds of the workers (wait4), of PostgreSQL (every `postgres` process,
             with the backends it reaped) and of redis-server over the step, against the
             machine's busy time: where the two cores went.
  latency    one long-running worker (no --burst; SIGTERM at the end, which must exit 0)
             while a paced publisher XADDs sessions at a steady rate (default 2,000/s for
             20 s, 20 messages every 10 ms) after their tutors were persisted.

How latency is measured: the publisher builds each envelope with `timestamp` = the
instant it is sent (time.time(), µs) and keeps that per session id. A poller thread on
its own connection runs `SELECT session_id FROM sessions WHERE session_id = ANY(ids)` over
the ids not seen yet, every 10 ms, and stamps the first poll that sees each one. A row is
visible to another session exactly when the worker's transaction commits, so
seen − published bounds "published → committed" from above, by at most one poll period
plus one query (~10–15 ms), and both instants come from one clock (this process). The
worker's code is not touched (enriched_at is the batch's as-of time, not the commit).

    python -m bench --only queue                  # 1M sessions (+10k tutors)
    python -m bench --only queue --rows 100000    # a quick run

  files      reference: `tutormax enrich` of the same tutors and sessions files into a fresh
             database, in the same run; one worker's ratio is against it.

Targets reported against (not asserted): one worker ≥ 0.7× the file path, two ≥ 1.6× one,
p99 < 100 ms at 2k msgs/s, worker RSS flat. Redis: TUTORMAX_TEST_REDIS_URL (default
redis://127.0.0.1:6379/0); PostgreSQL: TUTORMAX_TEST_PG_URL, as bench/postgres.py;
TUTORMAX_BENCH_WORKER_ARGS adds options to every worker (e.g. "--batch-size 5000").
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow.parquet as pq
import redis
import sqlalchemy as sa

from bench.postgres import scratch_database
from tutormax_cli.queue.streams import DEFAULT_STREAMS

REDIS_URL = os.environ.get("TUTORMAX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Extra `tutormax worker` options for every worker of the section (e.g. "--batch-size 2000"),
# to compare settings; empty: the shipped defaults.
WORKER_ARGS = os.environ.get("TUTORMAX_BENCH_WORKER_ARGS", "").split()
LATENCY_RATE = 2_000  # messages a second
LATENCY_SECONDS = 20
TICK_S = 0.01  # the paced publisher sends every 10 ms, the poller polls every 10 ms
REFERENCE_DISTINCT = 10_000
CHUNK = 1_000  # XADDs per round trip, as tutormax_cli.queue.streams.PUBLISH_CHUNK
RSS_EVERY_S = 1.0
TARGET_ONE_VS_FILES, TARGET_TWO_RATIO, TARGET_P99_MS = 0.7, 1.6, 100  # issue 12
FILE_AS_OF = "2025-06-01T00:00:00Z"


@dataclass
class WorkerRun:
    """One or more worker processes run together until all of them exit."""

    label: str
    messages: int
    seconds: float = 0.0
    peak_mib: list[float] = field(default_factory=list)  # per process, own (VmHWM)
    maxrss_mib: list[float] = field(default_factory=list)  # per process, wait4 ru_maxrss
    samples: list[list[float]] = field(default_factory=list)  # per process, VmRSS MiB
    cpu: dict[str, float] = field(default_factory=dict)  # seconds, by who
    totals: list[dict[str, Any]] = field(default_factory=list)  # each worker's --json

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def rss_quartiles(self) -> tuple[float, float, int]:
        """Mean VmRSS of the first and of the last quarter of the samples (largest worker)."""
        series = max(self.samples, key=lambda s: max(s, default=0.0), default=[])
        q = max(len(series) // 4, 1)
        if not series:
            return 0.0, 0.0, 0
        return statistics.fmean(series[:q]), statistics.fmean(series[-q:]), len(series)


# -- CPU accounting -------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(comm: str) -> float:
    """CPU seconds of every process named `comm`, with the children they reaped."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != comm:
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / _TICKS


def _machine_busy() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / _TICKS, (v[7] if len(v) > 7 else 0) / _TICKS


def _cpu_snapshot() -> dict[str, float]:
    busy, steal = _machine_busy()
    return {
        "postgres": _cpu_of("postgres"),
        "redis": _cpu_of("redis-server"),
        "busy": busy,
        "steal": steal,
    }


# -- running workers --------------------------------------------------------------------------


def _vm_mib(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a live process, MiB."""
    found: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    found[line[:5]] = int(line.split()[1]) / 1024
    except OSError:
        return None
    return (found["VmRSS"], found["VmHWM"]) if len(found) == 2 else None


def run_procs(label: str, argvs: list[list[str]], messages: int, json_out: bool) -> WorkerRun:
    """Start the processes together, sample their RSS every second, wait for all of them.

    NOTE: the peak reported is each process's own VmHWM (last sample before it exits), not
    wait4's ru_maxrss: Linux starts a child's maxrss at its parent's high-water RSS when it
    execs (measured: a `python -c pass` spawned by a parent that once held 500 MiB reports
    512 MiB), so ru_maxrss shows this bench process, not the worker, whenever it is bigger."""
    run = WorkerRun(label, messages)
    run.samples = [[] for _ in argvs]
    hwm = [0.0 for _ in argvs]
    done = threading.Event()
    with ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in argvs]
        before = _cpu_snapshot()
        started = time.perf_counter()
        procs = [
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)
            for argv, log in zip(argvs, logs, strict=True)
        ]

        def sample() -> None:
            while not done.wait(RSS_EVERY_S):
                for i, p in enumerate(procs):
                    vm = _vm_mib(p.pid) if p.returncode is None else None
                    if vm is not None:
                        run.samples[i].append(vm[0])
                        hwm[i] = max(hwm[i], vm[1])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        worker_cpu = 0.0
        try:
            for p, log in zip(procs, logs, strict=True):
                out = p.stdout.read() if p.stdout else b""
                _, status, usage = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                run.maxrss_mib.append(usage.ru_maxrss / 1024)
                worker_cpu += usage.ru_utime + usage.ru_stime
                if p.returncode not in (0, 1) or (json_out and p.returncode != 0):
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise SystemExit(f"{label} failed ({p.returncode}):\n{tail}")
                if json_out:
                    run.totals.append(json.loads(out))
            run.seconds = time.perf_counter() - started
            after = _cpu_snapshot()
        finally:
            done.set()
            sampler.join()
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    p.wait()
    run.peak_mib = hwm
    run.cpu = {k: after[k] - before[k] for k in before}
    run.cpu["workers"] = worker_cpu
    return run


# -- Redis helpers ----------------------------------------------------------------------------


@contextmanager
def redis_prefixes() -> Iterator[Callable[[], str]]:
    """Hands out fresh key prefixes; deletes every key under them at the end."""
    made: list[str] = []

    def new() -> str:
        made.append(f"tmbench:{uuid.uuid4().hex[:12]}:")
        return made[-1]

    try:
        yield new
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for prefix in made:
                keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
                for i in range(0, len(keys), 1000):
                    client.delete(*keys[i : i + 1000])
        finally:
            client.close()


def _json_records(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    from tutormax_cli.queue.publish import _json_rows  # what `tutormax publish` sends

    table = pq.read_table(path)
    rows, bad = _json_rows(table.slice(0, limit) if limit else table)
    assert not bad, bad
    return rows


def reference_xadd(prefix: str, sessions: Path, count: int) -> float:
    """Seconds for `count` pipelined XADDs of prebuilt envelopes (a plain redis-py loop)."""
    from tutormax_cli.queue.envelope import envelope_text

    stream = f"{prefix}reference"
    records = _json_records(sessions, REFERENCE_DISTINCT)
    meta = {"source": "tutormax publish", "file": sessions.name}
    envelopes = [envelope_text(stream, r, {**meta, "row": i + 1}) for i, r in enumerate(records)]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            pipe.xadd(stream, {"message": envelopes[i % len(envelopes)]})
            if (i + 1) % CHUNK == 0:
                pipe.execute()
        pipe.execute()
        seconds = time.perf_counter() - started
        assert client.xlen(stream) == count
        client.delete(stream)
    finally:
        client.close()
    return seconds


# -- latency ----------------------------------------------------------------------------------


def _dsn(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _count(url: str, table: str) -> int:
    conn = psycopg2.connect(_dsn(url))
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > end:
            raise SystemExit(f"latency: timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Latency:
    rate: float  # achieved publish rate
    seconds: float
    ms: list[float]  # per message, seen − published
    lost: int  # published and never seen
    exit_code: int

    def pct(self, p: float) -> float:
        s = sorted(self.ms)
        return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def measure_latency(
    tutormax: Any, prefix: str, url: str, tutors: Path, sessions: Path, n_tutors: int, n: int
) -> Latency:
    subprocess.run(
        tutormax("publish", tutors, "--redis", REDIS_URL, "--prefix", prefix),
        check=True,
        capture_output=True,
    )
    records = _json_records(sessions, n)
    with tempfile.TemporaryFile() as log:
        return _paced(tutormax, prefix, url, records, n_tutors, log)


def _paced(
    tutormax: Any, prefix: str, url: str, records: list[dict[str, Any]], n_tutors: int, log: Any
) -> Latency:
    from tutormax_cli.queue.envelope import envelope_text

    worker = subprocess.Popen(
        tutormax("worker", "--db", url, "--redis", REDIS_URL, "--prefix", prefix,
                 "--consumer", "latency", *WORKER_ARGS),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )  # fmt: skip
    try:
        _wait_for("the worker", lambda: _table_ready(url), 60)
        _wait_for("the tutors", lambda: _count(url, "tutors") >= n_tutors, 120)

        published: dict[str, float] = {}
        seen: dict[str, float] = {}
        outstanding: set[str] = set()  # published, not seen yet
        lock = threading.Lock()
        publishing_done = threading.Event()

        def poll() -> None:
            conn = psycopg2.connect(_dsn(url))
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    while True:
                        finished = publishing_done.is_set()
                        with lock:
                            waiting = list(outstanding)
                        if waiting:
                            cur.execute(
                                "SELECT session_id FROM sessions WHERE session_id = ANY(%s)",
                                (waiting,),
                            )
                            now = time.time()
                            with lock:
                                for (sid,) in cur.fetchall():
                                    seen.setdefault(sid, now)
                                    outstanding.discard(sid)
                        elif finished:
                            return
                        if finished and time.time() > deadline[0]:
                            return
                        time.sleep(TICK_S)
            finally:
                conn.close()

        deadline = [float("inf")]
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()

        client = redis.Redis.from_url(REDIS_URL)
        stream = DEFAULT_STREAMS.format(prefix=prefix, kind="sessions")  # where the worker reads
        per_tick = max(1, round(LATENCY_RATE * TICK_S))
        started = time.perf_counter()
        for i in range(0, len(records), per_tick):
            due = started + (i // per_tick) * TICK_S
            if (pause := due - time.perf_counter()) > 0:
                time.sleep(pause)
            pipe = client.pipeline(transaction=False)
            now = time.time()
            stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")
            batch = records[i : i + per_tick]
            for r in batch:
                body = envelope_text(stream, r, {"source": "bench latency"}, stamp)
                pipe.xadd(stream, {"message": body})
            with lock:
                for r in batch:
                    published[r["session_id"]] = now
                    outstanding.add(r["session_id"])
            pipe.execute()
        seconds = time.perf_counter() - started
        client.close()
        deadline[0] = time.time() + 60
        publishing_done.set()
        poller.join()

        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    ms = [1000 * (seen[k] - t) for k, t in published.items() if k in seen]
    return Latency(len(published) / seconds, seconds, ms, len(published) - len(ms), code)


def _table_ready(url: str) -> bool:
    try:
        _count(url, "tutors")
        return True
    except psycopg2.Error:
        return False


# -- the section ------------------------------------------------------------------------------


def run(rows: int, dataset: Callable[..., dict[str, Path]], timed: Any, tutormax: Any) -> None:
    data = dataset(rows, max(rows // 100, 10), "parquet")
    tutors, sessions = data["tutors"], data["sessions"]
    n_tutors = pq.ParquetFile(tutors).metadata.num_rows
    n_sessions = pq.ParquetFile(sessions).metadata.num_rows
    total = n_tutors + n_sessions

    def worker(url: str, prefix: str, consumer: str) -> list[str]:
        return tutormax("worker", "--burst", "--json", "--db", url, "--redis", REDIS_URL,
                        "--prefix", prefix, "--consumer", consumer, *WORKER_ARGS)  # fmt: skip

    def publish(prefix: str) -> WorkerRun:
        # Not `timed`: its peak (wait4) would be this process's; see run_procs.
        argv = tutormax("publish", tutors, sessions, "--redis", REDIS_URL, "--prefix", prefix)
        return run_procs("tutormax publish", [argv], total, json_out=False)

    checks: list[str] = []
    with redis_prefixes() as new_prefix:
        one_prefix = new_prefix()
        pub = publish(one_prefix)
        ref_s = reference_xadd(new_prefix(), sessions, total)
        with scratch_database() as url:
            one = run_procs("1 worker --burst", [worker(url, one_prefix, "w1")], total, True)
            checks.append(_accounted(url, one, n_tutors, n_sessions))
        two_prefix = new_prefix()
        publish(two_prefix)
        with scratch_database() as url:
            two = run_procs(
                "2 workers --burst, one group",
                [worker(url, two_prefix, "w1"), worker(url, two_prefix, "w2")],
                total,
                True,
            )
            checks.append(_accounted(url, two, n_tutors, n_sessions))
        with scratch_database() as url:  # the reference: the same rows by the file path
            argv = tutormax("enrich", tutors, sessions, "--db", url, "--as-of", FILE_AS_OF)
            files = timed("tutormax enrich, the same file", argv, total)
        n_latency = min(n_sessions, LATENCY_RATE * LATENCY_SECONDS)
        with scratch_database() as url:
            lat = measure_latency(
                tutormax, new_prefix(), url, tutors, sessions, n_tutors, n_latency
            )

    ref_rate = total / ref_s
    extra = f"; worker options {' '.join(WORKER_ARGS)}" if WORKER_ARGS else ""
    print(f"\n== queue: {total:,} messages ({n_tutors:,} tutors, then {n_sessions:,} sessions) "
          f"through Redis into PostgreSQL{extra} ==")  # fmt: skip
    print(f"{'step':44} {'wall s':>8} {'msgs/s':>10} {'peak MiB':>9} {'ratio':>7}  target")
    print(f"{'publish reference: pipelined XADD, prebuilt':44} {ref_s:8.2f} {ref_rate:10,.0f} "
          f"{'':>9} {1:7.2f}")  # fmt: skip
    print(f"{'tutormax publish':44} {pub.seconds:8.2f} {pub.rate:10,.0f} {pub.peak_mib[0]:9.0f} "
          f"{pub.rate / ref_rate:7.2f}")  # fmt: skip
    print(f"{'reference: ' + files.label:44} {files.seconds:8.2f} {files.rate:10,.0f} "
          f"{files.rss_mib:9.0f} {1:7.2f}")  # fmt: skip
    for r, ratio, target in (
        (one, f"{one.rate / files.rate:.2f}", f"≥ {TARGET_ONE_VS_FILES}× the file path"),
        (two, f"{two.rate / one.rate:.2f}", f"≥ {TARGET_TWO_RATIO}× one worker"),
    ):
        peak = max(r.peak_mib)
        print(f"{r.label:44} {r.seconds:8.2f} {r.rate:10,.0f} {peak:9.0f} {ratio:>7}  {target}")
    print(
        f"latency at {lat.rate:,.0f} msgs/s for {lat.seconds:.0f} s, 1 worker: "
        f"p50 {lat.pct(50):.0f} ms, p99 {lat.pct(99):.0f} ms, max {max(lat.ms, default=0):.0f} ms "
        f"(n={len(lat.ms):,}, never seen {lat.lost}; SIGTERM exit {lat.exit_code}); "
        f"target p99 < {TARGET_P99_MS:,} ms"
    )
    for r in (one, two):
        first, last, n = r.rss_quartiles()
        change = (last - first) / first * 100 if first else 0.0
        print(
            f"RSS {r.label}: first-quartile mean {first:.0f} MiB, last-quartile mean "
            f"{last:.0f} MiB ({change:+.1f}%, {n} samples, 1/s); peak "
            + " / ".join(f"{p:.0f}" for p in r.peak_mib)
            + " MiB"
        )
    for r in (one, two):
        c = r.cpu
        ours = c["workers"] + c["postgres"] + c["redis"]
        print(
            f"CPU s {r.label}: workers {c['workers']:.1f}, postgres {c['postgres']:.1f}, "
            f"redis {c['redis']:.1f}; machine busy {c['busy']:.1f} of "
            f"{(os.cpu_count() or 1) * r.seconds:.1f} ({os.cpu_count()} cores × wall), "
            f"of which other processes ≈ {max(c['busy'] - ours, 0):.1f}, steal {c['steal']:.1f}"
        )
    maxrss = [*pub.maxrss_mib, *one.maxrss_mib, *two.maxrss_mib]
    print(
        "peak MiB = each process's own VmHWM; wait4's ru_maxrss said "
        + " / ".join(f"{m:.0f}" for m in maxrss)
        + " MiB, which includes this bench process's high-water RSS (see run_procs)"
    )
    for line in checks:
        print(line)


def _accounted(url: str, r: WorkerRun, n_tutors: int, n_sessions: int) -> str:
    """Every message persisted (none dead-lettered here): read back the tables."""
    tutors, sessions = _count(url, "tutors"), _count(url, "sessions")
    persisted = sum(int(t.get("persisted", 0)) for t in r.totals)
    dead = sum(int(t.get("dead_lettered", 0)) for t in r.totals)
    ok = tutors == n_tutors and sessions == n_sessions and dead == 0
    return (
        f"check {r.label}: tables hold {tutors:,} tutors + {sessions:,} sessions, workers "
        f"persisted {persisted:,}, dead-lettered {dead}" + ("" if ok else "  <-- MISMATCH")
    )


if __name__ == "__main__":
    sys.exit("run `python -m bench --only queue`")
