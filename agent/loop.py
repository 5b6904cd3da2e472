"""The agent's loop: sample every interval, cut intervals, push a batch every push interval."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent import __version__
from agent.attribution import Attributor, Owners
from agent.clock import Clock
from agent.energy import EnergyStep
from agent.gpu import GpuSample, GpuSource
from agent.intervals import IntervalCutter
from agent.network import NetworkCutter, job_shares, node_step
from agent.push import Pusher
from agent.resume import gap_steps, saved_readings
from agent.roce import PortReading, PortTotals
from agent.segments import Piece, Segments
from agent.split import UNALLOCATED, Split, split_gpu
from agent.state import CounterState, from_json, newest, to_json

log = logging.getLogger(__name__)


class PortSource(Protocol):
    def read(self) -> list[PortReading]: ...


@dataclass(frozen=True, slots=True)
class NodeLabels:
    node: str
    cluster: str
    datacenter: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the last cycle saw, replaced whole after every cycle (read by the metrics endpoint)."""

    samples: tuple[GpuSample, ...] = ()
    owners: dict[int, Owners] = field(default_factory=dict)
    ports: tuple[PortReading, ...] = ()
    gpus_lost: int = 0


class Agent:
    def __init__(
        self,
        source: GpuSource,
        attributor: Attributor,
        pusher: Pusher,
        labels: NodeLabels,
        clock: Clock,
        interval_s: float = 1.0,
        push_interval_s: float = 10.0,
        simulated: bool = False,
        ports: PortSource | None = None,
        state: CounterState | None = None,
        epoch: str | None = None,
        state_health: Any = None,
    ) -> None:
        self.source, self.attributor, self.pusher = source, attributor, pusher
        self.labels, self.clock = labels, clock
        self.interval_s, self.push_interval_s = interval_s, push_interval_s
        self.simulated = simulated
        self.boot_id = str(uuid.uuid4())
        self.seq = 0
        self._prev: dict[int, GpuSample] = {}
        self._owners: dict[int, Owners] = {}
        self._splits: dict[int, Split] = {}
        self._lost: set[int] = set()
        self.segments = Segments()
        self._lazy_energy = hasattr(source, "read_energy")  # read the counter only where needed
        self._stop = threading.Event()
        self.gpus = {info.index: info for info in source.open()}
        self.cutter = IntervalCutter(self.gpus)
        self.ports = ports
        self.network = NetworkCutter()
        self._prev_ports: list[PortReading] | None = None
        self._prev_ports_s = 0.0
        self.state, self.epoch, self.state_health = state, epoch, state_health
        self.snapshot = Snapshot()
        self.port_totals = PortTotals()
        self.counter_resets: Counter[int] = Counter()  # per GPU index
        self.on_cycle: Callable[[float], None] | None = None  # called with each cycle's seconds
        spooled = getattr(pusher.queue, "latest_counters", lambda: None)()
        self._saved = newest(state.load() if state else {}, from_json(spooled or []))

    def tick(self, boundary: bool = True) -> None:
        """Read every GPU and port once; account the step since the last read to the previous owners.

        The energy counter is read at a ``boundary`` (a push follows), at a GPU's first sample
        and where its owners changed; in between, steps wait in ``segments``."""
        started = time.perf_counter()
        now_s = self.clock.now()
        # Where the counter is needed anyway, read it with the sample (at its time); only an owner
        # change between boundaries, known after attribution, reads it a little later.
        unseen = self.gpus.keys() - self._prev.keys() - self._lost
        early = not self._lazy_energy or boundary or bool(self._saved) or bool(unseen)
        read = self.source.sample(now_s) if early else self.source.sample(now_s, energy=False)
        self._lost.update(s.index for s in read if s.lost)
        samples = [s for s in read if not s.lost]
        owners = self.attributor.owners(samples)
        if not early:
            samples = [self._with_energy(s, owners) for s in samples]
        for lost in (s for s in read if s.lost and s.index in self.segments.anchors):
            self._account(lost.index, self.segments.drop(lost.index))
        if self._saved:
            self._resume(samples, owners)
        for cur in samples:
            self._step(cur)
        readings = self._tick_ports(now_s) if self.ports is not None else []
        self._owners = owners
        job_of_pid = getattr(self.attributor, "job_of_pid", None)
        self._splits = {s.index: split_gpu(s, owners.get(s.index, ()), job_of_pid) for s in samples}
        self.snapshot = Snapshot(tuple(samples), self._owners, tuple(readings), len(read) - len(samples))
        if self.on_cycle is not None:
            self.on_cycle(time.perf_counter() - started)

    def _with_energy(self, cur: GpuSample, owners: dict[int, Owners]) -> GpuSample:
        index = cur.index
        changed = _owner_key(owners.get(index, ())) != _owner_key(self._owners.get(index, ()))
        if changed or index not in self._prev:
            return dataclasses.replace(cur, energy_mj=self.source.read_energy(index))
        return cur

    def _step(self, cur: GpuSample) -> None:
        prev = self._prev.get(cur.index)
        self._prev[cur.index] = cur
        if prev is None or cur.time_s <= prev.time_s:
            self.segments.open(cur)
            return
        self.segments.add(prev, cur, self._splits.get(cur.index, UNALLOCATED))
        if cur.energy_mj is not None or self.segments.counterless(cur.index):
            closed = self.segments.close(cur)
            if any(step.counter_reset for _, step in closed):
                self.counter_resets[cur.index] += 1
                log.warning("GPU %d: energy counter went down (driver reload); steps estimated from power", cur.index)
            self._account(cur.index, closed)

    def _account(self, index: int, closed: list[tuple[Piece, EnergyStep]]) -> None:
        for piece, step in closed:
            self.cutter.add(index, piece.split, piece.start_s, step, piece.util_gpu_pct, piece.memory_used_bytes)

    def _resume(self, samples: list[GpuSample], owners_now: dict[int, Owners]) -> None:
        """First readings after a restart: account the downtime from the saved counters."""
        job_of_pid = getattr(self.attributor, "job_of_pid", None)
        for cur in samples:
            owned = owners_now.get(cur.index, ())
            for start_s, owners, step in gap_steps(self._saved, self.gpus[cur.index], cur, owned, self.epoch):
                self.cutter.add(cur.index, split_gpu(cur, owners, job_of_pid), start_s, step, None, None)
                self._enqueue()  # one batch per piece: the collector takes intervals of an hour at most
        self._saved = {}

    def _tick_ports(self, now_s: float) -> list[PortReading]:
        assert self.ports is not None
        readings = self.ports.read()
        increases = self.port_totals.add(readings)
        if self._prev_ports is not None and now_s > self._prev_ports_s:
            step = node_step(self._prev_ports, readings, now_s - self._prev_ports_s, increases)
            self.network.add(job_shares(self._owners, len(self.gpus)), self._prev_ports_s, step)
        self._prev_ports, self._prev_ports_s = readings, now_s
        return readings

    def make_batch(self) -> dict[str, Any] | None:
        intervals, jobs = self.cutter.cut()
        network = self.network.cut()
        if not intervals and not network:
            return None
        batch = {
            "node": self.labels.node,
            "cluster": self.labels.cluster,
            "datacenter": self.labels.datacenter,
            "boot_id": self.boot_id,
            "seq": self.seq,
            "sent_at_s": self.clock.now(),
            "agent_version": __version__,
            "simulated": self.simulated,
            "jobs": jobs,
            "intervals": intervals,
            "network": network,
        }
        self.seq += 1
        return batch

    def _enqueue(self) -> None:
        """Cut a batch and hand it, with the counter readings it ends on, to the pusher."""
        batch = self.make_batch()
        readings = saved_readings(self.gpus, self.segments.anchors, self._owners, self.epoch)
        if batch is not None:
            self.pusher.submit(batch, counters=to_json(readings))
        if self.state is not None and readings:
            self.state.save(readings)

    def push(self) -> bool:
        self._enqueue()
        return self.pusher.flush()

    def stop(self) -> None:
        self._stop.set()
        wake = getattr(self.clock, "wake", None)
        if wake:
            wake()

    def run(self, until_s: float | None = None) -> None:
        """Loop until ``stop()`` (or ``until_s`` on the loop's clock); push what is left at the end."""
        next_tick_s = last_push_s = self.clock.now()
        try:
            while not self._stop.is_set():
                now_s = self.clock.now()
                if until_s is not None and now_s > until_s:
                    break
                due = now_s - last_push_s >= self.push_interval_s
                last = until_s is not None and max(next_tick_s + self.interval_s, now_s) > until_s
                self.tick(boundary=due or last)
                if due:
                    self.push()
                    last_push_s = now_s
                next_tick_s = max(next_tick_s + self.interval_s, self.clock.now())
                self.clock.sleep(next_tick_s - self.clock.now())
            if until_s is None:
                self.tick()  # account the time up to the stop
        finally:
            self._enqueue()
            if not self.pusher.flush(force=True):
                log.error("%d batches could not be delivered before exit", len(self.pusher.queue))
            self.source.close()


def _owner_key(owners: Owners) -> tuple[tuple[str, int | None], ...]:
    return tuple(sorted((job.job_id, -1 if job.gpu_instance is None else job.gpu_instance) for job in owners))
