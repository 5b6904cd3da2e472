"""Schema migrations (Alembic), for SQLite and PostgreSQL alike.

A new, empty database is created at the newest revision; an existing one is only ever
upgraded on request (``gpuledger db upgrade``): the server refuses to start on an older
schema rather than change a production database by surprise.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaOutdated(RuntimeError):
    """The database's schema is older (or newer) than this code."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def is_empty(engine: Engine) -> bool:
    return not inspect(engine).get_table_names()


def prepare(engine: Engine, db_url_for_message: str) -> str:
    """Create an empty database at head, or check an existing one is at head; returns what was done."""
    if is_empty(engine):
        upgrade(engine)
        return f"created the schema at revision {head_revision()}"
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutdated(
            f"the database schema is at revision {current or 'none'}, this gpuledger needs {head}: "
            f"back up the database, then run `gpuledger db upgrade --db {db_url_for_message}`"
        )
    return f"schema at revision {head}"
