"""An in-memory stand-in for the ``pynvml`` module: real function names, real units
(mW, mJ, bytes, %), real ``pynvml.NVMLError`` codes and the quirks that matter:

- calls before ``nvmlInit`` fail UNINITIALIZED; ``nvmlInit`` fails as configured
  (DRIVER_NOT_LOADED, LIB_RM_VERSION_MISMATCH, NO_PERMISSION, LIBRARY_NOT_FOUND);
- a lost GPU fails every call with GPU_IS_LOST; a GPU without an energy counter answers
  NOT_SUPPORTED;
- versioned process lists: a driver before R510 has no ``_v3``, and nvidia-ml-py's
  unversioned call then raises ``NVMLLibraryMismatchError`` (a plain Exception); drivers
  535.43-535.86 write 32-byte ``_v3`` records the library reads as 24-byte ones, so PIDs come
  back as 0 and 4294967295 (nvitop issues #75, #88);
- MIG: ``nvmlDeviceGetMigMode``, MIG device handles with their GPU instance id and slice
  count, processes carrying ``gpuInstanceId``; per-process utilisation samples
  (``nvmlDeviceGetProcessUtilization``, NOT_FOUND when none is newer than the timestamp);
  ``nvmlDeviceGetFieldValues`` with a return code per field;
- per-call costs: ``call_cost_us`` burns that much CPU in each call (``H200_CALL_COST_US``:
  as measured on an H200, about 3 ms for an energy read, a few microseconds for the rest).

The simulator drives it for the demo and benchmarks; tests script it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

# CPU microseconds per call, measured on one H200 (driver 580.159.04, persistence mode on) with
# tests/benchmarks/nvml_real.py: the energy counter ~3.8 ms CPU (2.8 ms wall), the same through
# nvmlDeviceGetFieldValues(NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION); every other getter < 6 us.
H200_CALL_COST_US: dict[str, float] = {
    "nvmlDeviceGetTotalEnergyConsumption": 3800.0,
    "energy_field": 3800.0,
    "nvmlDeviceGetFieldValues": 6.0,
    "nvmlDeviceGetPowerUsage": 5.0,
    "nvmlDeviceGetUtilizationRates": 5.0,
    "nvmlDeviceGetMemoryInfo": 5.0,
    "nvmlDeviceGetComputeRunningProcesses_v3": 6.0,
    "nvmlDeviceGetComputeRunningProcesses_v2": 6.0,
    "nvmlDeviceGetTemperature": 4.0,
    "nvmlDeviceGetCurrentClocksEventReasons": 4.0,
    "nvmlDeviceGetProcessUtilization": 20.0,
}
INVALID_PID = 4294967295  # what the broken 535 range's _v3 records read as, beside 0


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
    mig: list[tuple[int, int]] | None = None  # MIG on: (gpu_instance, slices) per instance
    pid_instances: dict[int, int] = field(default_factory=dict)  # pid -> its GPU instance (MIG)
    process_sm_util: dict[int, int] | None = None  # pid -> SM %; None: no per-process samples


@dataclass
class FakeMigDevice:
    parent: FakeDevice
    gpu_instance: int
    slices: int


def _fail(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def _burn(micros: float) -> None:
    """Spend ``micros`` of this thread's CPU time, as a driver call would."""
    end = time.thread_time() + micros / 1e6
    while time.thread_time() < end:
        pass


def _driver_major_minor(version: str) -> tuple[int, int]:
    major, _, rest = version.partition(".")
    try:
        return int(major), int(rest.partition(".")[0] or 0)
    except ValueError:
        return 999, 0  # "fake" and other non-numbers: a current driver


