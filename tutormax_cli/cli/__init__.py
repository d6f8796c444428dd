"""The `tutormax` command: a thin Typer layer over the library.

Heavy imports (database, Redis) stay inside the commands, so `--help` needs neither.
"""

from __future__ import annotations

import typer

from ..config import load_dotenv
from . import db, enrich, generate

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


def main() -> None:
    load_dotenv()
    app()


__all__ = ["app", "main"]
