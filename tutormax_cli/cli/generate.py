"""`tutormax generate`: seeded synthetic data at any scale, for benchmarks and demos."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .common import err, handle_errors, print_json
from .options import FormatName, JsonFlag
from .progress import FileProgress


@handle_errors
def generate(
    out: Annotated[
        Path, typer.Option("--out", "-o", metavar="DIR", help="Directory to write into.")
    ] = Path("generated"),
    tutors: Annotated[int, typer.Option(metavar="N", help="Number of tutors.")] = 100,
    sessions: Annotated[int, typer.Option(metavar="N", help="Number of sessions.")] = 2_000,
    feedback: Annotated[int, typer.Option(metavar="N", help="Number of feedback records.")] = 1_500,
    seed: Annotated[
        int, typer.Option(metavar="N", help="Random seed (same seed, same files).")
    ] = 42,
    fmt: Annotated[
        FormatName, typer.Option("--format", help="Format of the files written.")
    ] = FormatName.csv,
    json_out: JsonFlag = False,
) -> None:
    """Write realistic, key-consistent tutors, sessions and feedback files.

    A progress bar on stderr (when it is a terminal), then what was written: each file and
    its rows, and the total rows, seconds and rows/s.

    Example:

      tutormax generate --out data/ --sessions 1000000 --feedback 1000000 --format parquet
    """
    from ..errors import UsageError
    from ..files.formats import check_format
    from ..generate import generate as run

    counts = {"tutors": tutors, "sessions": sessions, "feedback": feedback}
    ext = check_format(fmt.value)
    names = {kind: str(out / f"{kind}.{ext}") for kind in counts}
    started = time.perf_counter()
    with FileProgress(enabled=not json_out) as bar:

        def progress(kind: str, rows: int) -> None:
            bar.update(names[kind], kind, rows, rows / max(counts[kind], 1))

        try:
            paths = run(out, tutors=tutors, sessions=sessions, feedback=feedback, seed=seed,
                        fmt=ext, progress=progress)  # fmt: skip
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    seconds = time.perf_counter() - started
    if json_out:
        print_json({kind: str(p) for kind, p in paths.items()})
        return
    for kind, p in paths.items():
        err.print(f"{kind}: {p} ({counts[kind]:,} rows)", markup=False)
    rows = sum(counts.values())
    rate = f"{rows / seconds:,.0f}" if seconds > 0 else "-"
    err.print(
        f"wrote {len(paths)} files, {rows:,} rows in {seconds:.2f} s ({rate} rows/s)",
        markup=False,
    )
