"""`tutormax generate`: seeded synthetic data at any scale, for benchmarks and demos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import err, handle_errors, print_json
from .options import JsonFlag


@handle_errors
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write into.")] = Path(
        "generated"
    ),
    tutors: Annotated[int, typer.Option(help="Number of tutors.")] = 100,
    sessions: Annotated[int, typer.Option(help="Number of sessions.")] = 2_000,
    feedback: Annotated[int, typer.Option(help="Number of feedback records.")] = 1_500,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 42,
    fmt: Annotated[str, typer.Option("--format", help="csv, parquet or jsonl.")] = "csv",
    json_out: JsonFlag = False,
) -> None:
    """Write realistic, key-consistent tutors, sessions and feedback files.

    Example:

      tutormax generate --out data/ --sessions 1000000 --feedback 1000000 --format parquet
    """
    from ..errors import UsageError
    from ..files import check_format
    from ..generate import generate as run

    try:
        paths = run(out, tutors=tutors, sessions=sessions, feedback=feedback, seed=seed,
                    fmt=check_format(fmt))  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if json_out:
        print_json({kind: str(p) for kind, p in paths.items()})
    else:
        for kind, p in paths.items():
            err.print(f"{kind}: {p}", markup=False)
