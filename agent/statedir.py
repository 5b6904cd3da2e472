"""Where the agent keeps its state, and what it does when that place fails.

By default (no ``--state-dir``) the agent keeps its spool and counter readings in
``/var/lib/gpuledger-agent`` when it can write there (root, the systemd unit), else in the
user's state directory (``$XDG_STATE_HOME/gpuledger-agent``, by default
``~/.local/state/gpuledger-agent``), so a restart never loses the gap.

A full or read-only state directory never stops the agent: batches that cannot be spooled
wait in memory (``FallbackStore``); the counter readings, padded to twice their size, are
rewritten in place on a full disk (no new block needed), and where even that fails the older
reading is removed (``SafeCounterState``: a stale reading would count the energy since it
twice at the next start); the agent warns once and exports ``gpuledger_agent_state_degraded`` and
``gpuledger_agent_state_write_failures_total``. Once a batch went to memory, the readings kept
inside older spooled batches are stale too: an empty marker file, ``counters.stale`` (it
needs no data block on a full disk), says so until the next reading is saved. At start,
readings in a directory the agent cannot write are not used: they may be stale, and could not
be removed once used.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.spool import Spool
from agent.state import FORMAT, CounterState, SavedGpu, to_json, write_atomic

log = logging.getLogger(__name__)

SYSTEM_STATE_DIR = Path("/var/lib/gpuledger-agent")


def default_state_dir(system_dir: Path = SYSTEM_STATE_DIR, environ: dict[str, str] | None = None) -> Path:
    """``system_dir`` when it is (or can be made) writable, else the user's state directory."""
    env = os.environ if environ is None else environ
    if _writable(system_dir):
        return system_dir
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "gpuledger-agent"


def _writable(directory: Path) -> bool:
    probe = directory
    while not probe.exists():  # the first existing ancestor decides whether it can be created
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


@dataclass(slots=True)
class StateHealth:
    """Shared by the spool wrapper and the counter state: is the state directory usable?"""

    directory: Path
    write_failures: int = 0
    failing: dict[str, bool] = field(default_factory=dict)  # per kind of write: did the last one fail?
    warned: bool = False
    logged: set[str] = field(default_factory=set)

    @property
    def degraded(self) -> bool:
        return any(self.failing.values())

    @property
    def marker(self) -> Path:
        return self.directory / "counters.stale"

    def readings_stale(self) -> bool:
        return self.marker.exists()

    def mark_readings_stale(self) -> None:
        try:
            self.marker.touch()
        except OSError as exc:
            self.error_once("marker", "cannot create %s (%s): remove the state directory's counter readings before "
                            "the next start, or the time since them would be counted again", self.marker, exc.strerror)

    def error_once(self, what: str, message: str, *args: Any) -> None:
        if what not in self.logged:
            self.logged.add(what)
            log.error(message, *args)

    def readings_saved(self) -> None:
        with contextlib.suppress(OSError):
            self.marker.unlink(missing_ok=True)

    def failed(self, what: str, exc: OSError) -> None:
        self.write_failures += 1
        self.failing[what] = True
        if not self.warned:
            self.warned = True
            log.warning("state directory %s: cannot %s (%s); running from memory: batches wait in memory and a "
                        "restart may lose the time since the last saved reading (never counted twice). "
                        "Metric gpuledger_agent_state_degraded is 1 until a write succeeds again.",
                        self.directory, what, exc.strerror or exc)

    def succeeded(self, what: str) -> None:
        self.failing[what] = False


