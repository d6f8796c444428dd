"""Seeded synthetic tutors, sessions and feedback at any scale, as CSV, Parquet or JSON Lines.

Every generated row is valid per SPEC §1 and the three files are key-consistent: a
session's tutor is a generated tutor, a feedback's session is a generated session and its
tutor and student are that session's, and a feedback is submitted minutes to days after
its session ends.

How it stays fast, bounded and reproducible without numpy: randomness is *counter-based*.
Each value of row i is SplitMix64(key(seed, stream) + i·φ) computed with pyarrow.compute
on whole batches, where `stream` names the column (``"sessions.duration"``). So

* a batch needs nothing from the batches before it: memory is bounded by `batch_rows`,
  and the output does not depend on `batch_rows` at all;
* a feedback row recomputes its session's tutor, student and start from the session's
  number instead of keeping a million sessions in memory;
* the same seed gives byte-identical files (for one pyarrow version).

Parquet gets native types (schema.Type.arrow: tz-aware UTC timestamps, int64, bool,
list<string>). CSV and JSON Lines get what producers send: timestamps as ISO-8601 strings
in several UTC offsets (`Z`, `+05:30`, `-05:00`, none), `T` or space separators, optional
fractional seconds, bare dates for some onboarding dates; in CSV also booleans spelled
true/1/yes/t/… and lists as JSON arrays or `;`/`|` joined items; in JSON Lines numbers,
booleans and lists are JSON ones, and a third of the lines leave out their null fields.
The values are the same in every format (CSV cells read back per SPEC §1 give exactly the
Parquet values): a format only changes how they are written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pyarrow as pa

from ..errors import OutputError
from ..interrupts import uninterrupted
from .feedback import feedback_batch
from .formats import OUTPUTS
from .plan import Batch, Plan, make_plan
from .rng import Rng
from .sessions import sessions_batch
from .tutors import tutors_batch

__all__ = ["FORMATS", "Progress", "generate"]

FORMATS: dict[str, str] = {"csv": "csv", "parquet": "parquet", "jsonl": "jsonl"}

Progress = Callable[[str, int], None]

_Builder = Callable[[Rng, Plan, pa.Array], Batch]
_BUILDERS: dict[str, _Builder] = {
    "tutors": tutors_batch,
    "sessions": sessions_batch,
    "feedback": feedback_batch,
}


def generate(
    out_dir: Path,
    *,
    tutors: int,
    sessions: int,
    feedback: int,
    seed: int = 42,
    fmt: str = "csv",
    batch_rows: int = 100_000,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Write tutors.<ext>, sessions.<ext> and feedback.<ext> into out_dir; return kind -> path.

    Same arguments, same files (byte for byte, for one pyarrow version); `batch_rows` only
    bounds memory and never changes the data. `progress(kind, rows_written)` is called after
    every batch.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    for label, count in (("tutors", tutors), ("sessions", sessions), ("feedback", feedback)):
        if count < 0:
            raise ValueError(f"{label} must be >= 0, got {count}")
    if sessions and not tutors:
        raise ValueError("sessions need at least one tutor")
    if feedback and not sessions:
        raise ValueError("feedback needs at least one session")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = Rng(seed)
    plan = make_plan(tutors, sessions, feedback, seed)
    counts = {"tutors": tutors, "sessions": sessions, "feedback": feedback}
    paths: dict[str, Path] = {}
    for kind_name, builder in _BUILDERS.items():
        path = out_dir / f"{kind_name}.{FORMATS[fmt]}"
        paths[kind_name] = path
        _write_kind(
            path, fmt, kind_name, counts[kind_name], builder, rng, plan, batch_rows, progress
        )
    return paths


def _ranges(n: int, size: int) -> Iterator[tuple[int, int]]:
    if n == 0:
        yield 0, 0
        return
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _write_kind(
    path: Path,
    fmt: str,
    kind_name: str,
    n: int,
    builder: _Builder,
    rng: Rng,
    plan: Plan,
    batch_rows: int,
    progress: Progress | None,
) -> None:
    """Into `<path>.partial`, renamed to `path` once complete: a run that is stopped (Ctrl-C,
    SIGTERM, a full disk) never leaves a cut file under the real name, nor a `.partial`."""
    out = OUTPUTS[fmt]
    partial = path.with_name(path.name + ".partial")
    writer = None
    complete = False
    try:
        writer = out.open(partial)
        for start, stop in _ranges(n, batch_rows):
            idx = pa.array(range(start, stop), pa.uint64())
            writer.write(out.render(rng, builder(rng, plan, idx)))
            if progress is not None and stop > start:
                progress(kind_name, stop)
        writer.close()
        os.replace(partial, path)
        complete = True
    except OSError as exc:  # a full disk, a file-size limit (Arrow's I/O errors are OSErrors)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if not complete:
            with suppress(Exception):
                if writer is not None:
                    writer.close()
            uninterrupted(lambda: partial.unlink(missing_ok=True))
