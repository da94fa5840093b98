"""Apply or roll back read-model migrations: ``python -m db.migrate upgrade head``.

Uses the repo's alembic.ini wherever it is run from. The database URL comes from
``DATABASE_URL`` (or ``--database-url``), falling back to alembic.ini.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from alembic import command
from alembic.config import Config

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"

app = typer.Typer(
    help="Migrate the roomlog read-model database (Alembic).",
    add_completion=False,
    no_args_is_help=True,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Overrides DATABASE_URL for this run.",
        show_default=False,
    ),
]
SqlOnly = Annotated[bool, typer.Option("--sql", help="Print the SQL instead of running it (offline mode).")]


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic config bound to the repo's alembic.ini, independent of the cwd."""
    config = Config(str(ALEMBIC_INI))
    if database_url:
        # Read first by env.py; passed as an attribute rather than through
        # set_main_option so '%' in passwords is not configparser-interpolated.
        config.attributes["database_url"] = database_url
    return config


@app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
    sql: SqlOnly = False,
) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    command.upgrade(alembic_config(database_url), revision, sql=sql)


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")] = "-1",
    database_url: DatabaseUrl = None,
    sql: SqlOnly = False,
) -> None:
    """Downgrade the schema to REVISION (default: -1, one step back)."""
    command.downgrade(alembic_config(database_url), revision, sql=sql)


@app.command()
def current(database_url: DatabaseUrl = None) -> None:
    """Show the revision the database is at."""
    command.current(alembic_config(database_url), verbose=True)


if __name__ == "__main__":
    app()
