"""Engines for the embedded default (SQLite) and production (PostgreSQL), and the one
dialect difference the ingest path needs: INSERT ... ON CONFLICT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, make_url

DEFAULT_DB_URL = "sqlite:///gpuledger.db"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str = DEFAULT_DB_URL) -> Engine:
    """An engine for ``url``; a SQLite file's folder is created if missing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    raise ValueError(f"--db {url!r}: expected a sqlite:/// or postgresql+psycopg:// URL")


def insert_for(conn: Connection | Dialect, table: Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing/_update`` on both backends."""
    dialect = conn.dialect if isinstance(conn, Connection) else conn
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
