"""Deliver batches to the collector, oldest first, until each is acknowledged.

What an answer means for the batch (``outcome``):

* 2xx: delivered (a 200 with ``applied: false`` is a replay the collector already has).
* 422, 409: final, the collector itself refuses this batch (invalid; a conflicting replay or GPU
  time already stored): dropped and counted (``rejected``, ``conflicts``), so the rest flow.
* 401 or 403 with the collector's own JSON error body: the token is wrong for this node. Every
  batch would get the same answer, so the batch is set aside (below) rather than dropped:
  fixing the token loses nothing.
* 500 and other 5xx from the collector, ``SET_ASIDE_AFTER`` times in a row for one batch: that
  batch breaks the collector; it is set aside (kept, on disk with a spool), exported as a
  metric and retried on a long backoff (``ASIDE_BACKOFF_S`` doubling to ``ASIDE_BACKOFF_MAX_S``),
  so the batches behind it flow.
* Anything a proxy or an overloaded server can answer (no connection, 404, 405, 408, 429,
  502, 503, 504, 401/403 without the collector's body): retried with exponential backoff and
  jitter, never sooner than Retry-After, the batch kept at the head of the queue.
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
SET_ASIDE_AFTER = 3  # consecutive 5xx (not 502-504) for one batch
ASIDE_BACKOFF_S = 300.0
ASIDE_BACKOFF_MAX_S = 3600.0
TRANSIENT = frozenset({404, 405, 408, 429, 502, 503, 504})  # what a proxy or an overloaded server answers
FINAL = frozenset({409, 422})

DELIVERED, FINAL_OUTCOME, SET_ASIDE, RETRY = "delivered", "final", "set_aside", "retry"


class BatchStore(Protocol):
    """Where batches wait: in memory, or in the disk spool (``agent.spool.Spool``)."""

    def put(self, batch: dict[str, Any], counters: Any = None) -> None: ...
    def peek(self) -> dict[str, Any] | None: ...
    def mark_sent(self, batch: dict[str, Any]) -> None: ...
    def ack(self, batch: dict[str, Any]) -> None: ...
    def set_aside(self, batch: dict[str, Any]) -> None: ...
    def aside(self) -> list[dict[str, Any]]: ...
    def __len__(self) -> int: ...


class MemoryQueue:
    """Batches in memory only: lost if the agent dies (run with --state-dir to spool to disk)."""

    def __init__(self) -> None:
        self._batches: deque[dict[str, Any]] = deque()
        self._aside: list[dict[str, Any]] = []

    def put(self, batch: dict[str, Any], counters: Any = None) -> None:
        self._batches.append(batch)

    def peek(self) -> dict[str, Any] | None:
        return self._batches[0] if self._batches else None

    def mark_sent(self, batch: dict[str, Any]) -> None:
        pass

    def ack(self, batch: dict[str, Any]) -> None:
        if self._batches and self._batches[0] is batch:
            self._batches.popleft()
        elif any(b is batch for b in self._aside):
            self._aside = [b for b in self._aside if b is not batch]

    def set_aside(self, batch: dict[str, Any]) -> None:
        if self._batches and self._batches[0] is batch:
            self._aside.append(self._batches.popleft())

    def aside(self) -> list[dict[str, Any]]:
        return list(self._aside)

    def __len__(self) -> int:
        return len(self._batches) + len(self._aside)


def identity(batch: dict[str, Any]) -> tuple[Any, Any, Any]:
    return batch.get("node"), batch.get("boot_id"), batch.get("seq")


def outcome(response: httpx.Response, server_errors_in_a_row: int) -> str:
    """What the collector's answer means for the batch (see the module's docstring)."""
    status = response.status_code
    if status < 400:
        return DELIVERED
    if status in FINAL:
        return FINAL_OUTCOME
    if status in (401, 403):
        return SET_ASIDE if _collector_body(response) else RETRY
    if status >= 500 and status not in TRANSIENT and server_errors_in_a_row >= SET_ASIDE_AFTER:
        return SET_ASIDE
    if status >= 500 or status in TRANSIENT:
        return RETRY
    return FINAL_OUTCOME  # another 4xx: a request the collector will never accept


def _collector_body(response: httpx.Response) -> bool:
    """Whether the answer is the collector's own: a JSON object with a ``detail``."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "detail" in body


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
        self.rejected = 0  # batches the collector refused for good (422, other 4xx)
        self.conflicts = 0  # batches refused with 409: a conflicting replay, or GPU time already stored
        self.set_aside_total = 0
        self.failures = 0  # consecutive, for the backoff
        self.failed_attempts = 0
        self.last_success_s: float | None = None  # wall time of the last batch the collector took
        self._clock, self._wall_clock, self._rng = clock, wall_clock, rng or random.Random()
        self._retry_at = float("-inf")
        self._server_errors: tuple[Any, int] = (None, 0)  # (batch identity, consecutive 5xx)
        self._aside_retry: dict[tuple[Any, Any, Any], tuple[float, float]] = {}  # identity -> (when, backoff)

    def submit(self, batch: dict[str, Any], counters: Any = None) -> None:
        """Keep the batch (and the counter readings it ends with) until the collector has it."""
        self.queue.put(batch, counters)

    def _backoff(self, retry_after_s: float = 0.0) -> None:
        self.failures += 1
        self.failed_attempts += 1
        delay_s = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (self.failures - 1)) * (0.5 + self._rng.random())
        self._retry_at = self._clock() + max(delay_s, retry_after_s)

    def flush(self, force: bool = False) -> bool:
        """Send queued batches in order (and set-aside ones that are due); True when nothing waits."""
        if not force and self._clock() < self._retry_at:
            return not self.queue
        if not self._retry_aside():
            return False
        while (batch := self.queue.peek()) is not None:
            self.queue.mark_sent(batch)  # before the POST: a batch maybe applied is never merged
            try:
                response = self.client.post(self.url, json=batch)
            except httpx.HTTPError as exc:
                self._backoff()
                log.warning("collector %s unreachable (%s); %d batches queued", self.url, exc, len(self.queue))
                return False
            if not self._settle(batch, response):
                return False
        return not self.queue

    def _settle(self, batch: dict[str, Any], response: httpx.Response) -> bool:
        """Act on the head batch's answer; False when the queue must wait (backoff)."""
        key = identity(batch)
        in_a_row = self._server_errors[1] + 1 if self._server_errors[0] == key else 1
        result = outcome(response, in_a_row if response.status_code >= 500 else 0)
        self._server_errors = (key, in_a_row) if response.status_code >= 500 else (None, 0)
        if result == RETRY:
            self._backoff(_retry_after_s(response))
            log.warning("collector answered %d; %d batches queued", response.status_code, len(self.queue))
            return False
        if result == SET_ASIDE:
            self._set_aside(batch, response)
        else:
            self._done(batch, response, result)
        self.failures = 0
        return True

    def _done(self, batch: dict[str, Any], response: httpx.Response, result: str) -> None:
        if result == DELIVERED:
            self.last_success_s = self._wall_clock()
        elif response.status_code == 409:
            self.conflicts += 1
            log.error("collector refused batch seq=%s for good (409): %s", batch.get("seq"), response.text[:500])
        else:
            self.rejected += 1
            log.error("collector rejected batch seq=%s (%d): %s", batch.get("seq"), response.status_code, response.text[:500])
        self.queue.ack(batch)
        self._aside_retry.pop(identity(batch), None)

    def _set_aside(self, batch: dict[str, Any], response: httpx.Response) -> None:
        key = identity(batch)
        _, backoff_s = self._aside_retry.get(key, (0.0, ASIDE_BACKOFF_S / 2))
        backoff_s = min(ASIDE_BACKOFF_MAX_S, backoff_s * 2)
        self._aside_retry[key] = (self._clock() + backoff_s, backoff_s)
        self._server_errors = (None, 0)
        if any(identity(b) == key for b in self.queue.aside()):
            log.warning("set-aside batch seq=%s failed again (%d); next try in %.0f s", batch.get("seq"),
                        response.status_code, backoff_s)
            return
        self.queue.set_aside(batch)
        self.set_aside_total += 1
        log.error("collector answered %d for batch seq=%s: set aside, retried in %.0f s; the batches behind it go on: %s",
                  response.status_code, batch.get("seq"), backoff_s, response.text[:500])

    def _retry_aside(self) -> bool:
        """Post the set-aside batches whose time has come; False when the collector is unreachable."""
        now = self._clock()
        for batch in self.queue.aside():
            when, _ = self._aside_retry.setdefault(identity(batch), (now + ASIDE_BACKOFF_S, ASIDE_BACKOFF_S))
            if when > now:
                continue
            try:
                response = self.client.post(self.url, json=batch)
            except httpx.HTTPError as exc:
                self._backoff()
                log.warning("collector %s unreachable (%s)", self.url, exc)
                return False
            result = outcome(response, SET_ASIDE_AFTER if response.status_code >= 500 else 0)
            if result in (SET_ASIDE, RETRY):
                self._set_aside(batch, response)
            else:
                self._done(batch, response, result)
        return True

    def close(self) -> None:
        self.client.close()


def _retry_after_s(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("Retry-After", 0))
    except ValueError:
        return 0.0
