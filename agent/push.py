"""Deliver batches to the collector, oldest first, until each is acknowledged.

A failure (collector unreachable, 5xx, 429, or 401/403 until the node's token is fixed) is retried with exponential backoff and jitter,
never sooner than the collector's Retry-After; the batches wait in the queue meanwhile.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import httpx

log = logging.getLogger(__name__)
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0


class BatchStore(Protocol):
    """Where batches wait: in memory, or in the disk spool (``agent.spool.Spool``)."""

    def put(self, batch: dict[str, Any], counters: Any = None) -> None: ...
    def peek(self) -> dict[str, Any] | None: ...
    def mark_sent(self, batch: dict[str, Any]) -> None: ...
    def ack(self, batch: dict[str, Any]) -> None: ...
    def __len__(self) -> int: ...


class MemoryQueue:
    """Batches in memory only: lost if the agent dies (run with --state-dir to spool to disk)."""

    def __init__(self) -> None:
        self._batches: deque[dict[str, Any]] = deque()

    def put(self, batch: dict[str, Any], counters: Any = None) -> None:
        self._batches.append(batch)

    def peek(self) -> dict[str, Any] | None:
        return self._batches[0] if self._batches else None

    def mark_sent(self, batch: dict[str, Any]) -> None:
        pass

    def ack(self, batch: dict[str, Any]) -> None:
        if self._batches and self._batches[0] is batch:
            self._batches.popleft()

    def __len__(self) -> int:
        return len(self._batches)


class Pusher:
    def __init__(
        self,
        collector_url: str,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        store: BatchStore | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = collector_url.rstrip("/") + "/v1/ingest"
        self.client = client or httpx.Client(timeout=10.0)
        self.queue: BatchStore = store if store is not None else MemoryQueue()
        self.rejected = 0
        self.failures = 0  # consecutive, for the backoff
        self.failed_attempts = 0
        self.last_success_s: float | None = None  # wall time of the last batch the collector took
        self._clock, self._wall_clock, self._rng = clock, wall_clock, rng or random.Random()
        self._retry_at = float("-inf")

    def submit(self, batch: dict[str, Any], counters: Any = None) -> None:
        """Keep the batch (and the counter readings it ends with) until the collector has it."""
        self.queue.put(batch, counters)

    def _backoff(self, retry_after_s: float = 0.0) -> None:
        self.failures += 1
        self.failed_attempts += 1
        delay_s = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (self.failures - 1)) * (0.5 + self._rng.random())
        self._retry_at = self._clock() + max(delay_s, retry_after_s)

    def flush(self, force: bool = False) -> bool:
        """Send queued batches in order; True when the queue is empty afterwards."""
        if not force and self._clock() < self._retry_at:
            return not self.queue
        while (batch := self.queue.peek()) is not None:
            self.queue.mark_sent(batch)  # before the POST: a batch maybe applied is never merged
            try:
                response = self.client.post(self.url, json=batch)
            except httpx.HTTPError as exc:
                self._backoff()
                log.warning("collector %s unreachable (%s); %d batches queued", self.url, exc, len(self.queue))
                return False
            if response.status_code >= 500 or response.status_code in (401, 403, 429):
                # Overloaded, down, or our token is not (yet) accepted: keep the batch, retry later.
                self._backoff(_retry_after_s(response))
                log.warning("collector answered %d; %d batches queued", response.status_code, len(self.queue))
                return False
            if response.status_code >= 400:
                # A batch the collector will never accept: retrying it forever would block the rest.
                self.rejected += 1
                log.error("collector rejected batch seq=%s: %s", batch["seq"], response.text[:500])
            else:
                self.last_success_s = self._wall_clock()
            self.queue.ack(batch)
            self.failures = 0
        return True

    def close(self) -> None:
        self.client.close()


def _retry_after_s(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0
