"""The worker's policy, apart from its loop: what each message's outcome is, and when to retry.

Outcomes (SPEC §6):
* accepted by the pipeline → persisted, acknowledged after the commit (a version of a
  key superseded by another version of the same batch that was written counts too);
* rejected *only* for a missing parent, while that parent may still be on its way (the
  parent stream's watermark, in the look taken before the batch was read, is not past the
  record: see streams.StreamMark and `settle_orphans`) → *waiting*: left pending, its
  delivery refunded, due again once the watermark has passed it. This spends no attempt,
  however long the backlog or the retry settings;
* rejected only for a missing parent that can no longer be on its way → left pending for
  a retry while its delivery count is below `max_attempts`, then dead-lettered as
  `missing_parent`;
* refused by the database (pipeline code `database`) → dead-lettered as `database`;
* any other rejection → dead-lettered as `validation`, at once;
* not an envelope (or it crashed the pipeline on its own) → dead-lettered as `poison`.

Retry state lives in Redis' own pending-entries list, so it survives a worker restart and
needs no bookkeeping of ours: the attempt number *is* the entry's delivery count, and the
time of the last attempt is its last delivery (the PEL's idle time). An entry is due again
once it has been idle for `delay_ms(id, attempts)`; the worker then XCLAIMs it to itself,
which is the next delivery. Nothing is copied, so nothing can be lost or doubled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import errors as E
from ..config import DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BASE_MS, DEFAULT_RETRY_MAX_MS
from ..json_bounds import record_as_written
from ..pipeline import BatchResult
from ..schema import KIND_ORDER, KINDS
from .envelope import Message, Pending
from .letters import DeadLetter
from .streams import StreamMark, entry_key


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_ms: int = DEFAULT_RETRY_BASE_MS
    max_ms: int = DEFAULT_RETRY_MAX_MS

    def delay_ms(self, entry_id: str, attempts: int) -> int:
        """Capped exponential backoff with "equal jitter": half fixed, half random.

        The random half comes from a hash of (entry, attempt), so any worker, before or after
        a restart, computes the same due time from what Redis keeps."""
        full = min(self.max_ms, self.base_ms * 2 ** max(attempts - 1, 0))
        digest = hashlib.blake2b(f"{entry_id}/{attempts}".encode(), digest_size=4).digest()
        return full // 2 + int(int.from_bytes(digest) / 2**32 * (full - full // 2))

    def wait_ms(self, p: Pending) -> int:
        """Milliseconds until a pending entry is due again (≤ 0: due now)."""
        return self.delay_ms(p.id, p.deliveries) - p.idle_ms

    def is_due(self, p: Pending, marks: dict[str, StreamMark]) -> bool:
        """A pending entry is due once no parent of it can be on its way any more and its
        backoff is over."""
        return parents_passed(p.kind, p.id, marks) and self.wait_ms(p) <= 0


def parents_passed(
    kind: str,
    entry_id: str,
    marks: dict[str, StreamMark],
    parents: set[str] | None = None,
    beyond: dict[str, tuple[int, int]] | None = None,
) -> bool:
    """No entry of a parent stream published before this one is still unacknowledged. A
    stream the look does not cover (no look yet, a group just recreated) has not passed.
    `beyond` (see `finished_beyond`) extends a parent stream's watermark over entries the
    batch being settled finished itself."""
    for _column, parent in KINDS[kind].parents:
        if parents is not None and parent not in parents:
            continue
        mark = marks.get(parent)
        if mark is None:
            return False
        if not mark.passed(entry_id):
            until = (beyond or {}).get(parent)  # across streams, by millisecond (StreamMark)
            if until is None or until[0] <= entry_key(entry_id)[0]:
                return False
    return True


FirstForeign = Callable[[str, str, str, set[str]], str | None]


def finished_beyond(
    orphans: list[Orphan], marks: dict[str, StreamMark], out: Outcomes, first_foreign: FirstForeign
) -> dict[str, tuple[int, int]]:
    """How far each parent stream that holds an orphan back in `marks` is past its
    watermark in entries *this batch* finished before checking its children: a parent the
    batch persisted (in its own transaction, parents first) or dead-lettered cannot be on
    its way. Without this, a genuine orphan published behind its batch's own parents would
    wait a round for nothing. A parent of the batch that itself waits or retries is not
    finished: its children wait too.

    `first_foreign(kind, start, end, ours)` is the first entry of the kind's stream in
    [start, end] not among `ours` (None: there is none). Returns, per parent kind, the id
    up to which (exclusive) every entry is acknowledged or finished here."""
    held: dict[str, str] = {}  # parent kind → the newest orphan it holds back
    for o in orphans:
        for parent in o.parents:
            mark = marks.get(parent)
            if mark is None or mark.passed(o.message.id):
                continue
            if parent not in held or entry_key(o.message.id) > entry_key(held[parent]):
                held[parent] = o.message.id
    finished: dict[str, set[str]] = {}
    for m in out.to_ack:  # before settle_orphans: persisted, dead-lettered, trimmed
        finished.setdefault(m.kind, set()).add(m.id)
    beyond = {}
    for parent, newest in held.items():
        watermark = marks[parent].watermark
        if watermark is None or parent not in finished:
            continue
        start = f"{watermark[0]}-{watermark[1]}"
        ms = entry_key(newest)[0]  # to the end of its millisecond (StreamMark: across streams)
        foreign = first_foreign(parent, start, str(ms), finished[parent])
        beyond[parent] = entry_key(foreign) if foreign is not None else (ms + 1, 0)
    return beyond


@dataclass
class Outcomes:
    """What one batch did with each of its messages."""

    persisted: list[Message] = field(default_factory=list)
    retried: list[Message] = field(default_factory=list)
    waiting: list[Message] = field(default_factory=list)  # parents on their way: refunded
    orphans: list[Orphan] = field(default_factory=list)  # missing a parent: see settle_orphans
    letters: list[DeadLetter] = field(default_factory=list)
    trimmed: list[Message] = field(default_factory=list)  # pending entries someone deleted
    # delivered again after an earlier try dead-lettered them (and was stopped before its
    # ack), or after they were replayed or drained: acknowledged, not processed again
    handled: list[Message] = field(default_factory=list)
    rejected: int = 0  # messages the pipeline rejected (retried or dead-lettered)

    @property
    def to_ack(self) -> list[Message]:
        return [*self.persisted, *(d.message for d in self.letters), *self.trimmed, *self.handled]

    def by_outcome(self) -> dict[str, list[Message]]:
        """Messages by outcome, for the metrics."""
        return {
            "persisted": self.persisted,
            "retried": self.retried,
            "waited": self.waiting,
            "dead_lettered": [d.message for d in self.letters],
            "trimmed": self.trimmed,
            "dead_lettered_before": self.handled,
        }

    def counts(self) -> dict[str, int]:
        return {
            "persisted": len(self.persisted),
            "retried": len(self.retried),
            "waited": len(self.waiting),
            "dead_lettered": len(self.letters),
            "rejected": self.rejected,
            "trimmed": len(self.trimmed),
            "dead_lettered_before": len(self.handled),
        }


@dataclass
class Orphan:
    """A record rejected only because a parent is missing: waiting, retried or dead-lettered
    by `settle_orphans`."""

    message: Message
    envelope: dict[str, Any]
    errors: list[Any]
    parents: set[str]  # the parent kinds it misses


def classify(
    result: BatchResult,
    messages: list[Message],
    envelopes: list[dict[str, Any]],
    out: Outcomes,
) -> None:
    """Sort a kind's messages by the pipeline's verdict (positions = batch positions)."""
    rejected = {r.index: r.errors for r in result.rejected}
    out.rejected += len(rejected)
    for i, (m, env) in enumerate(zip(messages, envelopes, strict=True)):
        errors = rejected.get(i)
        if errors is None:  # accepted, or superseded by a version that was written
            out.persisted.append(m)
            continue
        codes = {e.code for e in errors}
        if codes == {E.MISSING_PARENT}:
            parents = {dict(KINDS[m.kind].parents).get(e.field, "") for e in errors}
            out.orphans.append(Orphan(m, env, errors, parents))
            continue
        error = E.DLQ_DATABASE if E.DATABASE_REFUSED in codes else E.DLQ_VALIDATION
        out.letters.append(_letter(m, env, error, errors))


def settle_orphans(
    orphans: list[Orphan],
    marks: dict[str, StreamMark],
    policy: RetryPolicy,
    out: Outcomes,
    beyond: dict[str, tuple[int, int]] | None = None,
) -> None:
    """Decide a batch's orphans: a parent still on its way → waiting (no attempt spent);
    else a retry while attempts remain; else a `missing_parent` dead letter (in out.letters).

    `marks` must be a look at the group taken *before* the batch's transaction checked the
    parents (the worker takes it before reading the batch). Why that is sound: a parent
    entry that look shows acknowledged was acknowledged before the look, hence committed
    before it (a worker acknowledges only after its commit, or after dead-lettering the
    parent), hence visible to the check, which began later — so a child that still missed
    it has no parent on its way, and may spend an attempt. A parent acknowledged after the
    look (another worker committing it while this batch ran) is still pending or undelivered
    in the look: the child waits and is tried again, never spends. A look taken after the
    check — after the batch's ack, say — would break this: it can show a parent that another
    worker committed and acknowledged between the check and the look, and the child would
    spend an attempt (at --max-attempts 1, be dead-lettered) for a parent that exists.
    `beyond` (finished_beyond) adds the parents this very batch finished before its check."""
    for o in orphans:
        m = o.message
        if not parents_passed(m.kind, m.id, marks, o.parents, beyond):
            out.waiting.append(m)
        elif m.deliveries < policy.max_attempts:
            out.retried.append(m)
        else:
            out.letters.append(_letter(m, o.envelope, E.DLQ_MISSING_PARENT, o.errors))


def _letter(m: Message, env: dict[str, Any], error: str, errors: list[Any]) -> DeadLetter:
    detail = [e.as_dict() for e in errors]
    return DeadLetter(m, _record(m, env), error, detail, env.get("metadata") or None)


def poison(m: Message, reason: str, env: dict[str, Any] | None = None) -> DeadLetter:
    """A dead letter for a message that could not be processed as a record."""
    detail = [{"field": "message", "code": E.DLQ_POISON, "message": reason}]
    if env is None:
        return DeadLetter(m, m.raw_entry(), E.DLQ_POISON, detail, None, raw_entry=True)
    return DeadLetter(m, _record(m, env), E.DLQ_POISON, detail, env.get("metadata") or None)


def _record(m: Message, env: dict[str, Any]) -> Any:
    """The record a dead letter keeps: with its numbers as the message wrote them."""
    return record_as_written(env["data"], m.raw(), "data")


def readable(marks: dict[str, StreamMark], batch_size: int) -> tuple[str, ...]:
    """The streams worth reading now. A child stream waits while its next entry is newer
    than its parent stream's first undelivered entry and this batch will not drain the
    parent: what it would read could only wait for parents (SPEC §6: drain the parent
    stream first rather than re-read children)."""
    out: list[str] = []
    for kind in KIND_ORDER:
        child = marks[kind].next_undelivered
        ok = True
        for _column, parent in KINDS[kind].parents:
            p = marks[parent]
            if child is None or p.next_undelivered is None:
                continue
            drains = parent in out and p.lag is not None and p.lag <= batch_size
            # Across streams by millisecond (StreamMark): one of the same may come after it.
            if not drains and entry_key(child)[0] >= entry_key(p.next_undelivered)[0]:
                ok = False
        if ok:
            out.append(kind)
    return tuple(out)
