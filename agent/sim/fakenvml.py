"""An in-memory stand-in for the ``pynvml`` module: real function names, real units
(mW, mJ, bytes, %), real ``pynvml.NVMLError`` codes and the quirks that matter
(calls before ``nvmlInit`` fail UNINITIALIZED; a lost GPU fails every call with
GPU_IS_LOST; a GPU without an energy counter answers NOT_SUPPORTED).

The simulator drives it for the demo and benchmarks; tests script it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml


@dataclass
class FakeDevice:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    default_limit_mw: int | None = 700_000
    enforced_limit_mw: int | None = 700_000
    memory_total_bytes: int = 80 * 1024**3
    memory_used_bytes: int = 0
    energy_mj: int | None = 0  # None: no counter on this GPU (pre-Volta)
    power_mw: int | None = 70_000
    util_gpu_pct: int = 0
    util_memory_pct: int = 0
    pids: list[int] = field(default_factory=list)
    lost: bool = False
    temperature_c: int | None = 35
    clocks_event_reasons: int | None = pynvml.nvmlClocksEventReasonGpuIdle


def _fail(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


class FakeNvml:
    def __init__(self, devices: list[FakeDevice], library_missing: bool = False) -> None:
        self.devices = devices
        self.library_missing = library_missing
        self.initialised = False

    # -- life cycle ------------------------------------------------------------------
    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if self.library_missing:
            raise _fail(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self._check_init()
        self.initialised = False

    def _check_init(self) -> None:
        if not self.initialised:
            raise _fail(pynvml.NVML_ERROR_UNINITIALIZED)

    def _device(self, handle: FakeDevice) -> FakeDevice:
        self._check_init()
        if handle.lost:
            raise _fail(pynvml.NVML_ERROR_GPU_IS_LOST)
        return handle

    # -- inventory -------------------------------------------------------------------
    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        self._check_init()
        return "fake"

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._check_init()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:  # noqa: N802
        self._check_init()
        if not 0 <= index < len(self.devices):
            raise _fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.devices[index]

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str:  # noqa: N802
        return self._device(handle).uuid

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str:  # noqa: N802
        return self._device(handle).name

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: FakeDevice) -> int:  # noqa: N802
        return self._supported(self._device(handle).default_limit_mw)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeDevice) -> int:  # noqa: N802
        return self._supported(self._device(handle).enforced_limit_mw)

    # -- readings --------------------------------------------------------------------
    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeDevice) -> int:  # noqa: N802
        return self._supported(self._device(handle).energy_mj)

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:  # noqa: N802
        return self._supported(self._device(handle).power_mw)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> SimpleNamespace:  # noqa: N802
        device = self._device(handle)
        return SimpleNamespace(gpu=device.util_gpu_pct, memory=device.util_memory_pct)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> SimpleNamespace:  # noqa: N802
        device = self._device(handle)
        used = device.memory_used_bytes
        return SimpleNamespace(total=device.memory_total_bytes, used=used, free=device.memory_total_bytes - used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[SimpleNamespace]:  # noqa: N802
        device = self._device(handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=None) for pid in device.pids]

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:  # noqa: N802
        device = self._device(handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise _fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._supported(device.temperature_c)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeDevice) -> int:  # noqa: N802
        return self._supported(self._device(handle).clocks_event_reasons)

    @staticmethod
    def _supported(value: int | None) -> int:
        if value is None:
            raise _fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value
