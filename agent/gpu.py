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


class GpuSource(Protocol):
    """Anything that can list GPUs and read them: NVML, or the simulator through NVML's API."""

    def open(self) -> list[GpuInfo]: ...

    def sample(self, time_s: float) -> list[GpuSample]: ...

    def close(self) -> None: ...
