"""The `tutormax` command: a thin Typer layer over the library.

Heavy imports (database, Redis) stay inside the commands, so `--help` needs neither.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from . import db, dlq, enrich, generate, publish, refresh, stats, worker
from .common import load_settings

app = typer.Typer(
    name="tutormax",
    help="Enrich tutoring-platform records (tutors, sessions, feedback) and persist them.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, …)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("tutormax")
        except PackageNotFoundError:  # run from a checkout that was never installed
            from .. import __version__ as v
        typer.echo(f"tutormax {v}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Enrich tutoring-platform records (tutors, sessions, feedback) and persist them."""
    load_settings()  # `.env`, then the environment: once, before the command reads its options


def _readable_argument_help() -> None:
    """Arguments as people write them in help: `PATH...` and `[ID...]`, not Typer 0.2x's
    `{PATH...}...`, `[[ID...]]...` and `<list[Path]>` beside our own metavars. A small,
    guarded override of two TyperArgument methods (tests/test_cli.py checks the result);
    on a Typer without them, its own rendering stays."""
    from typer.core import TyperArgument

    if not hasattr(TyperArgument, "_usage_display_name"):
        return
    shown = TyperArgument.display_type_rich

    def usage_name(self: TyperArgument) -> str:
        name = self.display_name_raw
        if self.nargs != 1 and "..." not in name:
            name += "..."
        return name if self.required or name.startswith("[") else f"[{name}]"

    def type_shown(self: TyperArgument, ctx: Any) -> str | None:
        return None if self.metavar else shown(self, ctx)

    TyperArgument._usage_display_name = usage_name  # type: ignore[method-assign]
    TyperArgument.display_type_rich = type_shown  # type: ignore[method-assign,assignment]


_readable_argument_help()
app.command("enrich", no_args_is_help=True)(enrich.enrich)
app.command("generate")(generate.generate)
app.add_typer(db.app, name="db")
app.command("refresh")(refresh.refresh)
app.command("publish", no_args_is_help=True)(publish.publish)
app.command("worker")(worker.worker)
app.command("stats")(stats.stats)
app.add_typer(dlq.app, name="dlq")


def main() -> None:
    _tune_arrow()
    app()


def _tune_arrow() -> None:
    """Use jemalloc with immediate page return when Arrow ships it: a lower peak memory than
    the default mimalloc at the same speed (README, Performance)."""
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
