"""NVML readings with driver quirks of their own: process lists, MIG layouts, per-process use.

- Process lists: nvidia-ml-py's unversioned ``nvmlDeviceGetComputeRunningProcesses`` calls
  ``_v3``. A driver before R510 has no ``_v3``; the library then raises
  ``NVMLLibraryMismatchError``, a plain ``Exception``. Drivers 535.43-535.86 write 32-byte ``_v3``
  records that the library reads as 24-byte ones: PIDs come back as 0 or 4294967295 (nvitop
  issues #75, #88). Either way the process list comes from ``_v2`` from then on.
- MIG: the GPU instances of a MIG-enabled GPU, with their compute slices, from the MIG device
  handles; re-read every ``refresh_s`` (instances change only while the GPU is idle).
- Per-process utilisation: ``nvmlDeviceGetProcessUtilization`` samples newer than the last
  seen, averaged per PID; NOT_FOUND means no new sample, not an error.
"""

from __future__ import annotations

import logging
from typing import Any

import pynvml

from agent.gpu import MigInstance, MigLayout

log = logging.getLogger(__name__)

IMPOSSIBLE_PIDS = frozenset({0, 4294967295})


class ProcessLists:
    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self.use_v2 = False  # set for good once _v3 is missing or broken

    def read(self, handle: Any) -> list[Any]:
        if not self.use_v2:
            try:
                procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except pynvml.NVMLLibraryMismatchError:
                self._fall_back("the driver has no nvmlDeviceGetComputeRunningProcesses_v3 (older than R510)")
            else:
                bad = [int(p.pid) for p in procs if int(p.pid) in IMPOSSIBLE_PIDS]
                if not bad:
                    return list(procs)
                self._fall_back(f"_v3 returned impossible PIDs {sorted(set(bad))} (the 535.43-535.86 record-size bug)")
        return list(self._nvml.nvmlDeviceGetComputeRunningProcesses_v2(handle))

    def _fall_back(self, why: str) -> None:
        version = _driver_version(self._nvml)
        log.warning("NVML driver %s: %s; reading process lists with nvmlDeviceGetComputeRunningProcesses_v2", version, why)
        self.use_v2 = True


def _driver_version(nvml: Any) -> str:
    try:
        value = nvml.nvmlSystemGetDriverVersion()
    except Exception:
        return "(unknown version)"
    return value.decode() if isinstance(value, bytes) else str(value)


class MigLayouts:
    def __init__(self, nvml: Any, refresh_s: float = 60.0) -> None:
        self._nvml = nvml
        self.refresh_s = refresh_s
        self._cache: dict[int, tuple[float, MigLayout | None]] = {}

    def layout(self, index: int, handle: Any, time_s: float) -> MigLayout | None:
        """The GPU's instances by id, or None when MIG is off (or the GPU cannot do MIG)."""
        cached = self._cache.get(index)
        if cached is not None and 0 <= time_s - cached[0] < self.refresh_s:
            return cached[1]
        layout = self._read(handle)
        self._cache[index] = (time_s, layout)
        return layout

    def _read(self, handle: Any) -> MigLayout | None:
        nvml = self._nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError as exc:
            if exc.value in (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND):
                return None
            raise
        if current != pynvml.NVML_DEVICE_MIG_ENABLE:
            return None
        slices: dict[int, int] = {}
        slots = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))  # one per 1g slice: the GPU's slices
        for slot in range(slots):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError as exc:
                if exc.value in (pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_ERROR_INVALID_ARGUMENT):
                    continue  # an empty slot
                raise
            # One MIG device per compute instance: several may share a GPU instance.
            slices[int(nvml.nvmlDeviceGetGpuInstanceId(mig))] = int(nvml.nvmlDeviceGetAttributes(mig).gpuInstanceSliceCount)
        instances = tuple(MigInstance(gi, n) for gi, n in sorted(slices.items()))
        return MigLayout(max(slots, sum(i.slices for i in instances)), instances)


class ProcessUtilization:
    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._last_seen_us: dict[int, int] = {}

    def read(self, index: int, handle: Any) -> tuple[tuple[int, int], ...] | None:
        """(pid, mean SM %) over the samples since the last call; None when there is none."""
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(handle, self._last_seen_us.get(index, 0))
        except pynvml.NVMLError as exc:
            if exc.value == pynvml.NVML_ERROR_NOT_FOUND:
                return None  # no sample newer than the last one
            raise
        by_pid: dict[int, list[int]] = {}
        for sample in samples:
            by_pid.setdefault(int(sample.pid), []).append(int(sample.smUtil))
            self._last_seen_us[index] = max(self._last_seen_us.get(index, 0), int(sample.timeStamp))
        return tuple((pid, round(sum(v) / len(v))) for pid, v in sorted(by_pid.items())) or None
