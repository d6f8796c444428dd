"""Redis Streams (SPEC §6): the only module that talks Redis.

Stream names, publishing, the consumer group (read, claim, reclaim, ack, watermarks),
dead letters (write, list, replay, delete) and the numbers `stats` shows; the envelope
itself is `envelope.py`. The connection is made on first use, so `--help` needs no Redis.

Names: the input streams come from one template (`--streams`, default
`{prefix}{kind}:enrichment`, i.e. `tutormax:tutors:enrichment` …, TutorMax's enrichment
queues); tutormax's own keys live under the prefix (default `tutormax:`): the dead-letter
stream `<prefix>dead_letter`, its index `<prefix>dead_letter:sources` and the workers'
counters `<prefix>workers:<consumer>`.

Two writes are Lua scripts rather than MULTI/EXEC because they must *check, then act*
atomically, which MULTI cannot express:

* a dead letter is written only if the index has no live mark for its source entry, so a
  worker killed between the dead-letter write and the ACK writes it once, not twice, when
  the entry is delivered again. A mark is live while its dead letter exists (a trimmed or
  expired dead letter does not block a new one) or while it says `replayed:<id>`: the
  record lives on as a replay, so its pending original must not be dead-lettered again;
* a replay XADDs to the source stream and XDELs from the dead-letter stream only if the
  dead letter still exists, so replaying the same id twice (or from two shells) re-queues
  the record once; if the source entry is still pending in the group (its worker died
  before the ack), the mark stays, as `replayed:<new id>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .config import check_url, mask_url, register_secret
from .envelope import FIELD, DeadLetter, Message, Pending, envelope_text, now_iso, text
from .errors import QueueError, UsageError
from .schema import KIND_ORDER

DEFAULT_PREFIX = "tutormax:"
DEFAULT_STREAMS = "{prefix}{kind}:enrichment"  # SPEC §6: TutorMax's enrichment queues
DEFAULT_GROUP = "enrichment-workers"
KIND_NAMES = KIND_ORDER  # parents first
REPLAYED = "replayed:"  # a dead-letter mark whose record was replayed while still pending
PUBLISH_CHUNK = 1000  # XADDs per round trip
DEAD_LETTER_CHUNK = 200  # dead letters per script call (each may carry a 64 KiB poison slice)

_DEAD_LETTER_LUA = """
local written = 0
for i = 1, #ARGV, 2 do
  local mark = redis.call('HGET', KEYS[2], ARGV[i])
  local live = false
  if mark then
    if string.sub(mark, 1, 9) == 'replayed:' then live = true
    else live = #redis.call('XRANGE', KEYS[1], mark, mark) > 0 end
  end
  if not live then
    local id = redis.call('XADD', KEYS[1], '*', 'message', ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i], id)
    written = written + 1
  end
end
return written
"""
# KEYS: dead-letter stream, index, source stream. ARGV: dead-letter id, body, mark, group,
# source entry id.
_REPLAY_LUA = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[3], '*', 'message', ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[1])
local pend = redis.pcall('XPENDING', KEYS[3], ARGV[4], ARGV[5], ARGV[5], 1)
if type(pend) == 'table' and pend.err == nil and #pend > 0 then
  redis.call('HSET', KEYS[2], ARGV[3], 'replayed:' .. id)
else
  redis.call('HDEL', KEYS[2], ARGV[3])
end
return id
"""

# What each worker counts, kept in its hash `<prefix>workers:<consumer>` (stats reads them).
WORKER_COUNTERS = (
    "read",
    "persisted",
    "rejected",
    "retried",
    "dead_lettered",
    "reclaimed",
    "trimmed",
    "outages",
    "waited",
    "recovered",
)


class QueueUnavailable(QueueError):
    """Redis did not answer (connection refused, reset or timed out): an outage, not a fault."""


