"""What a GPU source reports: a fixed inventory and per-sample readings.

A reading the hardware does not support, or that failed, is ``None``, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    tdp_w: float | None
    power_limit_w: float | None
    memory_total_bytes: int | None


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG GPU instance: its id on the GPU and its size in compute slices (1g = 1, 7g = 7)."""

    gpu_instance: int
    slices: int


@dataclass(frozen=True, slots=True)
class MigLayout:
    """A MIG-enabled GPU: its instances, and how many compute slices the whole GPU has (7 on
    A100/H100/H200, 4 on A30); slices no instance holds are idle capacity."""

    total_slices: int
    instances: tuple[MigInstance, ...]


@dataclass(frozen=True, slots=True)
class GpuSample:
    index: int
    time_s: float
    energy_mj: int | None
    power_mw: int | None
    util_gpu_pct: int | None
    memory_used_bytes: int | None
    pids: tuple[int, ...]
    lost: bool = False
    temperature_c: int | None = None
    clocks_event_reasons: int | None = None  # NVML bitmask: why the clocks are held down
    pid_instances: tuple[int | None, ...] = ()  # per pid: its MIG GPU instance (None off MIG)
    mig: MigLayout | None = None  # None: MIG is off on this GPU
    pid_sm_util: tuple[tuple[int, int], ...] | None = None  # (pid, SM %) samples; None: not given


class GpuSource(Protocol):
    """Anything that can list GPUs and read them: NVML, or the simulator through NVML's API."""

    def open(self) -> list[GpuInfo]: ...

    def sample(self, time_s: float, energy: bool = True) -> list[GpuSample]:
        """Every GPU's readings; with ``energy=False`` without the energy counter (``energy_mj``
        None), which ``read_energy`` then reads for the GPUs that need it."""
        ...

    def read_energy(self, index: int) -> int | None:
        """The energy counter of one GPU (mJ), None where it has none or the read failed."""
        ...

    def close(self) -> None: ...
