"""The dead-letter stream and its index (see queue/streams/__init__.py for the Lua)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ..envelope import Message, envelope_text, now_iso, text
from ..letters import DeadLetter, DeadLetterRecord, count_of, mark_of
from .bounded import DEAD_LETTER_ENTRY_MAX_BYTES, BoundedReads, message_of
from .connection import PUBLISH_CHUNK
from .group import entry_key

# A mark whose dead letter was replayed or drained: its source entry was handled, and a
# delivery of it again (a consumer group recreated reads its stream from the start) is not
# dead-lettered twice. Such marks go once their source entry is trimmed (prune_marks).
REPLAYED = "replayed:"
DRAINED = "drained:"
HANDLED = (REPLAYED, DRAINED)

DEAD_LETTER_CHUNK = 200  # dead letters per script call (each may carry a 64 KiB poison slice)

# Whether a source entry's mark is live: its dead letter exists, or it was replayed or
# drained (a value that is no entry id, not written by tutormax, is no live mark).
# KEYS: dead-letter stream, index.
_LIVE_LUA = """
local function live(m)
  local mark = redis.call('HGET', KEYS[2], m)
  if not mark then return false end
  if string.sub(mark, 1, 9) == 'replayed:' or string.sub(mark, 1, 8) == 'drained:' then
    return true
  end
  local found = redis.pcall('XRANGE', KEYS[1], mark, mark)
  return type(found) == 'table' and found.err == nil and #found > 0
end
"""

# ARGV: mark, body, mark, body… Returns how many dead letters were written.
_DEAD_LETTER_LUA = (
    _LIVE_LUA
    + """
local written = 0
for i = 1, #ARGV, 2 do
  if not live(ARGV[i]) then
    local id = redis.call('XADD', KEYS[1], '*', 'message', ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i], id)
    written = written + 1
  end
end
return written
"""
)

# ARGV: marks. Returns 1 for each live one, else 0.
_HANDLED_LUA = (
    _LIVE_LUA
    + """
local out = {}
for i = 1, #ARGV do
  out[i] = live(ARGV[i]) and 1 or 0
end
return out
"""
)

# KEYS: dead-letter stream, index, source stream. ARGV: dead-letter id, body, mark.
_REPLAY_LUA = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[3], '*', 'message', ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[3], 'replayed:' .. id)
return id
"""


# KEYS: dead-letter stream, index. ARGV: dead-letter id, its mark (or ''), … Returns, for
# each, 1 if it was deleted (and its mark set to drained), else 0.
_DRAIN_LUA = """
local out = {}
for i = 1, #ARGV, 2 do
  local n = redis.call('XDEL', KEYS[1], ARGV[i])
  out[#out + 1] = n
  if n == 1 and ARGV[i + 1] ~= '' then
    redis.call('HSET', KEYS[2], ARGV[i + 1], 'drained:' .. ARGV[i])
  end
end
return out
"""


def _dead_letter_key(value: bytes) -> tuple[int, int] | None:
    """The dead-letter entry id a mark holds, as a key; None for a replayed or drained
    mark, or a value tutormax did not write (a foreign one is neither lost nor swept)."""
    v = text(value)
    if not _ENTRY_ID.fullmatch(v):  # (int() takes `1_000`, ` 7`, `+5`: Redis does not)
        return None
    return entry_key(v)


_ENTRY_ID = re.compile(r"[0-9]+-[0-9]+", re.ASCII)  # as tutormax writes one (XADD's)