class FallbackStore:
    """The disk spool, with batches it cannot store kept in memory instead."""

    def __init__(self, spool: Spool, health: StateHealth) -> None:
        self.spool, self.health = spool, health
        self.memory: deque[dict[str, Any]] = deque()
        self.memory_aside: list[dict[str, Any]] = []  # set aside while in memory

    def put(self, batch: dict[str, Any], counters: Any = None) -> None:
        try:
            self.spool.put(batch, counters)
        except OSError as exc:
            self.health.failed("spool a batch", exc)
            self.health.mark_readings_stale()  # the spooled batches' readings are behind what is delivered
            self.memory.append(batch)
        else:
            self.health.succeeded("spool a batch")

    def peek(self) -> dict[str, Any] | None:
        try:
            batch = self.spool.peek()
        except OSError as exc:
            self.health.failed("read the spool", exc)
            batch = None
        else:
            self.health.succeeded("read the spool")
        if batch is not None:
            return batch
        return self.memory[0] if self.memory else None

    def mark_sent(self, batch: dict[str, Any]) -> None:
        if self.memory and self.memory[0] is batch:
            return
        try:
            self.spool.mark_sent(batch)
        except OSError as exc:  # it cannot be marked: take it off the disk, where it could be merged
            self.health.failed("mark a batch sent", exc)
            self._off_disk(batch)
        else:
            self.health.succeeded("mark a batch sent")

    def _off_disk(self, batch: dict[str, Any]) -> None:
        try:
            self.spool.ack(batch)
        except OSError:  # left on disk: sent again after a restart, applied once
            self._forget(batch)
        self.memory.appendleft(batch)

    def _forget(self, batch: dict[str, Any]) -> None:
        """Drop a batch whose file cannot be removed from the spool's index, so that ``peek`` moves on."""
        with self.spool._lock:
            entry = self.spool._entry(batch)
            if entry is not None:
                self.spool._forget(entry)

    def set_aside(self, batch: dict[str, Any]) -> None:
        """Out of the queue, retried apart; on disk where it is, else in memory."""
        if self.memory and self.memory[0] is batch:
            self.memory_aside.append(self.memory.popleft())
            return
        try:
            self.spool.set_aside(batch)
        except OSError as exc:  # it cannot be moved on disk: keep it aside in memory
            self.health.failed("set a batch aside", exc)
            self._off_disk(batch)
            self.memory.popleft()
            self.memory_aside.append(batch)

    def aside(self) -> list[dict[str, Any]]:
        try:
            on_disk = self.spool.aside()
        except OSError as exc:
            self.health.failed("read the set-aside batches", exc)
            on_disk = []
        return on_disk + self.memory_aside

    def ack(self, batch: dict[str, Any]) -> None:
        if self.memory and self.memory[0] is batch:
            self.memory.popleft()
            return
        if any(b is batch for b in self.memory_aside):
            self.memory_aside = [b for b in self.memory_aside if b is not batch]
            return
        try:
            self.spool.ack(batch)
        except OSError as exc:  # left on disk: re-sent after a restart, and the collector applies it once
            self.health.failed("remove an acknowledged batch", exc)
            self._forget(batch)
        else:
            self.health.succeeded("remove an acknowledged batch")

    def latest_counters(self) -> Any:
        """The newest spooled batch's readings, unless they may be behind what was delivered: marked stale,
        or a spool the agent cannot write (acknowledged batches it could not remove)."""
        if self.health.readings_stale() or not os.access(self.spool.dir, os.W_OK):
            return None
        return self.spool.latest_counters()

    def bytes(self) -> int:
        return self.spool.bytes()

    def __len__(self) -> int:
        return len(self.spool) + len(self.memory) + len(self.memory_aside)


class SafeCounterState(CounterState):
    """Counter readings that are either current or absent, never stale."""

    def __init__(self, path: str | Path, health: StateHealth) -> None:
        super().__init__(path)
        self.health = health

    def save(self, gpus: list[SavedGpu]) -> None:
        data = json.dumps({"format": FORMAT, "gpus": to_json(gpus)}, separators=(",", ":"), allow_nan=False).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Padded to twice its size: room to be rewritten in place when the disk is full.
            write_atomic(self.path, data + b" " * len(data))
        except OSError as exc:
            self.health.failed("save the counter readings", exc)
            if exc.errno == errno.ENOSPC and self._rewrite_in_place(data):
                self.health.readings_saved()
                return
            self.health.mark_readings_stale()
            try:
                self.path.unlink(missing_ok=True)
            except OSError as unlink_exc:
                self.health.error_once("unlink", "cannot remove the stale counter readings %s (%s): remove it before "
                                       "the next start, or its gap would be counted again", self.path, unlink_exc.strerror)
        else:
            self.health.succeeded("save the counter readings")
            self.health.readings_saved()

    def _rewrite_in_place(self, data: bytes) -> bool:
        """A full disk has no block for a new file, but the old file's blocks can be overwritten: the
        readings (and trailing blanks, which JSON ignores) over the same length, in one write."""
        try:
            size = self.path.stat().st_size
            if len(data) > size:
                return False
            fd = os.open(self.path, os.O_WRONLY)
            try:
                written = os.write(fd, data + b" " * (size - len(data)))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            return False
        return written == size

    def load(self) -> dict[str, SavedGpu]:
        if self.path.parent.exists() and not os.access(self.path.parent, os.W_OK):
            if self.path.exists():
                log.warning("state directory %s is not writable: its saved counter readings may be stale and are not "
                            "used (the time the agent was down is not accounted)", self.path.parent)
            return {}
        if self.health.readings_stale():
            log.warning("the counter readings in %s are marked stale (%s): the time the agent was down is not accounted",
                        self.path.parent, self.health.marker)
            return {}
        return super().load()
