"""NVML on real, messy drivers, against the fake with the real quirks: the pre-R510 library
mismatch, the 535.43-535.86 PID garbage, exceptions that are not NVMLErrors, init failures,
field values, MIG layouts, per-process utilisation, and which calls cost what."""

import ctypes
import logging

import pynvml
import pytest

from agent.gpu import MigInstance, MigLayout
from agent.nvml import NvmlSource, NvmlUnavailable
from agent.sim.fakenvml import H200_CALL_COST_US, INVALID_PID, FakeDevice, FakeNvml


def opened(fake: FakeNvml) -> NvmlSource:
    source = NvmlSource(fake)
    source.open()
    return source


def test_the_fake_raises_what_nvidia_ml_py_raises_on_a_driver_before_r510():
    fake = FakeNvml([FakeDevice(uuid="GPU-0", pids=[11])], driver_version="470.82.01")
    fake.nvmlInit()
    with pytest.raises(pynvml.NVMLLibraryMismatchError) as err:
        fake.nvmlDeviceGetComputeRunningProcesses(fake.devices[0])
    assert not isinstance(err.value, pynvml.NVMLError)  # a plain Exception: what crashed the agent
    assert "_v2" in str(err.value)


@pytest.mark.parametrize("driver", ["470.82.01", "418.226.00", "505.0"])
def test_driver_before_r510_lists_processes_with_v2(driver, caplog):
    fake = FakeNvml([FakeDevice(uuid="GPU-0", pids=[11, 12]), FakeDevice(uuid="GPU-1", pids=[13])], driver_version=driver)
    source = opened(fake)
    with caplog.at_level(logging.WARNING):
        first, second = source.sample(1.0)
        assert [s.pids for s in source.sample(2.0)] == [(11, 12), (13,)]
    assert (first.pids, second.pids) == ((11, 12), (13,))
    assert source.errors == 0 and source.processes.use_v2
    assert fake.calls["nvmlDeviceGetComputeRunningProcesses_v3"] == 1  # tried once, then _v2 only
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == (f"NVML driver {driver}: the driver has no nvmlDeviceGetComputeRunningProcesses_v3 (older than R510); "
                       "reading process lists with nvmlDeviceGetComputeRunningProcesses_v2")


@pytest.mark.parametrize("driver", ["535.43.02", "535.54.03", "535.86.10"])
def test_broken_535_range_pids_are_detected_and_read_with_v2(driver, caplog):
    fake = FakeNvml([FakeDevice(uuid="GPU-0", pids=[4242, 4343])], driver_version=driver)
    fake.nvmlInit()
    garbage = [p.pid for p in fake.nvmlDeviceGetComputeRunningProcesses(fake.devices[0])]
    assert set(garbage) == {0, INVALID_PID}  # what nvitop issues #75 and #88 show
    source = opened(fake)
    with caplog.at_level(logging.WARNING):
        (sample,) = source.sample(1.0)
    assert sample.pids == (4242, 4343) and source.processes.use_v2 and source.errors == 0
    assert "impossible PIDs [0, 4294967295] (the 535.43-535.86 record-size bug)" in caplog.text


@pytest.mark.parametrize("driver", ["535.104.05", "535.42.00", "550.54.15"])
def test_drivers_outside_the_broken_range_keep_v3(driver):
    fake = FakeNvml([FakeDevice(uuid="GPU-0", pids=[4242])], driver_version=driver)
    source = opened(fake)
    assert source.sample(1.0)[0].pids == (4242,) and not source.processes.use_v2
    assert "nvmlDeviceGetComputeRunningProcesses_v2" not in fake.calls


class OddErrorsNvml(FakeNvml):
    """Getters failing with exceptions that are not NVMLErrors, on GPU 1 only."""

    def nvmlDeviceGetMemoryInfo(self, handle):  # noqa: N802
        if handle.uuid == "GPU-1":
            raise ctypes.ArgumentError("argument 2: TypeError: wrong type")
        return super().nvmlDeviceGetMemoryInfo(handle)

    def nvmlDeviceGetTemperature(self, handle, sensor):  # noqa: N802
        if handle.uuid == "GPU-1":
            raise RuntimeError("library returned garbage")
        return super().nvmlDeviceGetTemperature(handle, sensor)


def test_any_exception_from_one_getter_is_that_reading_missing_and_counted(caplog):
    devs = [FakeDevice(uuid=f"GPU-{i}", energy_mj=1000 * i, memory_used_bytes=5, temperature_c=40) for i in range(3)]
    source = opened(OddErrorsNvml(devs))
    with caplog.at_level(logging.WARNING):
        samples = source.sample(1.0) + source.sample(2.0)
    assert [(s.memory_used_bytes, s.temperature_c) for s in samples[:3]] == [(5, 40), (None, None), (5, 40)]
    assert [s.energy_mj for s in samples[:3]] == [0, 1000, 2000] and not any(s.lost for s in samples)
    assert source.errors == 5  # the memory total at open, then two readings in two samples: each failure counted
    assert sorted(r.getMessage() for r in caplog.records) == [
        "GPU 1: reading memory failed: argument 2: TypeError: wrong type",
        "GPU 1: reading temperature failed: library returned garbage",
    ]


