"""Opening the database for a command: every failure one line naming the cause and the fix."""

from __future__ import annotations

from sqlalchemy import Engine

from api.cli.client import CliError


def db_failure(db: str, exc: Exception) -> CliError:
    """A database error as one line: the driver's first line, and what to check."""
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CliError(f"--db {db}: cannot use the database ({cause}); check that it runs and the URL "
                    "(host, port, user, database name) is right")


def open_db(db: str, *, prepare_schema: bool = True, must_exist: bool = False) -> Engine:
    """An engine on ``db``, its schema created or checked (``prepare_schema``). ``must_exist``:
    a SQLite file that is not there is an error, not a new empty database."""
    from sqlalchemy.exc import SQLAlchemyError

    from collector.db import make_engine, sqlite_file
    from collector.schema import SchemaOutdated, prepare

    try:
        engine = make_engine(db)  # connects to nothing yet
        path = sqlite_file(db)
        if must_exist and path is not None and not path.is_file():
            raise CliError(f"--db {db}: no database file at {path}; check the path "
                           "(`gpuledger server` or `gpuledger db upgrade` creates a new one)")
        if prepare_schema:
            prepare(engine, db)
        else:
            with engine.connect():
                pass
    except (SchemaOutdated, ValueError) as exc:
        raise CliError(str(exc)) from None
    except SQLAlchemyError as exc:
        raise db_failure(db, exc) from None
    return engine
