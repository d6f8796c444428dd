"""Alembic's environment for tutormax's own migrations (run from tutormax_cli.store.migrate;
no alembic.ini: the Config is built in code)."""

from __future__ import annotations

from alembic import context

from tutormax_cli.store.migrate import VERSION_TABLE

config = context.config


def run() -> None:
    if context.is_offline_mode():  # `tutormax db upgrade --sql`: print, touch nothing
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            literal_binds=True,
            version_table=VERSION_TABLE,
            render_as_batch=config.get_main_option("sqlalchemy.url", "").startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes["connection"]  # inside the caller's transaction and lock
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run()
