"""A batch of one kind through the pipeline, and the isolation of a record that crashes it.

If the pipeline raises something that is not a known fault (SPEC §6), the batch is bisected,
each half under its own SAVEPOINT: a record that crashes the pipeline alone is poison. When
both halves of the first split fail too — or, for a batch of one record, a known-good
canary record fails as well — it is the code, not a record: the error goes up (exit 3, the
batch left pending)."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from ..errors import TutormaxError
from ..fields import Context
from ..json_bounds import loads_number_texts
from ..pipeline import Pipeline
from ..records import records_to_table
from ..schema import KINDS
from ..store import Store
from .policy import Outcomes, classify, poison
from .runtime import Faults
from .streams import GroupVanished

log = logging.getLogger("tutormax.worker")

# A valid record of each kind: when a batch of one record crashes the pipeline, the canary
# tells whether the record or the code is at fault (see Worker._process).
CANARIES: dict[str, dict[str, Any]] = {
    "tutors": {
        "tutor_id": "~canary",
        "name": "canary",
        "email": "canary@example.invalid",
        "onboarding_date": "2024-01-01",
        "status": "active",
        "subjects": ["canary"],
    },
    "sessions": {
        "session_id": "~canary",
        "tutor_id": "~canary",
        "student_id": "~canary",
        "scheduled_start": "2024-01-01T00:00:00Z",
        "duration_minutes": 60,
        "subject": "canary",
    },
    "feedback": {
        "feedback_id": "~canary",
        "session_id": "~canary",
        "student_id": "~canary",
        "tutor_id": "~canary",
        "overall_rating": 5,
        "submitted_at": "2024-01-01T01:00:00Z",
    },
}


class _Rollback(Exception):
    """Ends a trial run of the pipeline (see Isolation.fails)."""


class Isolation:
    """Runs one kind's records through the pipeline inside the batch's transaction."""

    def __init__(self, store: Store, faults: Faults) -> None:
        self.store = store
        self._faults = faults

    def process(
        self, kind: str, pairs: list[tuple], ctx: Context, out: Outcomes, first: bool = False
    ) -> None:
        """Run the pipeline on one kind's records. If it raises something that is not a
        known fault, bisect (each half under its own SAVEPOINT): a record that crashes the
        pipeline alone is poison. When both halves of the first split fail too — or, for a
        batch of one record, a known-good canary record fails as well — it is the code, not
        a record: the error goes up (exit 3, the batch left pending)."""
        try:
            result = self.pipeline(kind, pairs, ctx)
        except (TutormaxError, GroupVanished):
            raise
        except Exception as exc:
            if (
                len(pairs) == 1
                and first
                and self.fails(kind, [(None, {"data": CANARIES[kind]})], ctx)
            ):
                raise  # a valid record crashes it too: the code
            if len(pairs) == 1:
                log.warning(
                    "message %s crashes the pipeline on its own: poison",
                    pairs[0][0].id,
                    exc_info=True,
                )
                reason = f"processing failed: {type(exc).__name__}: {exc}"
                out.letters.append(poison(pairs[0][0], reason, pairs[0][1]))
                return
            mid = len(pairs) // 2
            halves = [pairs[:mid], pairs[mid:]]
            if first and all(self.fails(kind, h, ctx) for h in halves):
                raise
            for half in halves:
                self.process(kind, half, ctx, out)
            return
        classify(result, [m for m, _ in pairs], [e for _, e in pairs], out)

    def pipeline(self, kind: str, pairs: list[tuple], ctx: Context) -> Any:
        self._faults.raise_if("pipeline_bug")
        if self._faults.point == "record_bug":  # tests: one record crashes the pipeline
            key = KINDS[kind].key
            self._faults.raise_if("record_bug", [str(env["data"].get(key)) for _, env in pairs])
        with self.store.transaction():
            table = _records_table(pairs, kind)
            return Pipeline(KINDS[kind], store=self.store).process(table, ctx)

    def fails(self, kind: str, pairs: list[tuple], ctx: Context) -> bool:
        """Whether the pipeline raises on these records (a trial: rolled back either way)."""
        try:
            with self.store.transaction():
                self.pipeline(kind, pairs, ctx)
                raise _Rollback
        except _Rollback:
            return False
        except (TutormaxError, GroupVanished):
            raise
        except Exception:
            return True


def _records_table(pairs: list[tuple], kind: str) -> pa.Table:
    """The data of (message, envelope) pairs of one kind as a raw batch:
    `records.records_to_table`, with the kind's columns only (the database ignores other
    keys, and no output file needs them); a number in a string field is its text in the
    message (read again for that record alone)."""
    records = [env["data"] for _, env in pairs]

    def number_texts(i: int) -> Any:
        return loads_number_texts(pairs[i][0].raw()).get("data")

    return records_to_table(records, KINDS[kind], columns=(), number_texts=number_texts)
