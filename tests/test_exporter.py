"""The agent's /metrics: fake NVML readings and a sysfs tree in, Prometheus samples in base units out."""

import shutil
from collections.abc import Iterable
from pathlib import Path

import pynvml
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.attribution import Attributor, JobRef, Owners
from agent.clock import ManualClock
from agent.exporter import agent_registry
from agent.gpu import GpuSample
from agent.loop import Agent, NodeLabels
from agent.nvml import NvmlSource
from agent.push import Pusher
from agent.roce import RdmaPorts
from agent.sim.fakenvml import FakeDevice, FakeNvml

FIXTURES = Path(__file__).parent / "fixtures" / "sysfs"
XMIT = Path("class/infiniband/mlx4_0/ports/1/counters/port_xmit_data")


class JobOnGpu0:
    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]:
        return {0: (JobRef("42", user="alice"),)}


def scrape(agent: Agent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(agent.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def one(samples: dict, name: str, **labels: str) -> float:
    matches = [v for (n, lbl), v in samples.items() if n == name and labels.items() <= dict(lbl).items()]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


@pytest.fixture
def setup(tmp_path: Path):
    sysfs = tmp_path / "sys"
    shutil.copytree(FIXTURES / "ib32", sysfs)
    devices = [
        FakeDevice("GPU-a", energy_mj=123_456_789, power_mw=250_000, util_gpu_pct=37, memory_used_bytes=40 * 1024**3,
                   temperature_c=61, clocks_event_reasons=pynvml.nvmlClocksEventReasonSwPowerCap | pynvml.nvmlClocksEventReasonHwSlowdown),
        FakeDevice("GPU-b", energy_mj=None, temperature_c=None, clocks_event_reasons=None),
    ]
    clock = ManualClock(1_000_000.0)
    pusher = Pusher("http://127.0.0.1:9", clock=clock.now)  # nothing listens there
    agent = Agent(NvmlSource(FakeNvml(devices)), Attributor([JobOnGpu0()]), pusher, NodeLabels("n1", "c", "dc"), clock,
                  ports=RdmaPorts(sysfs))
    agent.registry = agent_registry(agent)
    return agent, devices, clock, sysfs


def test_gpu_readings_in_base_units(setup):
    agent, _devices, _clock, _sysfs = setup
    agent.tick()
    got = scrape(agent)
    gpu0 = {"node": "n1", "gpu": "0", "uuid": "GPU-a", "model": "NVIDIA H100 80GB HBM3"}
    assert one(got, "gpuledger_gpu_power_watts", **gpu0) == 250.0
    assert one(got, "gpuledger_gpu_energy_joules_total", **gpu0) == 123_456.789
    assert one(got, "gpuledger_gpu_utilization_ratio", **gpu0) == 0.37
    assert one(got, "gpuledger_gpu_memory_used_bytes", **gpu0) == 40 * 1024**3
    assert one(got, "gpuledger_gpu_memory_total_bytes", **gpu0) == 80 * 1024**3
    assert one(got, "gpuledger_gpu_temperature_celsius", **gpu0) == 61
    assert one(got, "gpuledger_gpu_power_limit_watts", **gpu0) == 700.0
    reasons = {dict(lbl)["reason"]: v for (n, lbl), v in got.items() if n == "gpuledger_gpu_throttle_reason" and dict(lbl)["gpu"] == "0"}
    assert {r for r, v in reasons.items() if v == 1} == {"sw_power_cap", "hw_slowdown"} and len(reasons) == 9
    # GPU 1 has no energy counter, no temperature sensor and no clocks-event reasons: absent, never 0
    for name in ("gpuledger_gpu_energy_joules_total", "gpuledger_gpu_temperature_celsius", "gpuledger_gpu_throttle_reason"):
        assert not [k for k in got if k[0] == name and dict(k[1])["gpu"] == "1"], name
    assert one(got, "gpuledger_gpu_power_watts", gpu="1") == 70.0
    # attribution is one info series per owned GPU, not a label on the readings
    info = [dict(lbl) for (n, lbl), v in got.items() if n == "gpuledger_gpu_job_info"]
    assert info == [{"node": "n1", "gpu": "0", "uuid": "GPU-a", "job_id": "c/42"}]
    assert one(got, "gpuledger_agent_info", node="n1", cluster="c", datacenter="dc", simulated="false") == 1


def test_port_counters_are_bytes_after_a_clear_and_absent_when_missing(setup):
    # The counter going down was read as a 32-bit wrap ((100 + 2**32 - before) * 4 bytes) here
    # before: PMA counters never wrap, a decrease is a clear, counted from the new value.
    agent, _devices, clock, sysfs = setup
    agent.tick()
    assert int((sysfs / XMIT).read_text()) > 100
    (sysfs / XMIT).write_text("100\n")  # cleared (perfquery -R), then 100 words sent
    clock.sleep(1.0)
    agent.tick()
    got = scrape(agent)
    port = {"node": "n1", "device": "mlx4_0", "port": "1"}
    assert one(got, "gpuledger_infiniband_port_data_transmitted_bytes_total", **port) == 100 * 4
    assert one(got, "gpuledger_infiniband_port_data_received_bytes_total", **port) == 0  # unchanged
    assert one(got, "gpuledger_infiniband_port_up", **port) == 1
    assert one(got, "gpuledger_infiniband_rate_bytes_per_second", **port) == pytest.approx(agent.snapshot.ports[0].rate_gbps * 1e9 / 8)
    # this InfiniBand HCA has no RoCE congestion counters: no series rather than a 0
    assert not [k for k in got if k[0] == "gpuledger_infiniband_np_cnp_sent_total"]


def test_health_counts_failed_pushes_resets_and_spool_depth(setup):
    agent, devices, clock, _sysfs = setup
    agent.tick()
    clock.sleep(1.0)
    devices[0].energy_mj = 5_000  # the driver reloaded: the counter starts again
    agent.tick()
    assert agent.push() is False  # the collector is unreachable
    got = scrape(agent)
    assert one(got, "gpuledger_agent_energy_counter_resets_total", gpu="0") == 1
    assert one(got, "gpuledger_agent_energy_counter_resets_total", gpu="1") == 0
    assert one(got, "gpuledger_agent_push_failures_total") == 1
    assert one(got, "gpuledger_agent_spool_batches") == 1
    assert one(got, "gpuledger_agent_batches_rejected_total") == 0
    assert one(got, "gpuledger_agent_cycle_seconds_count", node="n1") == 2
    assert one(got, "gpuledger_agent_nvml_errors_total") == 0  # NOT_SUPPORTED is not an error
    assert not [k for k in got if k[0] == "gpuledger_agent_last_push_success_timestamp_seconds"]  # never pushed yet
    devices[1].lost = True
    clock.sleep(1.0)
    agent.tick()
    got = scrape(agent)
    assert one(got, "gpuledger_agent_gpus_lost") == 1
    assert one(got, "gpuledger_agent_nvml_errors_total") == 1
