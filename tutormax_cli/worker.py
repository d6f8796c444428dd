"""The queue worker (SPEC §6): read a batch → process → commit → dead-letter → acknowledge.

One loop, one batch at a time, in the manner of rq's worker:

    while not stopping:
        marks = where the group stands on each stream (streams.StreamMark)
        batch = due retries + entries reclaimed from gone consumers + new entries, a child
                stream read only while its parent stream cannot hold what it needs
        with store.transaction():                       # one transaction a batch
            for kind in tutors, sessions, feedback:     # parents first
                Pipeline(kind).process(records_to_table(batch[kind]), as_of=batch start)
        dead-letter the rejects (idempotent), XACK everything finished, and refund the
        delivery of records that wait for a parent still on its way

Faults are told apart (SPEC §6): an outage (database or Redis unreachable) backs off and
keeps the batch pending; a vanished group is recreated; a database whose schema is not
this version's is fatal (exit 2, batch left pending); anything else is a bug (exit 3, the
batch left pending) — unless bisection proves that one record alone crashes the pipeline,
which makes that record poison. The policy (outcomes, retry timing) is worker_policy.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import pyarrow as pa

from .config import fault_setting
from .envelope import Message, Poison
from .envelope import parse_envelope as parse
from .errors import DatabaseUnavailable, QueueError, TutormaxError, UsageError
from .fields import Context
from .metrics import Metrics
from .pipeline import Pipeline
from .records import records_to_table
from .schema import KINDS
from .store import Store
from .streams import (
    DEFAULT_GROUP,
    KIND_NAMES,
    WORKER_COUNTERS,
    GroupVanished,
    QueueUnavailable,
    StreamMark,
    Streams,
    entry_key,
)
from .worker_policy import (
    Outcomes,
    RetryPolicy,
    classify,
    parents_passed,
    poison,
    settle_orphans,
)

log = logging.getLogger("tutormax.worker")

OUTAGES = (DatabaseUnavailable, QueueUnavailable)
OUTAGE_FIRST_S, OUTAGE_MAX_S = 0.5, 30.0
BURST_BLOCK_MS = 100  # --burst polls this often while retries or other consumers are pending
PROGRESS_EVERY_S = 10.0
DEAD_LETTER_GAUGE_EVERY_S = 60.0  # dead letters by error code: a scan of the stream
FIRST_IDS_LOGGED = 5
GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections while the worker runs
FAULT_POINTS = (
    "before_commit",
    "after_commit_before_ack",
    "after_deadletter_before_ack",
    "pipeline_bug",  # not a kill: the pipeline raises TypeError, as a bug in the code would
)
# A valid record of each kind: when a batch of one record crashes the pipeline, the canary
# tells whether the record or the code is at fault (see Worker._process).
CANARIES: dict[str, dict[str, Any]] = {
    "tutors": {
        "tutor_id": "~canary",
        "name": "canary",
        "email": "canary@example.invalid",
        "onboarding_date": "2024-01-01",
        "status": "active",
        "subjects": ["canary"],
    },
    "sessions": {
        "session_id": "~canary",
        "tutor_id": "~canary",
        "student_id": "~canary",
        "scheduled_start": "2024-01-01T00:00:00Z",
        "duration_minutes": 60,
        "subject": "canary",
    },
    "feedback": {
        "feedback_id": "~canary",
        "session_id": "~canary",
        "student_id": "~canary",
        "tutor_id": "~canary",
        "overall_rating": 5,
        "submitted_at": "2024-01-01T01:00:00Z",
    },
}
T = TypeVar("T")


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer)
    batch_size: int = 5000  # entries read per stream per batch
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
        self._next_gauges = 0.0
        self._last_beat = self._last_log = time.monotonic()
        self._marks: dict[str, StreamMark] = {}
        self._told: set[str] = set()  # gone consumers already reported in --burst
        self._faults = Faults.from_env()

    # -- the loop ----------------------------------------------------------------------------

    def run(self, *, burst: bool = False, max_batches: int | None = None) -> dict[str, int]:
        """Work until stopped (or, with burst, until nothing is pending or due); totals."""
        self._start()
        batches = 0
        with _batch_gc():
            while not self._stopping and (max_batches is None or batches < max_batches):
                self._alive()
                got = self._until_done(partial(self._next_batch, burst))
                if got is None:  # stopped while Redis was away
                    break
                messages, drained = got
                if messages:
                    if self._until_done(partial(self._handle, messages), held=messages) is None:
                        log.warning(
                            "stopping during an outage: %d message(s) of the current batch "
                            "stay pending and will be delivered again",
                            len(messages),
                        )
                        break
                    batches += 1
                    del messages, got
                    gc.collect()  # the batch's garbage cycles, while there is little else
                elif burst and drained:
                    break
                self._beat()
        self._beat()
        log.info(
            "worker %s stopped: %s",
            self.opts.consumer,
            _fmt(self.totals),
            extra={"counters": dict(self.totals)},
        )
        return dict(self.totals)

    def _start(self) -> None:
        self._until_done(lambda: self.streams.ensure_group(self.opts.group))
        self.streams.reset_worker(self.opts.consumer)
        self._beat(started_at=_now())
        log.info(
            "worker %s of group %s on %s, streams %s, database %s",
            self.opts.consumer,
            self.opts.group,
            self.streams.url_masked,
            ", ".join(self.streams.names.values()),
            self.store.url_masked,
        )
        self._check_dead_letters()

    def _check_dead_letters(self) -> None:
        """Warn when dead letters can vanish (a TTL, trimming) and sweep the marks of those
        that did, so the dead-letter index matches the stream."""
        try:
            health = self.streams.dead_letter_health()
            swept = self.streams.sweep_marks() if health["lost"] else 0
        except QueueError as exc:
            log.warning("could not check %s: %s", self.streams.dead_letter_key, exc.message)
            return
        key = self.streams.dead_letter_key
        if health["ttl_s"] is not None:
            log.warning(
                "%s has a TTL: it expires in %d s, and every dead letter with it "
                "(tutormax never sets one; a producer did)",
                key,
                health["ttl_s"],
            )
        if swept:
            log.warning(
                "%d dead letter(s) of %s were lost (trimmed or expired); their marks "
                "were removed from the index",
                swept,
                key,
            )

    def request_stop(self, why: str = "") -> None:
        self._stopping = True
        log.info("%s: finishing the current batch, then stopping", why or "stop requested")

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _alive(self) -> None:
        if self.metrics is not None:
            self.metrics.cycle()

    # -- choosing a batch ----------------------------------------------------------------------

    def _next_batch(self, burst: bool) -> tuple[list[Message], bool]:
        """Due retries, reclaimed entries, then new ones; and whether the group is drained."""
        try:
            marks = self._marks = self.streams.marks(self.opts.group)
        except GroupVanished as exc:
            self._recover(exc)
            return [], False
        self._gauges(marks)
        messages, wait_ms = self._due_retries(marks)
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
            self.opts.group, self.opts.consumer, self.opts.batch_size, block, self._readable(marks)
        )
        drained = False
        if burst and not messages:
            pending = self.streams.group_pending(self.opts.group)
            drained = pending == 0
            if pending:
                self._tell_gone_consumers()
        return messages, drained

    def _readable(self, marks: dict[str, StreamMark]) -> tuple[str, ...]:
        """The streams worth reading now. A child stream waits while its next entry is newer
        than its parent stream's first undelivered entry and this batch will not drain the
        parent: what it would read could only wait for parents (SPEC §6: drain the parent
        stream first rather than re-read children)."""
        readable: list[str] = []
        for kind in KIND_NAMES:
            child = marks[kind].next_undelivered
            ok = True
            for _column, parent in KINDS[kind].parents:
                p = marks[parent]
                if child is None or p.next_undelivered is None:
                    continue
                drains = parent in readable and p.lag is not None and p.lag <= self.opts.batch_size
                if not drains and entry_key(child) > entry_key(p.next_undelivered):
                    ok = False
            if ok:
                readable.append(kind)
        return tuple(readable)

    def _due_retries(self, marks: dict[str, StreamMark]) -> tuple[list[Message], int | None]:
        """Claim our pending entries that are due (their parents can no longer be on their
        way, their backoff is over); ms until the next backoff ends. Entries waiting for a
        parent are touched before they look abandoned to other consumers."""
        pending = self.streams.own_pending(
            self.opts.group, self.opts.consumer, 4 * self.opts.batch_size
        )
        due = [p for p in pending if self.policy.is_due(p, marks)]
        rest = [p for p in pending if not self.policy.is_due(p, marks)]
        waits = [self.policy.wait_ms(p) for p in rest if parents_passed(p.kind, p.id, marks)]
        stale = [p for p in rest if p.idle_ms > self.opts.reclaim_idle_ms // 2]
        if stale:
            self.streams.touch(
                self.opts.group,
                self.opts.consumer,
                [Message(p.kind, p.id, {}, p.deliveries) for p in stale],
            )
        next_wait = min((w for w in waits if w > 0), default=None)
        if not due:
            return [], next_wait
        guard = min(self.policy.delay_ms(p.id, p.deliveries) for p in due)
        claimed, trimmed = self.streams.claim(self.opts.group, self.opts.consumer, due, guard)
        self._add(trimmed=trimmed)
        return claimed, next_wait

    def _block_ms(self, wait_ms: int | None, burst: bool) -> int:
        block = self.opts.block_ms
        if wait_ms is not None:
            block = min(block, max(wait_ms, 1))
        return min(block, BURST_BLOCK_MS) if burst else block

    def _tell_gone_consumers(self) -> None:
        """--burst: say once per consumer when we wait for a gone consumer's entries."""
        try:
            stats = self.streams.stream_stats(self.opts.group)
        except QueueError:
            return
        for info in stats.values():
            for name, c in info["consumers"].items():
                if name == self.opts.consumer or not c["pending"] or name in self._told:
                    continue
                left_s = max(self.opts.reclaim_idle_ms - c["idle_ms"], 0) / 1000
                self._told.add(name)
                log.info(
                    "waiting %.0f s for %d pending entries of consumer %s to become "
                    "reclaimable (idle %.0f s, --reclaim-idle-ms %d)",
                    left_s,
                    c["pending"],
                    name,
                    c["idle_ms"] / 1000,
                    self.opts.reclaim_idle_ms,
                )

    # -- one batch ---------------------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> int:
        """One batch, committed and acknowledged; returns how many messages it had."""
        started = time.monotonic()
        ctx = Context(as_of=datetime.now(UTC), timezone=self.opts.timezone)
        out = Outcomes()
        by_kind = self._parse(messages, out)
        with self.store.transaction():
            for kind in KIND_NAMES:
                if by_kind.get(kind):
                    self._process(kind, by_kind[kind], ctx, out, first=True)
            self._faults.hit("before_commit")
        if self.metrics is not None:
            self.metrics.last_commit.set_to_current_time()
        self._faults.hit("after_commit_before_ack")
        try:
            self._finish(out.letters, out.to_ack)
            if out.orphans:  # decided with the group's position after this batch's ack
                marks = self._marks = self.streams.marks(self.opts.group)
                letters = settle_orphans(out.orphans, marks, self.policy, out)
                self._finish(letters, [d.message for d in letters])
                self.streams.refund(self.opts.group, self.opts.consumer, out.waiting)
        except GroupVanished as exc:  # committed: the entries are gone with the group
            self._recover(exc)
        self._record(len(messages), out, time.monotonic() - started)
        return len(messages)

    def _finish(self, letters: list[Any], to_ack: list[Message]) -> None:
        """Dead letters first (written once per source entry), then the acknowledgement."""
        self.streams.dead_letter(letters)
        if letters:
            if self.metrics is not None:  # until the next rescan corrects it (see _gauges)
                for code, n in Counter(d.error for d in letters).items():
                    self.metrics.dead_letters.labels(code).inc(n)
            self._faults.hit("after_deadletter_before_ack")
        self.streams.ack(self.opts.group, to_ack)

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

    def _process(
        self, kind: str, pairs: list[tuple], ctx: Context, out: Outcomes, first: bool = False
    ) -> None:
        """Run the pipeline on one kind's records. If it raises something that is not a
        known fault, bisect (each half under its own SAVEPOINT): a record that crashes the
        pipeline alone is poison. When both halves of the first split fail too — or, for a
        batch of one record, a known-good canary record fails as well — it is the code, not
        a record: the error goes up (exit 3, the batch left pending)."""
        try:
            result = self._pipeline(kind, pairs, ctx)
        except (TutormaxError, GroupVanished):
            raise
        except Exception as exc:
            if (
                len(pairs) == 1
                and first
                and self._fails(kind, [(None, {"data": CANARIES[kind]})], ctx)
            ):
                raise  # a valid record crashes it too: the code
            if len(pairs) == 1:
                log.warning(
                    "message %s crashes the pipeline on its own: poison",
                    pairs[0][0].id,
                    exc_info=True,
                )
                reason = f"processing failed: {type(exc).__name__}: {exc}"
                out.letters.append(poison(pairs[0][0], reason, pairs[0][1]))
                return
            mid = len(pairs) // 2
            halves = [pairs[:mid], pairs[mid:]]
            if first and all(self._fails(kind, h, ctx) for h in halves):
                raise
            for half in halves:
                self._process(kind, half, ctx, out)
            return
        classify(result, [m for m, _ in pairs], [e for _, e in pairs], out)

    def _pipeline(self, kind: str, pairs: list[tuple], ctx: Context) -> Any:
        self._faults.raise_if("pipeline_bug")
        with self.store.transaction():
            table = _records_table([env["data"] for _, env in pairs], kind)
            return Pipeline(KINDS[kind], store=self.store).process(table, ctx)

    def _fails(self, kind: str, pairs: list[tuple], ctx: Context) -> bool:
        """Whether the pipeline raises on these records (a trial: rolled back either way)."""
        try:
            with self.store.transaction():
                self._pipeline(kind, pairs, ctx)
                raise _Rollback
        except _Rollback:
            return False
        except (TutormaxError, GroupVanished):
            raise
        except Exception:
            return True

    # -- faults ------------------------------------------------------------------------------

    def _until_done(self, step: Callable[[], T], held: list[Message] | None = None) -> T | None:
        """Run a step until it succeeds, backing off through outages. A stop request ends
        the wait at once (returns None), even with messages in hand: they stay pending, and
        at-least-once delivery makes that safe."""
        delay = OUTAGE_FIRST_S
        while True:
            try:
                return step()
            except OUTAGES as exc:
                self._add(outages=1)
                if self._stopping:
                    return None
                log.warning("%s; retrying in %.1f s (messages stay pending)", exc.message, delay)
                self._sleep(delay)
                delay = min(delay * 2, OUTAGE_MAX_S)
                self._alive()  # waiting out an outage is not being stuck
                if held:  # keep them ours: others would take them for a dead consumer's
                    with suppress(QueueError):
                        self.streams.touch(self.opts.group, self.opts.consumer, held)
            except GroupVanished as exc:
                self._recover(exc)
                if self._stopping:
                    return None

    def _recover(self, exc: GroupVanished) -> None:
        """Redis came back empty, or someone deleted a stream or the group: say what
        vanished, recreate it, go on."""
        pending = sum(m.pending for m in self._marks.values())
        done = self._until_done(lambda: self.streams.recover(self.opts.group)) or []
        self._add(recovered=1)
        if self.metrics is not None:
            self.metrics.recoveries.inc()
        log.warning(
            "consumer group %s vanished (%s): Redis restarted without persistence, or a "
            "stream or the group was deleted. Lost with it: %d pending entr%s known at the "
            "last look, and the dead-letter marks if the index went too. Done: %s",
            self.opts.group,
            exc.message,
            pending,
            "y" if pending == 1 else "ies",
            "; ".join(done) or "nothing was missing any more",
        )
        self._marks = {}

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stopping:
            time.sleep(min(0.1, max(end - time.monotonic(), 0)))

    # -- counters, logs and gauges -----------------------------------------------------------

    def _add(self, **counts: int) -> None:
        for name, n in counts.items():
            self.totals[name] += n
            self._unsent[name] += n

    def _record(self, read: int, out: Outcomes, seconds: float) -> None:
        counts = out.counts()
        self._add(read=read, **counts)
        if self.metrics is not None:
            self.metrics.batch_seconds.observe(seconds)
            for outcome, messages in out.by_outcome().items():
                for kind, n in Counter(m.kind for m in messages).items():
                    self.metrics.messages.labels(outcome, kind).inc(n)
        if out.letters:
            codes = Counter(d.error for d in out.letters)
            first = ", ".join(
                f"{d.message.kind}:{d.message.id}" for d in out.letters[:FIRST_IDS_LOGGED]
            )
            log.info(
                "dead-lettered %d message(s) to %s: %s (first: %s)",
                len(out.letters),
                self.streams.dead_letter_key,
                ", ".join(f"{c} {n}" for c, n in sorted(codes.items())),
                first,
                extra={"dead_lettered": dict(codes)},
            )
        if time.monotonic() - self._last_log >= PROGRESS_EVERY_S:
            self._last_log = time.monotonic()
            log.info("%s", _fmt(self.totals), extra={"counters": dict(self.totals)})

    def _gauges(self, marks: dict[str, StreamMark]) -> None:
        if self.metrics is None:
            return
        names = {self.streams.stream(k): m for k, m in marks.items()}
        self.metrics.streams(names, self.streams.lengths(), self.streams.server_ms())
        if time.monotonic() >= self._next_gauges:
            self._next_gauges = time.monotonic() + DEAD_LETTER_GAUGE_EVERY_S
            from .stats import histogram

            self.metrics.dead_letter_counts(histogram(self.streams.dead_letters())["by_error"])

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


