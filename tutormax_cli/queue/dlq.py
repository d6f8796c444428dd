"""Dead-letter operations behind `tutormax dlq`: select, replay, drain (SPEC §6).

Replay puts a record back on its source stream with a fresh envelope and removes the dead
letter in one atomic step (streams.Streams.replay), so replaying twice re-queues once. A
dead letter whose source stream is not one of ours, or whose data is a raw poison entry
rather than a record, is reported and left in place. Drain writes the file completely
(fsync, then rename into place) before it deletes anything, and deletes only what it wrote;
an entry too big to read whole (not tutormax's: queue/streams/bounded.py) it leaves alone.

Stopped (`stop`, the CLI's first Ctrl-C or SIGTERM), replay ends after the dead letter in
hand; drain ends its export with nothing deleted and no file, but a deletion once begun is
finished: the file is in place by then. A stop at once ends either between two atomic
steps, and the run says exactly what was done (errors.Interrupted).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Interrupted, OutputError, UsageError
from ..interrupts import held
from ..json_bounds import dumps_as_written
from .envelope import MESSAGE_MAX_BYTES, wire_bytes
from .letters import DeadLetterRecord
from .streams import Streams

DELETE_CHUNK = 1000  # dead letters deleted in one MULTI/EXEC by drain


@dataclass(frozen=True)
class Selection:
    ids: tuple[str, ...] = ()
    kind: str | None = None
    error: str | None = None
    all: bool = False

    @property
    def empty(self) -> bool:
        return not (self.ids or self.kind or self.error or self.all)


def select(streams: Streams, sel: Selection) -> Iterator[DeadLetterRecord]:
    """Dead letters matching every given criterion, oldest first."""
    if sel.ids:
        found: Iterable[DeadLetterRecord] = (
            r for i in sel.ids if (r := streams.dead_letter_by_id(i)) is not None
        )
    else:
        found = streams.dead_letters()
    stream = streams.stream(sel.kind) if sel.kind else None
    for record in found:
        if stream and record.source_stream != stream:
            continue
        if sel.error and record.error != sel.error:
            continue
        yield record


def histogram(records: Iterable[DeadLetterRecord]) -> dict[str, dict[str, int]]:
    """Dead letters counted by error code and by source stream."""
    by_error: Counter[str] = Counter()
    by_stream: Counter[str] = Counter()
    for r in records:
        by_error[r.error] += 1
        by_stream[r.source_stream or "unknown"] += 1
    return {
        "by_error": dict(sorted(by_error.items())),
        "by_stream": dict(sorted(by_stream.items())),
    }


@dataclass
class ReplayResult:
    dry_run: bool
    selected: int = 0
    replayed: list[dict[str, str]] = field(default_factory=list)  # {"from": dlq id, "to": id}
    left: dict[str, list[str]] = field(default_factory=dict)  # reason → dead-letter ids
    not_found: list[str] = field(default_factory=list)
    histogram: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.left and not self.not_found

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "selected": self.selected,
            "replayed": len(self.replayed),
            "entries": self.replayed,
            "left": self.left,
            "not_found": self.not_found,
            "histogram": self.histogram,
        }


def replay(
    streams: Streams,
    sel: Selection,
    dry_run: bool = False,
    *,
    stop: Callable[[], bool] | None = None,
) -> ReplayResult:
    """Replay the selected dead letters. `stop` is asked before each dead letter; a stop
    ends the run with errors.Interrupted saying how many were replayed."""
    if sel.empty:
        raise UsageError("name dead-letter IDs, or use --kind, --error or --all")
    result = ReplayResult(dry_run)
    try:
        try:
            records = list(select(streams, sel))
            result.selected, result.histogram = len(records), histogram(records)
        except KeyboardInterrupt:
            raise Interrupted(
                " (nothing was replayed: the dead letters were being selected)"
            ) from None
        found = {r.entry_id for r in records}
        result.not_found = [i for i in sel.ids if i not in found]
        for record in records:
            if stop is not None and stop():
                raise Interrupted(_replayed_note(result))
            reason = why_not_replayable(streams, record)
            body = streams.replay_text(record) if reason is None else ""
            if reason is None and wire_bytes(body) > MESSAGE_MAX_BYTES:
                reason = (f"its replay would be over the {MESSAGE_MAX_BYTES:,}-byte message cap "
                          "(a worker would take it for poison)")  # fmt: skip
            if reason:
                result.left.setdefault(reason, []).append(record.entry_id)
            elif not dry_run:
                with held():  # a stop at once waits until the replay is counted
                    new_id = streams.replay(record, body)
                    if new_id is None:  # replayed or drained by someone else meanwhile
                        result.not_found.append(record.entry_id)
                    else:
                        result.replayed.append({"from": record.entry_id, "to": new_id})
    except KeyboardInterrupt:
        raise Interrupted(_replayed_note(result)) from None
    return result


def _replayed_note(result: ReplayResult) -> str:
    if result.dry_run:
        return " (dry run: nothing was replayed)"
    return (
        f" ({len(result.replayed):,} of {result.selected:,} selected dead letters were "
        "replayed; the others are still dead letters: replay them again)"
    )


def why_not_replayable(streams: Streams, record: DeadLetterRecord) -> str | None:
    if record.cut:
        return f"{record.cut.too_big}, not written by tutormax"
    source = record.source_stream
    if source is None or streams.kind_of(source) is None:
        return f"unknown source stream {source!r}"
    if record.source_id is None:
        return "no source entry id (not a text or whole number)"
    if record.raw_entry:
        return "poison: a raw entry, no record to replay"
    return None


def drain(
    streams: Streams, sel: Selection, out: Path, stop: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Export the selected dead letters to a JSON Lines file, then delete exactly those.

    `stop` is asked during the export: a stop there leaves no file and deletes nothing.
    Once the file is in place the deletion is finished whatever `stop` says (a stop at once
    ends it between two MULTI/EXECs), and a stop asked meanwhile ends the run after it,
    with errors.Interrupted saying what was written and deleted."""
    if str(out) == "-":
        raise UsageError(
            "--out -: drain deletes what it exported, so it writes a file it can fsync "
            "before it deletes; name a file (dlq list --json shows them on stdout)"
        )
    if out.exists():
        raise UsageError(f"--out {out}: exists already; drain never overwrites a file")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: no such directory {out.parent}")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    written: list[DeadLetterRecord] = []
    too_big: list[str] = []
    nothing = " (nothing was deleted, and no file written)"
    placed = asked = False
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for record in select(streams, Selection(kind=sel.kind, error=sel.error)):
                if stop is not None and stop():
                    raise Interrupted(nothing)
                if record.cut:  # someone else's entry, too big to read whole: not exported
                    too_big.append(record.entry_id)
                    continue
                fh.write(_line(record))
                written.append(record)
            fh.flush()
            os.fsync(fh.fileno())
        with held():  # in place, and known to be: a stop at once waits for both
            tmp.replace(out)
            placed = True
    except KeyboardInterrupt:
        if not placed:
            raise Interrupted(nothing) from None
        asked = True  # as the file went into place: it is there, so the deletion is due
    except OSError as exc:  # a full disk, a file-size limit, no permission: name the file
        raise OutputError(f"--out {out}: cannot write it: {exc.strerror or exc}{nothing}") from None
    finally:
        tmp.unlink(missing_ok=True)
    deleted: list[str] = []
    done = 0
    try:
        while done < len(written):
            with held():  # a stop at once waits until the chunk is counted
                deleted += streams.delete_dead_letters(written[done : done + DELETE_CHUNK])
                done = min(done + DELETE_CHUNK, len(written))
        # (inside the try: a stop at once between the last chunk and this look at the flag
        # said only "terminated by SIGTERM", once in ~200 runs under load)
        if asked or (stop is not None and stop()):
            raise Interrupted(_drained_note(streams, out, len(written), done))
    except KeyboardInterrupt:
        raise Interrupted(_drained_note(streams, out, len(written), done)) from None
    kept = set(deleted)
    gone = [r for r in written if r.entry_id not in kept]
    if gone:  # replayed or drained by another command meanwhile: not this file's to keep
        _rewrite(out, [r for r in written if r.entry_id in kept])
    return {
        "out": str(out),
        "written": len(written) - len(gone),
        "deleted": len(deleted),
        "gone": [r.entry_id for r in gone],
        "too_big": too_big,
        "dead_letter_stream": streams.dead_letter_key,
    }


def _line(record: DeadLetterRecord) -> str:
    """A dead letter's line in drain's file, as the stream holds it: Python's JSON (a NaN
    bare, so the checksum holds), each number as written (this file is the dead letters'
    only copy once drained; SPEC §6)."""
    return dumps_as_written(record.written(), sort_keys=False) + "\n"


def _rewrite(out: Path, records: list[DeadLetterRecord]) -> None:
    """The drained file again, holding only `records` (written aside, then put in place)."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(_line(record))
            fh.flush()
            os.fsync(fh.fileno())
        with held():
            tmp.replace(out)
    except OSError as exc:
        raise OutputError(
            f"--out {out}: cannot write it again without the dead letters replayed or drained "
            f"meanwhile by another command: {exc.strerror or exc} (the file holds them too)"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _drained_note(streams: Streams, out: Path, written: int, done: int) -> str:
    stream = streams.dead_letter_key
    if done == written:
        return f" ({out} holds the {written:,} dead letters drained, deleted from {stream})"
    return (
        f" ({out} holds {written:,} dead letters; the first {done:,} were deleted from "
        f"{stream}, the other {written - done:,} are still there too: drain again to export "
        "and delete them)"
    )
