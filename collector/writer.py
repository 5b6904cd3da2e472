"""Group commit: the ingest requests that arrive together are applied in one transaction.

Each request waits for its own result; each batch is still claimed by its identity, so
exactly-once holds per batch. Under load many batches share a transaction (far fewer
statements and commits per batch): the writer takes everything that queued while the last
group was being written, up to ``max_group``. Alone, a batch is applied at once. A group
that fails for anything but the database being unavailable is retried batch by batch, so
one bad batch fails alone.

One writer thread per process keeps one database connection open across groups (no pool
checkout or ping per transaction); a connection that fails is dropped and the next group
opens a new one. Requests on the event loop await ``submit``; a blocking caller uses
``submit_blocking``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from concurrent.futures import Future

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError

from collector.ingest import IngestResult, SeenGpus, apply_batches
from collector.schemas import BatchIn

MAX_GROUP = 256
Waiter = asyncio.Future | Future  # an event loop's future (with its loop), or a blocked thread's
_Item = tuple[BatchIn, Waiter, asyncio.AbstractEventLoop | None]
Outcome = tuple[Waiter, IngestResult | None, BaseException | None]


class GroupWriter:
    def __init__(self, engine: Engine, max_group: int = MAX_GROUP) -> None:
        self.engine, self.max_group = engine, max_group
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._conn: Connection | None = None
        self._seen = SeenGpus()

    def start(self) -> None:
        self._thread.start()

    async def submit(self, batch: BatchIn) -> IngestResult:
        """Apply ``batch`` (with whatever arrives alongside); returns once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestResult] = loop.create_future()
        self._queue.put((batch, future, loop))
        return await future

    def submit_blocking(self, batch: BatchIn) -> IngestResult:
        """``submit`` for a caller off the event loop; blocks until committed."""
        future: Future[IngestResult] = Future()
        self._queue.put((batch, future, None))
        return future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            group = [first]
            while len(group) < self.max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(item)
            self._apply(group)
        self._drop_connection()

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            self._drop_connection()
            self._conn = self.engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a dead connection may fail to close; it is gone either way
                self._conn.close()
            self._conn = None

    def _apply(self, group: list[_Item]) -> None:
        _settle_all(group, self._outcomes(group))

    def _outcomes(self, group: list[_Item]) -> list[Outcome]:
        try:
            results = apply_batches(self._connection(), [batch for batch, _, _ in group], time.time(), self._seen)
        except (OperationalError, InterfaceError) as exc:  # the database is unavailable: all retry
            self._drop_connection()
            return [(waiter, None, exc) for _, waiter, _ in group]
        except Exception as exc:
            if len(group) == 1:
                return [(group[0][1], None, exc)]
            return [outcome for item in group for outcome in self._outcomes([item])]
        return [(waiter, result, None) for (_, waiter, _), result in zip(group, results, strict=True)]


def _settle_all(group: list[_Item], outcomes: list[Outcome]) -> None:
    """Hand each waiter its outcome: one wake-up per event loop for the whole group."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for (_, _, loop), outcome in zip(group, outcomes, strict=True):
        if loop is None:
            _settle(outcome)
        else:
            by_loop.setdefault(loop, []).append(outcome)
    for loop, outcomes_here in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop (shutdown): nobody waits any more
            loop.call_soon_threadsafe(_settle_each, outcomes_here)


def _settle_each(outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        _settle(outcome)


def _settle(outcome: Outcome) -> None:
    waiter, result, error = outcome
    if waiter.cancelled():  # the client went away; the batch is committed (or not) all the same
        return
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(result)
