"""Deliver batches to the collector, oldest first, until each is acknowledged."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import httpx

log = logging.getLogger(__name__)


class Pusher:
    def __init__(self, collector_url: str, client: httpx.Client | None = None, max_queued: int = 100_000) -> None:
        self.url = collector_url.rstrip("/") + "/v1/ingest"
        self.client = client or httpx.Client(timeout=10.0)
        self.queue: deque[dict[str, Any]] = deque()
        self.max_queued = max_queued
        self.rejected = 0

    def submit(self, batch: dict[str, Any]) -> None:
        if len(self.queue) >= self.max_queued:
            log.error("push queue full (%d batches): collector unreachable too long", len(self.queue))
        self.queue.append(batch)

    def flush(self) -> bool:
        """Send queued batches in order; True when the queue is empty afterwards."""
        while self.queue:
            batch = self.queue[0]
            try:
                response = self.client.post(self.url, json=batch)
            except httpx.HTTPError as exc:
                log.warning("collector %s unreachable (%s); %d batches queued", self.url, exc, len(self.queue))
                return False
            if response.status_code >= 500 or response.status_code == 429:
                log.warning("collector answered %d; %d batches queued", response.status_code, len(self.queue))
                return False
            if response.status_code >= 400:
                # A batch the collector will never accept: retrying it forever would block the rest.
                self.rejected += 1
                log.error("collector rejected batch seq=%s: %s", batch["seq"], response.text[:500])
            self.queue.popleft()
        return True

    def close(self) -> None:
        self.client.close()
