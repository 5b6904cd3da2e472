"""Which of several collector processes on one database runs the periodic jobs.

``gpuledger server --workers N`` and collectors on several hosts share one PostgreSQL; the
periodic jobs (ending silent jobs, pruning raw intervals, fetching grid intensity) need to
run once, not once per process. The process that holds a PostgreSQL session-level advisory
lock runs them; the lock goes with its session, so when that process stops another takes
over at its next try. SQLite has one server process: it always holds the lease.
"""

from __future__ import annotations

import contextlib
import threading

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

LOCK_KEY = 0x67_70_75_6C_65_64_67_72  # "gpuledgr": one advisory-lock key for the scheduler


class SchedulerLease:
    def __init__(self, engine: Engine, key: int = LOCK_KEY) -> None:
        self.engine, self.key = engine, key
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def held(self) -> bool:
        """Whether this process runs the periodic jobs now (taking the lease when it is free)."""
        if self.engine.dialect.name != "postgresql":
            return True
        with self._lock:
            try:
                if self._conn is not None:
                    self._conn.execute(text("SELECT 1"))  # the session, and with it the lock, still there
                    return True
                conn = self.engine.connect()
                got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar()
                conn.commit()
                if got:
                    self._conn = conn
                else:
                    conn.close()
                return bool(got)
            except DBAPIError:
                self.release()
                return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.invalidate()  # closes the session itself (not back to the pool): the lock goes with it
            self._conn = None
