"""The worker's counters, logs and gauges: totals kept for the run, added to its Redis hash
at each beat (an outage only delays them), one log line per batch that dead-letters, a
progress line every PROGRESS_EVERY_S, and the Prometheus gauges when metrics are on."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from ..errors import QueueError
from .metrics import Metrics
from .policy import Outcomes
from .streams import WORKER_COUNTERS, StreamMark, Streams

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


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
