"""Statements compiled once per dialect and run through the driver's bulk paths.

The ingest statements are defined with SQLAlchemy Core (``collector.ingest``,
``collector.network``); building and compiling them for every group of batches cost more
than executing them. ``Prepared`` compiles a statement once for a dialect and keeps the
driver's SQL text and the order of its parameters; ``run_many`` hands every row of a group
to the driver in one call: ``sqlite3``'s ``executemany`` (a loop in C over one prepared
statement), psycopg's ``executemany`` (pipelined: one round trip for all rows).
``copy_rows`` is PostgreSQL's ``COPY … FROM STDIN``, the bulk load, for plain inserts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ClauseElement

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Prepared:
    """One statement compiled for one dialect: driver SQL, and how a row becomes its parameters."""

    sql: str
    params: Callable[[Row], Any]
    keys: frozenset[str] = frozenset()  # what a row may hold: a row with more is refused, not cut short

    @classmethod
    def compile(cls, stmt: ClauseElement, dialect: Dialect, keys: Sequence[str]) -> Prepared:
        """``stmt`` compiled for ``dialect``, taking each row's ``keys`` (an INSERT's columns)."""
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        fixed = {name: value for name, value in compiled.params.items() if name not in keys}
        for column in getattr(compiled, "insert_prefetch", ()):  # columns the row leaves to their default
            if column.key not in keys:
                if column.default is None or not column.default.is_scalar:
                    raise ValueError(f"column {column.key!r}: a prepared INSERT needs it in the row or a constant default")
                fixed[column.key] = column.default.arg
        positions = getattr(compiled, "positiontup", None)  # a SQLCompiler's; None for named parameters
        if positions is not None:  # qmark (sqlite3): a tuple in the statement's order
            order = tuple(positions)
            getters = [(name, name in keys, fixed.get(name)) for name in order]
            if not fixed and len(order) > 1:
                return cls(compiled.string, itemgetter(*order), frozenset(keys))  # a tuple of the row's values, in C
            return cls(compiled.string, lambda row: tuple([row[n] if k else v for n, k, v in getters]), frozenset(keys))
        if not fixed:  # pyformat (psycopg): the row itself
            return cls(compiled.string, lambda row: row, frozenset(keys))
        return cls(compiled.string, lambda row: {**fixed, **row}, frozenset(keys))

    def check(self, row: Row) -> None:
        """A row with a column this statement was not compiled for would lose it: refuse it."""
        extra = set(row) - self.keys
        if extra:
            raise ValueError(f"row columns {sorted(extra)}: not in the prepared statement's {sorted(self.keys)}; "
                             "add them to its keys")

    def run_many(self, conn: Connection, rows: Iterable[Row]) -> None:
        rows = list(rows)
        if rows:
            self.check(rows[0])
        params = [self.params(row) for row in rows]
        if params:
            cursor = conn.connection.cursor()
            try:
                with driver_errors(conn, self.sql):
                    cursor.executemany(self.sql, params)
            finally:
                cursor.close()


class StatementCache:
    """Prepared statements by (dialect name, statement name), each built once per process."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str], Prepared] = {}

    def get(self, dialect: Dialect, name: str, build: Callable[[Dialect], Prepared]) -> Prepared:
        key = (dialect.name, name)
        prepared = self._built.get(key)
        if prepared is None:
            prepared = self._built[key] = build(dialect)
        return prepared


def copy_rows(conn: Connection, table: Table, keys: Sequence[str], rows: Iterable[Row]) -> None:
    """PostgreSQL: ``COPY table (keys) FROM STDIN`` of ``rows`` (psycopg formats them in C)."""
    cursor = conn.connection.cursor()
    columns = ", ".join(f'"{key}"' for key in keys)
    sql = f'COPY "{table.name}" ({columns}) FROM STDIN'
    try:
        with driver_errors(conn, sql), cursor.copy(sql) as copy:
            for n, row in enumerate(rows):
                if n == 0:
                    Prepared(sql, dict, frozenset(keys)).check(row)
                copy.write_row([row[key] for key in keys])
    finally:
        cursor.close()


@contextmanager
def driver_errors(conn: Connection, sql: str) -> Iterator[None]:
    """The driver's exceptions as SQLAlchemy's (OperationalError, IntegrityError, …), as if the
    statement had gone through ``Connection.execute``; a lost connection is invalidated."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, connection_invalidated=lost,
                                  dialect=conn.dialect) from exc
