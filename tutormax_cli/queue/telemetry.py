"""The worker's counters, logs and gauges: totals kept for the run, added to its Redis hash
at each beat (an outage only delays them), one log line per batch that dead-letters, a
progress line every PROGRESS_EVERY_S, the Prometheus gauges when metrics are on, and what
it tells operators: dead letters that can vanish, a gone consumer `--burst` waits for, and
what vanished when Redis came back empty."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from ..errors import QueueError
from .metrics import Metrics
from .policy import Outcomes
from .streams import WORKER_COUNTERS, StreamMark, Streams, Vanished

log = logging.getLogger("tutormax.worker")

PROGRESS_EVERY_S = 10.0
DEAD_LETTER_GAUGE_EVERY_S = 60.0  # dead letters by error code: a scan of the stream
FIRST_IDS_LOGGED = 5


class Telemetry:
    def __init__(
        self, streams: Streams, consumer: str, heartbeat_ttl_s: int, metrics: Metrics | None
    ) -> None:
        self.streams, self.consumer, self.metrics = streams, consumer, metrics
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.totals = dict.fromkeys(WORKER_COUNTERS, 0)
        self._unsent = dict.fromkeys(WORKER_COUNTERS, 0)  # counters not yet added to Redis
        self._next_gauges = 0.0
        self._last_beat = self._last_log = time.monotonic()
        self.dead_letters_known = False  # whether this worker saw a dead letter exist
        self._told: set[str] = set()  # gone consumers already reported in --burst

    def add(self, **counts: int) -> None:
        for name, n in counts.items():
            self.totals[name] += n
            self._unsent[name] += n

    def record(self, read: int, out: Outcomes, seconds: float) -> None:
        counts = out.counts()
        self.add(read=read, **counts)
        if self.metrics is not None:
            self.metrics.batch_seconds.observe(seconds)
            for outcome, messages in out.by_outcome().items():
                for kind, n in Counter(m.kind for m in messages).items():
                    self.metrics.messages.labels(outcome, kind).inc(n)
        if out.letters:
            self.dead_letters_known = True
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
            log.info("%s", self.summary(), extra={"counters": dict(self.totals)})

    def gauges(self, marks: dict[str, StreamMark]) -> None:
        if self.metrics is None:
            return
        names = {self.streams.stream(k): m for k, m in marks.items()}
        self.metrics.streams(names, self.streams.lengths(), self.streams.server_ms())
        if time.monotonic() >= self._next_gauges:
            self._next_gauges = time.monotonic() + DEAD_LETTER_GAUGE_EVERY_S
            from .dlq import histogram

            self.metrics.dead_letter_counts(histogram(self.streams.dead_letters())["by_error"])

    def refresh(self, group: str) -> None:
        """The gauges again while a batch waits out an outage: the backlog they show keeps
        growing, and that is what an operator wants to see then."""
        if self.metrics is not None:
            with suppress(QueueError):
                self.gauges(self.streams.marks(group))

    def beat(self, **values: Any) -> None:
        """Add the unsent counters to Redis and refresh the hash's TTL; an outage only
        delays them (they are sent with the next beat)."""
        now = time.monotonic()
        done = sum(self._unsent[k] for k in ("persisted", "dead_lettered", "retried"))
        rate = done / max(now - self._last_beat, 1e-3)
        values.update(last_heartbeat=now_iso(), msgs_per_s=f"{rate:.1f}", pid=os.getpid())
        try:
            self.streams.beat(self.consumer, self._unsent, values, self.heartbeat_ttl_s)
        except QueueError as exc:
            log.warning("counters not updated: %s", exc.message)
            return
        self._unsent = dict.fromkeys(WORKER_COUNTERS, 0)
        self._last_beat = now

    def summary(self) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in self.totals.items() if v or k == "read")

    # -- what operators are told ---------------------------------------------------------------

    def check_dead_letters(self) -> None:
        """At start: warn when dead letters can vanish (a TTL, trimming) and sweep the marks
        of those that did, so the dead-letter index matches the stream."""
        key = self.streams.dead_letter_key
        try:
            health = self.streams.dead_letter_health()
            swept = self.streams.sweep_marks() if health["lost"] else 0
            self.streams.prune_marks()
        except QueueError as exc:
            log.warning("could not check %s: %s", key, exc.message)
            return
        self.dead_letters_known = health["length"] > 0
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

    def tell_gone_consumers(self, group: str, reclaim_idle_ms: int) -> None:
        """--burst: say once per consumer when we wait for a gone consumer's entries."""
        try:
            stats = self.streams.stream_stats(group)
        except QueueError:
            return
        for info in stats.values():
            for name, c in info["consumers"].items():
                if name == self.consumer or not c["pending"] or name in self._told:
                    continue
                self._told.add(name)
                log.info(
                    "waiting %.0f s for %d pending entries of consumer %s to become "
                    "reclaimable (idle %.0f s, --reclaim-idle-ms %d)",
                    max(reclaim_idle_ms - c["idle_ms"], 0) / 1000,
                    c["pending"],
                    name,
                    c["idle_ms"] / 1000,
                    reclaim_idle_ms,
                )

    def recovered(
        self, group: str, cause: str, found: Vanished, last: dict[str, StreamMark]
    ) -> None:
        """Count a recovery (stats, metrics) and say at WARNING what vanished, as far as
        the last look at the group (`last`) and what this worker saw can tell."""
        self.add(recovered=1)
        if self.metrics is not None:
            self.metrics.recoveries.inc()
        lost = []
        for kind in found.streams:
            m = last.get(kind)
            at_last = f" ({m.pending:,} pending, {m.lag or 0:,} undelivered)" if m else ""
            lost.append(f"stream {self.streams.stream(kind)} with all its entries{at_last}")
        for kind in found.groups:
            m, name = last.get(kind), self.streams.stream(kind)
            at_last = f" ({m.pending:,} entries)" if m else ""
            lost.append(
                f"consumer group {group} on {name} with its pending list{at_last}: every "
                f"entry still in {name} is delivered again (upserts make that harmless)"
            )
        if found.dead_letters and self.dead_letters_known:
            lost.append(f"the dead-letter stream {self.streams.dead_letter_key}: every dead letter")
        if found.index and (self.dead_letters_known or found.reindexed):
            lost.append(
                f"the dead-letter index {self.streams.index_key} (its dedupe marks)"
                + (f", rebuilt from {found.reindexed:,} dead letter(s)" if found.reindexed else "")
            )
        if found.dead_letters:
            self.dead_letters_known = False
        everything = len(found.streams) == len(self.streams.names)
        log.warning(
            "consumer group %s or its streams vanished (%s)%s. What vanished (counts from the "
            "last look): %s. The group is recreated; going on",
            group,
            cause,
            ": every stream is gone, Redis restarted without persistence or was flushed"
            if everything
            else "",
            "; ".join(lost) or "nothing any more (another worker recreated it first)",
            extra={"counters": {"recovered": self.totals["recovered"]}},
        )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
