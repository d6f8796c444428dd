"""Reads of stream entries whose replies are bounded (SPEC §6a), whatever Redis holds.

Redis keeps an entry of up to 512 MB (`proto-max-bulk-len`), and XREADGROUP, XCLAIM,
XAUTOCLAIM and XRANGE send every entry whole: one entry of 300 MB cost a worker 707 MiB
before it found the entry poison (it is over the message cap), and the dead-letter stream
was read 1,000 entries a page, whatever their size. So every read of entries goes through
a script here that runs the command in Redis and cuts its reply there:

- an entry over `entry_max` bytes (field names and values together) or ENTRY_MAX_FIELDS
  fields comes back *cut*: the fields a poison dead letter keeps of it
  (`Message.raw_entry`'s rule: its values up to POISON_KEEP_BYTES together, cut there, as
  much of its field names, at most ENTRY_MAX_FIELDS fields), with its size, its fields and
  how many (and how many bytes) were left out: `Cut`;
- a script stops taking more entries once it has copied CALL_FIELDS fields: Redis answers
  every other client BUSY while a script runs;
- a read that needs only ids (the first entry of a stream, the next one after a position,
  which entries are not ours) gets only ids;
- a range read stops once its entries' bytes reach `reply_max` (at least one entry), and
  says where to go on.

NOTE: a script cannot block, so the worker's wait for new entries polls (GroupOps.read_new):
1 ms first, doubling up to 50 ms, on an idle worker. Cutting in Lua costs Redis about
3 µs an entry more than the bare command: 100k entries of 600 bytes, 0.11-0.16 s of Redis
CPU read bare, 0.36-0.45 s by the script (measured, 2026-12-07).
"""

from __future__ import annotations

from typing import Any

from ..envelope import ENTRY_MAX_FIELDS, MESSAGE_MAX_BYTES, POISON_KEEP_BYTES, Cut, Message, text
from .budget import ReadBudget
from .connection import Connection

# An entry bigger than this is cut: a message at the cap with a few small fields beside it
# is not, so an envelope over the cap by a little is still read, and found poison for it.
ENTRY_MAX_BYTES = MESSAGE_MAX_BYTES + POISON_KEEP_BYTES
# The dead-letter stream holds envelopes tutormax wrote around messages within the cap, far
# below this; an entry over it is someone else's, shown cut and never drained.
DEAD_LETTER_ENTRY_MAX_BYTES = 16 * MESSAGE_MAX_BYTES
RANGE_REPLY_BYTES = 16 << 20  # a range read returns entries up to about this many bytes
# A script stops reading more entries once it has copied this many fields (~0.4 s of Redis):
# a script cannot be interrupted, and Redis answers BUSY to every client while one runs.
CALL_FIELDS = 1 << 18
IDS_CHUNK = 1000  # ids per XCLAIM (Lua's unpack takes a few thousand arguments at most)

# ARGV[1], ARGV[2]: entry_max, keep. size(f): an entry's bytes and fields. cut(e) makes an
# entry {id, fields} over entry_max bytes or ENTRY_MAX_FIELDS fields {id, kept fields, size,
# fields omitted, their bytes, fields}: the fields in order while their values fit in KEEP
# bytes together (the last one cut there), their names in KEEP and they number at most
# ENTRY_MAX_FIELDS (empty ones cost no bytes), as Message.raw_entry
# keeps a poison entry's (a name given twice is kept as Redis holds it). Both look at each
# field once: Lua has copied the entry already (~1.5 µs a field), and a name or value is
# never copied again but the kept ones.
_CUT_LUA = """
local ENTRY_MAX, KEEP, FIELDS_MAX = tonumber(ARGV[1]), tonumber(ARGV[2]), @FIELDS_MAX@
local CALL_FIELDS = @CALL_FIELDS@
local function size(f)
  local n = 0
  if type(f) ~= 'table' then return 0, 0 end
  for i = 1, #f do n = n + #f[i] end
  return n, #f / 2
end
local function cut(e)
  local f = e[2]
  local total, fields = size(f)
  if total <= ENTRY_MAX and fields <= FIELDS_MAX then return total, fields end
  local kept, values, names, omitted, omitted_bytes = {}, KEEP, KEEP, 0, 0
  for i = 1, #f - 1, 2 do
    local k, v = f[i], f[i + 1]
    if values <= 0 or #k > names or #kept >= 2 * FIELDS_MAX then
      omitted, omitted_bytes = omitted + 1, omitted_bytes + #k + #v
    else
      kept[#kept + 1] = k
      kept[#kept + 1] = string.sub(v, 1, values)
      values, names = values - #v, names - #k
    end
  end
  e[2], e[3], e[4], e[5], e[6] = kept, total, omitted, omitted_bytes, fields
  return total, fields
end
""".replace("@FIELDS_MAX@", str(ENTRY_MAX_FIELDS)).replace("@CALL_FIELDS@", str(CALL_FIELDS))