class DeadLetterOps(BoundedReads):
    """The dead-letter stream: written once per source entry, read, replayed, deleted."""

    @property
    def index_key(self) -> str:
        """The dead-letter index: source entry → its dead letter (the dedupe marks)."""
        return self._index_key

    def _reindex(self) -> int:
        n = 0
        for record in self.dead_letters():
            if record.mark:
                self.r.hsetnx(self._index_key, record.mark, record.entry_id)
                n += 1
        return n

    def dead_letter_health(self) -> dict[str, Any]:
        """What could make dead letters vanish: a TTL on the stream (tutormax sets none;
        TutorMax's publisher sets 24 h), and marks whose dead letter is gone (trimmed by
        MAXLEN, expired): `lost`; and how many dead letters there are: `length`."""
        with self.errors("checking the dead-letter stream"):
            ttl = int(self.r.ttl(self.dead_letter_key))
            length = int(self.r.xlen(self.dead_letter_key))
            first = self.first_id(self.dead_letter_key)
            oldest = entry_key(first) if first else None
            lost = 0
            for _mark, dl_id in self.r.hscan_iter(self._index_key, count=1000):
                key = _dead_letter_key(dl_id)
                if key is not None and (oldest is None or key < oldest):
                    lost += 1
        return {"ttl_s": ttl if ttl >= 0 else None, "lost": lost, "length": length}

    def sweep_marks(self) -> int:
        """Delete the marks of dead letters that are gone (see dead_letter_health): the
        index then matches the stream again. Returns how many were deleted."""
        with self.errors("sweeping the dead-letter index"):
            first = self.first_id(self.dead_letter_key)
            oldest = entry_key(first) if first else None
            stale = []
            for mark, dl_id in self.r.hscan_iter(self._index_key, count=1000):
                key = _dead_letter_key(dl_id)
                if key is not None and (oldest is None or key < oldest):
                    stale.append(mark)
            for start in range(0, len(stale), PUBLISH_CHUNK):
                self.r.hdel(self._index_key, *stale[start : start + PUBLISH_CHUNK])
        return len(stale)

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
                "attempts": m.deliveries + count_of(earlier.get("previous_attempts")),
                "failed_at": now_iso(),
            }
            # A field of the wrong type (not written by tutormax) is treated as absent.
            chain = earlier.get("replay_chain")
            if chain and isinstance(chain, list):
                replayed_from = earlier.get("replayed_from")
                meta["replayed_from"] = replayed_from if isinstance(replayed_from, str) else None
                meta["replay_chain"] = chain
            if d.source_metadata:
                meta["source_metadata"] = d.source_metadata
            if d.raw_entry:
                meta["raw_entry"] = True
            argv += [mark_of(stream, m.id), envelope_text(self.dead_letter_key, d.data, meta)]
        keys, written = [self.dead_letter_key, self._index_key], 0
        with self.errors("writing dead letters"):
            for start in range(0, len(argv), 2 * DEAD_LETTER_CHUNK):  # bounded script calls
                args = argv[start : start + 2 * DEAD_LETTER_CHUNK]
                written += int(self._script("dead_letter", _DEAD_LETTER_LUA)(keys=keys, args=args))
        return written

    def dead_lettered_before(self, messages: list[Message]) -> set[tuple[str, str]]:
        """(kind, id) of the messages whose source entry has a live mark: an earlier try
        dead-lettered it (and was stopped before its ack), or it was replayed or drained.
        Processed again, such an entry could be persisted as well (its parent committed
        meanwhile): the worker acknowledges it instead."""
        found: set[tuple[str, str]] = set()
        keys = [self.dead_letter_key, self._index_key]
        with self.errors("reading the dead-letter index"):
            for start in range(0, len(messages), PUBLISH_CHUNK):
                part = messages[start : start + PUBLISH_CHUNK]
                args = [mark_of(self.stream(m.kind), m.id) for m in part]
                live = self._script("handled", _HANDLED_LUA)(keys=keys, args=args)
                found.update((m.kind, m.id) for m, hit in zip(part, live, strict=True) if hit)
        return found

    def dead_letters(self, chunk: int = 1000) -> Iterator[DeadLetterRecord]:
        """Every dead letter, oldest first, read `chunk` at a time or RANGE_REPLY_BYTES'
        worth, whichever is less; one over DEAD_LETTER_ENTRY_MAX_BYTES comes cut."""
        start: str | None = "-"
        while start is not None:
            with self.errors("reading dead letters"):
                rows, start = self.range_entries(
                    self.dead_letter_key, start, "+", chunk, entry_max=DEAD_LETTER_ENTRY_MAX_BYTES
                )
            for entry in rows:
                yield DeadLetterRecord.from_message(message_of("", entry))

    def dead_letter_by_id(self, entry_id: str) -> DeadLetterRecord | None:
        with self.errors("reading a dead letter"):
            rows, _ = self.range_entries(
                self.dead_letter_key, entry_id, entry_id, 1, entry_max=DEAD_LETTER_ENTRY_MAX_BYTES
            )
        return DeadLetterRecord.from_message(message_of("", rows[0])) if rows else None

    def replay_text(self, record: DeadLetterRecord) -> str:
        """The fresh envelope `replay` puts on the source stream (see there)."""
        assert record.source_stream is not None, "checked by the caller"
        fresh = {  # a source_metadata or replay_chain of the wrong type is taken as absent
            **record.source_metadata,
            "replayed_from": record.entry_id,
            "replay_chain": [*record.replay_chain, record.entry_id],
            "previous_attempts": record.attempts,
        }
        return envelope_text(record.source_stream, record.replay_data(), fresh)

    def replay(self, record: DeadLetterRecord, body: str | None = None) -> str | None:
        """Re-queue a dead letter on its source stream with a fresh envelope and remove it, in
        one atomic step; None if it is gone already. The caller checks the source stream.

        The fresh envelope keeps the history: `replayed_from` (this dead letter),
        `replay_chain` (every dead letter this record has been) and `previous_attempts`
        (the attempts of every earlier life), so a record that fails again is dead-lettered
        with its attempts summed and its chain intact."""
        stream, source_id = record.source_stream, record.source_id
        assert stream is not None and source_id is not None, "checked by the caller"
        body = self.replay_text(record) if body is None else body
        keys = [self.dead_letter_key, self._index_key, stream]
        args = [record.entry_id, body, mark_of(stream, source_id)]
        with self.errors("replaying a dead letter"):
            new_id = self._script("replay", _REPLAY_LUA)(keys=keys, args=args)
        return text(new_id) if new_id else None

    def delete_dead_letters(self, records: list[DeadLetterRecord]) -> list[str]:
        """XDEL dead letters, each one's mark kept as DRAINED (a source entry delivered
        again is not dead-lettered again) only if it was there to delete; returns the ids
        deleted. One that is gone was replayed or drained meanwhile by another command: its
        mark says so, and is left as it is (it said `drained:` over a replay's mark)."""
        deleted: list[str] = []
        keys = [self.dead_letter_key, self._index_key]
        with self.errors("deleting dead letters"):
            for start in range(0, len(records), PUBLISH_CHUNK):
                part = records[start : start + PUBLISH_CHUNK]
                args = [x for r in part for x in (r.entry_id, r.mark or "")]
                gone = self._script("drain", _DRAIN_LUA)(keys=keys, args=args)
                deleted += [r.entry_id for r, n in zip(part, gone, strict=True) if n]
        return deleted

    def prune_marks(self) -> int:
        """Delete the marks of replayed or drained dead letters whose source entry was
        trimmed from its stream (older than its first entry, or the stream gone): nothing
        can deliver it again. Returns how many were deleted."""
        first: dict[str, tuple[int, int] | None] = {}
        stale: list[bytes] = []
        with self.errors("pruning the dead-letter index"):
            for mark, value in self.r.hscan_iter(self._index_key, count=1000):
                if not text(value).startswith(HANDLED):
                    continue
                stream, _, source_id = text(mark).rpartition(" ")
                if stream not in first:
                    head_id = self.first_id(stream)
                    first[stream] = entry_key(head_id) if head_id else None
                head = first[stream]
                try:
                    if head is None or entry_key(source_id) < head:
                        stale.append(mark)
                except ValueError:  # not a mark tutormax wrote: left alone
                    continue
            for start in range(0, len(stale), PUBLISH_CHUNK):
                self.r.hdel(self._index_key, *stale[start : start + PUBLISH_CHUNK])
        return len(stale)
