"""The queue worker (SPEC §6): read a batch → process → commit → dead-letter → acknowledge.

One loop, one batch at a time, in the manner of rq's worker:

    while not stopping:
        marks = where the group stands on each stream (streams.StreamMark), read first
        batch = due retries + entries reclaimed from gone consumers + new entries, a child
                stream read only while its parent stream cannot hold what it needs
        with store.transaction():                       # one transaction a batch
            for kind in tutors, sessions, feedback:     # parents first
                Pipeline(kind).process(records_to_table(batch[kind]), as_of=batch start)
        decide the orphans with `marks` (policy.settle_orphans says why it must be that
        look, taken before the batch), dead-letter the rejects (idempotent), XACK
        everything finished, and refund the delivery of records whose parent is on its way

Faults are told apart (SPEC §6): an outage (database or Redis unreachable) backs off and
keeps the batch pending; a vanished group is recreated; a database whose schema is not
this version's is fatal (exit 2, batch left pending); anything else is a bug (exit 3, the
batch left pending) — unless bisection proves that one record alone crashes the pipeline,
which makes that record poison. The policy (outcomes, retry timing) is policy.py.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from ..config import (
    DEFAULT_BLOCK_MS,
    DEFAULT_HEARTBEAT_TTL_S,
    DEFAULT_RECLAIM_IDLE_MS,
    DEFAULT_TIMEZONE,
    DEFAULT_WORKER_BATCH,
    DEFAULT_WORKER_BATCH_BYTES,
)
from ..errors import DatabaseUnavailable, QueueError, StatementCancelled
from ..fields import Context
from ..schema import KIND_ORDER
from ..store import Store
from .envelope import Message, Poison
from .envelope import parse_envelope as parse
from .isolate import Isolation
from .metrics import Metrics
from .policy import (
    Outcomes,
    RetryPolicy,
    finished_beyond,
    parents_passed,
    poison,
    readable,
    settle_orphans,
)
from .runtime import Faults, batch_gc, default_consumer
from .streams import (
    DEFAULT_GROUP,
    GroupVanished,
    QueueUnavailable,
    ReadBudget,
    StreamMark,
    Streams,
    cut_reason,
)
from .telemetry import Telemetry, now_iso

log = logging.getLogger("tutormax.worker")

OUTAGES = (DatabaseUnavailable, QueueUnavailable)
OUTAGE_FIRST_S, OUTAGE_MAX_S = 0.5, 30.0
# A statement the database cancels (a statement timeout; errors.StatementCancelled) is not
# an outage: retried as it is, it is mostly cancelled again. A step is tried this many
# times, backing off as for an outage (someone's pg_cancel_backend passes), then it is fatal.
CANCELLED_TRIES = 3
BURST_BLOCK_MS = 100  # --burst polls this often while retries or other consumers are pending
# A blocking read waits at most this long at a time, --block-ms or not: the loop looks at a
# stop request between two reads (an idle worker with --block-ms 60000 took 58 s to stop).
BLOCK_SLICE_MS = 2_000
T = TypeVar("T")


@dataclass(frozen=True)
class WorkerOptions:
    group: str = DEFAULT_GROUP
    consumer: str = field(default_factory=default_consumer)
    batch_size: int = DEFAULT_WORKER_BATCH  # entries read per stream per batch
    batch_bytes: int = DEFAULT_WORKER_BATCH_BYTES  # bytes read per batch (streams.ReadBudget)
    reclaim_idle_ms: int = DEFAULT_RECLAIM_IDLE_MS
    block_ms: int = DEFAULT_BLOCK_MS
    timezone: str = DEFAULT_TIMEZONE
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    heartbeat_ttl_s: int = DEFAULT_HEARTBEAT_TTL_S
    fault: str = ""  # fault injection, for tests (config.Settings.fault; queue/runtime.Faults)
    fault_pause_s: str = ""


class Worker:
    def __init__(
        self, streams: Streams, store: Store, options: WorkerOptions, metrics: Metrics | None = None
    ) -> None:
        self.streams, self.store, self.opts, self.metrics = streams, store, options, metrics
        # A retry never waits so long that other consumers take it for a dead one's entry.
        cap = max(1, min(options.retry.max_ms, options.reclaim_idle_ms // 2))
        self.policy = dataclasses.replace(options.retry, max_ms=cap)
        self.telemetry = Telemetry(streams, options.consumer, options.heartbeat_ttl_s, metrics)
        self._stopping = False
        self.in_hand = 0  # messages of the batch being worked on (0 between batches)
        self._next_reclaim = 0.0
        self._marks: dict[str, StreamMark] = {}  # the last look at the group
        self._faults = Faults.parse(options.fault, options.fault_pause_s)
        self._isolation = Isolation(store, self._faults)
        self._tries = 0  # tries of the batch in hand (an outage makes _until_done try again)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, *, burst: bool = False, max_batches: int | None = None) -> dict[str, int]:
        """Work until stopped (or, with burst, until nothing is pending or due); totals."""
        self._start()
        batches = 0
        with batch_gc():
            while not self._stopping and (max_batches is None or batches < max_batches):
                self._alive()
                got = self._until_done(partial(self._next_batch, burst))
                if got is None:  # stopped while Redis was away
                    break
                messages, drained, marks = got
                if messages:
                    step = partial(self._handle, messages, marks)
                    self.in_hand, self._tries = len(messages), 0
                    if self._until_done(step, held=messages) is None:
                        log.warning(
                            "stopping during an outage: %d message(s) of the current batch "
                            "stay pending and will be delivered again",
                            len(messages),
                        )
                        break
                    batches += 1
                    self.in_hand = 0
                    del messages, got, step
                    gc.collect()  # the batch's garbage cycles, while there is little else
                elif burst and drained:
                    break
                self.telemetry.beat()
        self.telemetry.beat()
        log.info(
            "worker %s stopped: %s",
            self.opts.consumer,
            self.telemetry.summary(),
            extra={"counters": dict(self.telemetry.totals)},
        )
        return dict(self.telemetry.totals)

    def _start(self) -> None:
        self._until_done(lambda: self.streams.ensure_group(self.opts.group))
        self.streams.reset_worker(self.opts.consumer)
        self.telemetry.beat(started_at=now_iso())
        log.info(
            "worker %s of group %s on %s, streams %s, database %s",
            self.opts.consumer,
            self.opts.group,
            self.streams.url_masked,
            ", ".join(self.streams.names.values()),
            self.store.url_masked,
        )
        self.telemetry.check_dead_letters()

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

    def _next_batch(self, burst: bool) -> tuple[list[Message], bool, dict[str, StreamMark]]:
        """Due retries, reclaimed entries, then new ones; whether the group is drained; and
        the look at the group taken before any of them was read (see _handle)."""
        try:
            marks = self._marks = self.streams.marks(self.opts.group)
        except GroupVanished as exc:
            self._recover(exc)
            return [], False, {}
        self.telemetry.gauges(marks)
        budget = ReadBudget(self.opts.batch_bytes)
        messages, wait_ms = self._due_retries(marks, budget)
        if time.monotonic() >= self._next_reclaim:
            every_ms = max(50, min(self.opts.reclaim_idle_ms // 2, 5_000))
            self._next_reclaim = time.monotonic() + every_ms / 1000
            got, trimmed = self.streams.reclaim(
                self.opts.group,
                self.opts.consumer,
                self.opts.reclaim_idle_ms,
                self.opts.batch_size,
                budget,
            )
            self.telemetry.add(reclaimed=len(got), trimmed=trimmed)
            messages += got
        block = 0 if messages else self._block_ms(wait_ms, burst)
        messages += self.streams.read_new(
            self.opts.group,
            self.opts.consumer,
            self.opts.batch_size,
            block,
            readable(marks, self.opts.batch_size),
            budget,
            stop=lambda: self.stopping,
        )
        drained = False
        if burst and not messages:
            pending = self.streams.group_pending(self.opts.group)
            drained = pending == 0
            if pending:
                self.telemetry.tell_gone_consumers(self.opts.group, self.opts.reclaim_idle_ms)
        return messages, drained, marks

    def _due_retries(
        self, marks: dict[str, StreamMark], budget: ReadBudget
    ) -> tuple[list[Message], int | None]:
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
        claimed, trimmed = self.streams.claim(
            self.opts.group, self.opts.consumer, due, guard, budget
        )
        self.telemetry.add(trimmed=trimmed)
        return claimed, next_wait

    def _block_ms(self, wait_ms: int | None, burst: bool) -> int:
        block = min(self.opts.block_ms, BLOCK_SLICE_MS)
        if wait_ms is not None:
            block = min(block, max(wait_ms, 1))
        return min(block, BURST_BLOCK_MS) if burst else block

    # -- one batch ---------------------------------------------------------------------------

    def _handle(self, messages: list[Message], marks: dict[str, StreamMark]) -> int:
        """One batch, committed and acknowledged; returns how many messages it had.

        Its orphans are decided with `marks`, the look taken before the batch was read and
        so before its transaction checked any parent — never with a later one, which could
        show a parent that another worker committed and acknowledged after the check and
        make a valid child spend an attempt (policy.settle_orphans has the argument)."""
        started = time.monotonic()
        ctx = Context(as_of=datetime.now(UTC), timezone=self.opts.timezone)
        out = Outcomes()
        self._tries += 1
        by_kind = self._parse(self._not_handled(messages, out), out)
        with self.store.transaction():
            for kind in KIND_ORDER:
                if by_kind.get(kind):
                    self._isolation.process(kind, by_kind[kind], ctx, out, first=True)
            self._faults.hit("before_commit")
        if self.metrics is not None:
            self.metrics.last_commit.set_to_current_time()
        self._faults.hit("after_commit_before_ack")
        try:
            if out.orphans:
                beyond = finished_beyond(out.orphans, marks, out, self.streams.first_foreign)
                settle_orphans(out.orphans, marks, self.policy, out, beyond)
            self._finish(out.letters, out.to_ack)
            self.streams.refund(self.opts.group, self.opts.consumer, out.waiting)
        except GroupVanished as exc:  # committed: the entries are gone with the group
            self._recover(exc)
        self.telemetry.record(len(messages), out, time.monotonic() - started)
        return len(messages)

    def _not_handled(self, messages: list[Message], out: Outcomes) -> list[Message]:
        """The messages to process: not those an earlier try dead-lettered (the worker was
        killed, or Redis went away, between that dead letter and the ack), which go to
        `out.handled`. Processed again, such a record could be persisted too — its parent
        committed meanwhile — and be both stored and a dead letter (SPEC §6a). Only an
        entry delivered before, or a batch tried before, can have one."""
        again = [m for m in messages if m.fields and (m.deliveries > 1 or self._tries > 1)]
        done = self.streams.dead_lettered_before(again) if again else set()
        if not done:
            return messages
        out.handled = [m for m in messages if (m.kind, m.id) in done]
        return [m for m in messages if (m.kind, m.id) not in done]

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
            if m.cut:  # too big to read whole (queue/streams/bounded.py)
                out.letters.append(poison(m, cut_reason(m.cut)))
            elif not m.fields:  # delivered from the PEL after someone deleted the entry
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

    # -- faults ------------------------------------------------------------------------------

    def _until_done(self, step: Callable[[], T], held: list[Message] | None = None) -> T | None:
        """Run a step until it succeeds, backing off through outages. A stop request ends
        the wait at once (returns None), even with messages in hand: they stay pending, and
        at-least-once delivery makes that safe."""
        delay = OUTAGE_FIRST_S
        cancelled = 0
        while True:
            try:
                return step()
            except StatementCancelled as exc:
                if self._stopping:  # the batch stays pending, as in an outage
                    return None
                cancelled += 1
                if cancelled >= CANCELLED_TRIES:
                    raise
                log.warning("%s; trying again in %.1f s", exc.message, delay)
                self._sleep(delay)
                delay = min(delay * 2, OUTAGE_MAX_S)
            except OUTAGES as exc:
                self.telemetry.add(outages=1)
                if self._stopping:
                    return None
                log.warning("%s; retrying in %.1f s (messages stay pending)", exc.message, delay)
                self._sleep(delay)
                delay = min(delay * 2, OUTAGE_MAX_S)
                self._alive()  # waiting out an outage is not being stuck
                if held:  # keep them ours: others would take them for a dead consumer's
                    with suppress(QueueError):
                        self.streams.touch(self.opts.group, self.opts.consumer, held)
                        self.telemetry.refresh(self.opts.group)  # Redis answers: the backlog
            except GroupVanished as exc:
                self._recover(exc)
                if self._stopping:
                    return None

    def _recover(self, exc: GroupVanished) -> None:
        """Redis came back empty, or someone deleted a stream or the group: recreate what
        is missing, say what vanished, count it, go on."""
        found = self._until_done(lambda: self.streams.recover(self.opts.group))
        if found is not None:  # None: stopped during an outage
            self.telemetry.recovered(self.opts.group, exc.message, found, self._marks)
        self._marks = {}

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stopping:
            time.sleep(min(0.1, max(end - time.monotonic(), 0)))