@pytest.mark.parametrize(("code", "expected"), [
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
     "NVML is not available on this machine: the NVIDIA kernel driver is not loaded (NVML error 9); load it "
     "(`modprobe nvidia`, or check `dmesg`), or run `gpuledger agent --simulate SPEC` for a simulated node"),
    (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
     "NVML cannot start: driver/library version mismatch (NVML error 18), the loaded kernel module is not the version "
     "of libnvidia-ml (a driver upgrade without a reboot); reboot or reload the nvidia modules"),
    (pynvml.NVML_ERROR_NO_PERMISSION,
     "NVML cannot start: no permission to open the GPUs (NVML error 4); run the agent as root or as a user that can "
     "open /dev/nvidia*"),
    (pynvml.NVML_ERROR_UNKNOWN,
     "NVML failed to start (NVMLError_Unknown: Unknown Error); check the NVIDIA driver, or run `gpuledger agent "
     "--simulate SPEC` for a simulated node"),
])
def test_init_failures_name_the_cause_in_one_line(code, expected):
    with pytest.raises(NvmlUnavailable) as err:
        NvmlSource(FakeNvml([], init_error=code)).open()
    assert str(err.value) == expected and "\n" not in expected


def test_power_comes_from_one_field_values_call_and_falls_back_to_the_getter():
    devs = [FakeDevice(uuid="GPU-0", power_mw=250_500), FakeDevice(uuid="GPU-1", power_mw=99_000)]
    fake = FakeNvml(devs)
    source = opened(fake)
    assert [s.power_mw for s in source.sample(1.0)] == [250_500, 99_000]
    assert fake.calls["nvmlDeviceGetFieldValues"] == 2 and "nvmlDeviceGetPowerUsage" not in fake.calls

    class NoFields(FakeNvml):
        def nvmlDeviceGetFieldValues(self, handle, field_ids):  # noqa: N802
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    old = NoFields(devs)
    source = opened(old)
    assert [s.power_mw for s in source.sample(1.0) + source.sample(2.0)] == [250_500, 99_000] * 2
    assert old.calls["nvmlDeviceGetPowerUsage"] == 4 and source.errors == 0


def test_energy_is_read_apart_when_asked():
    fake = FakeNvml([FakeDevice(uuid="GPU-0", energy_mj=7_000), FakeDevice(uuid="GPU-1", energy_mj=None)])
    source = opened(fake)
    assert [s.energy_mj for s in source.sample(1.0, energy=False)] == [None, None]
    assert "nvmlDeviceGetTotalEnergyConsumption" not in fake.calls
    assert (source.read_energy(0), source.read_energy(1)) == (7_000, None)
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 2 and source.errors == 0
    fake.devices[0].lost = True
    assert source.read_energy(0) is None and source.sample(2.0)[0].lost


def test_mig_layout_and_process_instances():
    dev = FakeDevice(uuid="GPU-0", mig=[(1, 3), (2, 2), (5, 1)], pids=[10, 20], pid_instances={10: 1, 20: 5})
    fake = FakeNvml([dev, FakeDevice(uuid="GPU-1", pids=[30])])
    source = opened(fake)
    mig, plain = source.sample(1.0)
    assert mig.mig == MigLayout(7, (MigInstance(1, 3), MigInstance(2, 2), MigInstance(5, 1)))
    assert (mig.pids, mig.pid_instances, mig.util_gpu_pct) == ((10, 20), (1, 5), None)  # no utilisation on MIG
    assert (plain.mig, plain.pid_instances) == (None, ())
    source.sample(2.0)
    assert fake.calls.get("nvmlDeviceGetProcessUtilization") is None  # one process per GPU: not asked


def test_per_process_utilisation_on_a_shared_gpu():
    now = [1_000_000]
    dev = FakeDevice(uuid="GPU-0", pids=[10, 20], process_sm_util={10: 75, 20: 25})
    fake = FakeNvml([dev], clock_us=lambda: now[0])
    source = opened(fake)
    assert source.sample(1.0)[0].pid_sm_util == ((10, 75), (20, 25))
    assert source.sample(1.0)[0].pid_sm_util is None  # nothing newer: NOT_FOUND, not an error
    now[0] += 1_000_000
    dev.process_sm_util = {10: 40, 20: 60}
    assert source.sample(2.0)[0].pid_sm_util == ((10, 40), (20, 60))
    dev.process_sm_util = None  # a GPU without per-process samples
    now[0] += 1
    assert source.sample(3.0)[0].pid_sm_util is None and source.errors == 0


def test_h200_call_costs_are_paid_in_cpu_time():
    import time

    fake = FakeNvml([FakeDevice(uuid="GPU-0", energy_mj=1)], call_cost_us=H200_CALL_COST_US)
    fake.nvmlInit()
    start = time.thread_time()
    for _ in range(20):
        fake.nvmlDeviceGetTotalEnergyConsumption(fake.devices[0])
    per_call_ms = (time.thread_time() - start) / 20 * 1000
    assert 3.8 <= per_call_ms < 10
