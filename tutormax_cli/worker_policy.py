"""The worker's policy, apart from its loop: what each message's outcome is, and when to retry.

Outcomes (SPEC §6):
* accepted by the pipeline → persisted, acknowledged after the commit;
* rejected *only* for a missing parent → left pending for a retry while its delivery count
  is below `max_attempts`, then dead-lettered as `missing_parent`;
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
from dataclasses import dataclass, field
from typing import Any

from . import errors as E
from .envelope import DeadLetter, Message, Pending
from .pipeline import BatchResult

MAX_ATTEMPTS = 5
RETRY_BASE_MS = 1_000
RETRY_MAX_MS = 30_000


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = MAX_ATTEMPTS
    base_ms: int = RETRY_BASE_MS
    max_ms: int = RETRY_MAX_MS

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


@dataclass
class Outcomes:
    """What one batch did with each of its messages."""

    persisted: list[Message] = field(default_factory=list)
    retried: list[Message] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    trimmed: list[Message] = field(default_factory=list)  # pending entries someone deleted
    rejected: int = 0  # messages the pipeline rejected (retried or dead-lettered)

    @property
    def to_ack(self) -> list[Message]:
        return [*self.persisted, *(d.message for d in self.letters), *self.trimmed]

    def counts(self) -> dict[str, int]:
        return {
            "persisted": len(self.persisted),
            "retried": len(self.retried),
            "dead_lettered": len(self.letters),
            "rejected": self.rejected,
            "trimmed": len(self.trimmed),
        }


def classify(
    result: BatchResult,
    messages: list[Message],
    envelopes: list[dict[str, Any]],
    policy: RetryPolicy,
    out: Outcomes,
) -> None:
    """Sort a kind's messages by the pipeline's verdict (positions = batch positions)."""
    rejected = {r.index: r.errors for r in result.rejected}
    out.rejected += len(rejected)
    for i, (m, env) in enumerate(zip(messages, envelopes, strict=True)):
        errors = rejected.get(i)
        if errors is None:  # accepted, or superseded by a later row with the same key
            out.persisted.append(m)
            continue
        codes = {e.code for e in errors}
        if codes == {E.MISSING_PARENT} and m.deliveries < policy.max_attempts:
            out.retried.append(m)
            continue
        if codes == {E.MISSING_PARENT}:
            error = E.DLQ_MISSING_PARENT
        elif E.DATABASE_REFUSED in codes:
            error = E.DLQ_DATABASE
        else:
            error = E.DLQ_VALIDATION
        detail = [e.as_dict() for e in errors]
        out.letters.append(DeadLetter(m, env["data"], error, detail, env.get("metadata") or None))


def poison(m: Message, reason: str, env: dict[str, Any] | None = None) -> DeadLetter:
    """A dead letter for a message that could not be processed as a record."""
    data = env["data"] if env is not None else m.raw_entry()
    detail = [{"field": "message", "code": E.DLQ_POISON, "message": reason}]
    meta = (env or {}).get("metadata") or None
    return DeadLetter(m, data, E.DLQ_POISON, detail, meta, raw_entry=env is None)
