"""Group commit: the ingest requests that arrive together are applied in one transaction.

Each request waits for its own result; each batch is still claimed by its identity, so
exactly-once holds per batch. Under load many batches share a transaction (far fewer
statements and commits per batch); alone, a batch is applied at once. A group that fails for
anything but the database being unavailable is retried batch by batch, so one bad batch
fails alone.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from collector.ingest import IngestResult, apply_batches
from collector.schemas import BatchIn

MAX_GROUP = 256
_Item = tuple[BatchIn, Future]


class GroupWriter:
    def __init__(self, engine: Engine, max_group: int = MAX_GROUP) -> None:
        self.engine, self.max_group = engine, max_group
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: BatchIn) -> IngestResult:
        """Apply ``batch`` (with whatever arrives alongside); blocks until it is committed."""
        future: Future = Future()
        self._queue.put((batch, future))
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

    def _apply(self, group: list[_Item]) -> None:
        try:
            results = apply_batches(self.engine, [batch for batch, _ in group], time.time())
        except (OperationalError, InterfaceError) as exc:  # the database is unavailable: all retry
            for _, future in group:
                future.set_exception(exc)
            return
        except Exception as exc:
            if len(group) == 1:
                group[0][1].set_exception(exc)
            else:
                for item in group:
                    self._apply([item])
            return
        for (_, future), result in zip(group, results, strict=True):
            future.set_result(result)