# KEYS: the streams; ARGV[3..8]: group, consumer, count, and the batch's ReadBudget: bytes
# left ('' for no bound), the largest entry met, the most the next read may ask for.
# XREADGROUP `>` as the budget's reads would ask (the same rule as ReadBudget.entries, here
# so that the reads of a batch are one round trip, not 46), never blocking. Returns {[[stream,
# entries], …], bytes left, largest, step}.
_READ_GROUP_LUA = (
    _CUT_LUA
    + """
local group, consumer, count = ARGV[3], ARGV[4], tonumber(ARGV[5])
local bounded, left = ARGV[6] ~= '', tonumber(ARGV[6]) or 0
local largest, step = tonumber(ARGV[7]), tonumber(ARGV[8])
local streams, got, order, copied = {}, {}, {}, 0
for i = 1, #KEYS do streams[i] = KEYS[i] end
while #streams > 0 and count > 0 do
  local ask = count
  if bounded then
    if left <= 0 then break end
    ask = math.max(1, math.min(step, math.floor(left / (largest * #streams))))
    step = 2 * ask
    ask = math.min(count, ask)
  end
  local args = {'XREADGROUP', 'GROUP', group, consumer, 'COUNT', ask, 'STREAMS'}
  for i = 1, #streams do args[#args + 1] = streams[i] end
  for i = 1, #streams do args[#args + 1] = '>' end
  local reply = redis.call(unpack(args))
  count = count - ask
  local full = {}
  for _, s in ipairs(reply or {}) do
    local name, entries = s[1], s[2]
    if got[name] == nil then got[name] = {}; order[#order + 1] = name end
    local into = got[name]
    for _, e in ipairs(entries) do
      local n, fields = cut(e)
      left, copied = left - n, copied + fields
      if n > largest then largest = n end
      if e[3] then step = 1 end  -- cut: what follows is read a few entries at a time again
      into[#into + 1] = e
    end
    if #entries == ask then full[#full + 1] = name end
  end
  streams = full
  if copied >= CALL_FIELDS then break end
end
local out = {}
for _, name in ipairs(order) do out[#out + 1] = {name, got[name]} end
return {out, left, largest, step}
"""
)

# KEYS[1]: the stream; ARGV[3..5]: group, consumer, min idle ms; ARGV[6..]: ids.
# Returns {entries claimed, how many of the ids are no longer in the stream}.
_CLAIM_LUA = (
    _CUT_LUA
    + """
local args = {'XCLAIM', KEYS[1], ARGV[3], ARGV[4], ARGV[5]}
for i = 6, #ARGV do args[#args + 1] = ARGV[i] end
local got = redis.call(unpack(args))
local seen, trimmed = {}, 0
for _, e in ipairs(got) do cut(e); seen[e[1]] = true end
for i = 6, #ARGV do
  if not seen[ARGV[i]] and #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) == 0 then
    trimmed = trimmed + 1
  end
end
return {got, trimmed}
"""
)

# KEYS[1]: the stream; ARGV[3..7]: group, consumer, min idle ms, start, count.
_AUTOCLAIM_LUA = (
    _CUT_LUA
    + """
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
                         'COUNT', ARGV[7])
for _, e in ipairs(reply[2]) do cut(e) end
return reply
"""
)

# KEYS[1]: the stream; ARGV[3..7]: start, end, count, reply bytes, '1' for ids only.
# Returns {entries (or ids), where to go on (false: the range ran dry)}. Reads 1, 2, 4, …
# entries at a time, so a run of big entries is never taken in one XRANGE.
_RANGE_LUA = (
    _CUT_LUA
    + """
local out, bytes, copied, step, start = {}, 0, 0, 1, ARGV[3]
local count, reply_max, ids_only = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
while true do
  local room = math.max(1, math.floor((reply_max - bytes) / ENTRY_MAX))
  local n = math.min(step, count - #out, room)
  local rows = redis.call('XRANGE', KEYS[1], start, ARGV[4], 'COUNT', n)
  for _, e in ipairs(rows) do
    local b, fields
    if ids_only then
      b, fields = size(e[2])
      out[#out + 1] = e[1]
    else
      b, fields = cut(e)
      out[#out + 1] = e
    end
    bytes, copied = bytes + b, copied + fields
  end
  if #rows < n then return {out, false} end
  if #out >= count or bytes >= reply_max or copied >= CALL_FIELDS then
    return {out, '(' .. rows[#rows][1]}
  end
  start = '(' .. rows[#rows][1]
  step = step * 2
end
"""
)