class GroupVanished(QueueError):
    """The consumer group (or its stream) is gone: Redis restarted empty, or someone deleted
    it. The worker recreates it and goes on."""

    def __init__(self, message: str, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


def check_template(template: str) -> str:
    """`--streams`: a name with `{kind}` (and optionally `{prefix}`), else UsageError."""
    try:
        names = {template.format(kind=k, prefix="") for k in KIND_NAMES}
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"--streams {template!r}: only {{kind}} and {{prefix}} may appear in braces ({exc})"
        ) from None
    if "{kind}" not in template or len(names) != len(KIND_NAMES):
        raise UsageError(f"--streams {template!r}: must contain {{kind}}, e.g. 'tutormax:{{kind}}'")
    return template


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair (ms, seq)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class StreamMark:
    """The group's position on one stream: its oldest pending entry (any consumer, a crashed
    one's included) and the first entry not yet delivered to it.

    Every entry older than `watermark` has been delivered and acknowledged: a child record
    whose parent is missing can blame a parent still on its way only while the parent
    stream's watermark is not past the child's own id (SPEC §6). Entry ids compare across
    streams because Redis stamps every auto id with its own clock."""

    pending: int
    oldest_pending: str | None
    next_undelivered: str | None
    lag: int | None = None  # entries not yet delivered (None: Redis cannot tell)

    @property
    def watermark(self) -> tuple[int, int] | None:
        """None: nothing in this stream is on its way."""
        ids = [entry_key(i) for i in (self.oldest_pending, self.next_undelivered) if i]
        return min(ids) if ids else None

    def passed(self, entry_id: str) -> bool:
        """Every entry of this stream published before `entry_id` is acknowledged."""
        w = self.watermark
        return w is None or w > entry_key(entry_id)


