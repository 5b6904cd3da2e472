"""Clocks the agent loop runs on: the wall clock, or a manual one for tests and backfills."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class WallClock:
    def __init__(self) -> None:
        self._woken = threading.Event()

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._woken.wait(seconds)

    def wake(self) -> None:
        """End the current and every later sleep at once (the agent is stopping)."""
        self._woken.set()


class ManualClock:
    """Time moves only when the loop sleeps: runs hours of simulated time in moments."""

    def __init__(self, start_s: float) -> None:
        self.time_s = start_s

    def now(self) -> float:
        return self.time_s

    def sleep(self, seconds: float) -> None:
        self.time_s += max(seconds, 0.0)