# KEYS: streams; ARGV[3..]: a start for each. The id of each one's first entry from its
# start on, or false. (An entry is copied into Lua whole, in Redis; only its id comes back.)
_FIRST_IDS_LUA = """
local out = {}
for i = 1, #KEYS do
  local rows = redis.call('XRANGE', KEYS[i], ARGV[i + 2], '+', 'COUNT', 1)
  out[i] = rows[1] and rows[1][1] or false
end
return out
"""


def fields_of(flat: list[bytes] | None) -> dict[bytes, bytes]:
    """An entry's [field, value, …] as a dict (None or [] for an entry deleted meanwhile)."""
    if not flat:
        return {}
    it = iter(flat)
    return dict(zip(it, it, strict=False))


def message_of(kind: str, entry: list[Any], deliveries: int = 1) -> Message:
    """A Message from an entry of a script's reply: [id, fields] or, cut, [id, kept fields,
    size, fields omitted, their bytes, fields]."""
    cut = Cut(*map(int, entry[2:6])) if len(entry) > 2 else None
    return Message(kind, text(entry[0]), fields_of(entry[1]), deliveries, cut)


def cut_reason(cut: Cut) -> str:
    """Why an entry came cut (the detail of its poison dead letter)."""
    if cut.size > ENTRY_MAX_BYTES:
        return f"entry of {cut.size:,} bytes is over the {ENTRY_MAX_BYTES:,}-byte cap: not read"
    return f"entry of {cut.fields:,} fields is over the {ENTRY_MAX_FIELDS:,}-field cap: not read"


class BoundedReads(Connection):
    """The scripts above, called as the commands they stand for."""

    def _run(self, name: str, source: str, keys: list[str], args: list[Any], **kw: Any) -> Any:
        """Run a script; `entry_max` (default ENTRY_MAX_BYTES) sets where entries are cut."""
        entry_max = kw.pop("entry_max", ENTRY_MAX_BYTES)
        argv = [entry_max, POISON_KEEP_BYTES, *args]
        return self._script(name, source)(keys=keys, args=argv, **kw)

    def read_group(
        self, group: str, consumer: str, count: int, streams: list[str],
        budget: ReadBudget | None = None, **kw: Any,
    ) -> list[Any]:  # fmt: skip
        """XREADGROUP … STREAMS streams > within `budget` (see _READ_GROUP_LUA), never
        blocking: [[stream, [entry, …]], …]; `budget` is spent."""
        budget = budget or ReadBudget()
        left = "" if budget.left is None else budget.left
        args = [group, consumer, count, left, budget.largest, budget.step]
        reply, left, largest, step = self._run("read_group", _READ_GROUP_LUA, streams, args, **kw)
        budget.absorb(None if budget.left is None else int(left), int(largest), int(step))
        return list(reply)

    def claim_entries(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, ids: list[str], **kw: Any
    ) -> tuple[list[Any], int]:
        """XCLAIM `ids`: (the entries claimed, how many of the ids are gone from the stream)."""
        got, trimmed = self._run(
            "claim", _CLAIM_LUA, [stream], [group, consumer, min_idle_ms, *ids], **kw
        )
        return got, int(trimmed)

    def autoclaim(
        self, stream: str, group: str, consumer: str, min_idle_ms: int, start: str, count: int,
        **kw: Any,
    ) -> list[Any]:  # fmt: skip
        """XAUTOCLAIM's reply: [next cursor, [entry, …], [deleted id, …] (Redis ≥ 7)]."""
        args = [group, consumer, min_idle_ms, start, count]
        return list(self._run("autoclaim", _AUTOCLAIM_LUA, [stream], args, **kw))

    def range_entries(
        self, stream: str, start: str, end: str, count: int, *, ids_only: bool = False,
        reply_max: int = RANGE_REPLY_BYTES, **kw: Any,
    ) -> tuple[list[Any], str | None]:  # fmt: skip
        """XRANGE stream start end COUNT count, bounded: (entries, or ids; the start to go on
        from, None once the range ran dry). Fewer than `count` entries come back once their
        bytes reach `reply_max`."""
        args = [start, end, count, reply_max, "1" if ids_only else "0"]
        rows, more = self._run("range", _RANGE_LUA, [stream], args, **kw)
        return list(rows), (text(more) if more else None)

    def first_ids(self, starts: list[tuple[str, str]]) -> list[str | None]:
        """For each (stream, start), the id of its first entry from `start` on (None: there
        is none); one round trip."""
        keys, args = [s for s, _ in starts], [start for _, start in starts]
        ids = self._run("first_ids", _FIRST_IDS_LUA, keys, args)
        return [text(i) if i else None for i in ids]

    def first_id(self, stream: str, start: str = "-") -> str | None:
        return self.first_ids([(stream, start)])[0]
