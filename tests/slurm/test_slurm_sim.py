"""The simulated node following a real scheduler through the job-mapping directory the
Slurm prolog writes: mapped GPUs run at `mapped_utilization`, from the next whole second after
the mapping is seen until the next whole second after it is gone, and the energy counter stays
the exact integral of the power of every second (nothing already counted changes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.attribution import JobMappingDir
from agent.clock import ManualClock
from agent.nvml import NvmlSource
from agent.sim.node import SimulatedNode
from agent.sim.spec import SpecError, parse_spec

EPOCH = 1_800_000_000.0
NODE = {"name": "n1", "gpu_count": 2, "model": "NVIDIA H100 80GB HBM3", "idle_w": 100.0, "busy_w": 600.0,
        "mapped_utilization": 0.5}


def test_mapped_gpus_run_the_schedulers_jobs(tmp_path: Path) -> None:
    mapping = tmp_path / "job-mapping"
    mapping.mkdir()
    clock = ManualClock(EPOCH)
    node = SimulatedNode(parse_spec({"nodes": [NODE]}), "n1", clock, EPOCH, follow=JobMappingDir(mapping))
    source = NvmlSource(node.nvml)
    source.open()

    def sample(offset_s: float) -> list:
        clock.time_s = EPOCH + offset_s
        return source.sample(clock.now())

    first = sample(0.0)
    sample(2.5)
    (mapping / "0").write_text("42\n")  # the prolog maps job 42 on GPU 0
    sample(3.5)  # seen at 3.5: GPU 0 runs from second 4
    sample(6.2)
    (mapping / "0").unlink()  # the epilog
    sample(7.3)  # seen at 7.3: GPU 0 idles from second 8
    last = sample(10.0)
    assert node.gpus[0].mapped == [[4, 8]] and node.gpus[1].mapped == []
    for index in (0, 1):
        gpu = node.gpus[index]
        energy_j = (last[index].energy_mj - first[index].energy_mj) / 1000
        assert energy_j == pytest.approx(sum(gpu.power_w(second) for second in range(10)), abs=0.002)
        busy = [second for second in range(10) if gpu.utilization(second) > 0.1]
        assert busy == ([4, 5, 6, 7] if index == 0 else [])
    assert 0.475 <= node.gpus[0].utilization(5) <= 0.525  # mapped_utilization with its 5 % jitter
    assert node.owners(last) == {}  # the mapping names the owners (the agent reads it), not the simulator


def test_mapped_utilization_is_a_fraction() -> None:
    with pytest.raises(SpecError, match=r"nodes\[0\].mapped_utilization = 1.5: expected a fraction between 0 and 1"):
        parse_spec({"nodes": [{**NODE, "mapped_utilization": 1.5}]})
