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

from ...schema import KIND_ORDER
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


class Streams(GroupOps, DeadLetterOps, MonitorOps):
    """The input streams of one template and prefix on one Redis, their consumer group,
    the dead-letter stream and the workers' counters; see the module docstring."""

    def recover(self, group: str) -> list[str]:
        """After the group (or a stream) vanished: recreate what is missing and rebuild the
        dead-letter index if it is gone while dead letters remain. Returns what was done."""
        import redis

        done: list[str] = []
        with self.errors(f"recreating consumer group {group}"):
            for kind in KIND_ORDER:
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


__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_PREFIX",
    "DEFAULT_STREAMS",
    "REPLAYED",
    "WORKER_COUNTERS",
    "GroupVanished",
    "QueueUnavailable",
    "StreamMark",
    "Streams",
    "check_template",
    "entry_key",
]