class FakeNvml:
    def __init__(
        self,
        devices: list[FakeDevice],
        library_missing: bool = False,
        *,
        driver_version: str = "580.95.05",
        init_error: int | None = None,
        call_cost_us: dict[str, float] | None = None,
        clock_us: Callable[[], int] | None = None,
    ) -> None:
        self.devices = devices
        self.library_missing = library_missing
        self.driver_version = driver_version
        self.init_error = init_error
        self.call_cost_us = call_cost_us or {}
        self.clock_us = clock_us or (lambda: time.time_ns() // 1000)
        self.calls: dict[str, int] = {}  # how many times each function was called
        self.initialised = False

    def _cost(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        micros = self.call_cost_us.get(name)
        if micros:
            _burn(micros)

    # -- life cycle ------------------------------------------------------------------
    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if self.library_missing:
            raise _fail(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        if self.init_error is not None:
            raise _fail(self.init_error)
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
        return self.driver_version

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
        self._cost("nvmlDeviceGetTotalEnergyConsumption")
        return self._supported(self._device(handle).energy_mj)

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:  # noqa: N802
        self._cost("nvmlDeviceGetPowerUsage")
        return self._supported(self._device(handle).power_mw)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> SimpleNamespace:  # noqa: N802
        self._cost("nvmlDeviceGetUtilizationRates")
        device = self._device(handle)
        if device.mig is not None:
            raise _fail(pynvml.NVML_ERROR_NOT_SUPPORTED)  # not on MIG-enabled GPUs
        return SimpleNamespace(gpu=device.util_gpu_pct, memory=device.util_memory_pct)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> SimpleNamespace:  # noqa: N802
        self._cost("nvmlDeviceGetMemoryInfo")
        device = self._device(handle)
        used = device.memory_used_bytes
        return SimpleNamespace(total=device.memory_total_bytes, used=used, free=device.memory_total_bytes - used)

    def _processes(self, device: FakeDevice) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=None, gpuInstanceId=device.pid_instances.get(pid, 0xFFFFFFFF),
                            computeInstanceId=0 if pid in device.pid_instances else 0xFFFFFFFF)
            for pid in device.pids
        ]

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: FakeDevice) -> list[SimpleNamespace]:  # noqa: N802
        self._cost("nvmlDeviceGetComputeRunningProcesses_v3")
        device = self._device(handle)
        version = _driver_major_minor(self.driver_version)
        if version < (510, 0):
            raise _fail(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)  # no such symbol in the driver's libnvidia-ml
        procs = self._processes(device)
        if (535, 43) <= version <= (535, 86):  # 32-byte records read as 24-byte ones
            for n, proc in enumerate(procs):
                proc.pid = 0 if n % 2 else INVALID_PID
                proc.usedGpuMemory = None
        return procs

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: FakeDevice) -> list[SimpleNamespace]:  # noqa: N802
        self._cost("nvmlDeviceGetComputeRunningProcesses_v2")
        return self._processes(self._device(handle))

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[SimpleNamespace]:  # noqa: N802
        """nvidia-ml-py's unversioned call: ``_v3``, and a missing symbol is a library mismatch."""
        try:
            return self.nvmlDeviceGetComputeRunningProcesses_v3(handle)
        except pynvml.NVMLError_FunctionNotFound as exc:
            raise pynvml.NVMLLibraryMismatchError(
                "Unversioned function called and the pyNVML version does not match the NVML lib version. "
                "Either use matching pyNVML and NVML lib versions or use a versioned function such as "
                "nvmlDeviceGetComputeRunningProcesses_v2") from exc

    def nvmlDeviceGetTemperature(self, handle: FakeDevice, sensor: int) -> int:  # noqa: N802
        self._cost("nvmlDeviceGetTemperature")
        device = self._device(handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise _fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._supported(device.temperature_c)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeDevice) -> int:  # noqa: N802
        self._cost("nvmlDeviceGetCurrentClocksEventReasons")
        return self._supported(self._device(handle).clocks_event_reasons)

    def nvmlDeviceGetProcessUtilization(self, handle: FakeDevice, time_stamp: int) -> list[SimpleNamespace]:  # noqa: N802
        self._cost("nvmlDeviceGetProcessUtilization")
        device = self._device(handle)
        if device.process_sm_util is None:
            raise _fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        now_us = self.clock_us()
        if now_us <= time_stamp or not device.process_sm_util:
            raise _fail(pynvml.NVML_ERROR_NOT_FOUND)  # no sample newer than the timestamp
        return [SimpleNamespace(pid=pid, timeStamp=now_us, smUtil=sm, memUtil=0, encUtil=0, decUtil=0)
                for pid, sm in device.process_sm_util.items()]

    def nvmlDeviceGetFieldValues(self, handle: FakeDevice, field_ids: list[int]) -> list[SimpleNamespace]:  # noqa: N802
        self._cost("nvmlDeviceGetFieldValues")
        device = self._device(handle)
        values = {
            pynvml.NVML_FI_DEV_POWER_INSTANT: (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, device.power_mw),
            pynvml.NVML_FI_DEV_POWER_AVERAGE: (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, device.power_mw),
            pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: (pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, device.energy_mj),
        }
        out = []
        for field_id in field_ids:
            if field_id == pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
                self._cost("energy_field")
            kind, value = values.get(field_id, (pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, None))
            number = 0 if value is None else value
            out.append(SimpleNamespace(
                fieldId=field_id, scopeId=0, timestamp=self.clock_us(), latencyUsec=0, valueType=kind,
                nvmlReturn=pynvml.NVML_SUCCESS if value is not None else pynvml.NVML_ERROR_NOT_SUPPORTED,
                value=SimpleNamespace(dVal=float(number), uiVal=number, ulVal=number, ullVal=number, sllVal=number, siVal=number),
            ))
        return out

    # -- MIG -------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, handle: FakeDevice) -> list[int]:  # noqa: N802
        device = self._device(handle)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if device.mig is not None else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeDevice) -> int:  # noqa: N802
        return 7 if self._device(handle).mig is not None else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeDevice, index: int) -> FakeMigDevice:  # noqa: N802
        device = self._device(handle)
        if device.mig is None or not 0 <= index < 7:
            raise _fail(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if index >= len(device.mig):
            raise _fail(pynvml.NVML_ERROR_NOT_FOUND)  # an empty slot
        gpu_instance, slices = device.mig[index]
        return FakeMigDevice(device, gpu_instance, slices)

    def nvmlDeviceGetGpuInstanceId(self, handle: FakeMigDevice) -> int:  # noqa: N802
        self._device(handle.parent)
        return handle.gpu_instance

    def nvmlDeviceGetAttributes(self, handle: FakeMigDevice) -> SimpleNamespace:  # noqa: N802
        self._device(handle.parent)
        return SimpleNamespace(multiprocessorCount=16 * handle.slices, gpuInstanceSliceCount=handle.slices,
                               computeInstanceSliceCount=handle.slices, memorySizeMB=10240 * handle.slices)

    @staticmethod
    def _supported(value: Any) -> Any:
        if value is None:
            raise _fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return value
