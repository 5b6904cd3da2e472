"""The NVML source against the fake pynvml: units, error codes, lost GPUs, fallbacks."""

import subprocess
import sys

import pynvml
import pytest

from agent.nvml import NvmlSource, NvmlUnavailable
from agent.sim.fakenvml import FakeDevice, FakeNvml


def devices(n: int = 3) -> list[FakeDevice]:
    return [FakeDevice(uuid=f"GPU-{i}", energy_mj=1000 * i, power_mw=100_000 + i) for i in range(n)]


def test_inventory_converts_milliwatts_to_watts():
    fake = FakeNvml([FakeDevice(uuid="GPU-a", name="NVIDIA A100-SXM4-80GB", default_limit_mw=400_000, enforced_limit_mw=350_000)])
    (info,) = NvmlSource(fake).open()
    assert (info.index, info.uuid, info.name) == (0, "GPU-a", "NVIDIA A100-SXM4-80GB")
    assert (info.tdp_w, info.power_limit_w, info.memory_total_bytes) == (400.0, 350.0, 80 * 1024**3)


def test_sample_reads_every_field_in_native_units():
    dev = FakeDevice(uuid="GPU-a", energy_mj=123_456, power_mw=250_500, util_gpu_pct=87, memory_used_bytes=5 * 1024**3, pids=[11, 12])
    source = NvmlSource(FakeNvml([dev]))
    source.open()
    (s,) = source.sample(5.0)
    assert (s.time_s, s.energy_mj, s.power_mw, s.util_gpu_pct, s.memory_used_bytes, s.pids, s.lost) == (
        5.0, 123_456, 250_500, 87, 5 * 1024**3, (11, 12), False
    )


def test_lost_gpu_does_not_stop_the_others_and_stays_lost():
    devs = devices()
    source = NvmlSource(FakeNvml(devs))
    source.open()
    devs[1].lost = True
    first = source.sample(1.0)
    assert [s.lost for s in first] == [False, True, False]
    assert first[2].energy_mj == 2000 and first[0].power_mw == 100_000
    devs[1].lost = False  # a lost GPU needs a reset; the agent does not trust it again
    assert [s.lost for s in source.sample(2.0)] == [False, True, False]


def test_gpu_without_energy_counter_reads_none_not_zero():
    devs = devices(2)
    devs[0].energy_mj = None
    source = NvmlSource(FakeNvml(devs))
    source.open()
    no_counter, with_counter = source.sample(1.0)
    assert no_counter.energy_mj is None and no_counter.power_mw == 100_000
    assert with_counter.energy_mj == 1000


class OldDriverNvml(FakeNvml):
    """A driver older than nvmlDeviceGetCurrentClocksEventReasons (R535): pynvml finds no such symbol."""

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeDevice) -> int:  # noqa: N802
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)


def test_temperature_and_clocks_reasons_absent_on_an_old_driver_are_not_errors(caplog):
    dev = FakeDevice(uuid="GPU-a", temperature_c=None)  # and no temperature sensor
    source = NvmlSource(OldDriverNvml([dev]))
    source.open()
    (s,) = source.sample(1.0)
    assert (s.temperature_c, s.clocks_event_reasons, s.energy_mj) == (None, None, 0)
    assert source.errors == 0 and not caplog.records


class FailingUtilNvml(FakeNvml):
    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> int:  # noqa: N802
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)


def test_failed_calls_are_counted_every_time_and_warned_once(caplog):
    source = NvmlSource(FailingUtilNvml([FakeDevice(uuid="GPU-a")]))
    source.open()
    assert [s.util_gpu_pct for s in source.sample(1.0) + source.sample(2.0)] == [None, None]
    assert source.errors == 2
    assert [r.getMessage() for r in caplog.records] == ["GPU 0: reading utilization failed: Unknown Error"]


def test_calls_before_init_fail_like_real_nvml():
    with pytest.raises(pynvml.NVMLError) as err:
        FakeNvml(devices()).nvmlDeviceGetCount()
    assert err.value.value == pynvml.NVML_ERROR_UNINITIALIZED


def test_missing_library_says_to_use_simulate():
    with pytest.raises(NvmlUnavailable, match="--simulate"):
        NvmlSource(FakeNvml([], library_missing=True)).open()


def test_agent_without_nvml_prints_one_line_error():
    # This machine has no NVIDIA driver: the real pynvml fails to load its library.
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has NVML")
    except pynvml.NVMLError:
        pass
    result = subprocess.run(
        [sys.executable, "-m", "api.cli.main", "agent", "--collector", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gpuledger agent: error: NVML is not available") and "--simulate" in lines[0]
