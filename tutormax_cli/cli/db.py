"""`tutormax db …`: schema management."""

from __future__ import annotations

import typer

from ..config import DEFAULT_DATABASE_URL
from .common import handle_errors, out, print_json
from .options import DbUrl, JsonFlag

app = typer.Typer(help="Database schema commands.", no_args_is_help=True)


@app.command("init")
@handle_errors
def init(db: DbUrl = None, json_out: JsonFlag = False) -> None:
    """Create the tutors, sessions and feedback tables (idempotent).

    Example:

      tutormax db init --db postgresql://app@localhost/tutoring
    """
    from ..config import mask_url
    from ..store import Store

    url = db or DEFAULT_DATABASE_URL
    with Store.connect(url) as store:
        store.init_schema()
        counts = store.row_counts()
    if json_out:
        print_json({"database": mask_url(url), "tables": counts})
    else:
        out.print(
            f"schema ready in {mask_url(url)}: "
            + ", ".join(f"{k} ({v:,} rows)" for k, v in counts.items()),
            markup=False,
        )
