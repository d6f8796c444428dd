"""The queue worker (SPEC §6): read a batch → process → commit → dead-letter → acknowledge.

One loop, one batch at a time, in the manner of rq's worker:

    while not stopping:
        batch = retries that are due + entries reclaimed from dead consumers + new entries
        with store.transaction():                       # one transaction a batch
            for kind in tutors, sessions, feedback:     # parents first
                Pipeline(kind).process(records_to_table(batch[kind]), as_of=batch start)
        dead-letter the rejects (idempotent), then XACK everything finished

An outage (database or Redis unreachable) never dead-letters: the batch is retried with
backoff, its entries stay pending. The policy (outcomes, retry timing) is worker_policy.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import pyarrow as pa

from .envelope import Message, Poison
from .envelope import parse_envelope as parse
from .errors import DatabaseError, QueueError, UsageError
from .fields import Context
from .pipeline import Pipeline
from .records import records_to_table
from .schema import KINDS
from .store import Store
from .streams import DEFAULT_GROUP, KIND_NAMES, WORKER_COUNTERS, QueueUnavailable, Streams
from .worker_policy import Outcomes, RetryPolicy, classify, poison

log = logging.getLogger("tutormax.worker")

OUTAGES = (DatabaseError, QueueUnavailable)
OUTAGE_FIRST_S, OUTAGE_MAX_S = 0.5, 30.0
BURST_BLOCK_MS = 100  # --burst polls this often while retries or other consumers are pending
PROGRESS_EVERY_S = 10.0
GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections while the worker runs
FAULT_POINTS = ("before_commit", "after_commit_before_ack", "after_deadletter_before_ack")
T = TypeVar("T")


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerOptions:
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer)
    # Entries read per stream per batch. Measured (`python -m bench --only queue`, 1M
    # sessions, 1 worker into PostgreSQL, 2 cores): 1000 → 8.8k msgs/s, 5000 → 11.8k;
    # (200k runs: 2000 → 10k, 10000 no better than 5000). A batch has ~17 ms of fixed costs
    # (commit fsync, a dozen round trips, validation's Arrow calls) and 5000 → ~190 MiB RSS.
    batch_size: int = 5000
    reclaim_idle_ms: int = 60_000
    block_ms: int = 2_000
    timezone: str = "UTC"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    heartbeat_ttl_s: int = 60


class Worker:
    def __init__(
        self, streams: Streams, store: Store, options: WorkerOptions, metrics: Metrics | None = None
    ) -> None:
        self.streams, self.store, self.opts, self.metrics = streams, store, options, metrics
        # A retry never waits so long that other consumers take it for a dead one's entry.
        cap = max(1, min(options.retry.max_ms, options.reclaim_idle_ms // 2))
        self.policy = dataclasses.replace(options.retry, max_ms=cap)
        self.totals = dict.fromkeys(WORKER_COUNTERS, 0)
        self._unsent = dict.fromkeys(WORKER_COUNTERS, 0)  # counters not yet added to Redis
        self._stopping = False
        self._next_reclaim = 0.0
        self._last_beat = self._last_log = time.monotonic()
        self._faults = Faults.from_env()

    # -- the loop ----------------------------------------------------------------------------

    def run(self, *, burst: bool = False, max_batches: int | None = None) -> dict[str, int]:
        """Work until stopped (or, with burst, until nothing is pending or due); totals."""
        self.streams.ensure_group(self.opts.group)
        self.streams.reset_worker(self.opts.consumer)
        self._beat(started_at=_now())
        log.info(
            "worker %s of group %s on %s (streams %s*), database %s",
            self.opts.consumer,
            self.opts.group,
            self.streams.url_masked,
            self.streams.prefix,
            self.store.url_masked,
        )
        batches = 0
        with _batch_gc():
            while not self._stopping and (max_batches is None or batches < max_batches):
                got = self._until_done(partial(self._next_batch, burst))
                messages, drained = got or ([], False)
                if messages:
                    self._until_done(partial(self._handle, messages), held=messages)
                    batches += 1
                    del messages, got
                    gc.collect()  # the batch's garbage cycles, while there is little else
                elif burst and drained:
                    break
                self._beat()
        self._beat()
        log.info("worker %s stopped: %s", self.opts.consumer, _fmt(self.totals))
        return dict(self.totals)

    def request_stop(self, why: str = "") -> None:
        self._stopping = True
        log.info("%s: finishing the current batch, then stopping", why or "stop requested")

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _next_batch(self, burst: bool) -> tuple[list[Message], bool]:
        """Due retries, reclaimed entries, then new ones; and whether the group is drained."""
        messages, wait_ms = self._due_retries()
        if time.monotonic() >= self._next_reclaim:
            every_ms = max(50, min(self.opts.reclaim_idle_ms // 2, 5_000))
            self._next_reclaim = time.monotonic() + every_ms / 1000
            got, trimmed = self.streams.reclaim(
                self.opts.group, self.opts.consumer, self.opts.reclaim_idle_ms, self.opts.batch_size
            )
            self._add(reclaimed=len(got), trimmed=trimmed)
            messages += got
        block = 0 if messages else self._block_ms(wait_ms, burst)
        messages += self.streams.read_new(
            self.opts.group, self.opts.consumer, self.opts.batch_size, block
        )
        drained = burst and not messages and self.streams.group_pending(self.opts.group) == 0
        return messages, drained

    def _due_retries(self) -> tuple[list[Message], int | None]:
        """Claim our pending entries whose backoff is over; ms until the next one is due."""
        pending = self.streams.own_pending(
            self.opts.group, self.opts.consumer, 4 * self.opts.batch_size
        )
        due = [p for p in pending if self.policy.wait_ms(p) <= 0]
        waits = [self.policy.wait_ms(p) for p in pending if self.policy.wait_ms(p) > 0]
        if not due:
            return [], min(waits, default=None)
        guard = min(self.policy.delay_ms(p.id, p.deliveries) for p in due)
        claimed, trimmed = self.streams.claim(self.opts.group, self.opts.consumer, due, guard)
        self._add(trimmed=trimmed)
        return claimed, min(waits, default=None)

    def _block_ms(self, wait_ms: int | None, burst: bool) -> int:
        block = self.opts.block_ms
        if wait_ms is not None:
            block = min(block, max(wait_ms, 1))
        return min(block, BURST_BLOCK_MS) if burst else block

    # -- one batch ---------------------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        started = time.monotonic()
        ctx = Context(as_of=datetime.now(UTC), timezone=self.opts.timezone)
        out = Outcomes()
        by_kind = self._parse(messages, out)
        with self.store.transaction():
            for kind in KIND_NAMES:
                if by_kind.get(kind):
                    self._process(kind, by_kind[kind], ctx, out)
            self._faults.hit("before_commit")
        self._faults.hit("after_commit_before_ack")
        self.streams.dead_letter(out.letters)
        if out.letters:
            self._faults.hit("after_deadletter_before_ack")
        self.streams.ack(self.opts.group, out.to_ack)
        self._record(len(messages), out, time.monotonic() - started)

    def _parse(self, messages: list[Message], out: Outcomes) -> dict[str, list[tuple]]:
        """Envelopes by kind. Anything that goes wrong parsing one message (Poison, or an
        exception nobody foresaw) makes that message poison: one message never stops the
        worker, and since each is parsed alone, isolation needs no bisection."""
        by_kind: dict[str, list[tuple[Message, dict[str, Any]]]] = {}
        for m in messages:
            raw = m.raw()
            if not m.fields:  # delivered from the PEL after someone deleted the entry
                out.trimmed.append(m)
            elif raw is None:
                out.letters.append(poison(m, "entry has no 'message' field"))
            else:
                try:
                    env = parse(raw)
                except Poison as exc:
                    out.letters.append(poison(m, str(exc)))
                    continue
                except Exception as exc:  # a bug or a hostile input nobody foresaw
                    log.warning("message %s could not be parsed: %r", m.id, exc)
                    out.letters.append(poison(m, f"unparsable: {type(exc).__name__}: {exc}"))
                    continue
                by_kind.setdefault(m.kind, []).append((m, env))
        return by_kind

    def _process(self, kind: str, pairs: list[tuple], ctx: Context, out: Outcomes) -> None:
        """Run the pipeline on one kind's records; a record that crashes it is isolated by
        bisection (each half under its own SAVEPOINT) and dead-lettered as poison."""
        try:
            with self.store.transaction():
                table = _records_table([env["data"] for _, env in pairs], kind)
                result = Pipeline(KINDS[kind], store=self.store).process(table, ctx)
        except OUTAGES:
            raise
        except Exception as exc:
            if len(pairs) == 1:
                reason = f"processing failed: {type(exc).__name__}: {exc}"
                out.letters.append(poison(pairs[0][0], reason, pairs[0][1]))
                return
            mid = len(pairs) // 2
            self._process(kind, pairs[:mid], ctx, out)
            self._process(kind, pairs[mid:], ctx, out)
            return
        classify(result, [m for m, _ in pairs], [e for _, e in pairs], self.policy, out)

    def _until_done(self, step: Callable[[], T], held: list[Message] | None = None) -> T | None:
        """Run a step until it succeeds, backing off through outages. Without messages in
        hand a stop request ends the wait (returns None); with them, we keep trying."""
        delay = OUTAGE_FIRST_S
        while True:
            try:
                return step()
            except OUTAGES as exc:
                self._add(outages=1)
                if held is None and self._stopping:
                    return None
                log.warning("%s; retrying in %.1f s (messages stay pending)", exc.message, delay)
                self._sleep(delay, interruptible=held is None)
                delay = min(delay * 2, OUTAGE_MAX_S)
                if held:  # keep them ours: others would take them for a dead consumer's
                    with suppress(QueueError):
                        self.streams.touch(self.opts.group, self.opts.consumer, held)

    def _sleep(self, seconds: float, interruptible: bool) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (interruptible and self._stopping):
            time.sleep(min(0.1, max(end - time.monotonic(), 0)))

    # -- counters ----------------------------------------------------------------------------

    def _add(self, **counts: int) -> None:
        for name, n in counts.items():
            self.totals[name] += n
            self._unsent[name] += n
            if self.metrics is not None and n:
                self.metrics.messages.labels(name).inc(n)

    def _record(self, read: int, out: Outcomes, seconds: float) -> None:
        counts = out.counts()
        self._add(read=read, **counts)
        if self.metrics is not None:
            self.metrics.batch_seconds.observe(seconds)
        if out.letters:
            log.info(
                "dead-lettered %d message(s) to %s", len(out.letters), self.streams.dead_letter_key
            )
        if time.monotonic() - self._last_log >= PROGRESS_EVERY_S:
            self._last_log = time.monotonic()
            log.info("%s", _fmt(self.totals))

    def _beat(self, **values: Any) -> None:
        """Add the unsent counters to Redis and refresh the hash's TTL; an outage only
        delays them (they are sent with the next beat)."""
        now = time.monotonic()
        done = sum(self._unsent[k] for k in ("persisted", "dead_lettered", "retried"))
        rate = done / max(now - self._last_beat, 1e-3)
        values.update(last_heartbeat=_now(), msgs_per_s=f"{rate:.1f}", pid=os.getpid())
        try:
            self.streams.beat(self.opts.consumer, self._unsent, values, self.opts.heartbeat_ttl_s)
        except QueueError as exc:
            log.warning("counters not updated: %s", exc.message)
            return
        self._unsent = dict.fromkeys(WORKER_COUNTERS, 0)
        self._last_beat = now


# -- faults, signals, metrics ------------------------------------------------------------------


@dataclass
class Faults:
    """`TUTORMAX_FAULT=<point>[:<n>]` SIGKILLs the worker the n-th time (default: first) it
    reaches <point>; with `TUTORMAX_FAULT_PAUSE_S=<s>` it pauses there instead (for tests
    that signal or disconnect a worker in the middle of a batch)."""

    point: str | None = None
    nth: int = 1
    pause_s: float | None = None
    seen: int = 0

    @classmethod
    def from_env(cls) -> Faults:
        spec = os.environ.get("TUTORMAX_FAULT", "").strip()
        if not spec:
            return cls()
        point, _, nth = spec.partition(":")
        if point not in FAULT_POINTS or (nth and not nth.isdigit()):
            raise UsageError(
                f"TUTORMAX_FAULT={spec!r}: expected <point>[:<n>], point one of "
                f"{', '.join(FAULT_POINTS)}"
            )
        pause = os.environ.get("TUTORMAX_FAULT_PAUSE_S")
        return cls(point, int(nth or 1), float(pause) if pause else None)

    def hit(self, point: str) -> None:
        if point != self.point:
            return
        self.seen += 1
        if self.seen != self.nth:
            return
        if self.pause_s is not None:
            log.warning("fault injection: pausing %.1f s at %s", self.pause_s, point)
            time.sleep(self.pause_s)
            return
        os.kill(os.getpid(), signal.SIGKILL)


def install_signal_handlers(worker: Worker) -> None:
    """First SIGTERM/SIGINT: finish the batch, then exit 0. Second: exit at once."""

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if worker.stopping:
            log.warning("%s again: exiting at once; the batch stays pending", name)
            raise SystemExit(128 + signum)
        worker.request_stop(f"received {name}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class Metrics:
    """Prometheus metrics on `http://<addr>:<port>/metrics` (a registry of its own)."""

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

        self.registry = CollectorRegistry()
        self.messages = Counter(
            "tutormax_worker_messages",
            "Messages handled, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "tutormax_worker_batch_seconds",
            "Seconds to process, commit and ack one batch.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self._server, self._thread = start_http_server(port, addr, registry=self.registry)
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def _batch_gc() -> Iterator[None]:
    """Cheaper garbage collection for the batch loop (measured: ~12% of a worker's time).

    A batch allocates tens of thousands of dicts and lists (parsed envelopes, records) that
    refcounting frees; the cyclic collector only re-walks them while they live, and every
    full collection re-walks every object of pyarrow, SQLAlchemy and redis too. So: freeze
    what exists at start (imports, connections) out of the collector's sight, and let young
    collections wait for GC_YOUNG_THRESHOLD allocations instead of 700. The loop collects
    once after each batch instead, when the batch is gone (without that, the few garbage
    cycles a batch leaves — holding lists of ids — were never collected: +20% RSS per 1M)."""
    old = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def _records_table(records: list[dict[str, Any]], kind: str) -> pa.Table:
    """The records of one kind as a raw batch: `records.records_to_table`, with the kind's
    columns only (the database ignores other keys, and no output file needs them)."""
    return records_to_table(records, KINDS[kind], columns=())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fmt(totals: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in totals.items() if v or k == "read")
