"""The consumer group (SPEC §6): reading, claiming, acknowledging, the group's position."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ...schema import KIND_ORDER
from ..envelope import (
    FIELD,
    MESSAGE_MAX_BYTES,
    Message,
    Pending,
    envelope_text,
    now_iso,
    text,
    wire_bytes,
)
from .bounded import IDS_CHUNK, BoundedReads, message_of
from .budget import ReadBudget
from .connection import PUBLISH_CHUNK, GroupVanished

POLL_FIRST_S, POLL_MAX_S = 0.001, 0.05  # an idle worker's wait for new entries (read_new)


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair (ms, seq)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class StreamMark:
    """The group's position on one stream, as one look (`GroupOps.marks`) saw it: its oldest
    pending entry (any consumer's, a crashed one's included), the first entry not yet
    delivered to it, and the server's clock when the look began.

    `watermark` is the least of the three: every entry of the stream older than it was
    delivered *and acknowledged* by the time of the look. A child record whose parent is
    missing can blame a parent still on its way only while the parent stream's watermark
    is not past the child's own id (SPEC §6). The clock bounds it because an entry
    published after the look (a child, or its parent) gets an id at least the clock's:
    the look vouches for nothing newer. Entry ids compare across streams by their
    millisecond only: Redis stamps every auto id with its own clock (a clock set back by
    hand can break that), but the sequence after it counts per stream, so of two entries of
    one millisecond on two streams either may have been published first (a parent in the
    same MULTI as its child got `ms-10` and the child `ms-0`)."""

    pending: int
    oldest_pending: str | None
    next_undelivered: str | None
    lag: int | None = None  # entries not yet delivered (None: Redis cannot tell)
    clock: str | None = None  # "<server ms>-0" when the look began (None: no bound)

    @property
    def watermark(self) -> tuple[int, int] | None:
        """None: nothing of this stream is on its way, whatever its age."""
        ids = [entry_key(i) for i in (self.oldest_pending, self.next_undelivered, self.clock) if i]
        return min(ids) if ids else None

    def passed(self, entry_id: str) -> bool:
        """Every entry of this stream that may have been published before `entry_id` of
        another stream (any of its millisecond or before) is acknowledged."""
        w = self.watermark
        return w is None or w[0] > entry_key(entry_id)[0]


def _by_kind(messages: list[Message]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in messages:
        out.setdefault(m.kind, []).append(m.id)
    return out


class GroupOps(BoundedReads):
    """The consumer group: produce, read, claim, reclaim, acknowledge, and where it stands."""

    def publish(
        self,
        kind: str,
        records: Iterable[tuple[dict[str, Any], dict[str, Any]]],
        oversized: Callable[[dict[str, Any], int], None] | None = None,
    ) -> int:
        """XADD (record, metadata) pairs as fresh envelopes, PUBLISH_CHUNK per round trip.
        An envelope over MESSAGE_MAX_BYTES, which every worker would take for poison, is
        not sent: `oversized(metadata, its size)` is told instead."""
        stream, n = self.stream(kind), 0
        with self.errors(f"publishing to {stream}"):
            pipe, stamp = self.r.pipeline(transaction=False), now_iso()
            for data, metadata in records:
                text = envelope_text(stream, data, metadata, stamp)
                if (size := wire_bytes(text)) > MESSAGE_MAX_BYTES:
                    if oversized is not None:
                        oversized(metadata, size)
                    continue
                pipe.execute_command("XADD", stream, "*", FIELD, text)
                n += 1
                if n % PUBLISH_CHUNK == 0:
                    pipe.execute()
                    stamp = now_iso()
            pipe.execute()
        return n

    def ensure_group(self, group: str) -> None:
        """Create the group on the three streams (and the streams), reading from the start."""
        import redis

        with self.errors(f"creating consumer group {group}"):
            for kind in KIND_ORDER:
                try:
                    self.r.xgroup_create(self.stream(kind), group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    def read_new(
        self,
        group: str,
        consumer: str,
        count: int,
        block_ms: int,
        kinds: tuple[str, ...] = KIND_ORDER,
        budget: ReadBudget | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> list[Message]:
        """XREADGROUP `>` over the streams of `kinds`: up to `count` new entries from each,
        within `budget` (several reads, in Redis: bounded.py). With none there, it waits up
        to `block_ms` for some, asking again 1 ms later, then 2, 4, … up to every 50 ms (a
        script cannot block), or until `stop()` says so."""
        budget = budget or ReadBudget()
        reply = self._read_new(group, consumer, count, kinds, budget)
        pause, deadline = POLL_FIRST_S, time.monotonic() + block_ms / 1000
        while not reply and (wait := deadline - time.monotonic()) > 0:
            if stop is not None and stop():
                break
            time.sleep(min(pause, wait))
            pause = min(2 * pause, POLL_MAX_S)
            reply = self._read_new(group, consumer, count, kinds, budget)
        return [message_of(kind, e) for kind, entries in reply for e in entries]

    def _read_new(
        self, group: str, consumer: str, count: int, kinds: tuple[str, ...], budget: ReadBudget
    ) -> list[tuple[str, list[Any]]]:
        """One round trip: (kind, its raw entries) a stream that returned any."""
        with self.errors("reading the streams"):
            reply = self.read_group(group, consumer, count, [self.stream(k) for k in kinds], budget)
        return [(self.kind_of(text(stream)) or "", entries) for stream, entries in reply]

    def marks(self, group: str) -> dict[str, StreamMark]:
        """Where the group stands on each input stream (see StreamMark); three round trips
        of O(1) commands, whatever the streams' lengths.

        The order makes the look sound though it is not atomic: the clock first, then the
        group's last-delivered id, then the pending list, then the first entry after that
        last-delivered id. An entry older than all three marks existed at the clock's
        reading; it is not after the last-delivered id (else it would be the first after it,
        or be preceded by one), so it had been delivered before the pending list was read;
        and it is not pending. So it was acknowledged before the pending list was read — and
        a worker acknowledges only after its commit (or its dead letter)."""
        import redis

        with self.errors("reading the group's position"):
            pipe = self.r.pipeline(transaction=False)
            pipe.time()
            for kind in KIND_ORDER:
                pipe.exists(self.stream(kind))
            now, *exists = pipe.execute()
            missing = [k for k, there in zip(KIND_ORDER, exists, strict=True) if not there]
            if missing:
                stream = self.stream(missing[0])
                raise GroupVanished(f"stream {stream} is missing", stream)
            pipe = self.r.pipeline(transaction=False)
            for kind in KIND_ORDER:  # last-delivered ids before the pending lists (see above)
                pipe.xinfo_groups(self.stream(kind))
            for kind in KIND_ORDER:
                pipe.xpending(self.stream(kind), group)
            try:
                replies = pipe.execute()
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
                    raise
                # a stream deleted or the group destroyed since the first round trip
                raise GroupVanished(f"reading the group's position: {exc}", "") from exc
            infos, pending = replies[:3], replies[3:]
            groups = {}
            for kind, rows in zip(KIND_ORDER, infos, strict=True):
                g = [r for r in rows if text(r["name"]) == group]
                if not g:
                    raise GroupVanished(
                        f"consumer group {group} is missing on {self.stream(kind)}",
                        self.stream(kind),
                    )
                groups[kind] = g[0]
            nexts = self.first_ids(
                [(self.stream(k), f"({text(groups[k]['last-delivered-id'])}") for k in KIND_ORDER]
            )
        clock = f"{int(now[0]) * 1000 + int(now[1]) // 1000}-0"
        out = {}
        for kind, p, nxt in zip(KIND_ORDER, pending, nexts, strict=True):
            lag = groups[kind].get("lag")
            out[kind] = StreamMark(
                pending=int(p["pending"]),
                oldest_pending=text(p["min"]) if p.get("min") else None,
                next_undelivered=nxt,
                lag=None if lag is None else int(lag),
                clock=clock,
            )
        return out

    def first_foreign(
        self, kind: str, start: str, end: str, ours: set[str], page: int = 200
    ) -> str | None:
        """The first entry of a stream in [start, end] whose id is not in `ours` (None:
        every one is), read a page at a time: at most len(ours) / page + 1 round trips."""
        stream = self.stream(kind)
        with self.errors("reading a parent stream"):
            while True:
                ids, more = self.range_entries(stream, start, end, page, ids_only=True)
                for entry_id in ids:
                    if text(entry_id) not in ours:
                        return text(entry_id)
                if more is None:
                    return None
                start = more

    def refund(self, group: str, consumer: str, messages: list[Message]) -> None:
        """Take back the delivery of entries that waited for a parent still on its way: their
        delivery count (= their attempt number) is set back, and their idle time restarts.
        XCLAIM … RETRYCOUNT n JUSTID: no new delivery, nothing returned but the ids."""
        if not messages:
            return
        with self.errors("refunding attempts"):
            pipe = self.r.pipeline(transaction=False)
            batches: dict[tuple[str, int], list[str]] = {}
            for m in messages:
                batches.setdefault((m.kind, max(m.deliveries - 1, 0)), []).append(m.id)
            for (kind, count), ids in batches.items():
                pipe.xclaim(
                    self.stream(kind), group, consumer, 0, ids, retrycount=count, justid=True
                )
            pipe.execute()

    def own_pending(self, group: str, consumer: str, count: int) -> list[Pending]:
        """This consumer's delivered-but-unacknowledged entries (oldest first, per stream)."""
        out: list[Pending] = []
        with self.errors("listing pending entries"):
            pipe = self.r.pipeline(transaction=False)
            for kind in KIND_ORDER:
                pipe.xpending_range(self.stream(kind), group, "-", "+", count, consumer)
            for kind, rows in zip(KIND_ORDER, pipe.execute(), strict=True):
                for p in rows:
                    idle, n = p["time_since_delivered"], p["times_delivered"]
                    out.append(Pending(kind, text(p["message_id"]), idle, n))
        return out

    def claim(
        self,
        group: str,
        consumer: str,
        due: list[Pending],
        min_idle_ms: int,
        budget: ReadBudget | None = None,
    ) -> tuple[list[Message], int]:
        """XCLAIM due entries to ourselves (a new delivery); also how many were trimmed away.
        Within `budget`, a chunk at a time: what it cannot hold stays pending to us, due.

        `min_idle_ms` guards against taking back what another consumer just reclaimed."""
        out: list[Message] = []
        trimmed, budget = 0, budget or ReadBudget()
        with self.errors("claiming pending entries"):
            for kind in KIND_ORDER:
                mine = {p.id: p for p in due if p.kind == kind}
                ids, stream = list(mine), self.stream(kind)
                while ids:
                    ask = min(budget.entries(len(ids)), IDS_CHUNK)
                    if ask <= 0:
                        return out, trimmed
                    chunk, ids = ids[:ask], ids[ask:]
                    got, gone = self.claim_entries(stream, group, consumer, min_idle_ms, chunk)
                    claimed = [message_of(kind, e, mine[text(e[0])].deliveries + 1) for e in got]
                    budget.spend(claimed)
                    out += claimed
                    trimmed += gone
        return out, trimmed

    def reclaim(
        self,
        group: str,
        consumer: str,
        min_idle_ms: int,
        count: int,
        budget: ReadBudget | None = None,
    ) -> tuple[list[Message], int]:
        """XAUTOCLAIM entries idle longer than `min_idle_ms` (a crashed consumer's), up to
        `count` a stream within `budget`. The scan cursor is kept between calls, so a long
        PEL is walked through, not just its head."""
        out: list[Message] = []
        trimmed, budget = 0, budget or ReadBudget()
        with self.errors("reclaiming idle entries"):
            for kind in KIND_ORDER:
                stream, wanted = self.stream(kind), count
                while wanted > 0:
                    ask = budget.entries(wanted)
                    if ask <= 0:
                        return out, trimmed
                    got, gone, done = self._reclaim(stream, kind, group, consumer, min_idle_ms, ask)
                    budget.spend(got)
                    out += got
                    trimmed, wanted = trimmed + gone, wanted - ask
                    if done:  # the scan went round the whole pending list
                        break
        return out, trimmed

    def _reclaim(
        self, stream: str, kind: str, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> tuple[list[Message], int, bool]:
        """One XAUTOCLAIM from the stream's cursor: (the entries, how many were trimmed
        away, whether the scan is back at the start). Asks summing to `count` scan as far
        as one ask of `count` (Redis looks at 10 × COUNT pending entries a call)."""
        start = self._cursors.get(stream, "0-0")
        reply = self.autoclaim(stream, group, consumer, min_idle_ms, start, count)
        self._cursors[stream] = cursor = text(reply[0])
        entries, deleted = reply[1], reply[2] if len(reply) > 2 else []
        if not entries:
            return [], len(deleted), cursor == "0-0"
        pipe = self.r.pipeline(transaction=False)
        for e in entries:
            pipe.xpending_range(stream, group, e[0], e[0], 1, consumer)
        counts = [rows[0]["times_delivered"] if rows else 1 for rows in pipe.execute()]
        got = [message_of(kind, e, n) for e, n in zip(entries, counts, strict=True)]
        return got, len(deleted), cursor == "0-0"

    def touch(self, group: str, consumer: str, messages: list[Message]) -> None:
        """Reset the idle time of entries we still work on (XCLAIM JUSTID: no new delivery)."""
        with self.errors("refreshing pending entries"):
            for kind, ids in _by_kind(messages).items():
                self.r.xclaim(self.stream(kind), group, consumer, 0, ids, justid=True)

    def ack(self, group: str, messages: list[Message]) -> None:
        with self.errors("acknowledging"):
            pipe = self.r.pipeline(transaction=False)
            for kind, ids in _by_kind(messages).items():
                pipe.xack(self.stream(kind), group, *ids)
            pipe.execute()

    def group_pending(self, group: str) -> int:
        """Entries delivered to any consumer of the group and not yet acknowledged."""
        with self.errors("counting pending entries"):
            return sum(int(self.r.xpending(self.stream(k), group)["pending"]) for k in KIND_ORDER)
