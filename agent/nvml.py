"""GPU source backed by NVML (``pynvml`` from the ``nvidia-ml-py`` package).

The module handle is injected: production passes the real ``pynvml``; tests and the
simulator pass an object with the same functions, units (mW, mJ, bytes) and
``pynvml.NVMLError`` codes.

Any exception from one getter of one GPU is that reading missing (``None``, counted in
``errors``), never the end of the agent; only GPU_IS_LOST takes the GPU out. The energy
counter, the one expensive call (~3 ms on an H200), is read apart: ``sample(t, energy=False)``
leaves it out and ``read_energy(index)`` reads it where the caller needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import pynvml

from agent.gpu import GpuInfo, GpuSample
from agent.nvml_extra import MigLayouts, ProcessLists, ProcessUtilization

log = logging.getLogger(__name__)
T = TypeVar("T")

# Codes after which a reading is simply absent on this GPU (FUNCTION_NOT_FOUND: a driver older
# than the getter, e.g. nvmlDeviceGetCurrentClocksEventReasons before R535).
_ABSENT_CODES = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
_NOT_ERRORS = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
_SIMULATE = "or run `gpuledger agent --simulate SPEC` for a simulated node"
_INIT_FAILURES = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: "NVML is not available on this machine (libnvidia-ml.so not found); "
                                         f"install the NVIDIA driver, {_SIMULATE}",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "NVML is not available on this machine: the NVIDIA kernel driver is not loaded "
                                         f"(NVML error 9); load it (`modprobe nvidia`, or check `dmesg`), {_SIMULATE}",
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: "NVML cannot start: driver/library version mismatch (NVML error 18), "
                                               "the loaded kernel module is not the version of libnvidia-ml (a driver "
                                               "upgrade without a reboot); reboot or reload the nvidia modules",
    pynvml.NVML_ERROR_NO_PERMISSION: "NVML cannot start: no permission to open the GPUs (NVML error 4); run the agent "
                                     "as root or as a user that can open /dev/nvidia*",
}
# Power for display in one batched call per GPU: the 1 s average where the GPU has it, else the
# instantaneous value (both mW).
POWER_FIELDS = (pynvml.NVML_FI_DEV_POWER_AVERAGE, pynvml.NVML_FI_DEV_POWER_INSTANT)


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used on this machine at all."""


class GpuLost(Exception):
    """The GPU fell off the bus (NVML_ERROR_GPU_IS_LOST)."""


