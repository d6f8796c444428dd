"""The `tutormax` command: a thin Typer layer over the library.

Heavy imports (database, Redis) stay inside the commands, so `--help` needs neither.
"""

from __future__ import annotations

import typer

from ..config import load_dotenv
from . import db, dlq, enrich, generate, publish, stats, worker

app = typer.Typer(
    name="tutormax",
    help="Enrich tutoring-platform records (tutors, sessions, feedback) and persist them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("enrich", no_args_is_help=True)(enrich.enrich)
app.command("generate")(generate.generate)
app.add_typer(db.app, name="db")
app.command("publish", no_args_is_help=True)(publish.publish)
app.command("worker")(worker.worker)
app.command("stats")(stats.stats)
app.add_typer(dlq.app, name="dlq")


def main() -> None:
    load_dotenv()
    _tune_arrow()
    app()


def _tune_arrow() -> None:
    """Use jemalloc with immediate page return when Arrow ships it: measured on 1M sessions,
    peak RSS 239 MiB against 337 MiB with the default mimalloc, at the same speed."""
    import os

    import pyarrow as pa

    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:  # the user's choice wins
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        pass


__all__ = ["app", "main"]
