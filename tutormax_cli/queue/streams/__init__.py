"""Redis Streams (SPEC §6): the only module that talks Redis.

Stream names, publishing, the consumer group (read, claim, reclaim, ack, watermarks),
dead letters (write, list, replay, delete) and the numbers `stats` shows; the envelope
itself is `envelope.py`. The connection is made on first use, so `--help` needs no Redis.
Every read of entries is bounded, whatever their size (`bounded.py`).

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

from dataclasses import dataclass, field

from ...schema import KIND_ORDER
from ..envelope import text
from .bounded import cut_reason
from .budget import ReadBudget
from .connection import (
    DEFAULT_GROUP,
    DEFAULT_PREFIX,
    DEFAULT_STREAMS,
    GroupVanished,
    QueueUnavailable,
    check_template,
)
from .dead_letters import REPLAYED, DeadLetterOps
from .group import GroupOps, StreamMark, entry_key
from .monitor import WORKER_COUNTERS, MonitorOps


@dataclass
class Vanished:
    """What `Streams.recover` found missing (kinds), and what it rebuilt."""

    streams: list[str] = field(default_factory=list)  # the stream itself is gone
    groups: list[str] = field(default_factory=list)  # the stream is there, the group is not
    index: bool = False  # the dead-letter index is gone
    dead_letters: bool = False  # the dead-letter stream (the key) is gone
    reindexed: int = 0  # dead letters indexed again


class Streams(GroupOps, DeadLetterOps, MonitorOps):
    """The input streams of one template and prefix on one Redis, their consumer group,
    the dead-letter stream and the workers' counters; see the module docstring."""

    def recover(self, group: str) -> Vanished:
        """After the group (or a stream) vanished: find what is missing, recreate it, and
        rebuild the dead-letter index if it is gone while dead letters remain. A recreated
        group reads its stream from the first entry: nothing still there is skipped, and
        what was done already is done again harmlessly (upserts, the dead-letter index)."""
        import redis

        found = Vanished()
        with self.errors(f"recreating consumer group {group}"):
            for kind in KIND_ORDER:
                stream = self.stream(kind)
                if not self.r.exists(stream):
                    found.streams.append(kind)
                elif not any(text(g["name"]) == group for g in self.r.xinfo_groups(stream)):
                    found.groups.append(kind)
                try:
                    self.r.xgroup_create(stream, group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._cursors.clear()  # XAUTOCLAIM positions in streams that are no more
            found.index = not self.r.exists(self._index_key)
            found.dead_letters = not self.r.exists(self.dead_letter_key)
            if found.index and not found.dead_letters:
                found.reindexed = self._reindex()
        return found


__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_PREFIX",
    "DEFAULT_STREAMS",
    "REPLAYED",
    "WORKER_COUNTERS",
    "GroupVanished",
    "QueueUnavailable",
    "ReadBudget",
    "StreamMark",
    "Streams",
    "Vanished",
    "check_template",
    "cut_reason",
    "entry_key",
]
