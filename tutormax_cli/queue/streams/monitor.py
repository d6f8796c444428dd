"""What `stats` and the metrics read: per-stream numbers, the workers' counters."""

from __future__ import annotations

from typing import Any

from ...schema import KIND_ORDER
from ..envelope import text
from .connection import Connection

# What each worker counts, kept in its hash `<prefix>workers:<consumer>` (stats reads them).
WORKER_COUNTERS = (
    "read",
    "persisted",
    "rejected",
    "retried",
    "dead_lettered",
    "dead_lettered_before",  # delivered again after an earlier try's dead letter: acked
    "reclaimed",
    "trimmed",
    "outages",
    "waited",
    "recovered",
)


def _server_ms(t: tuple[int, int]) -> int:
    return int(t[0]) * 1000 + int(t[1]) // 1000


class MonitorOps(Connection):
    """The numbers `stats` and the metrics show, and the workers' counter hashes."""

    def stream_stats(self, group: str, scan: int = 10_000) -> dict[str, dict[str, Any]]:
        """Per input stream: length, pending, lag, oldest pending age, max deliveries, and
        each consumer of the group with its pending count and idle time."""
        out: dict[str, dict[str, Any]] = {}
        with self.errors("reading stream statistics"):
            now_ms = _server_ms(self.r.time())
            for kind in KIND_ORDER:
                out[self.stream(kind)] = self._one_stream(self.stream(kind), group, now_ms, scan)
        return out

    def _one_stream(self, stream: str, group: str, now_ms: int, scan: int) -> dict[str, Any]:
        info: dict[str, Any] = {
            "kind": self.kind_of(stream),
            "length": 0,
            "pending": 0,
            "lag": None,
            "oldest_pending_ms": None,
            "max_deliveries": 0,
            "consumers": {},
        }
        if not self.r.exists(stream):
            return info
        info["length"] = int(self.r.xlen(stream))
        groups = [g for g in self.r.xinfo_groups(stream) if text(g["name"]) == group]
        if not groups:
            return info
        g = groups[0]
        info.update(pending=int(g["pending"]), lag=g.get("lag"))
        info["consumers"] = {
            text(c["name"]): {"pending": int(c["pending"]), "idle_ms": int(c["idle"])}
            for c in self.r.xinfo_consumers(stream, group)
        }
        if info["pending"]:
            rows = self.r.xpending_range(stream, group, "-", "+", scan)
            info["oldest_pending_ms"] = now_ms - int(text(rows[0]["message_id"]).split("-")[0])
            info["max_deliveries"] = max(int(p["times_delivered"]) for p in rows)
        return info

    def lengths(self) -> dict[str, int]:
        """XLEN of each input stream (0 when it does not exist)."""
        with self.errors("reading stream lengths"):
            pipe = self.r.pipeline(transaction=False)
            for kind in KIND_ORDER:
                pipe.xlen(self.stream(kind))
            return {self.stream(k): int(n) for k, n in zip(KIND_ORDER, pipe.execute(), strict=True)}

    def server_ms(self) -> int:
        with self.errors("reading the server time"):
            return _server_ms(self.r.time())

    def worker_counters(self) -> dict[str, dict[str, str]]:
        """Every live worker's counter hash (they expire when a worker stops beating)."""
        out: dict[str, dict[str, str]] = {}
        with self.errors("reading worker counters"):
            for key in self.r.scan_iter(match=self.worker_key("*"), count=1000):
                name = text(key)[len(self.worker_key("")) :]
                out[name] = {text(k): text(v) for k, v in self.r.hgetall(key).items()}
        return dict(sorted(out.items()))

    def beat(self, consumer: str, incr: dict[str, int], values: dict[str, Any], ttl_s: int) -> None:
        """Add to a worker's counters, set its other fields and refresh the hash's TTL."""
        key = self.worker_key(consumer)
        with self.errors("updating worker counters"):
            pipe = self.r.pipeline(transaction=True)
            for name, n in incr.items():
                if n:
                    pipe.hincrby(key, name, n)
            pipe.hset(key, mapping={k: str(v) for k, v in values.items()})
            pipe.expire(key, ttl_s)
            pipe.execute()

    def reset_worker(self, consumer: str) -> None:
        with self.errors("resetting worker counters"):
            self.r.delete(self.worker_key(consumer))