class Streams:
    """The stream keys of one template and prefix, on one Redis; see the module docstring."""

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        timeout_s: float = 30.0,
        *,
        streams: str = DEFAULT_STREAMS,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s  # socket timeout: longer than any blocking read
        self.url_masked = mask_url(url)
        self.prefix = prefix
        self.template = check_template(streams)
        self._names = {k: self.template.format(kind=k, prefix=prefix) for k in KIND_NAMES}
        self._kinds = {v: k for k, v in self._names.items()}
        self.dead_letter_key = f"{prefix}dead_letter"
        self._index_key = f"{prefix}dead_letter:sources"  # "<stream> <id>" → dead-letter id
        if self.dead_letter_key in self._kinds:
            raise UsageError(f"--streams {streams!r}: a stream would be the dead-letter stream")
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._cursors: dict[str, str] = {}  # XAUTOCLAIM scan position per stream

    def stream(self, kind: str) -> str:
        return self._names[kind]

    @property
    def names(self) -> dict[str, str]:
        """kind → input stream name."""
        return dict(self._names)

    def kind_of(self, stream: str) -> str | None:
        return self._kinds.get(stream)

    def worker_key(self, consumer: str) -> str:
        return f"{self.prefix}workers:{consumer}"

    @property
    def r(self) -> Any:
        if self._client is None:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.connection import parse_url
            from redis.retry import Retry

            check_url(self.url, "--redis")
            try:  # a password holding a raw `/` or `#` does not parse: one masked line
                parsed = parse_url(self.url)
            except (ValueError, TypeError):  # its message may quote part of the password
                raise UsageError(
                    f"--redis {self.url_masked}: not a Redis URL "
                    "(redis://[[user]:password@]host[:port][/db], rediss://, unix://path)",
                    hint="percent-encode special characters of the password: / is %2F, "
                    "# is %23, @ is %40, : is %3A",
                ) from None
            register_secret(parsed.get("password"))
            tcp = "path" not in parsed  # unix:// sockets take no TCP keepalive
            # redis-py itself retries a dropped connection twice, quickly; a longer outage
            # surfaces as QueueUnavailable, which the worker backs off from.
            self._client = redis.Redis.from_url(
                self.url,
                protocol=2,
                socket_connect_timeout=5,
                socket_timeout=self.timeout_s,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
                **({"socket_keepalive": True} if tcp else {}),
            )
            # read_new parses XREADGROUP's reply itself (the worker's hot path).
            self._client.set_response_callback("XREADGROUP", _raw_reply)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Streams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Redis errors → QueueUnavailable (outage) or QueueError, with the URL masked."""
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise QueueUnavailable(
                f"{action}: Redis at {self.url_masked} unavailable: {self._scrub(exc)}"
            ) from exc
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):  # group or stream deleted
                raise GroupVanished(f"{action}: {self._scrub(exc)}", action) from exc
            if "LOADING" in str(exc) or "BUSY" in str(exc):  # restarting, or a slow script
                raise QueueUnavailable(f"{action}: Redis busy: {self._scrub(exc)}") from exc
            raise QueueError(f"{action} on {self.url_masked}: {self._scrub(exc)}") from exc
        except redis.RedisError as exc:
            raise QueueError(f"{action} on {self.url_masked}: {self._scrub(exc)}") from exc

    def _scrub(self, exc: BaseException) -> str:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return line.replace(self.url, self.url_masked)

    def _script(self, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.r.register_script(source)
        return self._scripts[name]

    def ping(self) -> None:
        with self.errors("connecting"):
            self.r.ping()

    # -- producing -----------------------------------------------------------------------------

    def publish(self, kind: str, records: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> int:
        """XADD (record, metadata) pairs as fresh envelopes, PUBLISH_CHUNK per round trip."""
        stream, n = self.stream(kind), 0
        with self.errors(f"publishing to {stream}"):
            pipe, stamp = self.r.pipeline(transaction=False), now_iso()
            for data, metadata in records:
                pipe.execute_command(
                    "XADD", stream, "*", FIELD, envelope_text(stream, data, metadata, stamp)
                )
                n += 1
                if n % PUBLISH_CHUNK == 0:
                    pipe.execute()
                    stamp = now_iso()
            pipe.execute()
        return n

    # -- the consumer group --------------------------------------------------------------------

    def ensure_group(self, group: str) -> None:
        """Create the group on the three streams (and the streams), reading from the start."""
        import redis

        with self.errors(f"creating consumer group {group}"):
            for kind in KIND_NAMES:
                try:
                    self.r.xgroup_create(self.stream(kind), group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    def recover(self, group: str) -> list[str]:
        """After the group (or a stream) vanished: recreate what is missing and rebuild the
        dead-letter index if it is gone while dead letters remain. Returns what was done."""
        import redis

        done: list[str] = []
        with self.errors(f"recreating consumer group {group}"):
            for kind in KIND_NAMES:
                try:
                    self.r.xgroup_create(self.stream(kind), group, id="0", mkstream=True)
                    done.append(f"recreated group {group} on {self.stream(kind)}")
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            if not self.r.exists(self._index_key) and self.r.exists(self.dead_letter_key):
                n = self._reindex()
                if n:
                    done.append(f"rebuilt the dead-letter index from {n:,} dead letters")
        return done

    def _reindex(self) -> int:
        n = 0
        for entry_id, env in self.dead_letters():
            mark = _source_mark(env)
            if mark:
                self.r.hsetnx(self._index_key, mark, entry_id)
                n += 1
        return n

    def dead_letter_health(self) -> dict[str, Any]:
        """What could make dead letters vanish: a TTL on the stream (tutormax sets none;
        TutorMax's publisher sets 24 h), and marks whose dead letter is gone (trimmed by
        MAXLEN, expired): `lost`."""
        with self.errors("checking the dead-letter stream"):
            ttl = int(self.r.ttl(self.dead_letter_key))
            first = self.r.xrange(self.dead_letter_key, "-", "+", count=1)
            oldest = entry_key(text(first[0][0])) if first else None
            lost = 0
            for _mark, dl_id in self.r.hscan_iter(self._index_key, count=1000):
                value = text(dl_id)
                if value.startswith(REPLAYED):
                    continue
                if oldest is None or entry_key(value) < oldest:
                    lost += 1
        return {"ttl_s": ttl if ttl >= 0 else None, "lost": lost}

    def sweep_marks(self) -> int:
        """Delete the marks of dead letters that are gone (see dead_letter_health): the
        index then matches the stream again. Returns how many were deleted."""
        with self.errors("sweeping the dead-letter index"):
            first = self.r.xrange(self.dead_letter_key, "-", "+", count=1)
            oldest = entry_key(text(first[0][0])) if first else None
            stale = [
                mark
                for mark, dl_id in self.r.hscan_iter(self._index_key, count=1000)
                if not text(dl_id).startswith(REPLAYED)
                and (oldest is None or entry_key(text(dl_id)) < oldest)
            ]
            for start in range(0, len(stale), PUBLISH_CHUNK):
                self.r.hdel(self._index_key, *stale[start : start + PUBLISH_CHUNK])
        return len(stale)

    def read_new(
        self,
        group: str,
        consumer: str,
        count: int,
        block_ms: int,
        kinds: tuple[str, ...] = KIND_NAMES,
    ) -> list[Message]:
        """XREADGROUP `>` over the streams of `kinds`: up to `count` new entries from each."""
        if not kinds:
            return []
        args: list[Any] = ["GROUP", group, consumer, "COUNT", count]
        if block_ms:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", *(self.stream(k) for k in kinds), *[">"] * len(kinds)]
        with self.errors("reading the streams"):
            reply = self.r.execute_command("XREADGROUP", *args)
        # The raw reply (see `r`): [[stream, [[id, [field, value, …]], …]], …]. Building the
        # messages here directly costs half of redis-py's generic parsing.
        out: list[Message] = []
        for stream, entries in reply or []:
            kind = self.kind_of(text(stream)) or ""
            out += [Message(kind, i.decode(), _fields(f)) for i, f in entries]
        return out

    def marks(self, group: str) -> dict[str, StreamMark]:
        """Where the group stands on each input stream (see StreamMark); three round trips
        of O(1) commands, whatever the streams' lengths."""
        with self.errors("reading the group's position"):
            pipe = self.r.pipeline(transaction=False)
            for kind in KIND_NAMES:
                pipe.xpending(self.stream(kind), group)
            for kind in KIND_NAMES:
                pipe.exists(self.stream(kind))
            replies = pipe.execute()
            pending, exists = replies[:3], replies[3:]
            pipe = self.r.pipeline(transaction=False)
            for kind, there in zip(KIND_NAMES, exists, strict=True):
                if there:
                    pipe.xinfo_groups(self.stream(kind))
            infos = iter(pipe.execute())
            groups = {}
            for kind, there in zip(KIND_NAMES, exists, strict=True):
                rows = next(infos) if there else []
                g = [r for r in rows if text(r["name"]) == group]
                if not g:
                    raise GroupVanished(
                        f"consumer group {group} is missing on {self.stream(kind)}",
                        self.stream(kind),
                    )
                groups[kind] = g[0]
            pipe = self.r.pipeline(transaction=False)
            for kind in KIND_NAMES:
                last = text(groups[kind]["last-delivered-id"])
                pipe.xrange(self.stream(kind), f"({last}", "+", count=1)
            nexts = pipe.execute()
        out = {}
        for kind, p, nxt in zip(KIND_NAMES, pending, nexts, strict=True):
            lag = groups[kind].get("lag")
            out[kind] = StreamMark(
                pending=int(p["pending"]),
                oldest_pending=text(p["min"]) if p.get("min") else None,
                next_undelivered=text(nxt[0][0]) if nxt else None,
                lag=None if lag is None else int(lag),
            )
        return out

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
            for kind in KIND_NAMES:
                pipe.xpending_range(self.stream(kind), group, "-", "+", count, consumer)
            for kind, rows in zip(KIND_NAMES, pipe.execute(), strict=True):
                for p in rows:
                    idle, n = p["time_since_delivered"], p["times_delivered"]
                    out.append(Pending(kind, text(p["message_id"]), idle, n))
        return out

    def claim(
        self, group: str, consumer: str, due: list[Pending], min_idle_ms: int
    ) -> tuple[list[Message], int]:
        """XCLAIM due entries to ourselves (a new delivery); also how many were trimmed away.

        `min_idle_ms` guards against taking back what another consumer just reclaimed."""
        out: list[Message] = []
        trimmed = 0
        with self.errors("claiming pending entries"):
            for kind in KIND_NAMES:
                mine = {p.id: p for p in due if p.kind == kind}
                if not mine:
                    continue
                stream = self.stream(kind)
                got = self.r.xclaim(stream, group, consumer, min_idle_ms, list(mine))
                out += [
                    Message(kind, text(i), f or {}, mine[text(i)].deliveries + 1) for i, f in got
                ]
                missing = set(mine) - {text(i) for i, _ in got}
                trimmed += sum(not self.r.xrange(stream, i, i, count=1) for i in missing)
        return out, trimmed

    def reclaim(
        self, group: str, consumer: str, min_idle_ms: int, count: int
    ) -> tuple[list[Message], int]:
        """XAUTOCLAIM entries idle longer than `min_idle_ms` (a crashed consumer's). The scan
        cursor is kept between calls, so a long PEL is walked through, not just its head."""
        out: list[Message] = []
        trimmed = 0
        with self.errors("reclaiming idle entries"):
            for kind in KIND_NAMES:
                stream = self.stream(kind)
                start = self._cursors.get(stream, "0-0")
                reply = self.r.xautoclaim(stream, group, consumer, min_idle_ms, start, count=count)
                self._cursors[stream] = text(reply[0])
                entries, deleted = reply[1], reply[2] if len(reply) > 2 else []
                trimmed += len(deleted)
                if not entries:
                    continue
                pipe = self.r.pipeline(transaction=False)
                for i, _ in entries:
                    pipe.xpending_range(stream, group, i, i, 1, consumer)
                counts = [rows[0]["times_delivered"] if rows else 1 for rows in pipe.execute()]
                out += [
                    Message(kind, text(i), f or {}, n)
                    for (i, f), n in zip(entries, counts, strict=True)
                ]
        return out, trimmed

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
            return sum(int(self.r.xpending(self.stream(k), group)["pending"]) for k in KIND_NAMES)

    # -- dead letters --------------------------------------------------------------------------

    def dead_letter(self, letters: list[DeadLetter]) -> int:
        """Write dead letters once per source entry; returns how many were new."""
        if not letters:
            return 0
        argv: list[str] = []
        for d in letters:
            m, stream = d.message, self.stream(d.message.kind)
            earlier = d.source_metadata or {}
            meta: dict[str, Any] = {
                "source_stream": stream,
                "source_id": m.id,
                "error": d.error,
                "detail": d.detail,
                # Every attempt of every life: a replayed record carries its earlier ones.
                "attempts": m.deliveries + _int(earlier.get("previous_attempts")),
                "failed_at": now_iso(),
            }
            if earlier.get("replay_chain"):
                meta["replayed_from"] = earlier.get("replayed_from")
                meta["replay_chain"] = earlier["replay_chain"]
            if d.source_metadata:
                meta["source_metadata"] = d.source_metadata
            if d.raw_entry:
                meta["raw_entry"] = True
            argv += [f"{stream} {m.id}", envelope_text(self.dead_letter_key, d.data, meta)]
        keys, written = [self.dead_letter_key, self._index_key], 0
        with self.errors("writing dead letters"):
            for start in range(0, len(argv), 2 * DEAD_LETTER_CHUNK):  # bounded script calls
                args = argv[start : start + 2 * DEAD_LETTER_CHUNK]
                written += int(self._script("dead_letter", _DEAD_LETTER_LUA)(keys=keys, args=args))
        return written

    def dead_letters(self, chunk: int = 1000) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every dead letter, oldest first, as (entry id, envelope)."""
        start = "-"
        while True:
            with self.errors("reading dead letters"):
                rows = self.r.xrange(self.dead_letter_key, start, "+", count=chunk)
            for i, fields in rows:
                yield text(i), _dead_letter_envelope(fields)
            if len(rows) < chunk:
                return
            start = "(" + text(rows[-1][0])

    def dead_letter_by_id(self, entry_id: str) -> dict[str, Any] | None:
        with self.errors("reading a dead letter"):
            rows = self.r.xrange(self.dead_letter_key, entry_id, entry_id, count=1)
        return _dead_letter_envelope(rows[0][1]) if rows else None

    def replay(self, entry_id: str, env: dict[str, Any], group: str = DEFAULT_GROUP) -> str | None:
        """Re-queue a dead letter on its source stream with a fresh envelope and remove it, in
        one atomic step; None if it is gone already. The caller checks the source stream.

        The fresh envelope keeps the history: `replayed_from` (this dead letter),
        `replay_chain` (every dead letter this record has been) and `previous_attempts`
        (the attempts of every earlier life), so a record that fails again is dead-lettered
        with its attempts summed and its chain intact."""
        meta = env.get("metadata") or {}
        stream = meta["source_stream"]
        source_meta = meta.get("source_metadata") or {}
        fresh = {
            **source_meta,
            "replayed_from": entry_id,
            "replay_chain": [*(meta.get("replay_chain") or []), entry_id],
            "previous_attempts": _int(meta.get("attempts")),
        }
        body = envelope_text(stream, env["data"], fresh)
        source_id = str(meta.get("source_id"))
        keys = [self.dead_letter_key, self._index_key, stream]
        args = [entry_id, body, f"{stream} {source_id}", group, source_id]
        with self.errors("replaying a dead letter"):
            new_id = self._script("replay", _REPLAY_LUA)(keys=keys, args=args)
        return text(new_id) if new_id else None

    def delete_dead_letters(self, entries: list[tuple[str, dict[str, Any]]]) -> int:
        """XDEL dead letters (and their dedupe marks) in one MULTI/EXEC; returns how many."""
        deleted = 0
        with self.errors("deleting dead letters"):
            for start in range(0, len(entries), PUBLISH_CHUNK):
                part = entries[start : start + PUBLISH_CHUNK]
                marks = [_source_mark(env) for _, env in part]
                pipe = self.r.pipeline(transaction=True)
                pipe.xdel(self.dead_letter_key, *[i for i, _ in part])
                if any(marks):
                    pipe.hdel(self._index_key, *[m for m in marks if m])
                deleted += int(pipe.execute()[0])
        return deleted

    # -- numbers for `stats` and the worker's counters ----------------------------------------

    def stream_stats(self, group: str, scan: int = 10_000) -> dict[str, dict[str, Any]]:
        """Per input stream: length, pending, lag, oldest pending age, max deliveries, and
        each consumer of the group with its pending count and idle time."""
        out: dict[str, dict[str, Any]] = {}
        with self.errors("reading stream statistics"):
            now_ms = _server_ms(self.r.time())
            for kind in KIND_NAMES:
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
            for kind in KIND_NAMES:
                pipe.xlen(self.stream(kind))
            return {self.stream(k): int(n) for k, n in zip(KIND_NAMES, pipe.execute(), strict=True)}

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


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _raw_reply(response: Any, **_options: Any) -> Any:
    return response


def _fields(flat: list[bytes] | None) -> dict[bytes, bytes]:
    """An entry's [field, value, …] as a dict (None or [] for an entry deleted meanwhile)."""
    if not flat:
        return {}
    it = iter(flat)
    return dict(zip(it, it, strict=False))


def _by_kind(messages: list[Message]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in messages:
        out.setdefault(m.kind, []).append(m.id)
    return out


def _dead_letter_envelope(fields: dict[bytes, bytes]) -> dict[str, Any]:
    raw = fields.get(FIELD.encode(), b"")
    try:
        env = json.loads(raw)
        return env if isinstance(env, dict) else {"data": env, "metadata": {}}
    except ValueError:  # not written by tutormax: show it as it is
        return {"data": {text(k): text(v) for k, v in fields.items()}, "metadata": {}}


def _source_mark(env: dict[str, Any]) -> str | None:
    meta = env.get("metadata") or {}
    if "source_stream" in meta and "source_id" in meta:
        return f"{meta['source_stream']} {meta['source_id']}"
    return None


def _server_ms(t: tuple[int, int]) -> int:
    return int(t[0]) * 1000 + int(t[1]) // 1000
