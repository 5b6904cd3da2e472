"""Engines for the embedded default (SQLite) and production (PostgreSQL), and the one
dialect difference the ingest path needs: INSERT ... ON CONFLICT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DB_URL = "sqlite:///gpuledger.db"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class DatabaseUrlError(ValueError):
    """A --db URL that cannot work; the message names it and the fix."""


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other backends and in-memory databases)."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _parse(url: str) -> Any:
    try:
        return make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(f"--db {url!r} is not a database URL: expected sqlite:///FILE (sqlite:////ABSOLUTE/PATH) "
                               "or postgresql+psycopg://USER@HOST/DB") from None


def make_engine(url: str = DEFAULT_DB_URL) -> Engine:
    """An engine for ``url``. A SQLite file's folder must exist: a mistyped path is refused, not created."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is not None and not path.parent.is_dir():
            raise DatabaseUrlError(f"--db {url!r}: the directory {str(path.parent)!r} does not exist; "
                                   f"create it (mkdir -p {path.parent}) or fix the path")
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    raise DatabaseUrlError(f"--db {url!r}: expected a sqlite:///FILE or postgresql+psycopg://USER@HOST/DB URL")


def insert_for(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing/_update`` on both backends."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