class _Rollback(Exception):
    """Ends a trial run of the pipeline (see Worker._fails)."""


# -- faults, signals ----------------------------------------------------------------------------


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
        spec = (fault_setting("FAULT") or "").strip()
        if not spec:
            return cls()
        point, _, nth = spec.partition(":")
        if point not in FAULT_POINTS or (nth and not nth.isdigit()):
            raise UsageError(
                f"TUTORMAX_FAULT={spec!r}: expected <point>[:<n>], point one of "
                f"{', '.join(FAULT_POINTS)}"
            )
        pause = fault_setting("FAULT_PAUSE_S")
        return cls(point, int(nth or 1), float(pause) if pause else None)

    def raise_if(self, point: str) -> None:
        """The `pipeline_bug` point: raise the way a bug in the code would, every time."""
        if point == self.point:
            raise TypeError(f"fault injection: {point}")

    def hit(self, point: str) -> None:
        if point != self.point or point == "pipeline_bug":
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
    """First SIGTERM/SIGINT: finish the batch (or, during an outage, leave it pending), then
    exit 0. Second: exit at once."""

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if worker.stopping:
            log.warning("%s again: exiting at once; the batch stays pending", name)
            raise SystemExit(128 + signum)
        worker.request_stop(f"received {name}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@contextmanager
def _batch_gc() -> Iterator[None]:
    """Cheaper garbage collection for the batch loop.

    A batch allocates tens of thousands of dicts and lists (parsed envelopes, records) that
    refcounting frees; the cyclic collector only re-walks them while they live, and every
    full collection re-walks every object of pyarrow, SQLAlchemy and redis too. So: freeze
    what exists at start (imports, connections) out of the collector's sight, and let young
    collections wait for GC_YOUNG_THRESHOLD allocations instead of 700. The loop collects
    once after each batch instead, when the batch is gone (without that, the few garbage
    cycles a batch leaves — holding lists of ids — were never collected)."""
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