def _decode(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def init_failure(exc: BaseException) -> str:
    """One line naming why ``nvmlInit`` failed and what to do."""
    code = getattr(exc, "value", None)
    if isinstance(exc, pynvml.NVMLError) and code in _INIT_FAILURES:
        return _INIT_FAILURES[code]
    return f"NVML failed to start ({type(exc).__name__}: {exc}); check the NVIDIA driver, {_SIMULATE}"


class NvmlSource:
    def __init__(self, nvml: ModuleType | Any = pynvml, mig_refresh_s: float = 60.0) -> None:
        self._nvml = nvml
        self._handles: list[Any] = []
        self._lost: set[int] = set()
        self._warned: set[tuple[int, str]] = set()
        self._no_fields: set[int] = set()  # GPUs whose field values failed: power by its own getter
        self.errors = 0  # failed calls, other than a reading the GPU does not support
        self.processes = ProcessLists(nvml)
        self.mig = MigLayouts(nvml, mig_refresh_s)
        self.process_util = ProcessUtilization(nvml)
        self._infos: list[GpuInfo] | None = None

    def open(self) -> list[GpuInfo]:
        """Start NVML and list the GPUs; a second call returns the first's list."""
        if self._infos is not None:
            return self._infos
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except Exception as exc:
            raise NvmlUnavailable(init_failure(exc)) from exc
        count = nvml.nvmlDeviceGetCount()
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self._infos = [self._info(i, h) for i, h in enumerate(self._handles)]
        return self._infos

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
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:
                log.warning("nvmlShutdown failed: %s", exc)
            self._handles = []
        self._infos = None

    def sample(self, time_s: float, energy: bool = True) -> list[GpuSample]:
        return [self._sample_one(i, h, time_s, energy) for i, h in enumerate(self._handles)]

    def read_energy(self, index: int) -> int | None:
        """The energy counter of one GPU (mJ); None where it has none, it failed, or the GPU is lost."""
        if index in self._lost:
            return None
        try:
            energy = self._read(index, "energy", self._nvml.nvmlDeviceGetTotalEnergyConsumption, self._handles[index])
        except GpuLost:
            self._mark_lost(index)
            return None
        return None if energy is None else int(energy)

    def _mark_lost(self, index: int) -> None:
        if index not in self._lost:
            log.error("GPU %d is lost (fallen off the bus); the other GPUs go on", index)
        self._lost.add(index)

    def _sample_one(self, index: int, handle: Any, time_s: float, with_energy: bool) -> GpuSample:
        if index in self._lost:
            return _lost_sample(index, time_s)
        nvml = self._nvml
        try:
            energy = self._read(index, "energy", nvml.nvmlDeviceGetTotalEnergyConsumption, handle) if with_energy else None
            power = self._power_mw(index, handle)
            util = self._read(index, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = self._read(index, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
            procs = self._read(index, "processes", self.processes.read, handle) or []
            temperature = self._read(index, "temperature", _gpu_temperature(nvml), handle)
            reasons = self._read(index, "clocks_event_reasons", nvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
            mig = self._read(index, "mig", lambda h: self.mig.layout(index, h, time_s), handle)
            pids = tuple(int(p.pid) for p in procs)
            shared = len(set(pids)) > 1 and mig is None
            util_by_pid = self._process_util(index, handle) if shared else None
        except GpuLost:
            self._mark_lost(index)
            return _lost_sample(index, time_s)
        return GpuSample(
            index=index,
            time_s=time_s,
            energy_mj=None if energy is None else int(energy),
            power_mw=None if power is None else int(power),
            util_gpu_pct=None if util is None else int(util.gpu),
            memory_used_bytes=None if memory is None else int(memory.used),
            pids=pids,
            temperature_c=None if temperature is None else int(temperature),
            clocks_event_reasons=None if reasons is None else int(reasons),
            pid_instances=tuple(_gpu_instance(p) for p in procs) if mig is not None else (),
            mig=mig,
            pid_sm_util=util_by_pid,
        )

    def _process_util(self, index: int, handle: Any) -> tuple[tuple[int, int], ...] | None:
        return self._read(index, "process_utilization", lambda h: self.process_util.read(index, h), handle)

    def _power_mw(self, index: int, handle: Any) -> int | None:
        """Power through one nvmlDeviceGetFieldValues call; the getter where fields fail."""
        if index not in self._no_fields:
            fields = list(POWER_FIELDS)
            values = self._read(index, "power_fields", lambda h: self._nvml.nvmlDeviceGetFieldValues(h, fields), handle)
            for value in values or ():
                if value.nvmlReturn == pynvml.NVML_SUCCESS:
                    return int(value.value.uiVal)
            self._no_fields.add(index)
        return self._read(index, "power", self._nvml.nvmlDeviceGetPowerUsage, handle)

    def _read(self, index: int, what: str, fn: Callable[[Any], T], handle: Any) -> T | None:
        """Call one NVML getter; map its error codes to absent (None) or GpuLost. Any other
        exception (the library's NVMLLibraryMismatchError, a ctypes error) is a failed reading."""
        try:
            return fn(handle)
        except pynvml.NVMLError as exc:
            if exc.value == pynvml.NVML_ERROR_GPU_IS_LOST:
                self.errors += 1
                raise GpuLost(index) from exc
            if exc.value not in _NOT_ERRORS:
                self.errors += 1
            if exc.value not in _ABSENT_CODES:
                self._warn_once(index, what, exc)
            return None
        except GpuLost:
            raise
        except Exception as exc:
            self.errors += 1
            self._warn_once(index, what, exc)
            return None

    def _warn_once(self, index: int, what: str, exc: BaseException) -> None:
        if (index, what) not in self._warned:
            log.warning("GPU %d: reading %s failed: %s", index, what, exc)
        self._warned.add((index, what))


def _gpu_temperature(nvml: Any) -> Callable[[Any], int]:
    return lambda handle: nvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)


def _gpu_instance(proc: Any) -> int | None:
    gpu_instance = getattr(proc, "gpuInstanceId", None)
    return None if gpu_instance is None or gpu_instance == 0xFFFFFFFF else int(gpu_instance)


def _lost_sample(index: int, time_s: float) -> GpuSample:
    return GpuSample(index, time_s, None, None, None, None, (), lost=True)
