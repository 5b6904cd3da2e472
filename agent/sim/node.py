"""A simulated GPU node that answers through NVML's API (``FakeNvml``), so the agent runs
the same NVML code path on a laptop as on a DGX.

Physics: each GPU draws a constant power within each whole second k after the epoch,
``idle_w + (busy_w - idle_w) * u``, where u is the owning job's utilisation with a small
seeded jitter (idle GPUs jitter near 0). The energy counter is the exact integral, in mJ,
updated every 100 ms like the real one; power reads as the average of the last second.
The same seed gives the same readings; the ground truth of any job is available.

Given the node's job-mapping directory (``follow``), the simulated GPUs also run the jobs a
real scheduler places on them: a GPU the mapping names runs at the node's
``mapped_utilization`` from the next whole second after the mapping is seen until the next
whole second after it is gone, so the power of every second already counted never changes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import pynvml

from agent.attribution import JobRef, Owners, OwnerSource
from agent.clock import Clock
from agent.gpu import GpuSample
from agent.sim.fakenvml import FakeDevice, FakeNvml
from agent.sim.spec import ClusterSpec, JobSpec, NodeSpec

_MASK = (1 << 64) - 1
BANNER = "*** SIMULATED GPUs: these readings come from gpuledger's simulator, not from hardware ***"


UPDATES_PER_S = 10  # the simulated GPUs' readings change every 100 ms, like NVML's energy counter


def _mix(*values: int) -> int:
    """splitmix64 over several integers: a fast, seedable, stateless hash."""
    x = 0x9E3779B97F4A7C15
    for value in values:
        x = (x ^ (value & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & _MASK
        x ^= x >> 29
    return x


def jitter(*values: int) -> float:
    """Deterministic value in [-1, 1)."""
    return _mix(*values) / 2**63 - 1.0


@dataclass(frozen=True, slots=True)
class SimGpu:
    node: NodeSpec
    node_no: int
    index: int
    jobs: tuple[JobSpec, ...]  # jobs placed on this GPU, by start
    seed: int
    mapped: list[list[float]] = field(default_factory=list)  # [from_s, until_s) a scheduler's job held it

    def mapped_at(self, second: int) -> bool:
        return any(start_s <= second < end_s for start_s, end_s in reversed(self.mapped))

    def job_at(self, offset_s: float) -> JobSpec | None:
        for job in self.jobs:
            if job.start_s <= offset_s < job.end_s:
                return job
        return None

    def utilization(self, second: int) -> float:
        job = self.job_at(second)
        if job is not None:
            target = job.utilization
        elif self.mapped and self.mapped_at(second):
            target = self.node.mapped_utilization
        else:
            return 0.01 * (1 + jitter(self.seed, self.node_no, self.index, second))
        u = target * (1 + 0.05 * jitter(self.seed, self.node_no, self.index, second))
        return min(max(u, 0.0), 1.0)

    def power_w(self, second: int) -> float:
        """Constant power over [epoch + second, epoch + second + 1)."""
        return self.node.idle_w + (self.node.busy_w - self.node.idle_w) * self.utilization(second)

    def energy_j(self, start_s: float, end_s: float) -> float:
        """Exact energy over [start_s, end_s] (offsets from the epoch), second by second."""
        total = 0.0
        second = math.floor(start_s)
        while second < end_s:
            overlap = min(end_s, second + 1) - max(start_s, second)
            total += self.power_w(second) * overlap
            second += 1
        return total


class _CumulativeEnergy:
    """E(x) = energy from offset 0 to x, kept incrementally for forward-moving reads."""

    def __init__(self, gpu: SimGpu) -> None:
        self.gpu = gpu
        self.second = 0
        self.joules = 0.0

    def at(self, offset_s: float) -> float:
        whole = math.floor(offset_s)
        if whole < self.second - 16:
            self.second, self.joules = 0, 0.0
        while self.second > whole:  # a short step back, e.g. to average the last second
            self.second -= 1
            self.joules -= self.gpu.power_w(self.second)
        while self.second < whole:
            self.joules += self.gpu.power_w(self.second)
            self.second += 1
        return self.joules + self.gpu.power_w(whole) * (offset_s - whole)


def gpus_of_node(spec: ClusterSpec, node_name: str) -> list[SimGpu]:
    node = spec.node(node_name)
    node_no = spec.nodes.index(node)
    result = []
    for index in range(node.gpu_count):
        jobs = tuple(sorted((j for j in spec.jobs if node_name in j.nodes and index in j.gpus), key=lambda j: j.start_s))
        result.append(SimGpu(node, node_no, index, jobs, spec.seed))
    return result


class SimulatedNode:
    """One node of the spec, presented as a ``FakeNvml`` that advances with ``clock``."""

    def __init__(
        self, spec: ClusterSpec, node_name: str, clock: Clock, epoch_s: float, follow: OwnerSource | None = None
    ) -> None:
        self.spec = spec
        self.follow = follow
        self.clock = clock
        self.epoch_s = epoch_s
        self.gpus = gpus_of_node(spec, node_name)
        self._energy = [_CumulativeEnergy(g) for g in self.gpus]
        gpu_events = ("counter_reset", "gpu_lost")
        self._events = sorted((e for e in spec.events if e.node == node_name and e.kind in gpu_events), key=lambda e: e.at_s)
        node = self.gpus[0].node if self.gpus else spec.node(node_name)
        self.devices = [
            FakeDevice(
                uuid=f"GPU-{_mix(spec.seed, g.node_no, g.index):016x}-sim",
                name=node.model,
                default_limit_mw=int(node.tdp_w * 1000),
                enforced_limit_mw=int(node.tdp_w * 1000),
                memory_total_bytes=node.memory_bytes,
                energy_mj=0 if node.energy_counter else None,
            )
            for g in self.gpus
        ]
        # Energy since the simulated driver load, in mJ, at the epoch.
        self._counter_base_mj = [_mix(spec.seed, g.node_no, g.index, 1) % 10**9 for g in self.gpus]
        self._reset_energy_j = [0.0 for _ in self.gpus]
        self.nvml = _SimNvml(self)

    def refresh(self, device: FakeDevice) -> None:
        index = self.devices.index(device)
        gpu, offset_s = self.gpus[index], self.clock.now() - self.epoch_s
        energy = self._energy[index]
        while self._events and self._events[0].at_s <= offset_s:
            event = self._events.pop(0)
            if event.kind == "gpu_lost":
                self.devices[event.gpu].lost = True
            else:  # counter_reset: the driver reloaded, counting restarts at 0
                self._reset_energy_j[event.gpu] = self._energy[event.gpu].at(event.at_s)
                self._counter_base_mj[event.gpu] = 0
        if device.energy_mj is not None:
            tick_s = math.floor(offset_s * UPDATES_PER_S) / UPDATES_PER_S  # the counter updates every 100 ms
            since_reset_j = energy.at(tick_s) - self._reset_energy_j[index]
            device.energy_mj = self._counter_base_mj[index] + int(since_reset_j * 1000)
        window_s = min(offset_s, 1.0)  # power reads as the average of the last second
        if window_s > 0:
            device.power_mw = int((energy.at(offset_s) - energy.at(offset_s - window_s)) / window_s * 1000)
        else:
            device.power_mw = int(gpu.power_w(math.floor(offset_s)) * 1000)
        device.util_gpu_pct = round(gpu.utilization(math.floor(offset_s)) * 100)
        device.memory_used_bytes = int(0.85 * device.memory_total_bytes) if gpu.job_at(offset_s) else 0
        device.temperature_c = 30 + round(45 * device.power_mw / max(device.default_limit_mw or 1, 1))
        device.clocks_event_reasons = _clocks_event_reasons(device.util_gpu_pct, device.power_mw, device.enforced_limit_mw)

    def follow_scheduler(self, offset_s: float) -> None:
        """Start or stop the GPUs the job-mapping directory names, from the next whole second."""
        if self.follow is None:
            return
        owned = self.follow.owners([])
        from_s = math.ceil(offset_s)
        for gpu in self.gpus:
            running = bool(gpu.mapped) and gpu.mapped[-1][1] == math.inf
            if gpu.index in owned and not running:
                gpu.mapped.append([from_s, math.inf])
            elif gpu.index not in owned and running:
                gpu.mapped[-1][1] = from_s

    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]:
        result: dict[int, Owners] = {}
        for sample in samples:
            job = self.gpus[sample.index].job_at(sample.time_s - self.epoch_s)
            if job is not None:
                result[sample.index] = (JobRef(job.id, job.name, job.user, job.account, job.budget_usd, release=job.release),)
        return result


def _clocks_event_reasons(util_pct: int, power_mw: int | None, limit_mw: int | None) -> int:
    """Idle GPUs drop their clocks; busy ones near their power limit are capped."""
    if util_pct == 0:
        return pynvml.nvmlClocksEventReasonGpuIdle
    if power_mw is not None and limit_mw and power_mw >= 0.95 * limit_mw:
        return pynvml.nvmlClocksEventReasonSwPowerCap
    return pynvml.nvmlClocksEventReasonNone


class _SimNvml(FakeNvml):
    def __init__(self, node: SimulatedNode) -> None:
        super().__init__(node.devices)
        self.node = node
        self._refreshed_in: dict[str, int] = {}
        self._followed_in: int | None = None

    def _device(self, handle: FakeDevice) -> FakeDevice:
        self._check_init()
        # The getters of one sample, microseconds apart on a wall clock, read one state.
        offset_s = self.node.clock.now() - self.node.epoch_s
        update = math.floor(offset_s * UPDATES_PER_S)
        if update != self._followed_in:
            self.node.follow_scheduler(offset_s)
            self._followed_in = update
        if not handle.lost and self._refreshed_in.get(handle.uuid) != update:
            self.node.refresh(handle)
            self._refreshed_in[handle.uuid] = update
        return super()._device(handle)


def ground_truth(spec: ClusterSpec, job_id: str, until_offset_s: float) -> tuple[float, float]:
    """(gpu_seconds, energy_j) of a job from its start to ``until_offset_s``, from the physics alone."""
    gpu_seconds = energy_j = 0.0
    for node in spec.nodes:
        for gpu in gpus_of_node(spec, node.name):
            for job in gpu.jobs:
                if job.id == job_id:
                    lost = [e.at_s for e in spec.events if e.kind == "gpu_lost" and e.node == node.name and e.gpu == gpu.index]
                    end_s = min([job.end_s, until_offset_s, *lost])
                    if end_s > job.start_s:
                        gpu_seconds += end_s - job.start_s
                        energy_j += gpu.energy_j(job.start_s, end_s)
    return gpu_seconds, energy_j


def announce(stream=sys.stderr) -> None:
    print(BANNER, file=stream, flush=True)
