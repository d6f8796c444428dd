"""The numbers behind `tutormax stats` (SPEC §7); gathers, renders nothing.

One JSON-ready dict: `streams` (stream name → length, pending, consumers, lag, oldest
pending age, highest delivery count), `dead_letter` (total, by_error, by_stream), `tables`
(table → row count) and `workers` (consumer → counters, heartbeat and throughput).
"""

from __future__ import annotations

import math
from typing import Any

from .dlq import histogram
from .letters import count_of
from .streams import WORKER_COUNTERS, QueueUnavailable, Streams

WORKER_INTS = (*WORKER_COUNTERS, "pid")


def gather(
    streams: Streams, group: str, store: Any | None = None, reclaim_idle_ms: int = 60_000
) -> dict[str, Any]:
    """Everything `stats` shows. `store` is a Store (or None: no table counts). A consumer
    idle longer than `reclaim_idle_ms` is `gone` (a worker that stopped or crashed; its
    pending entries are reclaimed by the others), else `live`. Without Redis the tables are
    still counted, and `redis_error` says why the rest is missing."""
    tables = store.row_counts() if store is not None else {}
    try:
        return _queue(streams, group, reclaim_idle_ms) | {
            "tables": tables,
            "database": getattr(store, "url_masked", None),
        }
    except QueueUnavailable as exc:
        return {
            "redis": streams.url_masked,
            "redis_error": exc.message,
            "prefix": streams.prefix,
            "group": group,
            "streams": {},
            "dead_letter": {
                "stream": streams.dead_letter_key,
                "total": None,
                "by_error": {},
                "by_stream": {},
                "warnings": [],
            },
            "tables": tables,
            "database": getattr(store, "url_masked", None),
            "workers": {},
        }


def _queue(streams: Streams, group: str, reclaim_idle_ms: int) -> dict[str, Any]:
    per_stream = streams.stream_stats(group)
    for info in per_stream.values():
        consumers = info.pop("consumers")
        info["consumers"] = {
            "live": sorted(n for n, c in consumers.items() if c["idle_ms"] < reclaim_idle_ms),
            "gone": sorted(n for n, c in consumers.items() if c["idle_ms"] >= reclaim_idle_ms),
        }
        info["gone_pending"] = sum(
            c["pending"] for c in consumers.values() if c["idle_ms"] >= reclaim_idle_ms
        )
    return {
        "redis": streams.url_masked,
        "prefix": streams.prefix,
        "group": group,
        "streams": per_stream,
        "dead_letter": dead_letter_summary(streams),
        "workers": workers(streams),
    }


def dead_letter_summary(streams: Streams) -> dict[str, Any]:
    counts = histogram(streams.dead_letters())
    total = sum(counts["by_error"].values())
    health = streams.dead_letter_health()
    warnings = []
    if health["ttl_s"] is not None:
        warnings.append(
            f"{streams.dead_letter_key} expires in {health['ttl_s']:,} s (someone set a TTL "
            "on it; tutormax never does): every dead letter will be lost then"
        )
    if health["lost"]:
        warnings.append(
            f"{health['lost']:,} dead letters were lost (the stream was trimmed or expired); "
            "a worker's start-up sweeps their marks"
        )
    return {
        "stream": streams.dead_letter_key,
        "total": total,
        **counts,
        "ttl_s": health["ttl_s"],
        "lost": health["lost"],
        "warnings": warnings,
    }


def workers(streams: Streams) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, fields in streams.worker_counters().items():
        row: dict[str, Any] = dict(fields)
        for k in WORKER_INTS:  # a hash anyone may write: what is not a count reads as 0
            row[k] = count_of(fields.get(k))
        try:
            rate = float(fields.get("msgs_per_s") or 0)
        except ValueError:
            rate = 0.0
        row["msgs_per_s"] = rate if math.isfinite(rate) else 0.0
        out[name] = row
    return out
