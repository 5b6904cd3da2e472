"""GPU source backed by NVML (``pynvml`` from the ``nvidia-ml-py`` package).

The module handle is injected: production passes the real ``pynvml``; tests and the
simulator pass an object with the same functions, units (mW, mJ, bytes) and
``pynvml.NVMLError`` codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import pynvml

from agent.gpu import GpuInfo, GpuSample

log = logging.getLogger(__name__)
T = TypeVar("T")

# Codes after which a reading is simply absent on this GPU (FUNCTION_NOT_FOUND: a driver older
# than the getter, e.g. nvmlDeviceGetCurrentClocksEventReasons before R535).
_ABSENT_CODES = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
_NOT_ERRORS = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
_NO_NVML_CODES = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    pynvml.NVML_ERROR_NO_PERMISSION,
}


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used on this machine at all."""


class GpuLost(Exception):
    """The GPU fell off the bus (NVML_ERROR_GPU_IS_LOST)."""


def _decode(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlSource:
    def __init__(self, nvml: ModuleType | Any = pynvml) -> None:
        self._nvml = nvml
        self._handles: list[Any] = []
        self._lost: set[int] = set()
        self._warned: set[tuple[int, str]] = set()
        self.errors = 0  # failed calls, other than a reading the GPU does not support

    def open(self) -> list[GpuInfo]:
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except pynvml.NVMLError as exc:
            if exc.value in _NO_NVML_CODES:
                raise NvmlUnavailable(
                    f"NVML is not available on this machine ({exc}); install the NVIDIA driver, "
                    "or run `gpuledger agent --simulate SPEC` for a simulated node"
                ) from exc
            raise
        count = nvml.nvmlDeviceGetCount()
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        return [self._info(i, h) for i, h in enumerate(self._handles)]

    def _info(self, index: int, handle: Any) -> GpuInfo:
        nvml = self._nvml
        tdp_mw = self._read(index, "tdp", nvml.nvmlDeviceGetPowerManagementDefaultLimit, handle)
        limit_mw = self._read(index, "power_limit", nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        memory = self._read(index, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
        return GpuInfo(
            index=index,
            uuid=_decode(nvml.nvmlDeviceGetUUID(handle)),
            name=_decode(nvml.nvmlDeviceGetName(handle)),
            tdp_w=None if tdp_mw is None else tdp_mw / 1000,
            power_limit_w=None if limit_mw is None else limit_mw / 1000,
            memory_total_bytes=None if memory is None else int(memory.total),
        )

    def close(self) -> None:
        if self._handles:
            self._nvml.nvmlShutdown()
            self._handles = []

    def sample(self, time_s: float) -> list[GpuSample]:
        return [self._sample_one(i, h, time_s) for i, h in enumerate(self._handles)]

    def _sample_one(self, index: int, handle: Any, time_s: float) -> GpuSample:
        if index in self._lost:
            return _lost_sample(index, time_s)
        nvml = self._nvml
        try:
            energy = self._read(index, "energy", nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
            power = self._read(index, "power", nvml.nvmlDeviceGetPowerUsage, handle)
            util = self._read(index, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = self._read(index, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
            procs = self._read(index, "processes", nvml.nvmlDeviceGetComputeRunningProcesses, handle)
            temperature = self._read(index, "temperature", _gpu_temperature(nvml), handle)
            reasons = self._read(index, "clocks_event_reasons", nvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
        except GpuLost:
            log.error("GPU %d is lost (fallen off the bus); the other GPUs go on", index)
            self._lost.add(index)
            return _lost_sample(index, time_s)
        return GpuSample(
            index=index,
            time_s=time_s,
            energy_mj=None if energy is None else int(energy),
            power_mw=None if power is None else int(power),
            util_gpu_pct=None if util is None else int(util.gpu),
            memory_used_bytes=None if memory is None else int(memory.used),
            pids=tuple(int(p.pid) for p in procs or ()),
            temperature_c=None if temperature is None else int(temperature),
            clocks_event_reasons=None if reasons is None else int(reasons),
        )

    def _read(self, index: int, what: str, fn: Callable[[Any], T], handle: Any) -> T | None:
        """Call one NVML getter; map its error codes to absent (None) or GpuLost."""
        try:
            return fn(handle)
        except pynvml.NVMLError as exc:
            if exc.value == pynvml.NVML_ERROR_GPU_IS_LOST:
                self.errors += 1
                raise GpuLost(index) from exc
            if exc.value not in _NOT_ERRORS:
                self.errors += 1
            if exc.value not in _ABSENT_CODES and (index, what) not in self._warned:
                log.warning("GPU %d: reading %s failed: %s", index, what, exc)
            self._warned.add((index, what))
            return None


def _gpu_temperature(nvml: Any) -> Callable[[Any], int]:
    return lambda handle: nvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)


def _lost_sample(index: int, time_s: float) -> GpuSample:
    return GpuSample(index, time_s, None, None, None, None, (), lost=True)
