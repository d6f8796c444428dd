"""Redis Streams (SPEC §6): the only module that talks Redis.

Stream names, publishing, the consumer group (read, claim, reclaim, ack), dead letters
(write, list, replay, delete) and the numbers `stats` shows; the envelope itself is
`envelope.py`. The connection is made on first use, so `--help` needs no Redis.

Two writes are Lua scripts rather than MULTI/EXEC because they must *check, then act*
atomically, which MULTI cannot express:

* a dead letter is written only if `<prefix>dead_letter:sources` has no entry for its
  source id yet (HSETNX-style), so a worker killed between the dead-letter write and the
  ACK writes it once, not twice, when the entry is delivered again;
* a replay XADDs to the source stream and XDELs from the dead-letter stream only if the
  dead letter still exists, so replaying the same id twice (or from two shells) re-queues
  the record once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .config import mask_url
from .envelope import FIELD, DeadLetter, Message, Pending, envelope_text, now_iso, text
from .errors import QueueError

DEFAULT_PREFIX = "tutormax:"
DEFAULT_GROUP = "enrichment-workers"
KIND_NAMES = ("tutors", "sessions", "feedback")  # parents first
PUBLISH_CHUNK = 1000  # XADDs per round trip
DEAD_LETTER_CHUNK = 200  # dead letters per script call (each may carry a 64 KiB poison slice)

_DEAD_LETTER_LUA = """
local written = 0
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then
    local id = redis.call('XADD', KEYS[1], '*', 'message', ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i], id)
    written = written + 1
  end
end
return written
"""
_REPLAY_LUA = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[3], '*', 'message', ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[3])
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
)


class QueueUnavailable(QueueError):
    """Redis did not answer (connection refused, reset or timed out): an outage, not a fault."""


class Streams:
    """The stream keys under one prefix, on one Redis; see the module docstring."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, timeout_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s  # socket timeout: longer than any blocking read
        self.url_masked = mask_url(url)
        self.prefix = prefix
        self.dead_letter_key = f"{prefix}dead_letter"
        self._index_key = f"{prefix}dead_letter:sources"  # "<stream> <id>" → dead-letter id
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._cursors: dict[str, str] = {}  # XAUTOCLAIM scan position per stream

    def stream(self, kind: str) -> str:
        return f"{self.prefix}{kind}"

    def kind_of(self, stream: str) -> str | None:
        kind = stream[len(self.prefix) :] if stream.startswith(self.prefix) else None
        return kind if kind in KIND_NAMES else None

    def worker_key(self, consumer: str) -> str:
        return f"{self.prefix}workers:{consumer}"

    @property
    def r(self) -> Any:
        if self._client is None:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry

            # redis-py itself retries a dropped connection twice, quickly; a longer outage
            # surfaces as QueueUnavailable, which the worker backs off from.
            self._client = redis.Redis.from_url(
                self.url,
                protocol=2,
                socket_connect_timeout=5,
                socket_timeout=self.timeout_s,
                socket_keepalive=True,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
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
                pipe.execute_command("XADD", stream, "*", FIELD,
                                     envelope_text(stream, data, metadata, stamp))  # fmt: skip
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

    def read_new(self, group: str, consumer: str, count: int, block_ms: int) -> list[Message]:
        """XREADGROUP `>` over the three streams: up to `count` new entries from each."""
        import redis

        args: list[Any] = ["GROUP", group, consumer, "COUNT", count]
        if block_ms:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", *(self.stream(k) for k in KIND_NAMES), *[">"] * len(KIND_NAMES)]
        with self.errors("reading the streams"):
            try:
                reply = self.r.execute_command("XREADGROUP", *args)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.ensure_group(group)  # someone deleted a stream or the group: recreate
                return []
        # The raw reply (see `r`): [[stream, [[id, [field, value, …]], …]], …]. Building the
        # messages here directly costs half of redis-py's generic parsing.
        out: list[Message] = []
        for stream, entries in reply or []:
            kind = self.kind_of(text(stream)) or ""
            out += [Message(kind, i.decode(), _fields(f)) for i, f in entries]
        return out

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
                out += [Message(kind, text(i), f or {}, n)
                        for (i, f), n in zip(entries, counts, strict=True)]  # fmt: skip
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
            meta = {
                "source_stream": stream,
                "source_id": m.id,
                "error": d.error,
                "detail": d.detail,
                "attempts": m.deliveries,
                "failed_at": now_iso(),
            }
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

    def replay(self, entry_id: str, env: dict[str, Any]) -> str | None:
        """Re-queue a dead letter on its source stream with a fresh envelope and remove it, in
        one atomic step; None if it is gone already. The caller checks the source stream."""
        meta = env.get("metadata") or {}
        stream = meta["source_stream"]
        fresh = {**(meta.get("source_metadata") or {}), "replayed_from": entry_id}
        body = envelope_text(stream, env["data"], fresh)
        keys = [self.dead_letter_key, self._index_key, stream]
        args = [entry_id, body, f"{stream} {meta.get('source_id')}"]
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
        """Per input stream: length, pending, consumers, lag, oldest pending age, max deliveries."""
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
            "consumers": 0,
            "lag": None,
            "oldest_pending_ms": None,
            "max_deliveries": 0,
        }
        if not self.r.exists(stream):
            return info
        info["length"] = int(self.r.xlen(stream))
        groups = [g for g in self.r.xinfo_groups(stream) if text(g["name"]) == group]
        if not groups:
            return info
        g = groups[0]
        info.update(pending=int(g["pending"]), consumers=int(g["consumers"]), lag=g.get("lag"))
        if info["pending"]:
            rows = self.r.xpending_range(stream, group, "-", "+", scan)
            info["oldest_pending_ms"] = now_ms - int(text(rows[0]["message_id"]).split("-")[0])
            info["max_deliveries"] = max(int(p["times_delivered"]) for p in rows)
        return info

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
